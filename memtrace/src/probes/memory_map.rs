//! Measures where the kernel maps memory (KASLR moves the `struct page` array and the direct
//! map at boot, and kallsyms lists neither on most kernels) for the `raw_tp` slab strategy,
//! which finds each object's slab as `virt_to_slab()` does. Three calibration programs watch
//! memtrace's own allocations for a moment (`memtrace-ebpf`'s `probes/memmap.rs`):
//!
//! - raw and classic `kmem:mm_page_alloc` pair a `struct page *` with its pfn:
//!   `vmemmap_base = page - pfn × sizeof(struct page)`;
//! - a large `kmalloc()` is whole pages: `page_offset_base = address - pfn × PAGE_SIZE`
//!   (raw `kmalloc`, and `kmalloc_node` where the kernel has it: before 6.1).
//!
//! Each value is the one most samples agree on (the two `mm_page_alloc` programs may run in
//! either order, so half the pairs are noise), and needs [`MIN_VOTES`] of them.

use std::{collections::HashMap, fs, path::Path};

use aya::{
    Ebpf,
    maps::{Array, RingBuf},
    programs::{RawTracePoint, TracePoint},
};
use memtrace_common::{
    KernelOffsets, MemoryMap, MemoryMapSample,
    names::{
        MEMMAP_SAMPLES_MAP, MEMORY_MAP_MAP, PROG_MEMMAP_KMALLOC, PROG_MEMMAP_KMALLOC_NODE,
        PROG_MEMMAP_PAGE, PROG_MEMMAP_PFN,
    },
};

use super::{ProbeError, plan, privileges, typed_map_mut};

/// The slab programs compute with 4 KiB pages.
const PAGE_SIZE: u64 = 4096;
/// Samples that must agree on each value.
const MIN_VOTES: usize = 3;
/// Large `kmalloc()`s made to be watched: `listxattr()` allocates its buffer with `kvmalloc()`.
const TRIGGERS: usize = 16;
const TRIGGER_BYTES: usize = 32 * 1024;
/// `pfn`'s place in the classic tracepoint's record, which the program assumes.
const PFN_FIELD: &str = "field:unsigned long pfn;\toffset:8;\tsize:8;";

/// Measures the memory map and stores it in `MEMORY_MAP` for the slab programs.
///
/// # Errors
///
/// Why the map could not be measured, as one line: the `raw_tp` slab strategy is then refused.
pub fn install(ebpf: &mut Ebpf, offsets: &KernelOffsets) -> Result<(), ProbeError> {
    let refused = |reason: String| ProbeError::Program {
        what: "measuring the kernel's memory map".into(),
        reason,
    };
    if offsets.slab_obj_exts == 0 || offsets.page_size == 0 {
        return Err(refused(
            "kernel BTF has no slab obj_cgroup vector (struct slab obj_exts or memcg_data, struct page memcg_data or obj_cgroups; RUST_LOG=debug says which)"
                .into(),
        ));
    }
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if u64::try_from(page).ok() != Some(PAGE_SIZE) {
        return Err(refused(format!(
            "pages of {page} bytes; only 4096 is supported"
        )));
    }
    privileges::ensure_tracefs()?;
    check_pfn_field()?;

    let samples = watch(ebpf)?;
    let map = solve(&samples, u64::from(offsets.page_size)).map_err(refused)?;
    log::debug!(
        "memory map: vmemmap_base {:#x}, page_offset_base {:#x} ({} samples)",
        map.vmemmap_base,
        map.page_offset_base,
        samples.len()
    );
    let mut array: Array<_, MemoryMap> = typed_map_mut(ebpf, MEMORY_MAP_MAP)?;
    array.set(0, &map, 0).map_err(|source| ProbeError::Map {
        what: MEMORY_MAP_MAP.into(),
        source,
    })
}

