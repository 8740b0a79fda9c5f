//! The ABI between memtrace's eBPF programs and its loader.
//!
//! Everything here is `#[repr(C)]`, made of fixed-width integers with explicit padding, and
//! checked by a size assertion, because the kernel side and the user side are compiled by
//! different compilers for different targets and must agree byte for byte.
//!
//! With the `user` feature (std), it also has what memtrace and its xtask both read of the
//! host: the memory-cgroup hierarchy ([`cgroup`]).
#![no_std]

#[cfg(feature = "user")]
extern crate std;

#[cfg(feature = "user")]
pub mod cgroup;

pub mod aggregate;
pub mod direct;
pub mod event;
pub mod names;
pub mod offsets;

pub use aggregate::{
    CacheDelta, CacheName, CacheSlot, ChargeDelta, FileKey, FilePath, IgnoredCallers, InodeId,
    MemoryMap, MemoryMapSample, ReclaimBegin, SlabDelta, SlabKey, SlabObject, TryChargeArgs,
};
pub use event::{
    CgroupRecord, ChargeFailRecord, EventHeader, EventKind, LostKind, OomKillRecord, ReclaimRecord,
};
pub use offsets::KernelOffsets;

/// `aya::Pod` for types that derive [`bytemuck::Pod`], which proves at compile time what aya's
/// trait asks (no padding, every bit pattern valid); aya's maps need their own marker.
#[macro_export]
macro_rules! aya_pod {
    ($($t:ty),+ $(,)?) => {
        $(
            // SAFETY: `$t` derives `bytemuck::Pod`, which rejects at compile time any padding
            // and any field for which not every bit pattern is valid.
            #[cfg(feature = "user")]
            unsafe impl aya::Pod for $t {}
        )+
    };
}
