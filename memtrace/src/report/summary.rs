//! The answer first: what an operator woken at 3 a.m. needs before any detail. Each OOM kill
//! with its container, the limit that fired and the verdict; the containers not killed but at
//! risk, with theirs; the containers whose memory grew most and in what form (anon, which file,
//! which slab cache); dying memcgs and the node's headroom to the kernel's 65 535 memcg ids,
//! with a verdict when it runs out.
//!
//! Made from the finished per-container sections (pure, so unit-tested from events), said in
//! the same words by the text and HTML reports ([`Summary::lines`]), and serialized as the JSON
//! report's `summary`. It is bounded: a few kill groups, a few growers, one line for dying
//! memcgs — an OOM storm is counted, not listed.

use std::collections::{BTreeMap, HashSet};

use serde::Serialize;

use super::{
    model::{
        ContainerReport, DyingReport, FileGrowth, MemoryPoint, OomReport, SlabCacheGrowth, is_host,
    },
    verdict::{self, Verdict, VerdictKind},
};
use crate::{
    attribution::{IdentityKind, MEMCG_ID_LIMIT, MemcgCensus},
    event::OomConstraint,
    units::human_bytes,
};

/// OOM kill groups (same container, same limit, same verdict) listed; the rest are counted.
pub const LISTED_KILL_GROUPS: usize = 3;
/// Containers and pods listed as those whose memory grew most.
pub const LISTED_WORKLOAD_GROWERS: usize = 3;
/// Host and system cgroups listed as those whose memory grew most.
pub const LISTED_HOST_GROWERS: usize = 2;
/// Containers at risk (not killed) listed; the rest are counted.
pub const LISTED_AT_RISK: usize = 3;

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Summary {
    /// Every OOM kill in the recording.
    pub oom_kills: u64,
    /// Kills of one container by one limit with one verdict are one group; most kills first,
    /// at most [`LISTED_KILL_GROUPS`].
    pub kill_groups: Vec<KillGroup>,
    /// Kills in the groups not listed, and how many containers they were in.
    pub kills_not_listed: u64,
    pub containers_with_kills_not_listed: u64,
    /// Containers and pods not OOM-killed but at risk, workloads first, at most
    /// [`LISTED_AT_RISK`]; and how many more there were.
    pub at_risk: Vec<AtRisk>,
    pub at_risk_not_listed: u64,
    /// The node's own trouble (its memcg ids running out).
    pub node: Vec<Verdict>,
    /// Containers and pods whose memory grew most, largest first.
    pub grew_most: Vec<Growth>,
    /// Host and system cgroups whose memory grew most, largest first.
    pub host_grew_most: Vec<Growth>,
    pub dying: DyingSummary,
}

/// OOM kills in one container by one limit, with one verdict.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct KillGroup {
    pub container: String,
    pub kills: u64,
    /// The first and the last kill's time.
    pub first: String,
    pub last: String,
    /// The first victim.
    pub pid: u32,
    pub comm: Option<String>,
    /// The memcg whose limit fired; `None`: a global OOM or not reported.
    pub limit_cgroup: Option<String>,
    /// Who that memcg belongs to (`pod:<uid>`, …).
    pub limit_owner: Option<String>,
    /// The limit that fired was the victim's own memcg's.
    pub own_limit: bool,
    pub limit_bytes: Option<u64>,
    pub usage_bytes: Option<u64>,
    pub constraint: Option<String>,
    /// The first kill's verdict.
    pub verdict: Verdict,
}

/// A container not OOM-killed, at risk.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AtRisk {
    pub container: String,
    pub kind: IdentityKind,
    pub verdict: Verdict,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GrowthForm {
    Anon,
    PageCache,
    /// Slab and other kernel memory charged to the memcg.
    Kernel,
}

impl GrowthForm {
    #[must_use]
    pub const fn label(self) -> &'static str {
        match self {
            Self::Anon => "anon",
            Self::PageCache => "page cache",
            Self::Kernel => "slab/kernel",
        }
    }
}

