//! `cargo xtask vm-test`: the integration tests on Debian's kernels under QEMU, where kprobes,
//! fentry and cgroup v2's memory controller are available (this host has none of them).
//! The recipe, and why each piece is the way it is, is in shared/VM.md.
//!
//! Each guest boots `vmlinux` with an initramfs (busybox, /init, memtrace and the static test
//! binaries) and runs every test binary in turn. The tests' output comes out on stdout, each line
//! prefixed with the kernel (`[6.12] test … ok`); each kernel's log is kept in
//! `<target>/vm/console-<kernel>.log`; downloaded kernels are cached in `.tools/vm/kernels`.

pub mod apt;
mod bzimage;
mod elf;
mod initramfs;
mod kernel;
mod matrix;
mod modules;
mod parts;
mod payload;
mod qemu;

use std::{
    env,
    fmt::Write as _,
    fs,
    path::Path,
    sync::{
        Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use clap::{Args, ValueEnum};

use self::{
    apt::Apt,
    initramfs::KernelModules,
    kernel::{Image, Kernel},
    qemu::{Accel, Guest, Outcome, Report},
};
use crate::{setup, test::Tally, workspace::Workspace};

#[derive(Args)]
pub struct Options {
    /// Kernel to boot: 5.10 (Debian 11's), 6.1 (Debian 12's own) or 6.12; repeat or separate
    /// with commas for several [default: all]
    #[arg(
        long = "kernel",
        value_name = "VERSION",
        value_enum,
        value_delimiter = ','
    )]
    kernels: Vec<Kernel>,

    /// Where the guests' memory controller is: on the cgroup v2 hierarchy, or on a v1 one (as on
    /// many older nodes); repeat or separate with commas [default: both]
    #[arg(
        long = "cgroup",
        value_name = "VERSION",
        value_enum,
        value_delimiter = ','
    )]
    cgroups: Vec<Cgroup>,

    /// How many guests run at once (TCG runs each vCPU on a host thread)
    #[arg(long, value_name = "N", default_value_t = 2)]
    jobs: usize,

    /// Boots each kernel and hierarchy this many times, each running every Nth test binary, so
    /// that `--jobs` guests share the work evenly [default: 2 without a test filter, else 1]
    #[arg(long, value_name = "N")]
    parts: Option<u8>,

    /// After a failure, go on with the remaining test binaries and kernels (always on when
    /// CI=true)
    #[arg(long)]
    keep_going: bool,

    /// Write the table of the strategy each probe point chose on each guest (from `memtrace
    /// probes` in the guests) into README.md; it is always written to
    /// `<target>/vm/probe-matrix.md`
    #[arg(long)]
    readme: bool,

    /// Seconds each guest may take to boot and run every test before it is stopped
    #[arg(long, value_name = "SECONDS", default_value_t = GUEST_TIMEOUT)]
    timeout: u64,

    /// Arguments for every test binary in the guests, e.g. a test name to filter on
    #[arg(last = true, value_name = "TEST_FILTER")]
    test_args: Vec<String>,
}

/// A guest's whole run: boot and every test. A guest ran 46 tests in 465–603 s (`vm-test` of
/// 4170833) and has about 55 now (storms, a node of 200 containers, throttling, global OOM,
/// more verdicts); a second guest running beside it on the same CPUs stretches that.
const GUEST_TIMEOUT: u64 = 1800;

/// The hierarchy a guest mounts the memory controller on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Cgroup {
    #[value(name = "v2")]
    V2,
    #[value(name = "v1")]
    V1,
}

impl Cgroup {
    const ALL: [Self; 2] = [Self::V2, Self::V1];

    fn label(self) -> &'static str {
        match self {
            Self::V2 => "v2",
            Self::V1 => "v1",
        }
    }
}

impl Options {
    /// Every kernel and hierarchy, default timeout, no filter: what `cargo xtask test` runs.
    pub fn every_kernel() -> Self {
        Self {
            kernels: Vec::new(),
            cgroups: Vec::new(),
            jobs: 2,
            parts: None,
            keep_going: false,
            readme: false,
            timeout: GUEST_TIMEOUT,
            test_args: Vec::new(),
        }
    }
}

