//! Maps that only fallback strategies use, created with one entry when the object loads and at
//! their full size only when a strategy that uses them is about to load its programs. aya
//! creates every map of the object at load, whether a program that uses it is ever loaded or
//! not; `SLAB_OBJECTS` alone (524 288 buckets, for the `tracked` slab strategy, tried only
//! where the kernel's memory map cannot be measured) cost 5–10 ms of start-up here, 20 ms and
//! more on a busy machine, and the kprobe strategies' `*_PENDING` maps half a millisecond each
//! on kernels that refuse kprobes anyway.
//!
//! A program names its maps by file descriptor, written into its instructions when aya loads
//! the object and read by the kernel when the program itself is loaded. Growing a map is
//! therefore creating it anew at full size and putting it under the descriptor of the small
//! one (`dup3`), before the first program that uses it is loaded; the small map is freed.

use std::os::fd::{AsFd as _, AsRawFd as _, OwnedFd};

use aya::{Ebpf, EbpfLoader, maps::Map};
use memtrace_common::{
    aggregate::{PENDING_ENTRIES, SLAB_OBJECT_ENTRIES},
    names::{
        CHARGE_PENDING_MAP, PROG_CHARGE_KPROBE, PROG_CHARGE_KRETPROBE,
        PROG_SLAB_CACHE_ALLOC_FEXIT_TRACKED, PROG_SLAB_CACHE_ALLOC_NODE_FEXIT_TRACKED,
        PROG_SLAB_CACHE_ALLOC_TRACKED, PROG_SLAB_CACHE_FREE_FENTRY_TRACKED,
        PROG_SLAB_CACHE_FREE_TRACKED, PROG_SLAB_KFREE_TRACKED, PROG_SLAB_KMALLOC_NODE_TRACKED,
        PROG_SLAB_KMALLOC_TRACKED, PROG_TRY_CHARGE_KPROBE, PROG_TRY_CHARGE_KRETPROBE,
        SLAB_OBJECTS_MAP, TRY_CHARGE_PENDING_MAP,
    },
};

use super::{
    ProbeError,
    bpf_sys::{self, MapSpec},
};

/// `enum bpf_map_type`: every deferred map is a hash map (aya's `Map::HashMap`).
const BPF_MAP_TYPE_HASH: u32 = 1;

/// One deferred map: its name, its full size, and every program that uses it (a test checks
/// the list against the object).
struct Deferred {
    map: &'static str,
    entries: u32,
    programs: &'static [&'static str],
}

const DEFERRED: [Deferred; 3] = [
    Deferred {
        map: SLAB_OBJECTS_MAP,
        entries: SLAB_OBJECT_ENTRIES,
        programs: &[
            PROG_SLAB_CACHE_ALLOC_TRACKED,
            PROG_SLAB_KMALLOC_TRACKED,
            PROG_SLAB_CACHE_FREE_TRACKED,
            PROG_SLAB_KFREE_TRACKED,
            PROG_SLAB_CACHE_ALLOC_FEXIT_TRACKED,
            PROG_SLAB_CACHE_ALLOC_NODE_FEXIT_TRACKED,
            PROG_SLAB_CACHE_FREE_FENTRY_TRACKED,
            PROG_SLAB_KMALLOC_NODE_TRACKED,
        ],
    },
    Deferred {
        map: CHARGE_PENDING_MAP,
        entries: PENDING_ENTRIES,
        programs: &[PROG_CHARGE_KPROBE, PROG_CHARGE_KRETPROBE],
    },
    Deferred {
        map: TRY_CHARGE_PENDING_MAP,
        entries: PENDING_ENTRIES,
        programs: &[PROG_TRY_CHARGE_KPROBE, PROG_TRY_CHARGE_KRETPROBE],
    },
];

/// Has the loader create the deferred maps with one entry.
pub fn shrink(loader: &mut EbpfLoader<'_>) {
    for deferred in &DEFERRED {
        loader.map_max_entries(deferred.map, 1);
    }
}

/// Gives every deferred map that one of `programs` uses its full size, unless it has it
/// already. Call it before loading any of them.
///
/// # Errors
///
/// When the kernel refuses the full-size map (the strategy is then refused with that reason).
pub fn grow_for<'a>(
    ebpf: &Ebpf,
    programs: impl IntoIterator<Item = &'a str>,
) -> Result<(), ProbeError> {
    let programs: Vec<&str> = programs.into_iter().collect();
    for deferred in DEFERRED
        .iter()
        .filter(|d| programs.iter().any(|p| d.programs.contains(p)))
    {
        grow(ebpf, deferred)?;
    }
    Ok(())
}

fn grow(ebpf: &Ebpf, deferred: &Deferred) -> Result<(), ProbeError> {
    let failed = |reason: String| ProbeError::Program {
        what: format!("creating map {}", deferred.map),
        reason,
    };
    let Some(Map::HashMap(small)) = ebpf.map(deferred.map) else {
        return Err(ProbeError::Missing(deferred.map));
    };
    let info = small
        .info()
        .map_err(|e| failed(format!("reading the small one: {e}")))?;
    if info.max_entries() >= deferred.entries {
        return Ok(());
    }
    let (full, took) = crate::startup::timed(|| {
        bpf_sys::create_map(&MapSpec {
            map_type: BPF_MAP_TYPE_HASH,
            key_size: info.key_size(),
            value_size: info.value_size(),
            max_entries: deferred.entries,
            map_flags: info.map_flags(),
            name: deferred.map.to_owned(),
        })
    });
    let full = full.map_err(|e| failed(e.to_string()))?;
    log::debug!(
        "map {} grown to {} entries in {took:?}",
        deferred.map,
        deferred.entries
    );
    put_in_place(small, &full).map_err(|e| failed(format!("putting it in place: {e}")))
}

