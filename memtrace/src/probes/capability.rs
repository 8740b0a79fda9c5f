//! What program types the running kernel allows, learned by loading and attaching the smallest
//! program of each type (never by kernel version: distributions patch and configure kernels in
//! ways their version does not tell).

use std::fmt::Write as _;

use aya::{
    Btf, Ebpf, EbpfLoader,
    programs::{FEntry, KProbe, Program, RawTracePoint, TracePoint},
};
use memtrace_common::names::{
    CAP_PROBE_FUNCTION, PROG_CAP_FENTRY, PROG_CAP_KPROBE, PROG_CAP_RAW_TRACEPOINT,
    PROG_CAP_TRACEPOINT,
};

use super::{EBPF_OBJECT, ProbeError, privileges};

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

/// Tries each program type in turn. Everything attached here is detached on return.
///
/// # Errors
///
/// When the object itself cannot be loaded (not root, broken build).
pub fn probe_all() -> Result<Vec<Capability>, ProbeError> {
    privileges::require_root()?;
    privileges::raise_memlock();
    let mut ebpf = EbpfLoader::new()
        .load(EBPF_OBJECT)
        .map_err(ProbeError::Load)?;
    Ok(vec![
        check(
            &mut ebpf,
            "tracepoint",
            PROG_CAP_TRACEPOINT,
            "oom:mark_victim",
            |p| {
                privileges::ensure_tracefs().map_err(|e| e.to_string())?;
                let p: &mut TracePoint = p.try_into().map_err(|e| chain(&e))?;
                p.load().map_err(|e| chain(&e))?;
                p.attach("oom", "mark_victim").map_err(|e| chain(&e))?;
                Ok(())
            },
        ),
        check(
            &mut ebpf,
            "raw_tracepoint",
            PROG_CAP_RAW_TRACEPOINT,
            "mark_victim",
            |p| {
                let p: &mut RawTracePoint = p.try_into().map_err(|e| chain(&e))?;
                p.load().map_err(|e| chain(&e))?;
                p.attach("mark_victim").map_err(|e| chain(&e))?;
                Ok(())
            },
        ),
        check(
            &mut ebpf,
            "kprobe",
            PROG_CAP_KPROBE,
            CAP_PROBE_FUNCTION,
            |p| {
                let p: &mut KProbe = p.try_into().map_err(|e| chain(&e))?;
                p.load().map_err(|e| chain(&e))?;
                p.attach(CAP_PROBE_FUNCTION, 0).map_err(|e| chain(&e))?;
                Ok(())
            },
        ),
        check(
            &mut ebpf,
            "fentry",
            PROG_CAP_FENTRY,
            CAP_PROBE_FUNCTION,
            |p| {
                let btf = Btf::from_sys_fs().map_err(|e| chain(&e))?;
                let p: &mut FEntry = p.try_into().map_err(|e| chain(&e))?;
                p.load(CAP_PROBE_FUNCTION, &btf).map_err(|e| chain(&e))?;
                p.attach().map_err(|e| chain(&e))?;
                Ok(())
            },
        ),
    ])
}

fn check(
    ebpf: &mut Ebpf,
    program_type: &'static str,
    program: &str,
    target: &str,
    attach: impl FnOnce(&mut Program) -> Result<(), String>,
) -> Capability {
    let result = match ebpf.program_mut(program) {
        Some(p) => attach(p),
        None => Err(format!("program {program} missing from the eBPF object")),
    };
    Capability {
        program_type,
        target: target.to_owned(),
        result,
    }
}

/// An error and its sources on one line, without the verifier log's many lines.
fn chain(err: &dyn std::error::Error) -> String {
    let mut s = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        let _ = write!(s, ": {e}");
        source = e.source();
    }
    s.lines().next().unwrap_or_default().to_owned()
}
