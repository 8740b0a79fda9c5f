//! The kernel's own account of each OOM kill, from `/dev/kmsg`:
//!
//! ```text
//! oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,
//!   oom_memcg=/kubepods/pod1,task_memcg=/kubepods/pod1/ctr,task=memhog,pid=42,uid=0
//! ```
//!
//! `oom_memcg` is the memcg whose limit fired (an ancestor of the victim's, or absent for a
//! global OOM) — what `oom:mark_victim` does not say. Before that line, a memcg OOM report
//! carries that memcg's usage, limit and full `memory.stat` *as they were at the kill*
//! (`mem_cgroup_print_oom_meminfo()`), which userspace cannot read any more once the victim's
//! memory is freed:
//!
//! ```text
//! memory: usage 65536kB, limit 65536kB, failcnt 80
//! kmem: usage 140kB, limit 9007199254740988kB, failcnt 0          (v1 only)
//! Memory cgroup stats for /kubepods/pod1:
//! cache 0                  (v1: one record per line; v2: one record, lines escaped as \x0a)
//! …
//! ```
//!
//! The kernel prints the report before it marks the victim, so it is normally here by the time
//! the event is; it is rate-limited (`oom_rs`), so under an OOM storm some kills have none.

use std::{
    collections::VecDeque,
    fs::File,
    io::{self, BufRead as _, BufReader, Seek as _, SeekFrom},
    sync::{Arc, Condvar, Mutex},
    thread,
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};

/// The memcg part of the kernel's OOM report: the memory of the memcg whose limit fired, at
/// the kill.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OomMemcgReport {
    /// The memcg the stats are for (`Memory cgroup stats for PATH:`).
    pub cgroup: Option<String>,
    pub usage_bytes: Option<u64>,
    pub limit_bytes: Option<u64>,
    /// v1 only: `kmem: usage`.
    pub kmem_usage_bytes: Option<u64>,
    /// The `memory.stat` lines, `key value` per line.
    pub stat: String,
}

/// The parsed `oom-kill:` line, with the memcg report that preceded it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OomKillLine {
    pub pid: u32,
    /// `CONSTRAINT_MEMCG`, `CONSTRAINT_NONE` (global), `CONSTRAINT_CPUSET`, …
    pub constraint: String,
    /// The memcg whose limit fired; `None` for a global OOM.
    pub oom_memcg: Option<String>,
    pub task_memcg: Option<String>,
    pub task: Option<String>,
    /// Memory of the memcg whose limit fired, as the kernel reported it at the kill.
    pub report: Option<OomMemcgReport>,
}

impl OomKillLine {
    /// Parses a kmsg record or a dmesg line containing `oom-kill:`.
    #[must_use]
    pub fn parse(line: &str) -> Option<Self> {
        let start = line.find("oom-kill:")? + "oom-kill:".len();
        let mut parsed = Self::default();
        let mut pid = None;
        for kv in line[start..].trim_end().split(',') {
            let Some((k, v)) = kv.split_once('=') else {
                continue;
            };
            match k {
                "constraint" => v.clone_into(&mut parsed.constraint),
                "oom_memcg" => parsed.oom_memcg = Some(v.to_owned()),
                "task_memcg" => parsed.task_memcg = Some(v.to_owned()),
                "task" => parsed.task = Some(v.to_owned()),
                "pid" => pid = v.parse().ok(),
                _ => {}
            }
        }
        parsed.pid = pid?;
        Some(parsed)
    }
}

/// Collects an OOM report record by record until its `oom-kill:` line.
#[derive(Debug, Default)]
pub struct ReportParser {
    report: Option<OomMemcgReport>,
    in_stats: bool,
}

impl ReportParser {
    /// Feeds one kmsg record (`prio,seq,ts,flags;message`, or a bare message); returns the kill
    /// when the record is its `oom-kill:` line.
    pub fn feed(&mut self, record: &str) -> Option<OomKillLine> {
        let message = unescape(record.split_once(';').map_or(record, |(_, m)| m));
        let message = message.trim_end_matches('\n');
        if message.contains("oom-kill:") {
            let mut line = OomKillLine::parse(message)?;
            line.report = self.report.take();
            self.in_stats = false;
            return Some(line);
        }
        if let Some(rest) = message.strip_prefix("memory: usage ") {
            // The first line of a memcg report: start afresh.
            let (usage, limit) = usage_and_limit(rest);
            self.report = Some(OomMemcgReport {
                usage_bytes: usage,
                limit_bytes: limit,
                ..OomMemcgReport::default()
            });
            self.in_stats = false;
            return None;
        }
        let report = self.report.as_mut()?;
        if let Some(rest) = message.strip_prefix("kmem: usage ") {
            report.kmem_usage_bytes = usage_and_limit(rest).0;
        } else if let Some(rest) = message.strip_prefix("Memory cgroup stats for ") {
            let (path, inline) = rest.split_once(':').unwrap_or((rest, ""));
            report.cgroup = Some(path.to_owned());
            self.in_stats = true;
            // v2 prints the whole stat in the same record.
            push_stat_lines(report, inline);
        } else if self.in_stats {
            self.in_stats = push_stat_lines(report, message);
        }
        None
    }
}

