//! The kernel's own accounting of BPF programs, through aya: [`aya::sys::enable_stats`] makes the
//! kernel sum each program's run time and run count (as `kernel.bpf_stats_enabled=1` would, but
//! only for as long as its file is open, so a bench that dies cannot leave it on), and
//! [`aya::programs::loaded_programs`] reads them. Which programs a tracer holds comes from its
//! `/proc/PID/fdinfo`; which tracepoint each is attached to from `bpftool perf -j`, which asks
//! the kernel with `BPF_TASK_FD_QUERY` for every file of every process — aya has no API for that.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    fs,
    io::ErrorKind,
    os::fd::OwnedFd,
    process::Command,
};

use anyhow::Context as _;
use aya::{
    programs::{ProgramError, loaded_programs},
    sys::{Stats, SyscallError, enable_stats},
};
use serde::Deserialize;

use crate::process;

/// The kernel's BPF run-time statistics, on for as long as this lives.
pub struct StatsEnabled {
    _fd: OwnedFd,
}

impl StatsEnabled {
    pub fn enable() -> anyhow::Result<Self> {
        let fd = enable_stats(Stats::RunTime)
            .context("enabling the kernel's BPF run-time statistics (BPF_ENABLE_STATS)")?;
        Ok(Self { _fd: fd })
    }
}

/// A loaded program and what the kernel has counted of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Program {
    pub id: u32,
    pub name: String,
    /// Zero until stats are enabled for the first time.
    pub run_time_ns: u64,
    pub run_cnt: u64,
}

/// An attachment as `bpftool perf -j` describes it: a tracepoint (or raw tracepoint) with the
/// program on it, and the process whose file holds it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Attachment {
    pub pid: u32,
    pub prog_id: u32,
    #[serde(default)]
    pub tracepoint: Option<String>,
}

pub fn parse_attachments(json: &str) -> anyhow::Result<Vec<Attachment>> {
    // bpftool prints nothing at all, not `[]`, when nothing is attached.
    if json.trim().is_empty() {
        return Ok(Vec::new());
    }
    serde_json::from_str(json).context("parsing `bpftool perf -j`")
}

/// Every loaded program.
pub fn programs() -> anyhow::Result<Vec<Program>> {
    let mut programs = Vec::new();
    for info in loaded_programs() {
        let info = match info {
            Ok(info) => info,
            // Unloaded between the kernel listing its id and aya opening it.
            Err(ProgramError::SyscallError(SyscallError { io_error, .. }))
                if io_error.kind() == ErrorKind::NotFound =>
            {
                continue;
            }
            Err(error) => return Err(error).context("listing BPF programs"),
        };
        programs.push(Program {
            id: info.id(),
            name: String::from_utf8_lossy(info.name()).into_owned(),
            run_time_ns: u64::try_from(info.run_time().as_nanos()).unwrap_or(u64::MAX),
            run_cnt: info.run_count(),
        });
    }
    Ok(programs)
}

/// The ids of the programs `pid` holds a file of: the program's own or a link to it. The
/// kernel's `/proc/PID/fdinfo` entry for either has a `prog_id:` line.
pub fn held_by(pid: u32) -> anyhow::Result<BTreeSet<u32>> {
    let dir = format!("/proc/{pid}/fdinfo");
    let mut held = BTreeSet::new();
    for entry in fs::read_dir(&dir).with_context(|| format!("listing {dir}"))? {
        let path = entry.with_context(|| format!("listing {dir}"))?.path();
        // A file closed since the listing has no entry any more.
        let Ok(fdinfo) = fs::read_to_string(&path) else {
            continue;
        };
        held.extend(
            fdinfo
                .lines()
                .filter_map(|line| line.strip_prefix("prog_id:")?.trim().parse::<u32>().ok()),
        );
    }
    Ok(held)
}

/// Every program attached through a file some process holds.
pub fn attachments() -> anyhow::Result<Vec<Attachment>> {
    let json = process::output(Command::new("bpftool").args(["perf", "-j"]))
        .context("listing BPF attachments")?;
    parse_attachments(&json)
}

/// Names of memtrace's programs that run only while it starts (`memmap_page`, …).
const STARTUP_ONLY_PREFIX: &str = "memmap_";

/// A program of one tracer, by its name and what it is attached to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProgramKey {
    pub name: String,
    /// The tracepoint(s), `?` when bpftool could not say.
    pub attach: String,
}

