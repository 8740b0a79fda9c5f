//! The bench's floor: memtrace-ebpf's empty programs on the hot-path raw tracepoints, attached
//! alone. What attaching anything to those tracepoints costs a workload.

use aya::{Ebpf, EbpfLoader};
use memtrace_common::names::FLOOR_PROGRAMS;

use super::{EBPF_OBJECT, ProbeError, plan, privileges, support};

/// Loads the object and attaches every floor program whose tracepoint this kernel has
/// (`mod_memcg_lruvec_state` is 6.16+). Returns the object, which owns the links, and the
/// tracepoints attached.
///
/// # Errors
///
/// Not root, or a program that could not be loaded or attached on a tracepoint the kernel has.
pub fn attach() -> Result<(Ebpf, Vec<&'static str>), ProbeError> {
    privileges::require_root()?;
    support::check()?;
    privileges::raise_memlock();
    let mut ebpf = EbpfLoader::new()
        .load(EBPF_OBJECT)
        .map_err(ProbeError::Load)?;
    let mut attached = Vec::new();
    for (program, tracepoint) in FLOOR_PROGRAMS {
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