/// `65536kB, limit 65536kB, failcnt 80` → bytes.
fn usage_and_limit(rest: &str) -> (Option<u64>, Option<u64>) {
    let kb = |s: &str| {
        s.trim()
            .strip_suffix("kB")
            .and_then(|n| n.parse::<u64>().ok())
            .map(|n| n * 1024)
    };
    let mut parts = rest.split(", ");
    let usage = parts.next().and_then(kb);
    let limit = parts
        .next()
        .and_then(|p| p.strip_prefix("limit "))
        .and_then(kb)
        .filter(|&l| l < 1 << 62);
    (usage, limit)
}

/// Appends `key value` lines; false at the first line that is not one (the stats ended).
fn push_stat_lines(report: &mut OomMemcgReport, text: &str) -> bool {
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let is_stat = line.split_once(' ').is_some_and(|(k, v)| {
            k.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
                && v.parse::<u64>().is_ok()
        });
        if !is_stat {
            return false;
        }
        report.stat.push_str(line);
        report.stat.push('\n');
    }
    true
}

/// kmsg escapes non-printable bytes (embedded newlines included) as `\xNN`.
fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("\\x") {
        out.push_str(&rest[..i]);
        if let Some(byte) = rest
            .get(i + 2..i + 4)
            .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(char::from(byte));
            rest = &rest[i + 4..];
        } else {
            out.push_str("\\x");
            rest = &rest[i + 2..];
        }
    }
    out.push_str(rest);
    out
}

/// Recent `oom-kill:` lines, filled by a thread that follows `/dev/kmsg`.
#[derive(Clone)]
pub struct KmsgOomLines {
    shared: Arc<(Mutex<VecDeque<OomKillLine>>, Condvar)>,
}

const KEEP: usize = 256;

impl KmsgOomLines {
    /// Starts following `/dev/kmsg` from its end (older kills are not ours to report).
    ///
    /// # Errors
    ///
    /// When `/dev/kmsg` cannot be opened (no root, or a container without it).
    pub fn follow() -> io::Result<Self> {
        let mut kmsg = File::open("/dev/kmsg")?;
        kmsg.seek(SeekFrom::End(0))?;
        let me = Self {
            shared: Arc::new((Mutex::new(VecDeque::new()), Condvar::new())),
        };
        let shared = Arc::clone(&me.shared);
        thread::Builder::new().name("kmsg".into()).spawn(move || {
            // A kill waits for its report line: the follower is on the event path.
            crate::priority::raise_event_path();
            // Each read(2) of /dev/kmsg returns one record: "prio,seq,ts,flags;message".
            let mut reader = BufReader::new(kmsg);
            let mut record = String::new();
            let mut parser = ReportParser::default();
            loop {
                record.clear();
                match reader.read_line(&mut record) {
                    Ok(0) => return,
                    Ok(_) => {}
                    // EPIPE: records were overwritten before we read them; go on.
                    Err(e) if e.raw_os_error() == Some(libc::EPIPE) => continue,
                    Err(e) => {
                        log::warn!("stopped reading /dev/kmsg: {e}");
                        return;
                    }
                }
                if let Some(line) = parser.feed(&record) {
                    log::debug!("kernel OOM report: {line:?}");
                    let (lines, ready) = &*shared;
                    let mut lines = lines
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    if lines.len() == KEEP {
                        lines.pop_front();
                    }
                    lines.push_back(line);
                    ready.notify_all();
                }
            }
        })?;
        Ok(me)
    }

