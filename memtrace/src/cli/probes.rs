//! `memtrace probes`: what this kernel allows and what memtrace attaches.

use std::process::ExitCode;

use crate::{
    attribution::MemoryHierarchy,
    probes::{AttachOptions, KernelBtf, Probes, btf::VMLINUX_BTF, capability},
    startup::Timeline,
};

/// Show the kernel, its BTF, which program types it allows (tested by loading) and what each
/// probe point attaches.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  memtrace probes")]
pub struct Args {}

pub fn run(_args: &Args) -> anyhow::Result<ExitCode> {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    println!("kernel:          {}", release.trim());
    let btf = KernelBtf::from_sys();
    match &btf {
        Ok(_) => println!("BTF:             present ({VMLINUX_BTF})"),
        Err(e) => println!("BTF:             {e}"),
    }
    match MemoryHierarchy::discover() {
        Ok(h) => println!("memory cgroup:   {:?} at {}", h.version, h.root.display()),
        Err(e) => println!("memory cgroup:   {e}"),
    }
    if let Ok(btf) = &btf {
        match btf.kernel_offsets() {
            Ok(_) => println!("struct offsets:  all resolved from BTF"),
            Err(e) => println!("struct offsets:  {e}"),
        }
    }

    println!("\nprogram types (loaded and attached to test):");
    for cap in capability::probe_all()? {
        match &cap.result {
            Ok(()) => println!("  {:<15} yes  ({})", cap.program_type, cap.target),
            Err(why) => println!("  {:<15} no   ({}: {why})", cap.program_type, cap.target),
        }
    }

    println!(
        "\nprobe points (strategies tried best first; --probe-strategy POINT=NAME forces one):"
    );
    match Probes::attach(
        &AttachOptions::default(),
        &mut Timeline::new(std::time::Instant::now()),
    ) {
        Ok(probes) => {
            for outcome in &probes.outcomes {
                let events: Vec<&str> = outcome.point.events().iter().map(|e| e.name()).collect();
                println!("  {} (events: {})", outcome.point, events.join(", "));
                for attempt in &outcome.attempts {
                    let attempt_name = attempt.to_string();
                    match &attempt.result {
                        Ok(()) => println!("    {attempt_name:<70} chosen"),
                        Err(why) => println!("    {attempt_name:<70} refused: {why}"),
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            println!("  cannot attach: {e}");
            Ok(ExitCode::FAILURE)
        }
    }
}