/// Makes `small`'s descriptor refer to `full` (`dup3`). The descriptor stays owned by aya's
/// `MapData`, which closes it once: from here on it refers to the full-size map (the small
/// map's last reference is dropped, which frees it), of the same type, key and value, so every
/// program loaded later with this descriptor in its instructions gets the full-size map and
/// aya's handle keeps working. The callers do it before any program that uses the map loads.
pub(super) fn put_in_place(small: &aya::maps::MapData, full: &OwnedFd) -> std::io::Result<()> {
    let target = small.fd().as_fd().as_raw_fd();
    // SAFETY: both descriptors are open for the call; see above for what the target becomes.
    let duplicated = unsafe { libc::dup3(full.as_raw_fd(), target, libc::O_CLOEXEC) };
    if duplicated < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet, HashSet};

    use aya_obj::Object;

    use super::*;
    use crate::probes::EBPF_OBJECT;

    /// `BPF_LD | BPF_IMM | BPF_DW`, and the source registers that mark a map's descriptor
    /// (`BPF_PSEUDO_MAP_FD`) or a value in it (`BPF_PSEUDO_MAP_VALUE`) in its immediate.
    const LD_IMM64: u8 = 0x18;
    const PSEUDO_MAP: [u8; 2] = [1, 2];

    /// Which programs of the object use each map: the object relocated as aya relocates it at
    /// load, with a made-up descriptor per map, then every program's instructions (its
    /// subprograms linked in) searched for them.
    fn programs_by_map() -> BTreeMap<String, BTreeSet<String>> {
        let mut object = Object::parse(EBPF_OBJECT).expect("memtrace's object parses");
        let maps: Vec<(String, aya_obj::Map)> = object
            .maps
            .iter()
            .map(|(name, map)| (name.clone(), map.clone()))
            .collect();
        let fd_of = |i: usize| 1000 + i32::try_from(i).expect("a few maps");
        let text_sections: HashSet<usize> = object
            .functions
            .keys()
            .map(|(section, _)| *section)
            .collect();
        object
            .relocate_maps(
                maps.iter()
                    .enumerate()
                    .map(|(i, (name, map))| (name.as_str(), fd_of(i), map)),
                &text_sections,
            )
            .expect("maps relocate");
        object
            .relocate_calls(&text_sections)
            .expect("calls relocate");
        let mut by_map: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (name, program) in &object.programs {
            let function = &object.functions[&program.function_key()];
            for insn in &function.instructions {
                if insn.code == LD_IMM64 && PSEUDO_MAP.contains(&insn.src_reg()) {
                    let map = maps
                        .iter()
                        .enumerate()
                        .find(|&(i, _)| fd_of(i) == insn.imm)
                        .map(|(_, (map, _))| map.clone());
                    if let Some(map) = map {
                        by_map.entry(map).or_default().insert(name.clone());
                    }
                }
            }
        }
        by_map
    }

    #[test]
    fn each_deferred_map_lists_every_program_that_uses_it() {
        let by_map = programs_by_map();
        assert!(
            by_map.get("EVENTS").is_some_and(|p| p.len() > 3),
            "the search finds the ring buffer's many users: {by_map:#?}"
        );
        for deferred in &DEFERRED {
            let listed: BTreeSet<String> =
                deferred.programs.iter().map(|p| (*p).to_owned()).collect();
            assert_eq!(
                by_map.get(deferred.map),
                Some(&listed),
                "the programs that use {}",
                deferred.map
            );
        }
    }

    #[test]
    fn a_deferred_map_is_small_until_a_program_that_uses_it_is_about_to_load() {
        crate::probes::privileges::raise_memlock();
        let mut loader = EbpfLoader::new();
        shrink(&mut loader);
        let ebpf = loader.load(EBPF_OBJECT).expect("the object loads");
        let entries = |name: &str| {
            let Some(Map::HashMap(map)) = ebpf.map(name) else {
                panic!("{name} is a hash map");
            };
            map.info().expect("info").max_entries()
        };
        for deferred in &DEFERRED {
            assert_eq!(entries(deferred.map), 1, "{}", deferred.map);
        }
        grow_for(&ebpf, ["cgroup_mkdir", PROG_SLAB_KFREE_TRACKED]).expect("grows");
        assert_eq!(entries(SLAB_OBJECTS_MAP), SLAB_OBJECT_ENTRIES);
        assert_eq!(entries(CHARGE_PENDING_MAP), 1, "no program of it");
        grow_for(&ebpf, [PROG_SLAB_CACHE_ALLOC_TRACKED]).expect("already grown: nothing to do");
        assert_eq!(entries(SLAB_OBJECTS_MAP), SLAB_OBJECT_ENTRIES);
    }
}
