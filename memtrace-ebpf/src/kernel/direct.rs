//! Kernel memory read in place (6.2+, where the loader enabled it: [`memtrace_common::direct`]).

use core::arch::asm;

use memtrace_common::direct::PLACEHOLDER_HELPER;

use super::{Words, offsets};

/// In-place reads, where the loader enabled them. The verifier knows the value tested
/// (read-only data), so it checks only the path this selects, and removes the other.
#[inline(always)]
pub fn in_place() -> Option<InPlace> {
    let btf_id = offsets().in_place_btf_id;
    (btf_id != 0).then_some(InPlace { btf_id })
}

/// Kernel memory loaded in place: each read one instruction, which the JIT makes fault-safe (an
/// address it cannot read gives zero).
///
/// The address is cast by `bpf_rdonly_cast()` to a struct whose first member is a 64-bit number
/// (the loader's choice, `struct folio`'s `flags`: `btf_id`), and loaded from at offset 0: the
/// verifier takes what such a pointer holds as a number, where a member it knows to be a
/// pointer would stay a pointer, on which it refuses the bit tests the programs make.
#[derive(Clone, Copy)]
pub struct InPlace {
    btf_id: u32,
}

impl InPlace {
    /// The `T` at kernel address `base + offset`.
    #[inline(always)]
    pub fn read<T: Copy>(self, base: *const u8, offset: u32) -> T {
        let cast = rdonly_cast(base.wrapping_add(offset as usize), self.btf_id);
        // SAFETY: the JIT makes the load fault-safe, as the cast allows; a volatile load, so
        // that the compiler keeps its size (the verifier checks it against the struct).
        unsafe { core::ptr::read_volatile(cast.cast::<T>()) }
    }
}

impl Words for InPlace {
    #[inline(always)]
    fn u64_at(&self, base: *const u8, offset: u32) -> Option<u64> {
        Some(self.read(base, offset))
    }

    #[inline(always)]
    fn u32_at(&self, base: *const u8, offset: u32) -> Option<u32> {
        Some(self.read(base, offset))
    }

    #[inline(always)]
    fn word_at(&self, addr: *const u8) -> Option<u64> {
        Some(self.read(addr, 0))
    }
}

/// `ptr` cast by `bpf_rdonly_cast()` to the kernel type whose BTF id is `btf_id`. Elsewhere than
/// where the loader patched it in, the placeholder is a call the kernel refuses.
#[inline(always)]
fn rdonly_cast(ptr: *const u8, btf_id: u32) -> *const u8 {
    let cast: *const u8;
    // SAFETY: the kfunc returns its first argument (an address, not dereferenced), typed; it
    // reads and writes no memory and clobbers the caller-saved registers of a call, as
    // declared.
    unsafe {
        asm!(
            "call {helper}",
            helper = const PLACEHOLDER_HELPER,
            inout("r1") ptr as u64 => _,
            inout("r2") u64::from(btf_id) => _,
            lateout("r0") cast,
            lateout("r3") _,
            lateout("r4") _,
            lateout("r5") _,
            options(nostack, nomem, pure),
        );
    }
    cast
}
