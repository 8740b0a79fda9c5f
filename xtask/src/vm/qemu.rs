//! Booting one kernel with the initramfs under QEMU and reading what the guest reports: the kernel
//! log goes to a file from the first serial port, the tests' output comes from the second.

use std::{
    fs::{self, OpenOptions},
    io::{BufRead as _, BufReader, Write as _},
    path::Path,
    process::{Command, ExitStatus, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use anyhow::Context as _;

use super::initramfs::{MARKER, PROBES_PREFIX};
use crate::{
    process::{self, Shown},
    test::Tally,
};

/// How long QEMU may take to stop after the guest said it finished, before it is killed.
const POWEROFF_GRACE: Duration = Duration::from_secs(15);
/// How much of the kernel log to show when a guest fails.
const CONSOLE_TAIL_LINES: usize = 40;

/// How QEMU runs the guest's CPUs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accel {
    /// Hardware virtualisation, where `/dev/kvm` is usable and the CPU has vmx or svm.
    Kvm,
    /// Emulation. The `/dev/kvm` of a PVM host (no vmx/svm in `/proc/cpuinfo`) fails with
    /// "KVM internal error ... emulation failure" on Debian's 6.12, and is ~50× slower than TCG
    /// on 6.1; see shared/VM.md.
    Tcg,
}

impl Accel {
    /// KVM where it works, else TCG.
    pub fn detect() -> Self {
        let kvm_opens = OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/kvm")
            .is_ok();
        let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        if kvm_opens && has_virtualization(&cpuinfo) {
            Self::Kvm
        } else {
            Self::Tcg
        }
    }

    /// How much slower than the host a guest runs, for tests that bound wall-clock latency:
    /// handed to the guest's /init as `MEMTRACE_TEST_SLOWDOWN` (the kernel passes unknown
    /// `name=value` parameters to init's environment). Emulation measured here: memhog's
    /// OOM storm takes about 10× the host's time, alone on the host (vm-test multiplies it by the
    /// guests running at once).
    const fn slowdown(self) -> u32 {
        match self {
            Self::Kvm => 1,
            Self::Tcg => 10,
        }
    }

    fn args(self) -> [&'static str; 4] {
        match self {
            Self::Kvm => ["-accel", "kvm", "-cpu", "host"],
            Self::Tcg => ["-accel", "tcg,thread=multi", "-cpu", "max"],
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Kvm => "KVM",
            Self::Tcg => "TCG (emulation)",
        }
    }
}

/// Whether `/proc/cpuinfo` shows Intel VT-x or AMD-V.
fn has_virtualization(cpuinfo: &str) -> bool {
    cpuinfo
        .lines()
        .filter_map(|line| line.strip_prefix("flags"))
        .any(|flags| flags.split_whitespace().any(|f| f == "vmx" || f == "svm"))
}

/// One boot.
pub struct Guest<'a> {
    /// Prefixed to each line of the guest's output (`6.1`).
    pub label: &'a str,
    pub vmlinux: &'a Path,
    pub initramfs: &'a Path,
    /// Where the kernel log is written.
    pub console_log: &'a Path,
    /// Added to the kernel command line.
    pub cmdline: &'a str,
    pub timeout: Duration,
    pub accel: Accel,
    /// How many guests run at once, sharing the host's cores: each runs that much slower.
    pub sharing: u32,
    /// The guest's RAM.
    pub memory_mib: u32,
}

/// How a boot ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Every test binary exited 0.
    Passed,
    /// /init reported a non-zero status: a test binary failed, or /init could not set up.
    Failed { status: i32 },
    /// Still running at the deadline; killed.
    TimedOut,
    /// QEMU itself failed (bad arguments, an image it cannot load).
    QemuFailed(ExitStatus),
    /// The guest stopped without /init's final marker: a kernel panic, or /init died.
    NoMarker { panicked: bool },
}

/// What a boot showed.
pub struct Report {
    pub outcome: Outcome,
    pub transcript: Transcript,
    /// From starting QEMU to /init's "ready" (file systems mounted).
    pub boot: Option<Duration>,
    /// From "ready" to the final marker.
    pub tests: Option<Duration>,
}