/// What one boot does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Runs every test binary of its part with the memory controller on this hierarchy.
    Tests(Cgroup, Part),
    /// Boots with `lockdown=confidentiality` and checks that memtrace refuses to start with a
    /// one-line error naming it (initramfs.rs's /init does the check).
    Lockdown,
    /// Boots with [`GLOBAL_OOM_MIB`] of RAM (cgroup v2) and runs only
    /// [`payload::GLOBAL_OOM_TEST`], which exhausts it: a global OOM kill.
    GlobalOom,
}

/// Which of a kernel's boots on one hierarchy this is: the `index`th (from 1) of `of`, running
/// the test binaries whose place in the sorted list is `index` modulo `of`. Five boots of ~12
/// minutes each, two at a time, leave one job running the fifth alone for a third of the run;
/// ten halves even the two jobs out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Part {
    index: u8,
    of: u8,
}

/// RAM of the guests that run the tests: the initramfs (~120 MiB, unpacked into RAM) and tests
/// that fill tmpfs and page cache.
const TESTS_MIB: u32 = 4096;
/// RAM of the global OOM guest: little, so that one process exhausts it in seconds under TCG,
/// and enough for the kernel, its root file system in RAM (/init deletes the other test
/// binaries from it first), memtrace, and the test's containers.
const GLOBAL_OOM_MIB: u32 = 768;

/// One guest of the matrix.
struct Boot<'a> {
    image: &'a Image,
    mode: Mode,
}

impl Boot<'_> {
    /// `6.12/v2:1of2`, `6.12/lockdown`: prefixes its output lines and names its kernel log.
    fn label(&self) -> String {
        match self.mode {
            Mode::Tests(_, Part { index, of }) if of > 1 => {
                format!("{}:{index}of{of}", self.configuration())
            }
            _ => self.configuration(),
        }
    }

    /// `6.12/v2`, `6.12/lockdown`: the kernel and what it boots with, whichever part.
    fn configuration(&self) -> String {
        let mode = match self.mode {
            Mode::Tests(cgroup, _) => cgroup.label(),
            Mode::Lockdown => "lockdown",
            Mode::GlobalOom => "global-oom",
        };
        format!("{}/{mode}", self.image.kernel.label())
    }

    /// What the kernel command line adds; unknown `NAME=value` words reach /init's environment.
    fn cmdline(&self) -> String {
        match self.mode {
            Mode::Tests(cgroup, Part { index, of }) => format!(
                "MEMTRACE_VM_CGROUP={} MEMTRACE_VM_PART={index} MEMTRACE_VM_PARTS={of}",
                cgroup.label()
            ),
            Mode::Lockdown => "lockdown=confidentiality MEMTRACE_VM_EXPECT=lockdown".to_owned(),
            Mode::GlobalOom => "MEMTRACE_VM_CGROUP=v2 MEMTRACE_VM_EXPECT=global_oom".to_owned(),
        }
    }

    fn memory_mib(&self) -> u32 {
        match self.mode {
            Mode::GlobalOom => GLOBAL_OOM_MIB,
            Mode::Tests(..) | Mode::Lockdown => TESTS_MIB,
        }
    }
}

