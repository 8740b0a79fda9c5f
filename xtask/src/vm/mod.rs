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
mod modules;
mod payload;
mod qemu;

use std::{
    env,
    fmt::Write as _,
    fs,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use clap::Args;

use self::{
    apt::Apt,
    initramfs::KernelModules,
    kernel::{Image, Kernel},
    qemu::{Accel, Guest, Outcome, Report},
};
use crate::{setup, test::Tally, workspace::Workspace};

#[derive(Args)]
pub struct Options {
    /// Kernel to boot: 6.1 (Debian 12's own) or 6.12; repeat or separate with commas for several
    /// [default: all]
    #[arg(
        long = "kernel",
        value_name = "VERSION",
        value_enum,
        value_delimiter = ','
    )]
    kernels: Vec<Kernel>,

    /// After a failure, go on with the remaining test binaries and kernels (always on when
    /// CI=true)
    #[arg(long)]
    keep_going: bool,

    /// Seconds each kernel may take to boot and run every test before it is stopped
    #[arg(long, value_name = "SECONDS", default_value_t = 600)]
    timeout: u64,

    /// Arguments for every test binary in the guests, e.g. a test name to filter on
    #[arg(last = true, value_name = "TEST_FILTER")]
    test_args: Vec<String>,
}

impl Options {
    /// Every kernel, default timeout, no filter: what `cargo xtask test` runs.
    pub fn every_kernel() -> Self {
        Self {
            kernels: Vec::new(),
            keep_going: false,
            timeout: 600,
            test_args: Vec::new(),
        }
    }
}

/// Sets up, installs QEMU, fetches the kernels, builds the static payload and boots each kernel
/// in turn; fails unless every kernel booted and passed every test.
pub fn run(workspace: &Workspace, options: &Options) -> anyhow::Result<()> {
    setup::run(workspace)?;
    let cache = workspace.tools_dir().join("vm");
    apt::ensure_packages(&cache)?;

    let apt = Apt::system(&cache);
    let images = options
        .kernels()
        .into_iter()
        .map(|kernel| kernel::prepare(kernel, &apt, &cache))
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

    let accel = Accel::detect();
    eprintln!("vm-test: booting with {}", accel.name());
    let mut reports: Vec<Report> = Vec::new();
    for image in &images {
        let report = boot(image, &initramfs, &out_dir, accel, options.timeout)?;
        let passed = report.outcome == Outcome::Passed;
        reports.push(report);
        if !passed && !keep_going {
            break;
        }
    }
    summarize(&images, &reports, options.timeout)
}

impl Options {
    /// The kernels asked for, each once, in the order given; all of them if none was.
    fn kernels(&self) -> Vec<Kernel> {
        if self.kernels.is_empty() {
            return Kernel::ALL.to_vec();
        }
        let mut chosen = Vec::new();
        for kernel in &self.kernels {
            if !chosen.contains(kernel) {
                chosen.push(*kernel);
            }
        }
        chosen
    }
}

/// Boots `image` and says how it went when it failed; fails only when QEMU cannot start.
fn boot(
    image: &Image,
    initramfs: &Path,
    out_dir: &Path,
    accel: Accel,
    timeout: u64,
) -> anyhow::Result<Report> {
    let label = image.kernel.label();
    let console_log = out_dir.join(format!("console-{label}.log"));
    let report = qemu::boot(&Guest {
        label,
        vmlinux: &image.vmlinux,
        initramfs,
        console_log: &console_log,
        timeout: Duration::from_secs(timeout),
        accel,
    })
    .with_context(|| format!("vm-test step `boot kernel {label}` failed"))?;
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

/// Prints a line per kernel and the summed test counts; fails unless every kernel passed and
/// some test ran.
fn summarize(images: &[Image], reports: &[Report], timeout: u64) -> anyhow::Result<()> {
    let mut total = Tally::default();
    let mut failed = Vec::new();
    println!("vm-test summary:");
    for (i, image) in images.iter().enumerate() {
        let label = image.kernel.label();
        let Some(report) = reports.get(i) else {
            println!("  {label:<5} not run: an earlier kernel failed (--keep-going runs it)");
            failed.push(format!("{label} (not run)"));
            continue;
        };
        total.passed += report.transcript.tally.passed;
        total.failed += report.transcript.tally.failed;
        println!("  {}", summary_line(image, report, timeout));
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

/// One line saying how a kernel did, and how long each part took.
fn summary_line(image: &Image, report: &Report, timeout: u64) -> String {
    let mut line = format!(
        "{:<5} {} {}: {}: {} passed, {} failed",
        image.kernel.label(),
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