/// Boots `guest`, passing its test output through to stdout (each line prefixed with its label),
/// until it powers off or the timeout. Fails only when QEMU cannot be started at all.
pub fn boot(guest: &Guest<'_>) -> anyhow::Result<Report> {
    let mut qemu = command(guest);
    eprintln!("$ {}", Shown(&qemu));
    let begun = Instant::now();
    let mut child = qemu
        .spawn()
        .map_err(|error| process::spawn_error(&qemu, error))?;
    let stdout = child.stdout.take().context("QEMU's stdout")?;

    let (lines, received) = mpsc::channel();
    let reader = thread::spawn(move || {
        let mut stdout = BufReader::new(stdout);
        let mut line = Vec::new();
        // Ends at EOF (QEMU exited) or on a read error, which the missing marker reports.
        while stdout.read_until(b'\n', &mut line).is_ok_and(|n| n > 0) {
            let text = String::from_utf8_lossy(&line);
            if lines
                .send(text.trim_end_matches(['\r', '\n']).to_owned())
                .is_err()
            {
                break;
            }
            line.clear();
        }
    });

    let mut transcript = Transcript::default();
    let mut ready_at = None;
    let mut finished_at = None;
    let mut deadline = begun + guest.timeout;
    let mut timed_out = false;
    let mut take = |line: String, transcript: &mut Transcript| {
        println!("[{}] {line}", guest.label);
        match transcript.add(&line) {
            Some(Marker::Ready) => ready_at = Some(Instant::now()),
            Some(Marker::Exit(_)) => finished_at = Some(Instant::now()),
            _ => {}
        }
    };
    let status = loop {
        match received.recv_timeout(Duration::from_millis(100)) {
            Ok(line) => take(line, &mut transcript),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => thread::sleep(Duration::from_millis(50)),
        }
        if let Some(status) = child.try_wait().context("waiting for QEMU")? {
            break status;
        }
        if transcript.exit.is_some() {
            deadline = deadline.min(Instant::now() + POWEROFF_GRACE);
        }
        if Instant::now() >= deadline {
            timed_out = transcript.exit.is_none();
            // Our own child, by its handle.
            child.kill().context("stopping QEMU")?;
            break child.wait().context("waiting for QEMU")?;
        }
    };
    for line in received {
        take(line, &mut transcript);
    }
    // The reader has returned: the channel closed.
    let _ = reader.join();
    std::io::stdout()
        .flush()
        .context("writing the guest's output")?;

    let outcome = match transcript.exit {
        Some(0) => Outcome::Passed,
        Some(status) => Outcome::Failed { status },
        None if timed_out => Outcome::TimedOut,
        None if !status.success() => Outcome::QemuFailed(status),
        None => Outcome::NoMarker {
            panicked: fs::read_to_string(guest.console_log)
                .is_ok_and(|log| log.contains("Kernel panic")),
        },
    };
    Ok(Report {
        outcome,
        boot: ready_at.map(|ready| ready - begun),
        tests: ready_at.zip(finished_at).map(|(ready, done)| done - ready),
        transcript,
    })
}