/// Sets up, installs QEMU, fetches the kernels, builds the static payload and boots each kernel
/// with each cgroup hierarchy and once with little RAM for the global OOM test, `--jobs` guests
/// at a time, and one kernel with lockdown on; fails unless every guest booted and passed.
pub fn run(workspace: &Workspace, options: &Options) -> anyhow::Result<()> {
    let begun = Instant::now();
    setup::run(workspace)?;
    let cache = workspace.tools_dir().join("vm");
    apt::ensure_packages(&cache)?;

    let images = options
        .kernels()
        .into_iter()
        .map(|kernel| {
            let apt = match kernel.other_release() {
                Some(codename) => Apt::other_release(&cache, codename).with_context(|| {
                    format!("vm-test step `sources list for {codename}` failed")
                })?,
                None => Apt::system(&cache),
            };
            kernel::prepare(kernel, &apt, &cache)
        })
        .collect::<anyhow::Result<Vec<Image>>>()?;

    let building = Instant::now();
    let payload = payload::build(workspace)?;
    // In CI, one failing test should not hide the others (as in `cargo xtask test`).
    let keep_going = options.keep_going || env::var_os("CI").is_some_and(|ci| ci == "true");
    let out_dir = payload::target_dir(workspace);
    fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let initramfs = out_dir.join("initramfs.cpio");
    let kernel_modules: Vec<KernelModules<'_>> = images
        .iter()
        .map(|image| KernelModules {
            release: &image.release,
            modules: &image.modules,
        })
        .collect();
    initramfs::write(
        &initramfs,
        &payload,
        &kernel_modules,
        &initramfs::Run {
            test_args: &options.test_args,
            keep_going,
            parts: options.parts(),
        },
    )
    .context("vm-test step `write the initramfs` failed")?;
    let size = fs::metadata(&initramfs).map_or(0, |meta| meta.len());
    eprintln!(
        "vm-test: payload built and packed in {} ({}, {} MiB)",
        seconds(building.elapsed()),
        initramfs.display(),
        size >> 20
    );

    let (boots, not_possible) = plan(&images, options);

    let accel = Accel::detect();
    let jobs = options.jobs.clamp(1, boots.len().max(1));
    eprintln!(
        "vm-test: {} guests, {jobs} at a time, with {}",
        boots.len(),
        accel.name()
    );
    let guests = Instant::now();
    let sharing = u32::try_from(jobs).unwrap_or(u32::MAX);
    let reports = boot_all(&boots, jobs, keep_going, |one| {
        boot(one, &initramfs, &out_dir, (accel, sharing), options.timeout)
    })?;
    write_matrix(workspace, &boots, &reports, &out_dir, options.readme)?;
    let result = summarize(&boots, &reports, &not_possible, options.timeout);
    println!(
        "vm-test: guests {}, whole run {}",
        seconds(guests.elapsed()),
        seconds(begun.elapsed())
    );
    result
}

impl Options {
    /// The kernels asked for, each once, in the order given; all of them if none was.
    fn kernels(&self) -> Vec<Kernel> {
        once_each(&self.kernels, &Kernel::ALL)
    }

    /// How many boots share each kernel and hierarchy's test binaries: 2 for the whole suite,
    /// 1 when a filter picks a few tests (a boot of its own costs more than they take).
    fn parts(&self) -> u8 {
        self.parts
            .unwrap_or(if self.test_args.is_empty() { 2 } else { 1 })
            .max(1)
    }

    /// The hierarchies asked for, each once; both if none was.
    fn cgroups(&self) -> Vec<Cgroup> {
        once_each(&self.cgroups, &Cgroup::ALL)
    }
}

/// The guests to boot, in order: the long ones (every kernel and hierarchy asked for, in
/// `--parts`) first, the short ones (global OOM, lockdown) after, to fill the gaps; and a line
/// for each hierarchy a kernel cannot boot with.
fn plan<'a>(images: &'a [Image], options: &Options) -> (Vec<Boot<'a>>, Vec<String>) {
    let mut boots: Vec<Boot<'a>> = Vec::new();
    let mut short: Vec<Boot<'a>> = Vec::new();
    let parts = options.parts();
    let mut not_possible = Vec::new();
    for image in images {
        for cgroup in options.cgroups() {
            if cgroup == Cgroup::V1 && !image.memcg_v1 {
                not_possible.push(format!(
                    "  {:<15} not possible: {} {} is built without the memory controller on \
                     cgroup v1 (# CONFIG_MEMCG_V1 is not set)",
                    format!("{}/v1", image.kernel.label()),
                    image.package,
                    image.version
                ));
                continue;
            }
            for index in 1..=parts {
                boots.push(Boot {
                    image,
                    mode: Mode::Tests(cgroup, Part { index, of: parts }),
                });
            }
        }
        // The global OOM test's own guest, on each kernel: an OOM of the whole node goes
        // through the kernel's own path (no memcg), which this host cannot show safely.
        if options.cgroups().contains(&Cgroup::V2) {
            short.push(Boot {
                image,
                mode: Mode::GlobalOom,
            });
        }
    }
    // Lockdown is the same check on every kernel: the newest one asked for does it.
    if let Some(image) = images.last() {
        short.push(Boot {
            image,
            mode: Mode::Lockdown,
        });
    }
    boots.append(&mut short);
    (boots, not_possible)
}

