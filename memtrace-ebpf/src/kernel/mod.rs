//! The kernel as the programs see it: typed pointers to kernel structs (`Task`, `Memcg`,
//! `Folio`, `KmemCache`, …) whose methods are the only code that knows struct offsets, and the
//! arguments of each hooked tracepoint and function, named once.
//!
//! aya cannot emit CO-RE relocations: the loader resolves every offset (and the kernel constants
//! BTF gives) from the running kernel's BTF into the [`OFFSETS`] global, which only this module
//! reads. A wrapper is a kernel address of one struct type; it may be null or stale, as every
//! read goes through `bpf_probe_read_kernel`, which checks it, or, on the hot paths where the
//! kernel allows it (6.2+), is a fault-safe load in place ([`direct`]). Everything here is
//! `#[inline(always)]`: BPF-to-BPF calls cost, and an outlined helper once broke the combined
//! 512-byte stack limit of the 6.1 verifier.

mod cgroup;
mod direct;
mod file;
pub mod functions;
mod memcg;
mod mm;
mod oom;
mod page;
mod slab;
mod task;
pub mod tracepoints;

use core::mem::MaybeUninit;

use aya_ebpf::{
    Global,
    helpers::{bpf_probe_read_kernel, generated},
};
pub use cgroup::{Cgroup, KernfsNode};
pub use file::{AddressSpace, Inode};
pub use memcg::{Memcg, ObjCgroup, StatItem};
use memtrace_common::KernelOffsets;
pub use oom::OomControl;
pub use page::{Folio, FolioCharge};
pub use slab::{Gfp, KmemCache, SlabOwner};
pub use task::Task;

/// Struct offsets and kernel constants, from BTF (the loader overrides it before loading).
#[unsafe(no_mangle)]
pub static OFFSETS: Global<KernelOffsets> = Global::new(KernelOffsets::ZERO);

/// [`OFFSETS`] by reference. `Global::load()` copies the whole struct on every event (a
/// volatile read, which the compiler may not trim): here each method reads only the members it
/// uses, where it uses them.
#[inline(always)]
fn offsets() -> &'static KernelOffsets {
    // SAFETY: `Global<T>` is transparent over `T`, and the loader initialised it. The address
    // goes through a volatile read so that the compiler cannot fold the loads into the
    // initial value the loader overrides.
    unsafe { &*core::ptr::read_volatile(&(&raw const OFFSETS).cast::<KernelOffsets>()) }
}

/// Reads a `T` at `base + offset` in kernel memory; the helper checks the address (a bad one is
/// an error, never a fault).
#[inline(always)]
fn read_at<T>(base: *const u8, offset: u32) -> Result<T, i64> {
    // SAFETY: the helper validates the address.
    unsafe { bpf_probe_read_kernel(base.wrapping_add(offset as usize).cast::<T>()) }
        .map_err(i64::from)
}

