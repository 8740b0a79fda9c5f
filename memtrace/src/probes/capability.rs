//! What program types the running kernel allows, learned by loading and attaching the smallest
//! program of each type (never by kernel version: distributions patch and configure kernels in
//! ways their version does not tell). The programs are attached with the same mechanism as the
//! probe points (`plan::attach`), so a verdict here is what a strategy would meet.

use aya::EbpfLoader;
use memtrace_common::{
    KernelOffsets,
    names::{
        CAP_PROBE_FUNCTION, PROG_CAP_FENTRY, PROG_CAP_KPROBE, PROG_CAP_RAW_TRACEPOINT,
        PROG_CAP_TRACEPOINT,
    },
};

use super::{
    EBPF_OBJECT, ProbeError,
    aya_btf::AyaBtf,
    deferred_maps,
    plan::{self, Attach},
    privileges, support,
};

/// One program type and whether the kernel let us load and attach it.
#[derive(Debug)]
pub struct Capability {
    /// e.g. `kprobe`
    pub program_type: &'static str,
    /// What the check attached to.
    pub target: String,
    /// `Err` carries the kernel's (or aya's) reason, one line.
    pub result: Result<(), String>,
}

const CHECKS: [(&str, &str, Attach); 4] = [
    (
        "tracepoint",
        "oom:mark_victim",
        Attach::Tracepoint {
            program: PROG_CAP_TRACEPOINT,
            category: "oom",
            name: "mark_victim",
        },
    ),
    (
        "raw_tracepoint",
        "mark_victim",
        Attach::RawTracepoints(&[(PROG_CAP_RAW_TRACEPOINT, "mark_victim")]),
    ),
    (
        "kprobe",
        CAP_PROBE_FUNCTION,
        Attach::Kprobe {
            program: PROG_CAP_KPROBE,
            function: CAP_PROBE_FUNCTION,
        },
    ),
    (
        "fentry",
        CAP_PROBE_FUNCTION,
        Attach::Fentry {
            program: PROG_CAP_FENTRY,
            function: CAP_PROBE_FUNCTION,
        },
    ),
];

/// Tries each program type in turn. Everything attached here is detached on return.
///
/// # Errors
///
/// When the object itself cannot be loaded (not root, broken build).
pub fn probe_all() -> Result<Vec<Capability>, ProbeError> {
    privileges::require_root()?;
    support::check()?;
    privileges::raise_memlock();
    let mut loader = EbpfLoader::new();
    deferred_maps::shrink(&mut loader);
    let mut ebpf = loader.load(EBPF_OBJECT).map_err(ProbeError::Load)?;
    let mut btf = AyaBtf::default();
    Ok(CHECKS
        .iter()
        .map(|(program_type, target, attach)| Capability {
            program_type,
            target: (*target).to_owned(),
            result: plan::attach(&mut ebpf, attach, &mut btf, &KernelOffsets::ZERO)
                .map_err(|e| e.to_string()),
        })
        .collect())
}