/// The calibration programs read `pfn` at a fixed offset; a kernel that moved it is refused.
fn check_pfn_field() -> Result<(), ProbeError> {
    let format = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"]
        .iter()
        .map(|dir| Path::new(dir).join("events/kmem/mm_page_alloc/format"))
        .find_map(|path| fs::read_to_string(path).ok())
        .ok_or_else(|| ProbeError::Program {
            what: "tracepoint kmem:mm_page_alloc".into(),
            reason: "its format is not in tracefs".into(),
        })?;
    if format
        .lines()
        .any(|line| line.trim().starts_with(PFN_FIELD))
    {
        Ok(())
    } else {
        Err(ProbeError::Program {
            what: "tracepoint kmem:mm_page_alloc".into(),
            reason: format!("its record has no {PFN_FIELD:?}"),
        })
    }
}

/// Attaches the calibration programs, makes the allocations they watch, detaches them and
/// returns what they saw.
fn watch(ebpf: &mut Ebpf) -> Result<Vec<MemoryMapSample>, ProbeError> {
    let error = |source| super::program_error("tracepoint kmem:mm_page_alloc".into(), &source);
    let tp: &mut TracePoint = ebpf
        .program_mut(PROG_MEMMAP_PFN)
        .ok_or(ProbeError::Missing(PROG_MEMMAP_PFN))?
        .try_into()
        .map_err(error)?;
    tp.load().map_err(error)?;
    let pfn_link = tp.attach("kmem", "mm_page_alloc").map_err(error)?;
    let pfn_link = tp.take_link(pfn_link).map_err(error)?;
    // Whatever fails from here on, dropping the links taken so far detaches them: nothing of
    // the calibration stays attached.
    let mut raw_links = Vec::new();
    for (program, tracepoint) in [
        (PROG_MEMMAP_PAGE, "mm_page_alloc"),
        (PROG_MEMMAP_KMALLOC, "kmalloc"),
    ] {
        let link = plan::attach_raw(ebpf, program, tracepoint)?;
        let error = |source| super::program_error(format!("raw tracepoint {tracepoint}"), &source);
        let p: &mut RawTracePoint = ebpf
            .program_mut(program)
            .ok_or(ProbeError::Missing(program))?
            .try_into()
            .map_err(error)?;
        raw_links.push(p.take_link(link).map_err(error)?);
    }
    // Kernels before 6.1 trace `kmalloc_node()` apart, the trigger's allocations among them;
    // later ones have no such tracepoint, and need none.
    match plan::attach_raw(ebpf, PROG_MEMMAP_KMALLOC_NODE, "kmalloc_node") {
        Ok(link) => {
            let error =
                |source| super::program_error("raw tracepoint kmalloc_node".into(), &source);
            let p: &mut RawTracePoint = ebpf
                .program_mut(PROG_MEMMAP_KMALLOC_NODE)
                .ok_or(ProbeError::Missing(PROG_MEMMAP_KMALLOC_NODE))?
                .try_into()
                .map_err(error)?;
            raw_links.push(p.take_link(link).map_err(error)?);
        }
        Err(e) => log::debug!("memory map: no kmalloc_node tracepoint to watch: {e}"),
    }

    trigger();

    // Detaching waits for the kernel's grace periods (tens of milliseconds): the links are
    // dropped on a thread of their own while start-up goes on; the samples are all in already.
    std::thread::spawn(move || drop((pfn_link, raw_links)));

    let mut ring: RingBuf<_> = typed_map_mut(ebpf, MEMMAP_SAMPLES_MAP)?;
    let mut samples = Vec::new();
    while let Some(item) = ring.next() {
        if item.len() >= size_of::<MemoryMapSample>() {
            // SAFETY: the programs write whole `MemoryMapSample`s; the length is checked and
            // the read is unaligned.
            samples.push(unsafe { item.as_ptr().cast::<MemoryMapSample>().read_unaligned() });
        }
    }
    Ok(samples)
}