/// Where a growth figure comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GrowthSource {
    /// Peak minus first of the `stats` samples.
    StatsSamples,
    /// The OOM victim's anon RSS at the kill (the kill freed it, so samples may never show it).
    OomVictim,
    /// Peak net growth of `cache` events.
    PageCacheEvents,
    /// Peak net growth of `slab` events (memcg-accounted slab).
    SlabEvents,
}

/// How much one container's memory grew, in its largest form.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Growth {
    pub name: String,
    pub kind: IdentityKind,
    pub form: GrowthForm,
    pub bytes: u64,
    pub source: GrowthSource,
    /// For page cache: the file that grew most.
    pub file: Option<FileGrowth>,
    /// For slab: the cache that grew most.
    pub slab_cache: Option<SlabCacheGrowth>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DyingSummary {
    /// Dying memcgs on the host when the recording started (from the trace header).
    pub at_start: Option<u64>,
    /// Memcg ids in use then (live and dying), and how many were left of the kernel's 65 535.
    pub memcg_ids_in_use_at_start: Option<u64>,
    pub headroom_at_start: Option<u64>,
    /// Memcgs removed during the recording while still charged, freed later, still dying at
    /// the end, and the most dying at once of those.
    pub removed_while_charged: u64,
    pub freed_after_dying: u64,
    pub still_dying_at_end: u64,
    pub most_at_once: u64,
}

/// The summary of finished container sections (every one: before `--top` leaves any out).
#[must_use]
pub fn summarize(
    containers: &[ContainerReport],
    dying: &DyingReport,
    at_start: Option<MemcgCensus>,
) -> Summary {
    let mut summary = Summary::default();
    kills(&mut summary, containers);
    at_risk(&mut summary, containers);
    growers(&mut summary, containers);
    summary.dying = DyingSummary {
        at_start: at_start.map(|c| c.dying),
        memcg_ids_in_use_at_start: at_start.map(|c| c.ids_in_use()),
        headroom_at_start: at_start.map(|c| c.headroom()),
        removed_while_charged: dying.removed_while_charged,
        freed_after_dying: dying.freed_after_dying,
        still_dying_at_end: dying.still_dying.len() as u64,
        most_at_once: dying.timeline.iter().map(|p| p.dying).max().unwrap_or(0),
    };
    summary.node = at_start
        .and_then(|c| {
            verdict::judge_memcg_ids(c.ids_in_use(), c.dying, dying.still_dying.len() as u64)
        })
        .into_iter()
        .collect();
    summary
}

/// Containers with an at-risk verdict: workloads before the host's cgroups, the most serious
/// kind first (the order of [`VerdictKind`]'s at-risk kinds is not that, so it is said here).
fn at_risk(summary: &mut Summary, containers: &[ContainerReport]) {
    let rank = |k: VerdictKind| match k {
        VerdictKind::NearLimit => 0,
        VerdictKind::Throttled => 1,
        VerdictKind::Thrashing => 2,
        _ => 3,
    };
    let mut all: Vec<AtRisk> = containers
        .iter()
        .filter_map(|c| {
            Some(AtRisk {
                container: c.name.clone(),
                kind: c.kind,
                verdict: c.at_risk.clone()?,
            })
        })
        .collect();
    all.sort_by(|a, b| {
        is_host(a.kind)
            .cmp(&is_host(b.kind))
            .then_with(|| rank(a.verdict.kind).cmp(&rank(b.verdict.kind)))
            .then_with(|| a.container.cmp(&b.container))
    });
    summary.at_risk_not_listed = all.len().saturating_sub(LISTED_AT_RISK) as u64;
    all.truncate(LISTED_AT_RISK);
    summary.at_risk = all;
}

