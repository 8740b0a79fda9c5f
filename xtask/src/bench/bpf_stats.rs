//! The kernel's own accounting of BPF programs: `kernel.bpf_stats_enabled` makes it sum each
//! program's run time and run count, which `bpftool prog show -j` reports; `bpftool perf -j`
//! says which tracepoint each program is attached to.

use std::{
    collections::{BTreeMap, HashMap},
    fs,
    process::Command,
};

use anyhow::Context as _;
use serde::Deserialize;

use crate::process;

const STATS_SYSCTL: &str = "/proc/sys/kernel/bpf_stats_enabled";

/// `kernel.bpf_stats_enabled=1` for as long as this lives; the value before is restored on drop,
/// whichever way the bench ends.
pub struct StatsEnabled {
    previous: String,
}

impl StatsEnabled {
    pub fn enable() -> anyhow::Result<Self> {
        let previous = fs::read_to_string(STATS_SYSCTL)
            .with_context(|| format!("reading {STATS_SYSCTL}"))?
            .trim()
            .to_owned();
        fs::write(STATS_SYSCTL, "1").with_context(|| format!("writing 1 to {STATS_SYSCTL}"))?;
        Ok(Self { previous })
    }
}

impl Drop for StatsEnabled {
    fn drop(&mut self) {
        if let Err(error) = fs::write(STATS_SYSCTL, &self.previous) {
            eprintln!(
                "bench: could not restore {STATS_SYSCTL} to {}: {error}; run `sysctl -w \
                 kernel.bpf_stats_enabled={}`",
                self.previous, self.previous
            );
        }
    }
}

/// A loaded program as `bpftool prog show -j` describes it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Program {
    pub id: u32,
    #[serde(default)]
    pub name: String,
    /// Absent until stats are enabled for the first time.
    #[serde(default)]
    pub run_time_ns: u64,
    #[serde(default)]
    pub run_cnt: u64,
    /// The processes holding the program (absent when bpftool was built without that support).
    #[serde(default)]
    pub pids: Vec<Holder>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Holder {
    pub pid: u32,
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

pub fn parse_programs(json: &str) -> anyhow::Result<Vec<Program>> {
    serde_json::from_str(json).context("parsing `bpftool prog show -j`")
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
    let json = process::output(Command::new("bpftool").args(["prog", "show", "-j"]))
        .context("listing BPF programs")?;
    parse_programs(&json)
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

/// The programs loaded by `pid` (a tracer) that were not loaded before it started, with where
/// each is attached.
pub fn programs_of(
    pid: u32,
    before: &[Program],
    now: &[Program],
    attachments: &[Attachment],
) -> BTreeMap<u32, ProgramKey> {
    let known: Vec<u32> = before.iter().map(|program| program.id).collect();
    now.iter()
        .filter(|program| !known.contains(&program.id))
        // Without holders (an old bpftool) the new programs are taken to be the tracer's.
        .filter(|program| program.pids.is_empty() || program.pids.iter().any(|h| h.pid == pid))
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
    use std::collections::{BTreeMap, HashMap};

    use super::{
        Attachment, Holder, ProgramKey, Usage, delta, parse_attachments, parse_programs,
        programs_of, usage,
    };

    // Trimmed from bpftool 7.1 on 6.18 with bpf_stats_enabled=1.
    const PROG_SHOW: &str = r#"[{"id":3,"type":"cgroup_device","tag":"e3dbd137be8e6c1f","gpl_compatible":false,"loaded_at":1764262400,"uid":0,"orphaned":false,"bytes_xlated":504,"jited":true,"bytes_jited":309,"bytes_memlock":4096},{"id":812,"type":"raw_tracepoint","name":"filemap_add","tag":"a04f5eef8c9b1b2a","gpl_compatible":true,"run_time_ns":1234567,"run_cnt":4096,"recursion_misses":0,"loaded_at":1764262500,"uid":0,"orphaned":false,"bytes_xlated":1200,"jited":true,"bytes_jited":700,"bytes_memlock":4096,"map_ids":[40,41],"btf_id":120,"pids":[{"pid":4242,"comm":"memtrace"}]}]"#;

    const PERF: &str = r#"[{"pid":4242,"fd":17,"prog_id":812,"fd_type":"raw_tracepoint","tracepoint":"mm_filemap_add_to_page_cache"},{"pid":77,"fd":9,"prog_id":5,"fd_type":"kprobe","func":"do_sys_openat2","offset":0}]"#;

    #[test]
    fn parses_bpftool_prog_show() -> anyhow::Result<()> {
        let programs = parse_programs(PROG_SHOW)?;
        assert_eq!(programs.len(), 2);
        // Stats never enabled, no name, no holders: zeros and empties, not an error.
        assert_eq!((programs[0].id, programs[0].run_cnt), (3, 0));
        assert_eq!(programs[0].name, "");
        assert_eq!(programs[0].pids, []);
        assert_eq!(programs[1].name, "filemap_add");
        assert_eq!(
            (programs[1].run_time_ns, programs[1].run_cnt),
            (1_234_567, 4096)
        );
        assert_eq!(programs[1].pids, [Holder { pid: 4242 }]);
        assert!(parse_programs("not json").is_err());
        Ok(())
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
        let after = parse_programs(PROG_SHOW)?;
        let before = vec![after[0].clone()];
        let mut someone_else = after[1].clone();
        someone_else.id = 900;
        someone_else.pids = vec![Holder { pid: 1 }];
        let now = [after.clone(), vec![someone_else]].concat();

        let ids = programs_of(4242, &before, &now, &parse_attachments(PERF)?);
        let key = ProgramKey {
            name: "filemap_add".into(),
            attach: "mm_filemap_add_to_page_cache".into(),
        };
        assert_eq!(ids, BTreeMap::from([(812, key.clone())]));

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
            [(
                key,
                Usage {
                    run_time_ns: 1_000_000,
                    run_cnt: 4000
                }
            )]
        );
        assert!(delta(&start, &HashMap::new(), &ids).is_err());
        Ok(())
    }
}
