//! One module per probe family.

mod capability;
mod lifecycle;
mod oom;
mod pagecache;
mod reclaim;
