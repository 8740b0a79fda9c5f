//! A global OOM (`CONSTRAINT_NONE`): no memcg limit fired, the node itself ran out of memory.
//! The victim's own memcg says little then (it may have no limit at all); what explains the
//! kill is who held the node's memory. That is read from the `stats` samples nearest the kill:
//! the census the live session takes as soon as it sees a global OOM kill (a `stats` sample of
//! every container and pod right after it, `crate::pipeline`), else the last periodic sample
//! before it.

use std::{collections::HashMap, fmt::Write as _};

use serde::Serialize;

use super::{
    model::MemoryPoint,
    verdict::{Verdict, VerdictKind},
};
use crate::units::human_bytes;

/// At most this many holders are listed, the largest first.
pub const LISTED_HOLDERS: usize = 10;
/// A sample taken at most this long after the kill is the memory at the kill (the census
/// memtrace takes when it sees a global OOM comes within a second; 5 s leaves room for a
/// loaded node).
pub const CENSUS_WINDOW_NS: u64 = 5_000_000_000;

/// A container's (or pod's) memory at a global OOM kill.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Holder {
    /// Its name for people, or its cgroup path.
    pub name: String,
    pub cgroup: String,
    /// When the sample was taken.
    pub time: String,
    pub timestamp_ns: u64,
    /// `census_after_kill` (at most [`CENSUS_WINDOW_NS`] after the kill) or
    /// `sample_before_kill`.
    pub source: &'static str,
    pub usage_bytes: Option<u64>,
    pub anon_bytes: Option<u64>,
    pub file_bytes: Option<u64>,
    pub shmem_bytes: Option<u64>,
    pub kernel_bytes: Option<u64>,
}

/// The sampled cgroups' memory nearest the kill at `kill_ns`, largest usage first, at most
/// [`LISTED_HOLDERS`]. A cgroup with a sampled cgroup below it (a pod and its containers) is
/// left out: its memory is theirs, and listing both would count it twice.
#[must_use]
pub fn holders(
    samples: &HashMap<String, Vec<MemoryPoint>>,
    owners: &HashMap<String, String>,
    kill_ns: u64,
) -> Vec<Holder> {
    let mut found: Vec<Holder> = samples
        .iter()
        .filter_map(|(cgroup, points)| {
            let (point, source) = nearest(points, kill_ns)?;
            point.usage?;
            Some(Holder {
                name: owners
                    .get(cgroup)
                    .cloned()
                    .unwrap_or_else(|| cgroup.clone()),
                cgroup: cgroup.clone(),
                time: point.time.clone(),
                timestamp_ns: point.timestamp_ns,
                source,
                usage_bytes: point.usage,
                anon_bytes: point.anon,
                file_bytes: point.file,
                shmem_bytes: point.shmem,
                kernel_bytes: point.kernel,
            })
        })
        .collect();
    let cgroups: Vec<String> = found.iter().map(|h| h.cgroup.clone()).collect();
    found.retain(|h| {
        let prefix = format!("{}/", h.cgroup.trim_end_matches('/'));
        !cgroups
            .iter()
            .any(|c| c.len() > prefix.len() && c.starts_with(&prefix))
    });
    found.sort_by(|a, b| {
        b.usage_bytes
            .cmp(&a.usage_bytes)
            .then_with(|| a.name.cmp(&b.name))
    });
    found.truncate(LISTED_HOLDERS);
    found
}

/// The first sample within [`CENSUS_WINDOW_NS`] after the kill, else the last one before it.
fn nearest(points: &[MemoryPoint], kill_ns: u64) -> Option<(&MemoryPoint, &'static str)> {
    let at = points.partition_point(|p| p.timestamp_ns < kill_ns);
    points
        .get(at)
        .filter(|p| p.timestamp_ns - kill_ns <= CENSUS_WINDOW_NS)
        .map(|p| (p, "census_after_kill"))
        .or_else(|| {
            at.checked_sub(1)
                .map(|i| (&points[i], "sample_before_kill"))
        })
}

/// The victim of a global OOM, as the kill event says.
pub struct Victim<'a> {
    pub pid: u32,
    pub comm: Option<&'a str>,
    pub anon_rss_bytes: Option<u64>,
    /// RAM and swap the OOM killer weighed the victims against (`oom_control.totalpages`).
    pub node_bytes: Option<u64>,
}

