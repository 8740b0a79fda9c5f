//! aya's own parse of the kernel's BTF, which loading an fentry or fexit program needs (the
//! function's BTF id; aya keeps its lookups to itself, so memtrace's btf-rs parse cannot serve).
//! Parsing all of it takes 15–30 ms, up to 100 ms on a busy machine, which start-up paid before
//! trying the first fentry strategy even where the kernel then refuses every one of them. It is
//! parsed on a thread of its own from the start instead, beside the rest of start-up, when a
//! strategy that needs it may be tried, and read through a memory map where sysfs allows one
//! (6.16+) rather than in the 1 300 page-sized reads `Btf::from_sys_fs` makes.
//!
//! What aya does with it is look the function's id up by name, and memtrace's own BTF index
//! already knows those ids: the background thread builds an aya `Btf` that holds only the
//! traced functions, each at its kernel id (placeholders fill the ids between). Parsing all of
//! it took 10–20 MB of memory at start-up in the VM guests (5.10, 6.12: the peak RSS was
//! 58–88 MB at 200 containers, issue 14), spread over small allocations that fragmented the
//! heap; the placeholders are one allocation of ~40 bytes a type, given back whole when freed.
//! `memtrace probes`, which tries a function of its own, still parses all of it.
//!
//! Where the kernel refuses fentry programs altogether (this host: `EPERM`), parsing is wasted
//! work that competes with start-up for the CPUs (15 ms of CPU time, 60–150 ms on a busy
//! machine, and 4 ms more to free it). The kernel is asked first, with the smallest fentry
//! program ([`bpf_sys::try_fentry`], well under a millisecond), and where it says no, every
//! fentry and fexit strategy is refused with that answer and nothing is parsed.

use std::{
    thread::{self, JoinHandle},
    time::Duration,
};

use aya::{Btf, Endianness};
use aya_obj::btf::{BtfType, Func, FuncLinkage};

use super::{KernelBtf, ProbeError, bpf_sys, btf, plan};
use crate::startup::{self, timed};

/// aya's parse, and the functions memtrace's own BTF lookups found missing.
#[derive(Default)]
pub struct AyaBtf {
    parse: Parse,
    /// Functions the kernel's BTF has no `FUNC` of: aya would scan all ~130 000 types to say
    /// so, a few milliseconds each on the start-up's own thread.
    absent: Vec<&'static str>,
}

/// The parse, not started, running, or done (`Err`: why aya could not parse, one line); or
/// not needed, the kernel refusing fentry programs (why, one line).
#[derive(Default)]
enum Parse {
    #[default]
    NotStarted,
    Running(JoinHandle<(Result<Btf, String>, Duration)>),
    Done(Result<Btf, String>),
    Refused(String),
}