fn kills(summary: &mut Summary, containers: &[ContainerReport]) {
    type Key<'a> = (&'a str, Option<&'a str>, VerdictKind);
    let mut groups: BTreeMap<Key<'_>, (Vec<&OomReport>, &ContainerReport)> = BTreeMap::new();
    for c in containers {
        for kill in &c.oom_kills {
            let key = (
                c.name.as_str(),
                kill.limit_cgroup.as_deref(),
                kill.verdict.kind,
            );
            groups
                .entry(key)
                .or_insert_with(|| (Vec::new(), c))
                .0
                .push(kill);
        }
    }
    let mut groups: Vec<KillGroup> = groups
        .into_values()
        .filter_map(|(kills, c)| {
            let first = kills.iter().min_by_key(|k| k.timestamp_ns)?;
            let last = kills.iter().max_by_key(|k| k.timestamp_ns)?;
            Some(KillGroup {
                container: c.name.clone(),
                kills: kills.len() as u64,
                first: first.time.clone(),
                last: last.time.clone(),
                pid: first.pid,
                comm: first.comm.clone(),
                limit_cgroup: first.limit_cgroup.clone(),
                limit_owner: first.limit_owner.clone(),
                own_limit: first.limit_cgroup.is_some() && first.limit_cgroup == first.cgroup,
                limit_bytes: first.limit_bytes,
                usage_bytes: first.usage_bytes,
                constraint: first.constraint.clone(),
                verdict: first.verdict.clone(),
            })
        })
        .collect();
    groups.sort_by(|a, b| b.kills.cmp(&a.kills).then_with(|| a.first.cmp(&b.first)));
    summary.oom_kills = groups.iter().map(|g| g.kills).sum();
    // A "… and N more" line takes the place of the last listed group.
    let listed = if groups.len() > LISTED_KILL_GROUPS {
        LISTED_KILL_GROUPS - 1
    } else {
        groups.len()
    };
    let rest = groups.split_off(listed);
    summary.kills_not_listed = rest.iter().map(|g| g.kills).sum();
    summary.containers_with_kills_not_listed = rest
        .iter()
        .map(|g| g.container.as_str())
        .collect::<HashSet<_>>()
        .len() as u64;
    summary.kill_groups = groups;
}

fn growers(summary: &mut Summary, containers: &[ContainerReport]) {
    let cgroups: Vec<&str> = containers
        .iter()
        .flat_map(|c| c.cgroups.iter().map(String::as_str))
        .collect();
    let mut workloads = Vec::new();
    let mut host = Vec::new();
    for c in containers {
        if c.cgroups.is_empty() {
            continue;
        }
        // Samples are hierarchical (v1 with use_hierarchy, v2): a pod's hold its containers'
        // memory, a parent's its children's. They count for a cgroup only when no cgroup below
        // it is in the report, so growth is named once, where it happened; events are
        // attributed to the memcg charged, and always count.
        let own_samples = c.memory_cgroup.as_deref().is_none_or(|m| {
            let prefix = if m == "/" {
                "/".to_owned()
            } else {
                format!("{m}/")
            };
            !cgroups.iter().any(|other| other.starts_with(&prefix))
        });
        let Some(growth) = growth_of(c, own_samples) else {
            continue;
        };
        if is_host(c.kind) {
            host.push(growth);
        } else {
            workloads.push(growth);
        }
    }
    for (list, keep) in [
        (&mut workloads, LISTED_WORKLOAD_GROWERS),
        (&mut host, LISTED_HOST_GROWERS),
    ] {
        list.sort_by(|a, b| b.bytes.cmp(&a.bytes).then_with(|| a.name.cmp(&b.name)));
        list.truncate(keep);
    }
    summary.grew_most = workloads;
    summary.host_grew_most = host;
}

/// Peak minus first of one series of samples.
fn sample_growth(memory: &[MemoryPoint], f: fn(&MemoryPoint) -> Option<u64>) -> u64 {
    let mut values = memory.iter().filter_map(f);
    let Some(first) = values.next() else { return 0 };
    values.max().unwrap_or(first).saturating_sub(first)
}