/// The verdict of a global OOM: the node ran out, the victim, and who held the memory.
#[must_use]
pub fn verdict(victim: &Victim<'_>, holders: &[Holder]) -> Verdict {
    let mut reason = "no memcg limit fired: the node ran out of memory".to_owned();
    if let Some(total) = victim.node_bytes {
        let _ = write!(reason, " ({} of RAM and swap)", human_bytes(total));
    }
    let _ = write!(
        reason,
        " and the kernel killed {} (pid {})",
        victim.comm.unwrap_or("?"),
        victim.pid
    );
    if let Some(anon) = victim.anon_rss_bytes {
        let _ = write!(reason, ", anon {}", human_bytes(anon));
    }
    if holders.is_empty() {
        reason.push_str(
            "; no container's memory was sampled near the kill (record with --stats-interval)",
        );
    } else {
        let listed: Vec<String> = holders.iter().map(holder_text).collect();
        let _ = write!(
            reason,
            "; at the kill the containers held: {}",
            listed.join(", ")
        );
    }
    Verdict {
        kind: VerdictKind::NodeOutOfMemory,
        reason,
        evidence: Vec::new(),
    }
}

fn holder_text(h: &Holder) -> String {
    let bytes = |b: Option<u64>| b.map_or_else(|| "?".to_owned(), human_bytes);
    format!(
        "{} {} (anon {}, file {}, shmem {})",
        h.name,
        bytes(h.usage_bytes),
        bytes(h.anon_bytes),
        bytes(h.file_bytes),
        bytes(h.shmem_bytes)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(timestamp_ns: u64, usage: u64, anon: u64) -> MemoryPoint {
        MemoryPoint {
            timestamp_ns,
            time: format!("t{timestamp_ns}"),
            usage: Some(usage),
            limit: None,
            working_set: Some(usage),
            anon: Some(anon),
            file: Some(usage - anon),
            kernel: Some(0),
            shmem: Some(0),
        }
    }

    const S: u64 = 1_000_000_000;

    #[test]
    fn the_census_after_the_kill_wins_over_an_older_sample() {
        let samples = HashMap::from([
            (
                "/a/docker-1.scope".to_owned(),
                vec![
                    point(S, 10 << 20, 5 << 20),
                    point(12 * S, 90 << 20, 80 << 20),
                ],
            ),
            (
                "/a/docker-2.scope".to_owned(),
                vec![
                    point(S, 50 << 20, 50 << 20),
                    point(30 * S, 1 << 20, 1 << 20),
                ],
            ),
        ]);
        let owners = HashMap::from([("/a/docker-1.scope".to_owned(), "one".to_owned())]);
        let found = holders(&samples, &owners, 11 * S);
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].name, "one");
        assert_eq!(found[0].source, "census_after_kill");
        assert_eq!(found[0].usage_bytes, Some(90 << 20));
        // 19 s after the kill is not the kill's: the sample before it is.
        assert_eq!(found[1].cgroup, "/a/docker-2.scope");
        assert_eq!(found[1].source, "sample_before_kill");
        assert_eq!(found[1].usage_bytes, Some(50 << 20));
    }

    #[test]
    fn a_pod_is_left_out_for_its_containers() {
        let samples = HashMap::from([
            ("/kubepods/podx".to_owned(), vec![point(S, 100 << 20, 0)]),
            ("/kubepods/podx/c1".to_owned(), vec![point(S, 60 << 20, 0)]),
            ("/kubepods/podxy".to_owned(), vec![point(S, 10 << 20, 0)]),
        ]);
        let found = holders(&samples, &HashMap::new(), 2 * S);
        let cgroups: Vec<&str> = found.iter().map(|h| h.cgroup.as_str()).collect();
        assert_eq!(cgroups, ["/kubepods/podx/c1", "/kubepods/podxy"]);
    }

    #[test]
    fn the_verdict_names_the_victim_and_the_holders() {
        let samples = HashMap::from([("/c".to_owned(), vec![point(S, 200 << 20, 150 << 20)])]);
        let found = holders(&samples, &HashMap::new(), S);
        let v = verdict(
            &Victim {
                pid: 7,
                comm: Some("hog"),
                anon_rss_bytes: Some(300 << 20),
                node_bytes: Some(1 << 30),
            },
            &found,
        );
        assert_eq!(v.kind, VerdictKind::NodeOutOfMemory);
        assert_eq!(
            v.reason,
            "no memcg limit fired: the node ran out of memory (1.0GiB of RAM and swap) and the \
             kernel killed hog (pid 7), anon 300.0MiB; at the kill the containers held: /c \
             200.0MiB (anon 150.0MiB, file 50.0MiB, shmem 0B)"
        );
        let none = verdict(
            &Victim {
                pid: 7,
                comm: None,
                anon_rss_bytes: None,
                node_bytes: None,
            },
            &[],
        );
        assert!(
            none.reason.contains("no container's memory was sampled"),
            "{none:?}"
        );
    }
}