/// `chosen` without repeats, in its order; `all` when empty.
fn once_each<T: Copy + PartialEq>(chosen: &[T], all: &[T]) -> Vec<T> {
    if chosen.is_empty() {
        return all.to_vec();
    }
    let mut once = Vec::new();
    for item in chosen {
        if !once.contains(item) {
            once.push(*item);
        }
    }
    once
}

/// The probe matrix of the guests that ran the tests, to `<out_dir>/probe-matrix.md` and, when
/// `readme`, into README.md.
fn write_matrix(
    workspace: &Workspace,
    boots: &[Boot<'_>],
    reports: &[Option<Report>],
    out_dir: &Path,
    readme: bool,
) -> anyhow::Result<()> {
    let columns: Vec<matrix::Column> = boots
        .iter()
        .zip(reports)
        // `memtrace probes` runs in every part of a kernel and hierarchy: the first says it.
        .filter(|(one, _)| matches!(one.mode, Mode::Tests(_, Part { index: 1, .. })))
        .filter_map(|(one, report)| {
            let report = report.as_ref()?;
            (!report.transcript.probes.is_empty())
                .then(|| matrix::column(&one.configuration(), &report.transcript.probes))
        })
        .collect();
    if columns.is_empty() {
        return Ok(());
    }
    let table = matrix::table(&columns);
    let file = out_dir.join("probe-matrix.md");
    fs::write(&file, &table).with_context(|| format!("writing {}", file.display()))?;
    eprintln!("vm-test: probe matrix in {}", file.display());
    if readme {
        let readme = workspace.root().join("README.md");
        matrix::write_into_readme(&readme, &table)
            .context("vm-test step `write the probe matrix into README.md` failed")?;
        eprintln!("vm-test: probe matrix written into {}", readme.display());
    }
    Ok(())
}

/// Runs `boot` on every guest, `jobs` at a time, in order; after a failed guest starts no other
/// unless `keep_going`. The reports are in the guests' order, `None` for those not run.
fn boot_all<'a>(
    boots: &'a [Boot<'a>],
    jobs: usize,
    keep_going: bool,
    boot: impl Fn(&Boot<'_>) -> anyhow::Result<Report> + Sync,
) -> anyhow::Result<Vec<Option<Report>>> {
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let results: Mutex<Vec<Option<anyhow::Result<Report>>>> =
        Mutex::new(boots.iter().map(|_| None).collect());
    thread::scope(|scope| {
        for _ in 0..jobs {
            scope.spawn(|| {
                loop {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(one) = boots.get(i) else { break };
                    let report = boot(one);
                    let passed = report
                        .as_ref()
                        .is_ok_and(|report| report.outcome == Outcome::Passed);
                    if !passed && !keep_going {
                        stop.store(true, Ordering::SeqCst);
                    }
                    if let Ok(mut results) = results.lock() {
                        results[i] = Some(report);
                    }
                }
            });
        }
    });
    results
        .into_inner()
        .map_err(|_| anyhow::anyhow!("a guest's thread panicked"))?
        .into_iter()
        .map(Option::transpose)
        .collect()
}