fn positive(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// A container's largest growth, in whichever form and by whichever measure says most;
/// `samples`: whether its `stats` samples are its own memory.
fn growth_of(c: &ContainerReport, samples: bool) -> Option<Growth> {
    let memory: &[MemoryPoint] = if samples { &c.memory } else { &[] };
    let victim_anon = c
        .oom_kills
        .iter()
        .filter_map(|k| k.victim_anon_rss_bytes)
        .max()
        .unwrap_or(0);
    let file = c
        .page_cache
        .top_files
        .first()
        .filter(|f| f.peak_net_bytes > 0);
    let slab_cache = c.slab.caches.first().filter(|s| s.peak_net_bytes > 0);
    // In order of preference when two say the same.
    let candidates = [
        (
            GrowthForm::Anon,
            sample_growth(memory, |m| m.anon),
            GrowthSource::StatsSamples,
        ),
        (GrowthForm::Anon, victim_anon, GrowthSource::OomVictim),
        (
            GrowthForm::PageCache,
            positive(c.page_cache.peak_net_bytes),
            GrowthSource::PageCacheEvents,
        ),
        (
            GrowthForm::PageCache,
            sample_growth(memory, |m| m.file),
            GrowthSource::StatsSamples,
        ),
        (
            GrowthForm::Kernel,
            positive(c.slab.peak_net_bytes),
            GrowthSource::SlabEvents,
        ),
        (
            GrowthForm::Kernel,
            sample_growth(memory, |m| m.kernel),
            GrowthSource::StatsSamples,
        ),
    ];
    let (form, bytes, source) = candidates
        .into_iter()
        .filter(|&(_, bytes, _)| bytes > 0)
        .reduce(|best, next| if next.1 > best.1 { next } else { best })?;
    Some(Growth {
        name: c.name.clone(),
        kind: c.kind,
        form,
        bytes,
        source,
        file: (form == GrowthForm::PageCache)
            .then(|| file.cloned())
            .flatten(),
        slab_cache: (form == GrowthForm::Kernel)
            .then(|| slab_cache.cloned())
            .flatten(),
    })
}

/// What a summary line says, so each output can set it apart as it may.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LineKind {
    OomKill,
    /// Belongs to the OOM kill line above it.
    Verdict,
    MoreKills,
    NoKills,
    /// A container not killed, at risk, with its verdict.
    AtRisk,
    /// The node's own trouble.
    Node,
    Growth,
    Dying,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Line {
    pub kind: LineKind,
    pub text: String,
}

impl Summary {
    /// The summary in words, a line each: at most 2 × [`LISTED_KILL_GROUPS`] lines for kills,
    /// two for growth, one for dying memcgs.
    #[must_use]
    pub fn lines(&self) -> Vec<Line> {
        let mut lines = Vec::new();
        let mut push = |kind, text| lines.push(Line { kind, text });
        if self.kill_groups.is_empty() {
            push(
                LineKind::NoKills,
                "OOM kills: none in this recording".to_owned(),
            );
        }
        for g in &self.kill_groups {
            push(LineKind::OomKill, kill_line(g));
            push(
                LineKind::Verdict,
                format!("verdict: {}: {}", g.verdict.kind.label(), g.verdict.reason),
            );
        }
        if self.kills_not_listed > 0 {
            push(
                LineKind::MoreKills,
                format!(
                    "… and {} more OOM kill{} in {} container{} (in their sections below)",
                    self.kills_not_listed,
                    plural(self.kills_not_listed),
                    self.containers_with_kills_not_listed,
                    plural(self.containers_with_kills_not_listed),
                ),
            );
        }
        for r in &self.at_risk {
            push(
                LineKind::AtRisk,
                format!(
                    "at risk (not OOM-killed): {}: {}: {}",
                    r.container,
                    r.verdict.kind.label(),
                    r.verdict.reason
                ),
            );
        }
        if self.at_risk_not_listed > 0 {
            push(
                LineKind::AtRisk,
                format!(
                    "… and {} more at risk (in their sections below)",
                    self.at_risk_not_listed
                ),
            );
        }
        for v in &self.node {
            push(
                LineKind::Node,
                format!("node at risk: {}: {}", v.kind.label(), v.reason),
            );
        }
        push(
            LineKind::Growth,
            if self.grew_most.is_empty() {
                "grew most: no container's or pod's memory grew in this recording".to_owned()
            } else {
                format!("grew most: {}", growth_list(&self.grew_most))
            },
        );
        if !self.host_grew_most.is_empty() {
            push(
                LineKind::Growth,
                format!(
                    "host cgroups that grew most: {}",
                    growth_list(&self.host_grew_most)
                ),
            );
        }
        push(LineKind::Dying, dying_line(&self.dying));
        lines
    }
}

const fn plural(n: u64) -> &'static str {
    if n == 1 { "" } else { "s" }
}