/// Declares a typed pointer to a kernel struct.
macro_rules! kernel_ptr {
    ($(#[$doc:meta])* $name:ident, $c_type:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy)]
        #[repr(transparent)]
        pub struct $name(*const u8);

        #[allow(dead_code, reason = "not every wrapper needs every conversion")]
        impl $name {
            #[doc = concat!("A `", $c_type, "` at `ptr`.")]
            ///
            /// # Safety
            ///
            #[doc = concat!("`ptr` must be a kernel `", $c_type, "` pointer (it may be null or")]
            /// stale: every read is checked by the helper).
            #[inline(always)]
            pub unsafe fn from_ptr(ptr: *const u8) -> Self {
                Self(ptr)
            }

            /// Likewise, from an address.
            ///
            /// # Safety
            ///
            /// As [`Self::from_ptr`].
            #[inline(always)]
            pub unsafe fn from_addr(addr: u64) -> Self {
                Self(addr as *const u8)
            }

            /// The null pointer: "none" where the kernel's own API passes one.
            pub const NULL: Self = Self(core::ptr::null());

            #[inline(always)]
            pub fn is_null(self) -> bool {
                self.0.is_null()
            }

            /// `None` when null.
            #[inline(always)]
            pub fn non_null(self) -> Option<Self> {
                (!self.0.is_null()).then_some(self)
            }

            /// The address: a map key, or what userspace is told.
            #[inline(always)]
            pub fn addr(self) -> u64 {
                self.0 as u64
            }

            /// The member at `offset`.
            #[inline(always)]
            fn read<T>(self, offset: u32) -> Result<T, i64> {
                $crate::kernel::read_at(self.0, offset)
            }
        }
    };
}
use kernel_ptr;

/// A NUL-terminated string in kernel memory (`const char *`).
#[derive(Clone, Copy)]
pub struct KernelStr(*const u8);

impl KernelStr {
    /// Copies the string into `buf` (NUL-terminated, truncated to fit); its length without
    /// the NUL (`buf.len() - 1`: it may have been cut).
    ///
    /// # Errors
    ///
    /// When the address cannot be read.
    #[inline(always)]
    pub fn read_into(self, buf: &mut [u8]) -> Result<usize, i64> {
        // SAFETY: the helper checks the address and writes at most `buf.len()` bytes.
        unsafe { aya_ebpf::helpers::bpf_probe_read_kernel_str_bytes(self.0, buf) }
            .map(<[u8]>::len)
            .map_err(i64::from)
    }
}

/// The first `8 × N` bytes of a kernel struct, read with one helper call: hot paths take
/// several members of a struct for the price of one read.
struct Block<const N: usize>([u64; N]);

impl<const N: usize> Block<N> {
    /// `base` is a kernel pointer (possibly null or stale: the helper checks). Read into
    /// `place`, the caller's stack, and used there: a block returned by value (an `Option` of
    /// it) is copied word by word once more, on every event.
    #[inline(always)]
    fn read(base: *const u8, place: &mut MaybeUninit<Self>) -> Option<&Self> {
        #[expect(clippy::cast_possible_truncation, reason = "a block is 8 × N < 4 GiB")]
        let size = size_of::<Self>() as u32;
        // SAFETY: the helper validates the address; a bad one yields an error, never a fault,
        // and it writes at most `size` bytes to `place`.
        let failed = unsafe {
            generated::bpf_probe_read_kernel(place.as_mut_ptr().cast(), size, base.cast())
        };
        // SAFETY: a successful read wrote every byte of the block.
        (failed == 0).then(|| unsafe { place.assume_init_ref() })
    }
}

/// Words of kernel memory: from a [`Block`] read through the helper, or loaded in place
/// ([`direct::InPlace`]).
trait Words {
    /// The `u64` member at byte `offset` of `base`.
    fn u64_at(&self, base: *const u8, offset: u32) -> Option<u64>;

    /// The `u32` member at byte `offset` of `base`.
    fn u32_at(&self, base: *const u8, offset: u32) -> Option<u32>;

    /// The `u64` at `addr`, anywhere.
    fn word_at(&self, addr: *const u8) -> Option<u64>;
}

impl<const N: usize> Words for Block<N> {
    /// The `u64` member at byte `offset` of `base`, the pointer the block was read from: from
    /// the block when it holds it, else read on its own.
    #[inline(always)]
    fn u64_at(&self, base: *const u8, offset: u32) -> Option<u64> {
        match self.0.get(offset as usize / 8) {
            Some(&word) if offset % 8 == 0 => Some(word),
            _ => read_at(base, offset).ok(),
        }
    }

    /// The `u32` member at byte `offset`, likewise.
    #[inline(always)]
    fn u32_at(&self, base: *const u8, offset: u32) -> Option<u32> {
        match self.0.get(offset as usize / 8) {
            // The low half: BPF is little-endian.
            #[expect(
                clippy::cast_possible_truncation,
                reason = "the low half is the member"
            )]
            Some(&word) if offset % 8 == 0 => Some(word as u32),
            Some(&word) if offset % 8 == 4 => Some((word >> 32) as u32),
            _ => read_at(base, offset).ok(),
        }
    }

    #[inline(always)]
    fn word_at(&self, addr: *const u8) -> Option<u64> {
        read_at(addr, 0).ok()
    }
}