/// `qemu-system-x86_64` for `guest`: no disk, no network, no display; serial 0 (the kernel's
/// console) to the log file, serial 1 (/init's output) to our stdin's pipe.
fn command(guest: &Guest<'_>) -> Command {
    let mut qemu = Command::new("qemu-system-x86_64");
    qemu.args(guest.accel.args())
        .args(["-m", &guest.memory_mib.to_string(), "-smp", "2"])
        .args(["-nodefaults", "-no-user-config", "-display", "none"])
        .args(["-no-reboot", "-net", "none"])
        .arg("-chardev")
        .arg(format!(
            "file,id=console,path={}",
            option_value(guest.console_log)
        ))
        .args(["-chardev", "stdio,id=tests,signal=off"])
        .args(["-device", "isa-serial,chardev=console,index=0"])
        .args(["-device", "isa-serial,chardev=tests,index=1"])
        .arg("-kernel")
        .arg(guest.vmlinux)
        .arg("-initrd")
        .arg(guest.initramfs)
        // panic=-1: a panic reboots at once, which -no-reboot turns into QEMU exiting.
        .args([
            "-append",
            &format!(
                "console=ttyS0 panic=-1 rdinit=/init MEMTRACE_TEST_SLOWDOWN={} {}",
                guest.accel.slowdown() * guest.sharing.max(1),
                guest.cmdline
            ),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    qemu
}

/// `path` as a value in a QEMU `-chardev` option list, where a comma is written twice.
fn option_value(path: &Path) -> String {
    path.display().to_string().replace(',', ",,")
}

/// The last lines of the kernel log, for a guest that failed.
pub fn console_tail(console_log: &Path) -> String {
    let log = fs::read(console_log).unwrap_or_default();
    let log = String::from_utf8_lossy(&log);
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(CONSOLE_TAIL_LINES)..].join("\n")
}

/// What /init and the test binaries reported.
#[derive(Debug, Default)]
pub struct Transcript {
    /// libtest's `test result:` lines, summed.
    pub tally: Tally,
    /// Test binaries that exited non-zero, with their status.
    pub failed_binaries: Vec<(String, i32)>,
    /// Why /init could not set the guest up, if it could not.
    pub setup_failure: Option<String>,
    /// /init's final status.
    pub exit: Option<i32>,
    /// What `memtrace probes` printed in the guest, line by line.
    pub probes: Vec<String>,
    /// Each panic of a test: its `panicked at` line and the first line of its message, so the
    /// summary (the end of a CI log, often all of it that is kept) says why a test failed.
    pub panics: Vec<String>,
    /// A `panicked at` line whose message line comes next.
    panic_pending: Option<String>,
}

/// How much of a panic's message the summary keeps.
const PANIC_MESSAGE_CHARS: usize = 600;

/// A line /init writes for the host.
#[derive(Debug, PartialEq, Eq)]
enum Marker<'a> {
    Ready,
    Binary {
        name: &'a str,
        status: i32,
    },
    SetupFailed(&'a str),
    /// A line of `memtrace probes`, verbatim.
    Probes(&'a str),
    Exit(i32),
    Other,
}

impl Transcript {
    fn add<'a>(&mut self, line: &'a str) -> Option<Marker<'a>> {
        self.tally.add(line);
        self.note_panic(line);
        let marker = parse_marker(line)?;
        match marker {
            Marker::Binary { name, status } if status != 0 => {
                self.failed_binaries.push((name.to_owned(), status));
            }
            Marker::SetupFailed(what) => self.setup_failure = Some(what.to_owned()),
            Marker::Probes(text) => self.probes.push(text.to_owned()),
            Marker::Exit(status) => self.exit = Some(status),
            _ => {}
        }
        Some(marker)
    }

    /// Keeps a test's `panicked at` line with the line after it (the assertion's message).
    fn note_panic(&mut self, line: &str) {
        if let Some(at) = self.panic_pending.take() {
            let message: String = line.trim().chars().take(PANIC_MESSAGE_CHARS).collect();
            self.panics.push(format!("{at} {message}"));
        } else if let Some(at) = line.find("panicked at ") {
            let from = line[..at].rfind("thread '").unwrap_or(at);
            self.panic_pending = Some(line[from..].trim().to_owned());
        }
    }
}