/// Boots one guest and says how it went when it failed; fails only when QEMU cannot start.
fn boot(
    one: &Boot<'_>,
    initramfs: &Path,
    out_dir: &Path,
    (accel, sharing): (Accel, u32),
    timeout: u64,
) -> anyhow::Result<Report> {
    let label = one.label();
    let console_log = out_dir.join(format!("console-{}.log", label.replace('/', "-")));
    let report = qemu::boot(&Guest {
        label: &label,
        vmlinux: &one.image.vmlinux,
        initramfs,
        console_log: &console_log,
        cmdline: &one.cmdline(),
        timeout: Duration::from_secs(timeout),
        accel,
        sharing,
        memory_mib: one.memory_mib(),
    })
    .with_context(|| format!("vm-test step `boot {label}` failed"))?;
    match report.outcome {
        Outcome::Passed => {}
        // The tests' own output says why; the kernel log is there if it does not.
        Outcome::Failed { .. } if report.transcript.setup_failure.is_none() => eprintln!(
            "vm-test {label}: {}; kernel log: {}",
            describe(&report, timeout),
            console_log.display()
        ),
        _ => eprintln!(
            "vm-test {label}: {}; the kernel log ({}) ends:\n{}",
            describe(&report, timeout),
            console_log.display(),
            qemu::console_tail(&console_log)
        ),
    }
    Ok(report)
}

/// Prints a line per guest and the summed test counts; fails unless every guest passed and
/// some test ran.
fn summarize(
    boots: &[Boot<'_>],
    reports: &[Option<Report>],
    not_possible: &[String],
    timeout: u64,
) -> anyhow::Result<()> {
    let mut total = Tally::default();
    let mut failed = Vec::new();
    println!("vm-test summary:");
    for line in not_possible {
        println!("{line}");
    }
    for (one, report) in boots.iter().zip(reports) {
        let label = one.label();
        let Some(report) = report else {
            println!("  {label:<15} not run: an earlier guest failed (--keep-going runs it)");
            failed.push(format!("{label} (not run)"));
            continue;
        };
        total.passed += report.transcript.tally.passed;
        total.failed += report.transcript.tally.failed;
        println!("  {}", summary_line(one, report, timeout));
        for panic in &report.transcript.panics {
            println!("      {panic}");
        }
        if report.outcome != Outcome::Passed {
            failed.push(format!("{label} ({})", describe(report, timeout)));
        }
    }
    println!("vm-tests: {} passed, {} failed", total.passed, total.failed);

    if !failed.is_empty() {
        bail!("vm-test failed on {}", failed.join(", "));
    }
    if total.passed == 0 {
        bail!("vm-test ran no test");
    }
    Ok(())
}

/// One line saying how a guest did, and how long each part took.
fn summary_line(one: &Boot<'_>, report: &Report, timeout: u64) -> String {
    let image = one.image;
    let mut line = format!(
        "{:<15} {} {}: {}: {} passed, {} failed",
        one.label(),
        image.package,
        image.version,
        describe(report, timeout),
        report.transcript.tally.passed,
        report.transcript.tally.failed,
    );
    if !report.transcript.failed_binaries.is_empty() {
        let binaries: Vec<String> = report
            .transcript
            .failed_binaries
            .iter()
            .map(|(name, status)| format!("{name} (exit {status})"))
            .collect();
        let _ = write!(line, " [failed: {}]", binaries.join(", "));
    }
    let _ = write!(
        line,
        "; kernel {}{}",
        seconds(image.took),
        if image.cached { " (cached)" } else { "" }
    );
    if let Some(boot) = report.boot {
        let _ = write!(line, ", boot {}", seconds(boot));
    }
    if let Some(tests) = report.tests {
        let _ = write!(line, ", tests {}", seconds(tests));
    }
    line
}

/// How a kernel's run ended, in a few words.
fn describe(report: &Report, timeout: u64) -> String {
    match &report.outcome {
        Outcome::Passed => "passed".to_owned(),
        Outcome::Failed { status } => match &report.transcript.setup_failure {
            Some(step) => format!("guest setup failed at `{step}` (exit {status})"),
            None => format!("tests failed (exit {status})"),
        },
        Outcome::TimedOut => format!("timed out after {timeout} s"),
        Outcome::QemuFailed(status) => format!("QEMU failed ({status})"),
        Outcome::NoMarker { panicked: true } => "kernel panic (no exit marker)".to_owned(),
        Outcome::NoMarker { panicked: false } => "guest stopped without the exit marker".to_owned(),
    }
}

fn seconds(duration: Duration) -> String {
    format!("{:.1} s", duration.as_secs_f64())
}
