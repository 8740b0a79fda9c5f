//! One module per probe family.

mod capability;
mod oom;
