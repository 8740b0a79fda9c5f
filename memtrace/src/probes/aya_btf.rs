//! aya's own parse of the kernel's BTF, which loading an fentry or fexit program needs (the
//! function's BTF id; aya keeps its lookups to itself, so memtrace's btf-rs parse cannot serve).
//! Parsing all of it takes 15–30 ms, up to 100 ms on a busy machine, which start-up paid before
//! trying the first fentry strategy even where the kernel then refuses every one of them. It is
//! parsed on a thread of its own from the start instead, beside the rest of start-up, when a
//! strategy that needs it may be tried, and read through a memory map where sysfs allows one
//! (6.16+) rather than in the 1 300 page-sized reads `Btf::from_sys_fs` makes.

use std::{
    thread::{self, JoinHandle},
    time::Duration,
};

use aya::{Btf, Endianness};

use super::{ProbeError, btf};
use crate::startup::{self, timed};

/// The parse, not started, running, or done (`Err`: why aya could not parse, one line).
#[derive(Default)]
pub enum AyaBtf {
    #[default]
    NotStarted,
    Parsing(JoinHandle<(Result<Btf, String>, Duration)>),
    Parsed(Result<Btf, String>),
}

impl AyaBtf {
    /// Starts parsing on a thread of its own.
    #[must_use]
    pub fn in_background() -> Self {
        Self::Parsing(thread::spawn(|| timed(parse)))
    }

    /// The parsed BTF, parsing it now (or waiting for the thread) the first time; for `kind
    /// function`'s error message.
    ///
    /// # Errors
    ///
    /// Why aya could not parse the kernel's BTF.
    pub fn get(&mut self, kind: &str, function: &str) -> Result<&Btf, ProbeError> {
        let within = || format!("{kind} {function}");
        let parsed = match std::mem::take(self) {
            Self::NotStarted => {
                let (parsed, took) = timed(parse);
                startup::within("aya btf", took, &within());
                parsed
            }
            Self::Parsing(thread) => {
                let ((parsed, took), waited) = timed(|| {
                    thread
                        .join()
                        .unwrap_or_else(|_| (Err("its parser panicked".into()), Duration::ZERO))
                });
                startup::beside("aya btf", took);
                startup::within("aya btf wait", waited, &within());
                parsed
            }
            Self::Parsed(parsed) => parsed,
        };
        *self = Self::Parsed(parsed);
        let Self::Parsed(parsed) = self else {
            unreachable!("just set")
        };
        parsed.as_ref().map_err(|e| ProbeError::Program {
            what: within(),
            reason: format!("kernel BTF: {e}"),
        })
    }
}

/// Parses `/sys/kernel/btf/vmlinux` as `Btf::from_sys_fs` does, through a memory map when
/// sysfs allows one.
fn parse() -> Result<Btf, String> {
    match btf::map_vmlinux() {
        Ok(map) => Btf::parse(&map, Endianness::default()),
        Err(e) => {
            log::debug!("cannot map {}: {e}; aya reads it", btf::VMLINUX_BTF);
            Btf::from_sys_fs()
        }
    }
    .map_err(|e| e.to_string())
}