/// Large `kmalloc()`s in this thread: `listxattr("/")` with a big buffer allocates it with
/// `kvmalloc()`, which takes whole pages from `kmalloc()` first. Read-only; the result is not
/// needed.
fn trigger() {
    let mut buffer = vec![0_u8; TRIGGER_BYTES];
    for _ in 0..TRIGGERS {
        // SAFETY: the path is NUL-terminated and the buffer is valid for its length.
        unsafe { libc::listxattr(c"/".as_ptr(), buffer.as_mut_ptr().cast(), buffer.len()) };
    }
}

/// The values most samples agree on.
fn solve(samples: &[MemoryMapSample], page_struct: u64) -> Result<MemoryMap, String> {
    let vmemmap = mode(
        samples
            .iter()
            .filter(|s| s.kind == MemoryMapSample::PAGE_PFN)
            .map(|s| s.page.wrapping_sub(s.value.wrapping_mul(page_struct))),
    )
    .ok_or_else(|| {
        format!(
            "fewer than {MIN_VOTES} page allocations agreed on where struct pages are \
             ({} samples)",
            samples.len()
        )
    })?;
    let direct = mode(
        samples
            .iter()
            .filter(|s| s.kind == MemoryMapSample::PAGE_ADDRESS)
            .filter_map(|s| {
                let offset = s.page.wrapping_sub(vmemmap);
                (offset % page_struct == 0)
                    .then(|| s.value.wrapping_sub(offset / page_struct * PAGE_SIZE))
            }),
    )
    .ok_or_else(|| {
        format!(
            "fewer than {MIN_VOTES} large kmalloc()s agreed on where the direct map is \
             ({} samples)",
            samples.len()
        )
    })?;
    Ok(MemoryMap {
        vmemmap_base: vmemmap,
        page_offset_base: direct,
    })
}

/// The most frequent value, if at least [`MIN_VOTES`] samples give it.
fn mode(values: impl Iterator<Item = u64>) -> Option<u64> {
    let mut votes: HashMap<u64, usize> = HashMap::new();
    for value in values {
        *votes.entry(value).or_default() += 1;
    }
    votes
        .into_iter()
        .filter(|&(_, n)| n >= MIN_VOTES)
        .max_by_key(|&(value, n)| (n, value))
        .map(|(value, _)| value)
}

#[cfg(test)]
mod tests {
    use super::*;

    const VMEMMAP: u64 = 0xffff_ea00_0000_0000;
    const DIRECT: u64 = 0xffff_8880_0000_0000;

    fn pair(pfn: u64) -> MemoryMapSample {
        MemoryMapSample {
            kind: MemoryMapSample::PAGE_PFN,
            page: VMEMMAP + pfn * 64,
            value: pfn,
        }
    }

    fn address(pfn: u64) -> MemoryMapSample {
        MemoryMapSample {
            kind: MemoryMapSample::PAGE_ADDRESS,
            page: VMEMMAP + pfn * 64,
            value: DIRECT + pfn * PAGE_SIZE,
        }
    }

    #[test]
    fn agrees_despite_pairs_taken_in_the_wrong_order() {
        let mut samples = Vec::new();
        for pfn in [0x1234, 0x9_8765, 0x42, 0x7_0000] {
            samples.push(pair(pfn));
            // The other program ran first: this page with the previous pfn.
            samples.push(MemoryMapSample {
                value: pfn + 17,
                ..pair(pfn)
            });
            samples.push(address(pfn + 3));
        }
        let map = solve(&samples, 64).expect("enough samples");
        assert_eq!(
            map,
            MemoryMap {
                vmemmap_base: VMEMMAP,
                page_offset_base: DIRECT
            }
        );
    }

    #[test]
    fn too_few_samples_is_an_error_not_a_guess() {
        let samples = [pair(1), pair(2), address(3), address(4), address(5)];
        let err = solve(&samples, 64).expect_err("two pairs are not enough");
        assert!(err.contains("struct pages"), "{err}");
        let samples = [pair(1), pair(2), pair(9), address(3), address(4)];
        let err = solve(&samples, 64).expect_err("two addresses are not enough");
        assert!(err.contains("direct map"), "{err}");
    }
}