impl AyaBtf {
    /// Asks the kernel whether it loads fentry programs, then starts parsing on a thread of its
    /// own where it does. `kernel` says which functions the kernel has.
    #[must_use]
    pub fn in_background(kernel: &KernelBtf) -> Self {
        let absent: Vec<&'static str> = plan::btf_traced_functions()
            .filter(|f| !kernel.has_function(f))
            .collect();
        let parse = match tracing_refused(kernel) {
            Some(why) => Parse::Refused(why),
            // Every function absent: each attempt is refused before aya is asked.
            None if plan::btf_traced_functions().all(|f| absent.contains(&f)) => Parse::NotStarted,
            None => {
                let functions: Vec<(&'static str, u32)> = plan::btf_traced_functions()
                    .filter_map(|f| Some((f, kernel.function_id(f)?)))
                    .collect();
                Parse::Running(thread::spawn(move || {
                    timed(|| Ok(functions_only(functions)))
                }))
            }
        };
        Self { parse, absent }
    }

    /// Why the kernel refuses every fentry and fexit program, when it was asked and said so.
    #[must_use]
    pub fn refused(&self) -> Option<&str> {
        match &self.parse {
            Parse::Refused(why) => Some(why),
            _ => None,
        }
    }

    /// Drops the parse on a thread of its own: freeing aya's types costs milliseconds.
    pub fn drop_beside(self) {
        if matches!(self.parse, Parse::Done(Ok(_))) {
            thread::spawn(move || drop(self));
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
            Parse::Refused(why) => {
                let error = ProbeError::Program {
                    what: within(),
                    reason: why.clone(),
                };
                self.parse = Parse::Refused(why);
                return Err(error);
            }
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

/// Why the kernel refuses fentry programs, asked with the smallest one on the first traced
/// function it has; `None` when it loads it, or when the answer does not tell (a refusal of
/// that one function, not of fentry programs: the strategies are then tried one by one).
fn tracing_refused(kernel: &KernelBtf) -> Option<String> {
    let (function, id) =
        plan::btf_traced_functions().find_map(|f| Some((f, kernel.function_id(f)?)))?;
    let (tried, took) = timed(|| bpf_sys::try_fentry(id));
    log::debug!("a test fentry program on {function}: {tried:?} in {took:?}");
    let error = tried.err()?;
    // EPERM, EACCES: not allowed (lockdown, an LSM, a sysctl); ENOTSUPP (524, the kernel's
    // own), EOPNOTSUPP: no BPF trampolines on this architecture or build.
    matches!(
        error.raw_os_error(),
        Some(libc::EPERM | libc::EACCES | libc::EOPNOTSUPP | 524)
    )
    .then(|| {
        format!(
            "this kernel refuses fentry and fexit programs (the smallest one, on {function}: \
             {error})"
        )
    })
}

/// An aya `Btf` in which each of `functions` is a `FUNC` at its kernel BTF id (all aya
/// reads to load an fentry or fexit program: `id_by_type_name_kind`), the other ids
/// placeholders of no kind.
fn functions_only(mut functions: Vec<(&'static str, u32)>) -> Btf {
    functions.sort_by_key(|&(_, id)| id);
    let mut btf = Btf::new();
    // Id 0 is `void`, already there.
    let mut next_id = 1;
    for (name, id) in functions {
        if id < next_id {
            continue;
        }
        for _ in next_id..id {
            btf.add_type(BtfType::Unknown);
        }
        let name_offset = btf.add_string(name);
        btf.add_type(BtfType::Func(Func::new(
            name_offset,
            0,
            FuncLinkage::Global,
        )));
        next_id = id + 1;
    }
    btf
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

#[cfg(test)]
mod tests {
    use aya_obj::btf::BtfKind;

    use super::*;

    #[test]
    fn only_the_functions_at_their_ids() {
        let btf = functions_only(vec![("try_charge_memcg", 7), ("oom_kill_process", 3)]);
        let id = |name| btf.id_by_type_name_kind(name, BtfKind::Func).ok();
        assert_eq!(id("oom_kill_process"), Some(3));
        assert_eq!(id("try_charge_memcg"), Some(7));
        assert_eq!(id("charge_memcg"), None);
    }

    /// The stand-in against the real parse, where this kernel's BTF can be read.
    #[test]
    fn the_ids_are_the_kernels() {
        let kernel = KernelBtf::from_sys().expect("the kernel's BTF");
        let functions: Vec<(&'static str, u32)> = plan::btf_traced_functions()
            .filter_map(|f| Some((f, kernel.function_id(f)?)))
            .collect();
        assert!(
            !functions.is_empty(),
            "no traced function in this kernel's BTF"
        );
        let full = parse().expect("aya parses the kernel's BTF");
        let stub = functions_only(functions.clone());
        for (name, _) in functions {
            assert_eq!(
                stub.id_by_type_name_kind(name, BtfKind::Func).ok(),
                full.id_by_type_name_kind(name, BtfKind::Func).ok(),
                "{name}"
            );
        }
    }
}
