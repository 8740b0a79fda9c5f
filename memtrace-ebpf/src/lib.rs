#![no_std]
// Library target so memtrace can name this crate as a build-dependency.
