//! One module per probe family.

mod capability;
mod charge;
mod floor;
mod lifecycle;
mod memmap;
mod oom;
mod pagecache;
mod reclaim;
mod refault;
mod slab;
mod trycharge;
