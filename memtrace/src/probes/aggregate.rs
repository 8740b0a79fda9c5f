//! Draining the kernel's double-buffered aggregation maps.
//!
//! The programs count into the half `AGG_ACTIVE[0]` names. To drain, userspace points them at
//! the other half, waits for programs already running on the old half to finish, then reads
//! and empties it: no increment is lost between the read and the delete.

use std::{collections::HashMap, time::Duration};

use aya::maps::{Array, MapData, PerCpuHashMap};
use memtrace_common::{CacheDelta, FileKey, InodeId};

use super::ProbeError;

/// Programs run to completion in microseconds; this is far longer.
const SWITCH_GRACE: Duration = Duration::from_millis(2);

/// Page-cache deltas of one interval.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct CacheDrain {
    pub by_memcg: HashMap<u64, CacheDelta>,
    /// (memcg id, the file's inode id when the kernel could read it, delta).
    pub by_file: Vec<(u64, Option<InodeId>, CacheDelta)>,
}

pub struct Aggregates {
    active: Array<MapData, u32>,
    half: u32,
    cache_memcg: [PerCpuHashMap<MapData, u64, CacheDelta>; 2],
    cache_file: [PerCpuHashMap<MapData, FileKey, CacheDelta>; 2],
    inode_ids: aya::maps::HashMap<MapData, u64, InodeId>,
}

impl Aggregates {
    pub(super) fn new(
        active: Array<MapData, u32>,
        cache_memcg: [PerCpuHashMap<MapData, u64, CacheDelta>; 2],
        cache_file: [PerCpuHashMap<MapData, FileKey, CacheDelta>; 2],
        inode_ids: aya::maps::HashMap<MapData, u64, InodeId>,
    ) -> Self {
        Self {
            active,
            half: 0,
            cache_memcg,
            cache_file,
            inode_ids,
        }
    }

    /// Switches the programs to the other half and returns what the old half counted.
    ///
    /// # Errors
    ///
    /// When a map cannot be read or written.
    pub fn drain_cache(&mut self) -> Result<CacheDrain, ProbeError> {
        let old = self.half as usize;
        self.half ^= 1;
        self.active
            .set(0, &self.half, 0)
            .map_err(|source| map_error("AGG_ACTIVE", source))?;
        std::thread::sleep(SWITCH_GRACE);
        let by_file = drain(&mut self.cache_file[old], "CACHE_FILE")?
            .into_iter()
            .map(|(key, delta)| {
                let id = self.inode_ids.get(&key.inode, 0).ok();
                (key.memcg_id, id, delta)
            })
            .collect();
        Ok(CacheDrain {
            by_memcg: drain(&mut self.cache_memcg[old], "CACHE_MEMCG")?,
            by_file,
        })
    }
}

fn drain<K: aya::Pod + Eq + std::hash::Hash>(
    map: &mut PerCpuHashMap<MapData, K, CacheDelta>,
    name: &str,
) -> Result<HashMap<K, CacheDelta>, ProbeError> {
    let mut sums = HashMap::new();
    for entry in map.iter() {
        let (key, per_cpu) = entry.map_err(|source| map_error(name, source))?;
        let sum = per_cpu
            .iter()
            .fold(CacheDelta::default(), |acc, d| CacheDelta {
                added_pages: acc.added_pages + d.added_pages,
                removed_pages: acc.removed_pages + d.removed_pages,
            });
        sums.insert(key, sum);
    }
    for key in sums.keys() {
        // Gone already is fine: nothing else deletes, but be tolerant.
        let _ = map.remove(key);
    }
    Ok(sums)
}

fn map_error(name: &str, source: aya::maps::MapError) -> ProbeError {
    ProbeError::Map {
        what: name.to_owned(),
        source,
    }
}