/// The marker in `line`. It is searched for anywhere in the line, in case a test binary left a
/// line unfinished before /init wrote it.
fn parse_marker(line: &str) -> Option<Marker<'_>> {
    let at = line.find(MARKER)?;
    let after = &line[at + MARKER.len()..];
    if let Some(text) = after.strip_prefix(PROBES_PREFIX) {
        return Some(Marker::Probes(text));
    }
    let rest = after.trim();
    let status = |s: &str| s.strip_prefix("exit=").and_then(|n| n.parse().ok());
    Some(if rest.starts_with("ready") {
        Marker::Ready
    } else if let Some(what) = rest.strip_prefix("setup failed: ") {
        Marker::SetupFailed(what)
    } else if let Some(binary) = rest.strip_prefix("binary ") {
        match binary.rsplit_once(' ') {
            Some((name, code)) if status(code).is_some() => Marker::Binary {
                name,
                status: status(code)?,
            },
            _ => Marker::Other,
        }
    } else if let Some(code) = status(rest) {
        Marker::Exit(code)
    } else {
        Marker::Other
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::{Marker, Transcript, has_virtualization, option_value, parse_marker};
    use crate::test::Tally;

    #[test]
    fn keeps_probes_lines_verbatim() {
        assert_eq!(
            parse_marker("memtrace-vm-test: probes|    fexit/try_charge   chosen"),
            Some(Marker::Probes("    fexit/try_charge   chosen"))
        );
    }

    #[test]
    fn reads_init_s_markers() {
        assert_eq!(
            parse_marker("memtrace-vm-test: ready: 6.1.0-56-amd64, 2 CPUs, 1975 MiB"),
            Some(Marker::Ready)
        );
        assert_eq!(
            parse_marker("memtrace-vm-test: binary oom_kill exit=101"),
            Some(Marker::Binary {
                name: "oom_kill",
                status: 101
            })
        );
        assert_eq!(
            parse_marker("memtrace-vm-test: exit=0"),
            Some(Marker::Exit(0))
        );
        assert_eq!(
            parse_marker("test output cut short memtrace-vm-test: exit=101"),
            Some(Marker::Exit(101))
        );
        assert_eq!(
            parse_marker("memtrace-vm-test: setup failed: mount -t bpf bpf /sys/fs/bpf"),
            Some(Marker::SetupFailed("mount -t bpf bpf /sys/fs/bpf"))
        );
        assert_eq!(
            parse_marker("memtrace-vm-test: running /tests/oom_kill"),
            Some(Marker::Other)
        );
        assert_eq!(
            parse_marker("memtrace-vm-test: exit=soon"),
            Some(Marker::Other)
        );
        assert_eq!(parse_marker("test session::x ... ok"), None);
    }

    #[test]
    fn sums_what_the_guest_reported() {
        let mut transcript = Transcript::default();
        for line in [
            "memtrace-vm-test: running /tests/cli_errors",
            "test result: ok. 4 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 3.10s",
            "memtrace-vm-test: binary cli_errors exit=0",
            "memtrace-vm-test: running /tests/oom_kill",
            "test result: FAILED. 1 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in 9.02s",
            "memtrace-vm-test: binary oom_kill exit=101",
            "memtrace-vm-test: exit=101",
        ] {
            transcript.add(line);
        }
        assert_eq!(
            transcript.tally,
            Tally {
                passed: 5,
                failed: 1
            }
        );
        assert_eq!(transcript.failed_binaries, [("oom_kill".to_owned(), 101)]);
        assert_eq!(transcript.exit, Some(101));
        assert_eq!(transcript.setup_failure, None);
        assert_eq!(transcript.panics, Vec::<String>::new());
    }

    #[test]
    fn keeps_each_panic_with_its_message() {
        let mut transcript = Transcript::default();
        for line in [
            "test x ... FAILED",
            "---- x stdout ----",
            "thread 'x' (238) panicked at tests/containers.rs:162:5:",
            "assertion `left == right` failed: kernel memory: {}",
            "  left: true",
        ] {
            transcript.add(line);
        }
        assert_eq!(
            transcript.panics,
            [
                "thread 'x' (238) panicked at tests/containers.rs:162:5: assertion `left == right` \
                 failed: kernel memory: {}"
            ]
        );
    }

    #[test]
    fn wants_vmx_or_svm_for_kvm() {
        let pvm = "processor\t: 0\nflags\t\t: fpu vme de pse hypervisor lahf_lm\n";
        assert!(!has_virtualization(pvm));
        assert!(has_virtualization("flags\t\t: fpu vmx ept\n"));
        assert!(has_virtualization("flags\t\t: fpu svm npt\n"));
    }

    #[test]
    fn doubles_commas_in_chardev_paths() {
        assert_eq!(option_value(Path::new("/a,b/log")), "/a,,b/log");
    }
}
