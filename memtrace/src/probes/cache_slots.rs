//! The page-cache programs' per-CPU slots (`CACHE_SLOTS`, one per half): each holds the last
//! file key a CPU counted and what it counted since, not yet in that half's per-file map (a
//! run of one file's events costs the programs a compare, not a hash lookup). A drain reads
//! the old half's slots into its sums and empties them, after the switch of halves and its
//! grace, when no program writes that half.

use std::collections::HashMap;

use aya::maps::{MapData, PerCpuArray, PerCpuValues};
use memtrace_common::{CacheDelta, CacheSlot, FileKey};

use super::{ProbeError, aggregate::map_error};

pub struct CacheSlots(pub(super) PerCpuArray<MapData, CacheSlot>);

impl CacheSlots {
    /// Adds the counts of `half`'s slots to `sums` (per-file sums of the same half's map, which
    /// holds every slot's key already) and empties the slots.
    ///
    /// # Errors
    ///
    /// When the map cannot be read or written.
    pub fn take(
        &mut self,
        half: usize,
        sums: &mut HashMap<FileKey, CacheDelta>,
        add: impl Fn(&CacheDelta, &CacheDelta) -> CacheDelta,
    ) -> Result<(), ProbeError> {
        let slots = self
            .0
            .get(&half_index(half), 0)
            .map_err(|source| map_error("CACHE_SLOTS", source))?;
        let mut used = false;
        for slot in slots.iter().filter(|slot| slot.key.memcg != 0) {
            used = true;
            let sum = sums.entry(slot.key).or_default();
            *sum = add(sum, &slot.delta);
        }
        if !used {
            return Ok(());
        }
        let empty = PerCpuValues::try_from(vec![CacheSlot::default(); slots.len()])
            .map_err(|source| map_error("CACHE_SLOTS", source.into()))?;
        self.0
            .set(half_index(half), empty, 0)
            .map_err(|source| map_error("CACHE_SLOTS", source))
    }
}

/// The array index of a half (0 or 1).
fn half_index(half: usize) -> u32 {
    u32::from(half == 1)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use aya::maps::{MapData, PerCpuArray, PerCpuValues};
    use memtrace_common::{CacheDelta, CacheSlot, FileKey};

    use super::{super::bpf_sys, CacheSlots};

    /// `enum bpf_map_type`.
    const PERCPU_ARRAY: u32 = 6;

    fn add(a: &CacheDelta, b: &CacheDelta) -> CacheDelta {
        CacheDelta {
            added_pages: a.added_pages + b.added_pages,
            removed_pages: a.removed_pages + b.removed_pages,
            refault_pages: a.refault_pages + b.refault_pages,
        }
    }

    /// What CPU `cpu` holds in its slot of half 1: CPU 0's slot is empty, the others count
    /// under one key each, CPUs 1 and 2 under the same one.
    fn slot(cpu: u64) -> CacheSlot {
        if cpu == 0 {
            return CacheSlot::default();
        }
        CacheSlot {
            key: FileKey {
                memcg: 0x1000,
                file: 0x2000 + cpu.max(2),
            },
            delta: CacheDelta {
                added_pages: cpu,
                removed_pages: 1,
                refault_pages: 0,
            },
        }
    }

    #[test]
    fn a_drain_adds_its_halfs_slots_to_the_file_sums_and_empties_them() {
        let cpus = u64::from(aya::util::nr_cpus().expect("possible CPUs").get());
        let spec = bpf_sys::MapSpec {
            map_type: PERCPU_ARRAY,
            key_size: 4,
            value_size: u32::try_from(size_of::<CacheSlot>()).expect("a small value"),
            max_entries: 2,
            map_flags: 0,
            name: "memtrace_slots".into(),
        };
        let fd = bpf_sys::create_map(&spec).expect("root can create a per-CPU array");
        let data = MapData::from_fd(fd).expect("a map");
        let map = aya::maps::Map::from_map_data(data).expect("a map aya knows");
        let mut slots = CacheSlots(PerCpuArray::try_from(map).expect("a per-CPU array"));
        let values: Vec<CacheSlot> = (0..cpus).map(slot).collect();
        let values = PerCpuValues::try_from(values).expect("one per CPU");
        slots.0.set(1, values, 0).expect("the slots of half 1");
        // The map's own count of one slot key: the slot's counts add to it.
        let in_map = FileKey {
            memcg: 0x1000,
            file: 0x2002,
        };
        let mut sums = HashMap::from([(
            in_map,
            CacheDelta {
                added_pages: 10,
                removed_pages: 0,
                refault_pages: 1,
            },
        )]);
        slots.take(0, &mut sums, add).expect("half 0");
        assert_eq!(sums.len(), 1, "half 0's slots are empty");
        slots.take(1, &mut sums, add).expect("half 1");
        let mut expected = HashMap::from([(
            in_map,
            CacheDelta {
                added_pages: 10,
                removed_pages: 0,
                refault_pages: 1,
            },
        )]);
        for cpu in 1..cpus {
            let CacheSlot { key, delta } = slot(cpu);
            let sum = expected.entry(key).or_default();
            *sum = add(sum, &delta);
        }
        assert_eq!(sums, expected);
        let left = slots.0.get(&1, 0).expect("half 1");
        assert!(
            left.iter().all(|slot| *slot == CacheSlot::default()),
            "the slots emptied"
        );
        slots.take(1, &mut sums, add).expect("half 1 again");
        assert_eq!(sums, expected, "an emptied slot adds nothing");
    }
}