fn kill_line(g: &KillGroup) -> String {
    let victim = format!("{} (pid {})", g.comm.as_deref().unwrap_or("?"), g.pid);
    let when = if g.kills == 1 {
        format!("OOM kill at {}: {victim} in {}", g.first, g.container)
    } else {
        format!(
            "{} OOM kills from {} to {}: {victim} and others in {}",
            g.kills, g.first, g.last, g.container
        )
    };
    let size = match (g.limit_bytes, g.usage_bytes) {
        (Some(limit), Some(usage)) => {
            format!("{} (usage {})", human_bytes(limit), human_bytes(usage))
        }
        (Some(limit), None) => human_bytes(limit),
        (None, _) => "size unknown".to_owned(),
    };
    let limit = match (&g.limit_cgroup, &g.limit_owner) {
        (Some(_), _) if g.own_limit => format!("the limit that fired: its own, {size}"),
        (Some(cgroup), Some(owner)) if owner != cgroup => {
            format!("the limit that fired: {owner}'s, {size}, cgroup {cgroup}")
        }
        (Some(cgroup), _) => format!("the limit that fired: {cgroup}'s, {size}"),
        (None, _) if g.constraint.as_deref() == Some(OomConstraint::None.name()) => {
            "no memcg limit fired: the node itself ran out of memory (global OOM)".to_owned()
        }
        (None, _) => "the limit that fired was not reported".to_owned(),
    };
    format!("{when}; {limit}")
}