/// The programs a tracer holds (`held`) that were not loaded before it started, with where each
/// is attached.
pub fn programs_of(
    held: &BTreeSet<u32>,
    before: &[Program],
    now: &[Program],
    attachments: &[Attachment],
) -> BTreeMap<u32, ProgramKey> {
    let known: Vec<u32> = before.iter().map(|program| program.id).collect();
    now.iter()
        .filter(|program| !known.contains(&program.id))
        .filter(|program| held.contains(&program.id))
        // memtrace's start-up calibration: unloaded before it says it is attached, but the
        // kernel frees them after a grace period, so a listing may still show them.
        .filter(|program| !program.name.starts_with(STARTUP_ONLY_PREFIX))
        .map(|program| {
            let mut tracepoints: Vec<&str> = attachments
                .iter()
                .filter(|a| a.prog_id == program.id)
                .filter_map(|a| a.tracepoint.as_deref())
                .collect();
            tracepoints.sort_unstable();
            tracepoints.dedup();
            let attach = if tracepoints.is_empty() {
                "?".to_owned()
            } else {
                tracepoints.join("+")
            };
            let key = ProgramKey {
                name: program.name.clone(),
                attach,
            };
            (program.id, key)
        })
        .collect()
}

/// Run time and count, summed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub run_time_ns: u64,
    pub run_cnt: u64,
}

/// The run time and count of the programs in `ids`, at one moment.
pub fn usage(programs: &[Program], ids: &BTreeMap<u32, ProgramKey>) -> HashMap<u32, Usage> {
    programs
        .iter()
        .filter(|program| ids.contains_key(&program.id))
        .map(|program| {
            let usage = Usage {
                run_time_ns: program.run_time_ns,
                run_cnt: program.run_cnt,
            };
            (program.id, usage)
        })
        .collect()
}

/// What each program used between two moments; fails when one was unloaded in between.
pub fn delta(
    before: &HashMap<u32, Usage>,
    after: &HashMap<u32, Usage>,
    ids: &BTreeMap<u32, ProgramKey>,
) -> anyhow::Result<Vec<(ProgramKey, Usage)>> {
    ids.iter()
        .map(|(id, key)| {
            let (Some(before), Some(after)) = (before.get(id), after.get(id)) else {
                anyhow::bail!(
                    "BPF program {id} ({}) was unloaded during the run",
                    key.name
                );
            };
            let usage = Usage {
                run_time_ns: after.run_time_ns.saturating_sub(before.run_time_ns),
                run_cnt: after.run_cnt.saturating_sub(before.run_cnt),
            };
            Ok((key.clone(), usage))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet, HashMap};

    use super::{
        Attachment, Program, ProgramKey, Usage, delta, parse_attachments, programs_of, usage,
    };

    const PERF: &str = r#"[{"pid":4242,"fd":17,"prog_id":812,"fd_type":"raw_tracepoint","tracepoint":"mm_filemap_add_to_page_cache"},{"pid":77,"fd":9,"prog_id":5,"fd_type":"kprobe","func":"do_sys_openat2","offset":0}]"#;

    fn program(id: u32, name: &str, run_time_ns: u64, run_cnt: u64) -> Program {
        Program {
            id,
            name: name.to_owned(),
            run_time_ns,
            run_cnt,
        }
    }

    #[test]
    fn parses_bpftool_perf() -> anyhow::Result<()> {
        let attachments = parse_attachments(PERF)?;
        assert_eq!(
            attachments[0],
            Attachment {
                pid: 4242,
                prog_id: 812,
                tracepoint: Some("mm_filemap_add_to_page_cache".into())
            }
        );
        assert_eq!(attachments[1].tracepoint, None);
        assert_eq!(parse_attachments("\n")?, []);
        Ok(())
    }

    #[test]
    fn picks_the_tracer_s_new_programs_and_measures_them() -> anyhow::Result<()> {
        let before = vec![program(3, "", 0, 0)];
        let now = [
            before.clone(),
            vec![
                program(812, "filemap_add", 1_234_567, 4096),
                // Someone else's.
                program(900, "filemap_add", 1, 1),
                // memtrace's start-up calibration, still listed after it was unloaded.
                program(813, "memmap_page", 1, 1),
                // Held but never attached.
                program(814, "oom_kill", 0, 0),
            ],
        ]
        .concat();
        let held = BTreeSet::from([3, 812, 813, 814]);

        let ids = programs_of(&held, &before, &now, &parse_attachments(PERF)?);
        let key = ProgramKey {
            name: "filemap_add".into(),
            attach: "mm_filemap_add_to_page_cache".into(),
        };
        let unattached = ProgramKey {
            name: "oom_kill".into(),
            attach: "?".into(),
        };
        assert_eq!(
            ids,
            BTreeMap::from([(812, key.clone()), (814, unattached.clone())])
        );

        let mut start = usage(&now, &ids);
        start.insert(
            812,
            Usage {
                run_time_ns: 234_567,
                run_cnt: 96,
            },
        );
        let end = usage(&now, &ids);
        assert_eq!(
            delta(&start, &end, &ids)?,
            [
                (
                    key,
                    Usage {
                        run_time_ns: 1_000_000,
                        run_cnt: 4000
                    }
                ),
                (unattached, Usage::default())
            ]
        );
        assert!(delta(&start, &HashMap::new(), &ids).is_err());
        Ok(())
    }
}
