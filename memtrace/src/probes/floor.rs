//! The bench's floors: memtrace-ebpf's empty programs on the hot-path raw tracepoints, attached
//! alone (what attaching anything to those tracepoints costs a workload), or its count-floor
//! programs (one per-CPU hash count per event: the least any per-key aggregation costs).

use aya::{Ebpf, EbpfLoader};
use memtrace_common::names::{COUNT_FLOOR_PROGRAMS, FLOOR_PROGRAMS};

use super::{EBPF_OBJECT, ProbeError, plan, privileges, support};

/// Loads the object and attaches every floor program (the count floor's when `count`) whose
/// tracepoint this kernel has (`mod_memcg_lruvec_state` is 6.16+). Returns the object, which owns the links, and the
/// tracepoints attached.
///
/// # Errors
///
/// Not root, or a program that could not be loaded or attached on a tracepoint the kernel has.
pub fn attach(count: bool) -> Result<(Ebpf, Vec<&'static str>), ProbeError> {
    privileges::require_root()?;
    support::check()?;
    privileges::raise_memlock();
    let mut ebpf = EbpfLoader::new()
        .load(EBPF_OBJECT)
        .map_err(ProbeError::Load)?;
    let mut attached = Vec::new();
    let programs = if count {
        COUNT_FLOOR_PROGRAMS
    } else {
        FLOOR_PROGRAMS
    };
    for (program, tracepoint) in programs {
        match plan::attach_raw(&mut ebpf, program, tracepoint) {
            Ok(_) => attached.push(tracepoint),
            Err(e) if !tracepoint_exists(tracepoint) => {
                log::debug!("floor: no tracepoint {tracepoint}: {e}");
            }
            Err(e) => return Err(e),
        }
    }
    Ok((ebpf, attached))
}

/// Whether the kernel has the tracepoint at all: its BTF names every raw tracepoint's
/// prototype as `btf_trace_<name>`.
fn tracepoint_exists(tracepoint: &str) -> bool {
    super::KernelBtf::from_sys().is_ok_and(|btf| btf.has_type(&format!("btf_trace_{tracepoint}")))
}