fn growth_list(growths: &[Growth]) -> String {
    growths
        .iter()
        .map(|g| {
            let detail = match (g.form, g.source, &g.file, &g.slab_cache) {
                (GrowthForm::PageCache, _, Some(f), _) => format!(", most in {}", f.name),
                (GrowthForm::Kernel, _, _, Some(s)) => format!(
                    ", most in {} +{}",
                    s.cache,
                    human_bytes(positive(s.peak_net_bytes))
                ),
                (GrowthForm::Anon, GrowthSource::OomVictim, _, _) => {
                    ", the OOM victim's at the kill".to_owned()
                }
                _ => String::new(),
            };
            format!(
                "{} {} +{}{detail}",
                g.name,
                g.form.label(),
                human_bytes(g.bytes)
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn dying_line(d: &DyingSummary) -> String {
    let start = match (d.at_start, d.memcg_ids_in_use_at_start, d.headroom_at_start) {
        (Some(dying), Some(in_use), Some(headroom)) => format!(
            "{dying} at the start ({in_use} of the kernel's {MEMCG_ID_LIMIT} memcg ids in use, \
             {headroom} left)"
        ),
        _ => "unknown at the start (the recording did not count them)".to_owned(),
    };
    let during = if d.removed_while_charged == 0 {
        "none removed while still charged during the recording".to_owned()
    } else {
        format!(
            "{} removed while still charged during the recording, {} freed, {} still dying at \
             the end",
            d.removed_while_charged, d.freed_after_dying, d.still_dying_at_end
        )
    };
    format!("dying memcgs: {start}; {during}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        event::{Event, What},
        report::{
            ReportBuilder, TraceInfo,
            model::tests::{
                CLOCK, container_path, oom, pod_path, scenario, stats, stats_with_limit,
            },
        },
    };

    const MIB: u64 = 1 << 20;

    fn summary_of(events: &[Event], at_start: Option<MemcgCensus>) -> Summary {
        let mut b = ReportBuilder::new(CLOCK);
        for e in events {
            b.add(e);
        }
        b.finish(TraceInfo {
            memcgs_at_start: at_start,
            ..TraceInfo::default()
        })
        .summary
    }

    /// `oom` in `cgroup`, fired by the limit of `limit_cgroup`.
    fn oom_by(ns: u64, cgroup: &str, limit_cgroup: &str, limit: u64) -> Event {
        let mut e = oom(ns, cgroup, None);
        if let What::OomKill(k) = &mut e.what {
            k.limit_cgroup = Some(limit_cgroup.to_owned());
            k.memcg_limit_bytes = Some(limit);
            k.memcg_usage_bytes = Some(limit);
        }
        e
    }

    #[test]
    fn the_kill_with_its_limit_and_verdict_what_grew_and_dying_memcgs() {
        let census = MemcgCensus {
            live: 130,
            dying: 14,
        };
        let s = summary_of(&scenario(), Some(census));
        assert_eq!(s.oom_kills, 1);
        let g = &s.kill_groups[0];
        assert_eq!(g.container, "container:4c01db0b339c");
        assert!(g.own_limit, "{g:?}");
        assert_eq!(
            (g.limit_bytes, g.usage_bytes),
            (Some(64 * MIB), Some(64 * MIB))
        );
        assert_eq!(g.verdict.kind, VerdictKind::AnonGrowth);

        // Anon from 1 MiB at the first sample to 62 MiB at the kill (the kernel's report).
        let top = &s.grew_most[0];
        assert_eq!(
            (top.name.as_str(), top.form, top.bytes, top.source),
            (
                "container:4c01db0b339c",
                GrowthForm::Anon,
                61 * MIB,
                GrowthSource::StatsSamples
            )
        );
        let host = &s.host_grew_most[0];
        assert_eq!(
            (host.name.as_str(), host.form, host.bytes),
            ("backup.service", GrowthForm::PageCache, 47 * MIB)
        );
        assert_eq!(host.file.as_ref().map(|f| f.inode), Some(11));

        assert_eq!(
            s.dying,
            DyingSummary {
                at_start: Some(14),
                memcg_ids_in_use_at_start: Some(144),
                headroom_at_start: Some(65_391),
                removed_while_charged: 2,
                freed_after_dying: 1,
                still_dying_at_end: 1,
                most_at_once: 1,
            }
        );

        let lines: Vec<String> = s.lines().into_iter().map(|l| l.text).collect();
        assert_eq!(lines.len(), 5, "{lines:#?}");
        assert!(
            lines[0].starts_with("OOM kill at ")
                && lines[0].ends_with(
                    ": memhog (pid 42) in container:4c01db0b339c; the limit that fired: its \
                     own, 64.0MiB (usage 64.0MiB)"
                ),
            "{lines:#?}"
        );
        assert!(
            lines[1].starts_with("verdict: anon growth: anon memory grew by 61.0MiB"),
            "{lines:#?}"
        );
        assert_eq!(lines[2], "grew most: container:4c01db0b339c anon +61.0MiB");
        assert_eq!(
            lines[3],
            "host cgroups that grew most: backup.service page cache +47.0MiB, most in /data/file11"
        );
        assert_eq!(
            lines[4],
            "dying memcgs: 14 at the start (144 of the kernel's 65535 memcg ids in use, 65391 \
             left); 2 removed while still charged during the recording, 1 freed, 1 still dying \
             at the end"
        );
    }

    /// The pod's limit fired for a container without one: the kill names the pod, and the pod
    /// (whose samples hold its containers' memory) is not a grower of its own.
    #[test]
    fn a_kill_by_the_pods_limit_names_the_pod() {
        let c = container_path();
        let pod = pod_path();
        let mut events = Vec::new();
        for (at, anon) in [(0, MIB), (1_000_000_000, 200 * MIB)] {
            events.push(stats_with_limit(at, &pod, anon + 10 * MIB, Some(256 * MIB)));
            events.push(stats_with_limit(at, &c, anon, None));
        }
        events.push(oom_by(1_500_000_000, &c, &pod, 256 * MIB));
        let s = summary_of(&events, None);
        let g = &s.kill_groups[0];
        assert!(!g.own_limit);
        assert_eq!(
            g.limit_owner.as_deref(),
            Some("pod:0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0")
        );
        let line = &s.lines()[0].text;
        assert!(
            line.ends_with(&format!(
                "the limit that fired: pod:0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0's, 256.0MiB \
                 (usage 211.0MiB), cgroup {pod}"
            )),
            "{line}"
        );
        let names: Vec<&str> = s.grew_most.iter().map(|g| g.name.as_str()).collect();
        assert_eq!(names, ["container:4c01db0b339c"]);
        assert_eq!(s.grew_most[0].bytes, 199 * MIB);
        assert!(s.lines().iter().any(|l| l.text.starts_with(
            "dying memcgs: unknown at the start (the recording did not count them); none"
        )));
    }

    /// Kills repeated in one container are one line; an OOM storm over many containers is
    /// counted, and the summary stays about ten lines.
    #[test]
    fn an_oom_storm_is_counted_not_listed() {
        let mut events = Vec::new();
        for i in 0..6_u64 {
            // Container ids `00abab…` to `05abab…`.
            let cgroup = format!(
                "/kubepods/pod0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f{i}/{i:02}{}",
                "ab".repeat(31)
            );
            for k in 0..=i {
                events.push(oom(1_000 * (i * 10 + k), &cgroup, None));
            }
        }
        let s = summary_of(&events, None);
        assert_eq!(s.oom_kills, 21);
        let listed: Vec<(u64, &str)> = s
            .kill_groups
            .iter()
            .map(|g| (g.kills, g.container.as_str()))
            .collect();
        assert_eq!(
            listed,
            [(6, "container:05ababababab"), (5, "container:04ababababab")],
            "the most kills first"
        );
        assert_eq!(
            (s.kills_not_listed, s.containers_with_kills_not_listed),
            (10, 4)
        );
        let lines = s.lines();
        assert!(lines.len() <= 10, "{lines:#?}");
        assert!(lines[0].text.starts_with("6 OOM kills from "), "{lines:#?}");
        assert!(
            lines[0]
                .text
                .contains(": memhog (pid 42) and others in container:05ababababab;"),
            "{lines:#?}"
        );
        assert_eq!(
            lines[4].text,
            "… and 10 more OOM kills in 4 containers (in their sections below)"
        );
    }

    /// Samples are hierarchical: a parent's growth is its children's, named once, at them.
    #[test]
    fn growth_is_named_where_it_happened_not_at_every_ancestor() {
        let parent = "/node-agent";
        let child = format!("{parent}/docker/{}", "d".repeat(64));
        let mut events = Vec::new();
        for (at, anon) in [(0, MIB), (1_000_000_000, 90 * MIB)] {
            events.push(stats_with_limit(at, parent, anon + MIB, None));
            events.push(stats_with_limit(at, &child, anon, None));
        }
        let s = summary_of(&events, None);
        let names: Vec<(&str, u64)> = s
            .grew_most
            .iter()
            .map(|g| (g.name.as_str(), g.bytes))
            .collect();
        assert_eq!(names, [("docker:dddddddddddd", 89 * MIB)]);
        assert_eq!(
            s.host_grew_most,
            [],
            "the parent's samples hold the container's growth"
        );
    }

    #[test]
    fn a_global_oom_says_no_limit_fired() {
        let mut e = oom(5, &container_path(), None);
        if let What::OomKill(k) = &mut e.what {
            k.limit_cgroup = None;
            k.constraint = Some(OomConstraint::None);
        }
        let s = summary_of(&[e], None);
        assert!(
            s.lines()[0].text.ends_with(
                "in container:4c01db0b339c; no memcg limit fired: the node itself ran out of \
                 memory (global OOM)"
            ),
            "{:#?}",
            s.lines()
        );
    }

    #[test]
    fn no_kill_is_said_too() {
        let s = summary_of(&[stats(0, &container_path(), MIB, MIB)], None);
        let lines = s.lines();
        assert_eq!(lines[0].text, "OOM kills: none in this recording");
        assert_eq!(
            lines[1].text,
            "grew most: no container's or pod's memory grew in this recording"
        );
    }
}
