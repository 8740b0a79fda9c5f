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