    /// The line for `pid`, waiting up to `wait` for it to arrive.
    #[must_use]
    pub fn take(&self, pid: u32, wait: Duration) -> Option<OomKillLine> {
        let deadline = Instant::now() + wait;
        let (lines, ready) = &*self.shared;
        let mut lines = lines
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        log::debug!(
            "looking for the OOM report of pid {pid} among {}",
            lines.len()
        );
        loop {
            if let Some(i) = lines.iter().position(|l| l.pid == pid) {
                return lines.remove(i);
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            lines = ready
                .wait_timeout(lines, left)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_memcg_and_global_lines() {
        let kmsg = "3,1234,5678901,-;oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,\
                    mems_allowed=0,oom_memcg=/kubepods/pod1,task_memcg=/kubepods/pod1/ctr,\
                    task=memhog,pid=42,uid=0\n";
        let l = OomKillLine::parse(kmsg).expect("parsed");
        assert_eq!(l.pid, 42);
        assert_eq!(l.constraint, "CONSTRAINT_MEMCG");
        assert_eq!(l.oom_memcg.as_deref(), Some("/kubepods/pod1"));
        assert_eq!(l.task_memcg.as_deref(), Some("/kubepods/pod1/ctr"));
        assert_eq!(l.task.as_deref(), Some("memhog"));

        let global = "[ 12.3] oom-kill:constraint=CONSTRAINT_NONE,nodemask=(null),cpuset=/,\
                      mems_allowed=0,global_oom,task_memcg=/user.slice,task=x,pid=7,uid=1000";
        let l = OomKillLine::parse(global).expect("parsed");
        assert_eq!(l.oom_memcg, None);
        assert_eq!(l.constraint, "CONSTRAINT_NONE");
    }

    #[test]
    fn parses_a_raw_kmsg_record() {
        let record = "6,1852,2178955848,-;oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),\
                      cpuset=/,mems_allowed=0,oom_memcg=/dbg,task_memcg=/dbg,task=memhog,\
                      pid=22517,uid=0\n";
        let l = OomKillLine::parse(record).expect("parsed");
        assert_eq!((l.pid, l.oom_memcg.as_deref()), (22517, Some("/dbg")));
    }

    #[test]
    fn collects_the_v1_memcg_report_before_the_kill() {
        let mut p = ReportParser::default();
        let records = [
            "4,1774,2178955391,-;memhog invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0",
            "6,1803,2178955521,-;memory: usage 65536kB, limit 65536kB, failcnt 80",
            "6,1804,2178955526,-;memory+swap: usage 65536kB, limit 9007199254740988kB, failcnt 0",
            "6,1805,2178955528,-;kmem: usage 140kB, limit 9007199254740988kB, failcnt 0",
            "6,1806,2178955529,-;Memory cgroup stats for /kubepods/pod1:",
            "6,1807,2178955548,-;cache 0",
            "6,1808,2178955550,-;total_rss 66908160",
            "6,1809,2178955551,-;total_inactive_file 4096",
            "6,1849,2178955840,-;Tasks state (memory values in pages):",
            "6,1852,2178955848,-;oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,\
             mems_allowed=0,oom_memcg=/kubepods/pod1,task_memcg=/kubepods/pod1/c,task=memhog,\
             pid=42,uid=0",
        ];
        let mut kill = None;
        for r in records {
            kill = p.feed(&format!("{r}\n")).or(kill);
        }
        let kill = kill.expect("a kill");
        let report = kill.report.expect("a report");
        assert_eq!(report.cgroup.as_deref(), Some("/kubepods/pod1"));
        assert_eq!(report.usage_bytes, Some(64 << 20));
        assert_eq!(report.limit_bytes, Some(64 << 20));
        assert_eq!(report.kmem_usage_bytes, Some(140 * 1024));
        assert_eq!(
            report.stat,
            "cache 0\ntotal_rss 66908160\ntotal_inactive_file 4096\n"
        );
        // A later kill without a report of its own does not inherit this one.
        let bare = p
            .feed("6,1,1,-;oom-kill:constraint=CONSTRAINT_NONE,global_oom,task=x,pid=7,uid=0")
            .expect("kill");
        assert_eq!(bare.report, None);
    }

    #[test]
    fn collects_the_v2_report_printed_as_one_escaped_record() {
        let mut p = ReportParser::default();
        p.feed("6,1,1,-;memory: usage 65536kB, limit 65536kB, failcnt 3\n");
        p.feed("6,2,1,-;swap: usage 0kB, limit 0kB, failcnt 0\n");
        p.feed("6,3,1,-;Memory cgroup stats for /pod:\\x0aanon 66000000\\x0afile 0\\x0a\n");
        let kill = p
            .feed(
                "6,4,1,-;oom-kill:constraint=CONSTRAINT_MEMCG,oom_memcg=/pod,task=m,pid=9,uid=0\n",
            )
            .expect("kill");
        let report = kill.report.expect("report");
        assert_eq!(report.stat, "anon 66000000\nfile 0\n");
        assert_eq!(report.cgroup.as_deref(), Some("/pod"));
    }

    #[test]
    fn ignores_other_lines() {
        assert_eq!(
            OomKillLine::parse("Out of memory: Killed process 42 (memhog)"),
            None
        );
        assert_eq!(
            OomKillLine::parse("oom-kill:constraint=CONSTRAINT_MEMCG"),
            None,
            "no pid"
        );
        assert_eq!(OomKillLine::parse("oom-kill:pid=notanumber"), None);
    }
}
