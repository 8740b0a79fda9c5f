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

/// aya's parse, and the functions memtrace's own BTF lookups found missing.
#[derive(Default)]
pub struct AyaBtf {
    parse: Parse,
    /// Functions the kernel's BTF has no `FUNC` of: aya would scan all ~130 000 types to say
    /// so, a few milliseconds each on the start-up's own thread.
    absent: Vec<&'static str>,
}

/// The parse, not started, running, or done (`Err`: why aya could not parse, one line).
#[derive(Default)]
enum Parse {
    #[default]
    NotStarted,
    Running(JoinHandle<(Result<Btf, String>, Duration)>),
    Done(Result<Btf, String>),
}

impl AyaBtf {
    /// Starts parsing on a thread of its own; `absent` are the functions the kernel lacks.
    #[must_use]
    pub fn in_background(absent: Vec<&'static str>) -> Self {
        Self {
            parse: Parse::Running(thread::spawn(|| timed(parse))),
            absent,
        }
    }

    /// aya's error for loading against `function` where the kernel's BTF has none, when
    /// memtrace's own lookups already know it has none.
    #[must_use]
    pub fn known_absent(&self, function: &str) -> Option<aya::BtfError> {
        self.absent
            .contains(&function)
            .then(|| aya::BtfError::UnknownBtfTypeName {
                type_name: function.to_owned(),
            })
    }

    /// The parsed BTF, parsing it now (or waiting for the thread) the first time; for `kind
    /// function`'s error message.
    ///
    /// # Errors
    ///
    /// Why aya could not parse the kernel's BTF.
    pub fn get(&mut self, kind: &str, function: &str) -> Result<&Btf, ProbeError> {
        let within = || format!("{kind} {function}");
        let parsed = match std::mem::take(&mut self.parse) {
            Parse::NotStarted => {
                let (parsed, took) = timed(parse);
                startup::within("aya btf", took, &within());
                parsed
            }
            Parse::Running(thread) => {
                let ((parsed, took), waited) = timed(|| {
                    thread
                        .join()
                        .unwrap_or_else(|_| (Err("its parser panicked".into()), Duration::ZERO))
                });
                startup::beside("aya btf", took);
                startup::within("aya btf wait", waited, &within());
                parsed
            }
            Parse::Done(parsed) => parsed,
        };
        self.parse = Parse::Done(parsed);
        let Parse::Done(parsed) = &self.parse else {
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
