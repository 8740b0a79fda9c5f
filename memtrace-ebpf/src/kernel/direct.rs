//! Kernel structs read in place (6.2+, where the loader enabled it: [`memtrace_common::direct`]).

use core::arch::asm;

use memtrace_common::direct::PLACEHOLDER_HELPER;

/// `ptr` cast by `bpf_rdonly_cast()` to the kernel type whose BTF id is `btf_id`: the verifier
/// then lets the program load its members directly (fault-safe loads, checked against the
/// type's layout). Only on the path the programs take when the loader patched the call in:
/// elsewhere the placeholder is a call the kernel refuses.
#[inline(always)]
pub fn rdonly_cast(ptr: *const u8, btf_id: u32) -> *const u8 {
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

/// The `T` at `base + offset` of a pointer [`rdonly_cast`] returned. A volatile load, so that
/// the compiler keeps each member's own size and place (the verifier checks both against the
/// type); a bad address reads as zero.
///
/// # Safety
///
/// `base` must come from [`rdonly_cast`], and `offset` must be a constant the verifier knows
/// (a member's offset from [`super::OFFSETS`]).
#[inline(always)]
pub unsafe fn load<T: Copy>(base: *const u8, offset: u32) -> T {
    // SAFETY: the JIT makes the load fault-safe, as the caller's cast allows.
    unsafe { core::ptr::read_volatile(base.wrapping_add(offset as usize).cast::<T>()) }
}

/// The address in the pointer member at `cast + offset`, as a number. The verifier types a
/// loaded pointer member as a pointer, and refuses the bit tests the programs make on it (a
/// folio's `mapping` tag); the difference of two pointers it takes as a number (a privileged
/// program may see addresses): so, the member less the cast pointer, plus the address that was
/// cast (`raw`, the same value).
///
/// # Safety
///
/// As [`load`]; `raw` is the address [`rdonly_cast`] was given.
#[inline(always)]
pub unsafe fn load_address(cast: *const u8, raw: *const u8, offset: u32) -> u64 {
    // SAFETY: as the caller vouches.
    let member = unsafe { load::<u64>(cast, offset) };
    let past_cast: u64;
    // SAFETY: a subtraction of registers.
    unsafe {
        asm!(
            "{member} -= {cast}",
            member = inout(reg) member => past_cast,
            cast = in(reg) cast as u64,
            options(pure, nomem, nostack),
        );
    }
    past_cast.wrapping_add(raw as u64)
}
