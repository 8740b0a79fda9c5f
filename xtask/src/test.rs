//! `cargo xtask test`: everything CI checks, in the order that fails fastest.

use std::{
    env,
    ffi::OsString,
    io::{BufRead as _, BufReader},
    process::{Command, Stdio},
};

use anyhow::{Context as _, bail};
use clap::Args;

use crate::{
    fuzz, process, setup,
    vm::{self, apt::Apt},
    workspace::{EBPF, MEMTRACE, TESTS, Workspace},
};

/// What the host's integration tests need besides memtrace: Chromium, to open the HTML report
/// headless the way a person would (`tests/report_html.rs`); Prometheus (with `promtool`), to
/// scrape `--metrics` as a cluster would (`tests/metrics.rs`); tmux, a terminal to drive
/// `memtrace top` in (`tests/top.rs`); real container runtimes.
pub const TEST_PACKAGES: &[&str] = &[
    "chromium",
    "prometheus",
    "tmux",
    // Real container runtimes (tests/runtimes.rs), and memtrace's own image run beside one
    // (tests/deploy.rs): podman with runc (crun refuses hybrid cgroup hosts), containerd with
    // ctr, and busybox-static for the images they run.
    "podman",
    "runc",
    "conmon",
    "catatonit",
    "uidmap",
    "containerd",
    "busybox-static",
];

#[derive(Args)]
pub struct Options {
    /// Arguments for `cargo test` (after a second `--`, for the test binaries)
    #[arg(last = true, value_name = "ARGS")]
    args: Vec<OsString>,
}

/// Sets up, then runs each step; the first that fails stops the rest.
pub fn run(workspace: &Workspace, options: &Options) -> anyhow::Result<()> {
    setup::run(workspace)?;
    Apt::system(&workspace.tools_dir().join("test"))
        .for_task("test")
        .ensure_installed(TEST_PACKAGES)?;

    let cargo = |args: &[&str]| {
        let mut cmd = workspace.cargo();
        cmd.args(args);
        cmd
    };
    // The eBPF crate only builds for the BPF target (through memtrace's build.rs).
    let mut test = cargo(&["test", "--workspace", "--exclude", EBPF]);
    // In CI, one failing test should not hide the others.
    if env::var_os("CI").is_some_and(|ci| ci == "true") {
        test.arg("--no-fail-fast");
    }
    test.args(&options.args).env(
        "MEMTRACE_BIN",
        workspace.target_dir().join("debug").join(MEMTRACE),
    );

    let mut ebpf_clippy = workspace.ebpf_cargo();
    ebpf_clippy.args([
        "clippy",
        "--target",
        "bpfel-unknown-none",
        "-Z",
        "build-std=core",
        "--",
        "-D",
        "warnings",
    ]);

    let steps: [(&str, Command); 5] = [
        ("format", cargo(&["fmt", "--all", "--", "--check"])),
        (
            "clippy",
            cargo(&[
                "clippy",
                "--workspace",
                "--exclude",
                EBPF,
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ]),
        ),
        ("clippy (eBPF)", ebpf_clippy),
        (
            "build",
            cargo(&["build", "-p", MEMTRACE, "-p", TESTS, "--bins"]),
        ),
        ("test", test),
    ];
    for (name, mut command) in steps {
        eprintln!("==> {name}");
        if name == "test" {
            run_and_tally(&mut command)?;
        } else {
            process::run(&mut command).with_context(|| format!("test step `{name}` failed"))?;
        }
    }
    // No input may crash the trace reader: a bounded fuzzing run on every CI run.
    eprintln!("==> fuzz");
    fuzz::run(workspace, &fuzz::Options { seconds: 60 }).context("test step `fuzz` failed")?;
    // The same scenarios on Debian's 6.1 and 6.12 kernels (cgroup v2, kprobe and fentry
    // allowed), which this host's kernel cannot show.
    eprintln!("==> vm-test");
    vm::run(workspace, &vm::Options::every_kernel()).context("test step `vm-test` failed")
}

/// Runs `cargo test`, passing its output through, and ends with one line that sums every test
/// binary's result: cargo's own last line is that of the last (often empty) doc-test run.
fn run_and_tally(command: &mut Command) -> anyhow::Result<()> {
    eprintln!("$ {}", process::Shown(command));
    let mut child = command
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|error| process::spawn_error(command, error))?;
    let stdout = child.stdout.take().context("cargo test's stdout")?;
    let mut tally = Tally::default();
    for line in BufReader::new(stdout).lines() {
        let line = line.context("reading cargo test's output")?;
        println!("{line}");
        tally.add(&line);
    }
    let status = child.wait().context("waiting for cargo test")?;
    println!("tests: {} passed, {} failed", tally.passed, tally.failed);
    if !status.success() {
        bail!(
            "test step `test` failed: `{}` exited with {status}",
            process::Shown(command)
        );
    }
    if tally.passed == 0 {
        bail!("test step `test` ran no test");
    }
    Ok(())
}

/// Sums libtest's `test result: ok. 23 passed; 0 failed; 0 ignored; …` lines.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Tally {
    pub(crate) passed: u64,
    pub(crate) failed: u64,
}

impl Tally {
    pub(crate) fn add(&mut self, line: &str) {
        let Some(rest) = line.strip_prefix("test result: ") else {
            return;
        };
        for part in rest.split(['.', ';']) {
            let mut words = part.split_whitespace();
            if let (Some(n), Some(what)) = (words.next(), words.next())
                && let Ok(n) = n.parse::<u64>()
            {
                match what {
                    "passed" => self.passed += n,
                    "failed" => self.failed += n,
                    _ => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Tally;

    #[test]
    fn sums_libtest_result_lines() {
        let mut tally = Tally::default();
        for line in [
            "test result: ok. 23 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.32s",
            "running 2 tests",
            "test result: FAILED. 1 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.79s",
            "test result: ok. 0 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s",
        ] {
            tally.add(line);
        }
        assert_eq!(
            tally,
            Tally {
                passed: 24,
                failed: 1
            }
        );
    }
}
