//! Maps and globals shared by all programs. Their names are the constants in
//! `memtrace_common::names`, which must match the symbol names below.

use aya_ebpf::{
    Global,
    macros::map,
    maps::{PerCpuArray, RingBuf},
};
use memtrace_common::{KernelOffsets, LostKind};

/// 256 KiB: OOM kills are rare; the loader may resize it (`map_max_entries`).
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(256 * 1024, 0);

#[map]
pub static LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(LostKind::COUNT, 0);

#[unsafe(no_mangle)]
pub static OFFSETS: Global<KernelOffsets> = Global::new(KernelOffsets::ZERO);

/// Counts one event of `kind` that could not be reported. Per-CPU, so no atomics are needed.
#[inline(always)]
pub fn count_lost(kind: LostKind) {
    if let Some(counter) = LOST.get_ptr_mut(kind as u32) {
        // SAFETY: the pointer comes from a successful map lookup of this CPU's slot, which stays
        // valid for the whole program run; nothing else on this CPU runs concurrently with us.
        unsafe { *counter += 1 };
    }
}
