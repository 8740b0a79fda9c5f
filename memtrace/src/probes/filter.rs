//! The memcgs the user's filter selects, as the kernel side sees them: hot-path programs skip
//! every other memcg before touching a map, so filtered-out containers cost little.

use aya::maps::{HashMap, MapData};

use super::ProbeError;

pub struct KernelFilter {
    memcgs: HashMap<MapData, u64, u8>,
}

impl KernelFilter {
    pub(super) fn new(memcgs: HashMap<MapData, u64, u8>) -> Self {
        Self { memcgs }
    }

    /// Lets the programs count `memcg_id`.
    ///
    /// # Errors
    ///
    /// When the map is full (65 536 memcgs) or cannot be written.
    pub fn allow(&mut self, memcg_id: u64) -> Result<(), ProbeError> {
        self.memcgs
            .insert(&memcg_id, &1, 0)
            .map_err(|source| ProbeError::Map {
                what: memtrace_common::names::FILTER_MAP.into(),
                source,
            })
    }

    /// Stops the programs counting `memcg_id` (the kernel freed it).
    ///
    /// # Errors
    ///
    /// When the map cannot be written.
    pub fn forget(&mut self, memcg_id: u64) -> Result<(), ProbeError> {
        match self.memcgs.remove(&memcg_id) {
            Ok(()) => Ok(()),
            // Not in the map: the filter never selected it.
            Err(aya::maps::MapError::SyscallError(e))
                if e.io_error.raw_os_error() == Some(libc::ENOENT) =>
            {
                Ok(())
            }
            Err(source) => Err(ProbeError::Map {
                what: memtrace_common::names::FILTER_MAP.into(),
                source,
            }),
        }
    }
}
