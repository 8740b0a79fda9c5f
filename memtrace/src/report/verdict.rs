//! Verdicts: why an OOM kill happened, and why a container that was not killed is at risk, in
//! one word and one sentence, with the evidence behind it, each with its numbers.
//!
//! The thresholds are deliberately coarse: they pick the dominant story, and the sentences give
//! the numbers so an operator can disagree. For an OOM kill, in order:
//!
//! 1. **Page cache reclaim could not free**: page cache (`file`) is at least
//!    [`CACHE_SHARE`] of usage at the kill. Reclaim runs before every memcg OOM, so page cache
//!    still charged then is cache the kernel could not free; ineffective reclaims before the
//!    kill are named as evidence. Said more precisely when the container's counters and cache
//!    rows say which: **shmem/tmpfs** (at least [`SHMEM_SHARE`] of that page cache: memory, not
//!    cache, which reclaim cannot drop without swap), **dirty/writeback** (at least
//!    [`DIRTY_SHARE`]), or **thrashing** (see below).
//! 2. **Slab growth**: kernel memory is at least [`SLAB_SHARE`] of usage at the kill (checked
//!    before 1 when it is the larger of the two).
//! 3. **Anon growth**: anonymous memory grew by at least [`GROWTH_SHARE`] of the limit between
//!    the first sample and the kill, or there are no earlier samples to tell (the usual
//!    story: a process allocated until the limit).
//! 4. **Limit set too low**: usage was already at least [`STEADY_SHARE`] of the limit at the
//!    first sample and anon did not grow by [`GROWTH_SHARE`] of the limit: the workload's
//!    steady footprint does not fit.
//! 5. Otherwise whatever is largest at the kill, said as such.
//!
//! A container not killed is **at risk** ([`judge_risk`]) when it was throttled at
//! `memory.high`, or thrashed (file refaults at least [`THRASH_MIN_BYTES`] and at least
//! [`THRASH_SHARE`] of the page cache it added, in all or in the file re-read most), or its working set reached [`NEAR_LIMIT_SHARE`]
//! of the limit that applies while reclaim failed. Shmem, dirty cache and a pod limit below the
//! sum of its containers' limits are named as evidence of either kind of verdict; the node's
//! memcg ids running out is a verdict of its own ([`judge_memcg_ids`]).

use std::fmt::Write as _;

use serde::Serialize;

use super::{model::MemoryPoint, signals::Signals};
use crate::{attribution::MEMCG_ID_LIMIT, units::human_bytes};

/// Page cache share of usage at the kill from which the kill is blamed on page cache.
pub const CACHE_SHARE: f64 = 0.40;
/// Kernel memory (slab) share of usage at the kill from which the kill is blamed on slab.
pub const SLAB_SHARE: f64 = 0.30;
/// Anon growth before the kill, as a share of the limit, that counts as growth.
pub const GROWTH_SHARE: f64 = 0.25;
/// Usage at the first sample, as a share of the limit, that counts as running at the limit.
pub const STEADY_SHARE: f64 = 0.75;
/// Anon below this share of usage at the kill, with neither cache nor slab heavy, is not called
/// the cause: the breakdown does not explain the usage (a part the source did not give).
pub const ANON_EXPLAINS_SHARE: f64 = 0.40;
/// Shmem/tmpfs share of the page cache at a kill from which the kill is blamed on shmem, and
/// share of usage from which shmem is named as evidence.
pub const SHMEM_SHARE: f64 = 0.50;
/// Dirty and writeback share of the page cache at a kill from which the kill is blamed on
/// them, and share of usage from which they are named as evidence.
pub const DIRTY_SHARE: f64 = 0.25;
/// File refaults, as a share of the page cache added, that count as thrashing: that much of
/// what was read had been read, evicted and read again.
pub const THRASH_SHARE: f64 = 0.25;
/// And at least this much refaulted: a few re-read pages are not thrashing.
pub const THRASH_MIN_BYTES: u64 = 8 << 20;
/// Working set, as a share of the limit that applies, from which a container whose reclaim
/// failed is at risk.
pub const NEAR_LIMIT_SHARE: f64 = 0.90;
/// Memcg ids in use, as a share of the kernel's 65 535, from which the node is at risk.
pub const MEMCG_IDS_SHARE: f64 = 0.90;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VerdictKind {
    AnonGrowth,
    PageCacheNotReclaimed,
    SlabGrowth,
    LimitTooLow,
    /// Neither the kernel's report nor a sample gave the memory at the kill.
    Unknown,
    /// tmpfs/shmem pages: memory reclaim cannot drop without swap.
    Shmem,
    /// Dirty or under-writeback page cache, which reclaim must wait for.
    DirtyCache,
    /// Re-reading what was just evicted: file refaults against the page cache added.
    Thrashing,
    /// Held at `memory.high` (cgroup v2): throttled, stalled on memory.
    Throttled,
    /// Working set near the limit that applies, with reclaim failing.
    NearLimit,
    /// A pod's limit below the sum of its containers' limits.
    PodLimitBelowContainers,
    /// The node's memcg ids (65 535) running out, mostly to dying memcgs.
    MemcgIdsRunningOut,
    /// A global OOM (`CONSTRAINT_NONE`): no memcg limit fired, the node ran out of memory.
    NodeOutOfMemory,
}

impl VerdictKind {
    #[must_use]
    pub const fn label(self) -> &'static str {
        match self {
            Self::AnonGrowth => "anon growth",
            Self::PageCacheNotReclaimed => "page cache that reclaim could not free",
            Self::SlabGrowth => "slab (kernel memory) growth",
            Self::LimitTooLow => "limit set too low",
            Self::Unknown => "unknown",
            Self::Shmem => "shmem/tmpfs holding memory",
            Self::DirtyCache => "dirty/writeback page cache",
            Self::Thrashing => "thrashing",
            Self::Throttled => "throttled at memory.high",
            Self::NearLimit => "working set at the limit with reclaim failing",
            Self::PodLimitBelowContainers => "pod limit below its containers' limits",
            Self::MemcgIdsRunningOut => "memcg ids running out",
            Self::NodeOutOfMemory => "node out of memory",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Verdict {
    pub kind: VerdictKind,
    /// One sentence with the numbers behind the verdict.
    pub reason: String,
    /// What else the container's counters and events say, each with its numbers.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub evidence: Vec<Finding>,
}

impl Verdict {
    fn new(kind: VerdictKind, reason: String) -> Self {
        Self {
            kind,
            reason,
            evidence: Vec::new(),
        }
    }
}

/// One piece of evidence: what it shows and its numbers.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Finding {
    pub kind: VerdictKind,
    pub text: String,
}

/// What is known when judging one kill.
#[derive(Clone, Debug, Default)]
pub struct Evidence<'a> {
    /// The memory of the memcg whose limit fired, at the kill.
    pub at_kill: Option<MemoryPoint>,
    /// Samples of that memcg before the kill, oldest first.
    pub history: &'a [MemoryPoint],
    /// Limit reclaims in the container before the kill, and how many freed nothing.
    pub reclaims: u64,
    pub ineffective_reclaims: u64,
    /// The accounted slab cache that grew most before the kill, and by how much (from `slab`
    /// events, when the slab probe was attached).
    pub top_slab_cache: Option<(String, i64)>,
    /// What the container's counters and page-cache rows say.
    pub signals: Signals,
}

#[expect(
    clippy::cast_precision_loss,
    reason = "shares of memory sizes, shown as whole percent"
)]
fn share(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

fn percent(part: u64, whole: u64) -> String {
    format!("{:.0}%", share(part, whole) * 100.0)
}

#[must_use]
pub fn judge(evidence: &Evidence<'_>) -> Verdict {
    let Some(at) = evidence.at_kill.as_ref().filter(|m| m.usage.is_some()) else {
        return Verdict {
            kind: VerdictKind::Unknown,
            evidence: Vec::new(),
            reason: "no memory breakdown at the kill (the kernel's report was not seen and no \
                     sample was taken): record with --stats-interval to have one"
                .to_owned(),
        };
    };
    let mut verdict = cache_or_slab(at, evidence).unwrap_or_else(|| anon_or_limit(at, evidence));
    let context = Context {
        usage: at.usage.unwrap_or(0),
        shmem_at: at.shmem,
    };
    let findings = findings(&evidence.signals, &context);
    if verdict.kind == VerdictKind::PageCacheNotReclaimed {
        // Which page cache it was, when the counters and cache rows say: the first that
        // holds most of it.
        let file = at.file.unwrap_or(0);
        let refined = findings.iter().find(|(f, bytes)| match f.kind {
            VerdictKind::Shmem => share(*bytes, file) >= SHMEM_SHARE,
            VerdictKind::DirtyCache => share(*bytes, file) >= DIRTY_SHARE,
            VerdictKind::Thrashing => true,
            _ => false,
        });
        if let Some((f, _)) = refined {
            verdict.kind = f.kind;
            // Shmem and dirty pages are not the cache the reader thinks of: said by their name
            // alone. Thrashing is page cache, re-read.
            verdict.reason = if f.kind == VerdictKind::Thrashing {
                format!("{}; {}", verdict.reason, f.text)
            } else {
                f.text.clone()
            };
        }
    }
    verdict.evidence = findings
        .into_iter()
        .map(|(f, _)| f)
        .filter(|f| f.kind != verdict.kind)
        .collect();
    if evidence.reclaims > 0 {
        // Reclaim always runs before a memcg OOM kill; how much of it freed nothing says how
        // stuck the memory was (anon without swap, dirty or pinned cache).
        let _ = write!(
            verdict.reason,
            "; {} of {} limit reclaims before the kill freed nothing",
            evidence.ineffective_reclaims, evidence.reclaims
        );
    }
    verdict
}

/// Rules 1 and 2: what the kill's breakdown alone says.
fn cache_or_slab(at: &MemoryPoint, evidence: &Evidence<'_>) -> Option<Verdict> {
    let usage = at.usage.unwrap_or(0);
    let file = at.file.unwrap_or(0);
    let kernel = at.kernel.unwrap_or(0);
    let cache_heavy = share(file, usage) >= CACHE_SHARE;
    let slab_heavy = share(kernel, usage) >= SLAB_SHARE;
    if cache_heavy && (!slab_heavy || file >= kernel) {
        return Some(Verdict {
            kind: VerdictKind::PageCacheNotReclaimed,
            evidence: Vec::new(),
            reason: format!(
                "page cache was {} ({}) of the {} in use at the kill and reclaim could not free \
                 it",
                percent(file, usage),
                human_bytes(file),
                human_bytes(usage),
            ),
        });
    }
    slab_heavy.then(|| {
        let mut growth = evidence
            .history
            .first()
            .and_then(|f| f.kernel)
            .map_or_else(String::new, |before| {
                format!(", up from {} at the first sample", human_bytes(before))
            });
        if let Some((cache, net)) = &evidence.top_slab_cache {
            let _ = write!(
                growth,
                "; the slab cache that grew most is {cache} (+{})",
                human_bytes(net.unsigned_abs())
            );
        }
        Verdict {
            kind: VerdictKind::SlabGrowth,
            evidence: Vec::new(),
            reason: format!(
                "kernel memory (slab: dentries, inodes, sockets …) was {} ({}) of the {} in use \
                 at the kill{growth}",
                percent(kernel, usage),
                human_bytes(kernel),
                human_bytes(usage),
            ),
        }
    })
}

/// Rules 3 to 5: anon, and whether it grew or was always there.
fn anon_or_limit(at: &MemoryPoint, evidence: &Evidence<'_>) -> Verdict {
    let usage = at.usage.unwrap_or(0);
    let anon = at.anon.unwrap_or(0);
    let limit = at
        .limit
        .or_else(|| evidence.history.iter().find_map(|m| m.limit));
    let of_limit = limit.map_or_else(String::new, |l| format!(" of the {} limit", human_bytes(l)));
    let first = evidence.history.first();
    let grew = first
        .and_then(|f| f.anon)
        .map(|before| anon.saturating_sub(before));
    let growth_counts = |g: u64| limit.is_none_or(|l| share(g, l) >= GROWTH_SHARE);
    match (first, grew) {
        (Some(first), Some(g)) if growth_counts(g) => Verdict {
            kind: VerdictKind::AnonGrowth,
            evidence: Vec::new(),
            reason: format!(
                "anon memory grew by {} (from {} at {} to {} at the kill){of_limit}: a process \
                 kept allocating (a leak or a load spike)",
                human_bytes(g),
                human_bytes(first.anon.unwrap_or(0)),
                first.time,
                human_bytes(anon),
            ),
        },
        (Some(first), _)
            if limit.is_some_and(|l| share(first.usage.unwrap_or(0), l) >= STEADY_SHARE) =>
        {
            Verdict {
                kind: VerdictKind::LimitTooLow,
                evidence: Vec::new(),
                reason: format!(
                    "usage was already {}{of_limit} at the first sample ({}) and anon grew only \
                     {} before the kill: the workload's steady footprint does not fit its limit",
                    percent(first.usage.unwrap_or(0), limit.unwrap_or(0)),
                    first.time,
                    human_bytes(grew.unwrap_or(0)),
                ),
            }
        }
        _ if share(anon, usage) < ANON_EXPLAINS_SHARE => Verdict {
            kind: VerdictKind::Unknown,
            evidence: Vec::new(),
            reason: format!(
                "no part of the memory at the kill explains its {} in use: anon {}, page cache                  {}, kernel {} (a part the kernel's report did not break down)",
                human_bytes(usage),
                human_bytes(anon),
                at.file.map_or_else(|| "unknown".to_owned(), human_bytes),
                at.kernel.map_or_else(|| "unknown".to_owned(), human_bytes),
            ),
        },
        (None, _) => Verdict {
            kind: VerdictKind::AnonGrowth,
            evidence: Vec::new(),
            reason: format!(
                "anon memory was {} ({}) of the {} in use at the kill{of_limit}; no sample before \
                 the kill shows how fast it grew",
                percent(anon, usage),
                human_bytes(anon),
                human_bytes(usage),
            ),
        },
        (Some(_), _) => Verdict {
            kind: VerdictKind::AnonGrowth,
            evidence: Vec::new(),
            reason: format!(
                "anon memory was the largest part at the kill ({}, {} of the {} in use), though \
                 it grew only {} since the first sample",
                human_bytes(anon),
                percent(anon, usage),
                human_bytes(usage),
                human_bytes(grew.unwrap_or(0)),
            ),
        },
    }
}

/// The memory a finding is measured against.
struct Context {
    /// Usage at the kill, or the container's peak.
    usage: u64,
    /// Shmem at the kill, when the kernel's report said it.
    shmem_at: Option<u64>,
}

/// Every finding the signals support, each with the bytes it is about (for the kill rule to
/// weigh against the page cache), in the order they are said.
fn findings(signals: &Signals, context: &Context) -> Vec<(Finding, u64)> {
    [
        throttled(signals),
        thrashing(signals),
        shmem(signals, context),
        dirty(signals, context),
        pod_limit(signals),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// Shmem/tmpfs at least [`DIRTY_SHARE`] of usage: memory, not cache.
fn shmem(signals: &Signals, context: &Context) -> Option<(Finding, u64)> {
    let bytes = [
        context.shmem_at,
        signals.shmem_bytes,
        signals.shmem_file.as_ref().map(|f| f.peak_bytes),
    ]
    .into_iter()
    .flatten()
    .max()?;
    if bytes == 0 || share(bytes, context.usage) < DIRTY_SHARE {
        return None;
    }
    let mut text = format!(
        "shmem/tmpfs held {} ({} of the {} in use): memory, not cache, which reclaim cannot \
         drop without swap",
        human_bytes(bytes),
        percent(bytes, context.usage),
        human_bytes(context.usage)
    );
    if let Some(f) = &signals.shmem_file {
        let _ = write!(
            text,
            "; most in {}: +{} at its peak{}",
            f.name,
            human_bytes(f.peak_bytes),
            f.mount
                .as_deref()
                .map_or_else(String::new, |m| format!(", on the tmpfs mounted at {m}"))
        );
    }
    Some((
        Finding {
            kind: VerdictKind::Shmem,
            text,
        },
        bytes,
    ))
}

/// Dirty and writeback page cache at least [`DIRTY_SHARE`] of usage.
fn dirty(signals: &Signals, context: &Context) -> Option<(Finding, u64)> {
    let dirty = signals.dirty_bytes.unwrap_or(0);
    let writeback = signals.writeback_bytes.unwrap_or(0);
    let bytes = dirty.saturating_add(writeback);
    if bytes == 0 || share(bytes, context.usage) < DIRTY_SHARE {
        return None;
    }
    Some((
        Finding {
            kind: VerdictKind::DirtyCache,
            text: format!(
                "dirty page cache {} and {} under writeback ({} of the {} in use) at the last \
                 counters reading: reclaim must wait for the disk before it can free them",
                human_bytes(dirty),
                human_bytes(writeback),
                percent(bytes, context.usage),
                human_bytes(context.usage)
            ),
        },
        bytes,
    ))
}

/// File refaults at least [`THRASH_MIN_BYTES`], and at least [`THRASH_SHARE`] of the page
/// cache added, in all or in the file re-read most: a container that streams a large file once
/// (a backup, a log shipper) beside the file it keeps re-reading adds cache that would hide the
/// thrashing of that file in the total; and a reclaim policy that protects a file once it
/// refaults (MGLRU's tiers) keeps the total share low while that file still comes back.
fn thrashing(signals: &Signals) -> Option<(Finding, u64)> {
    let refaults = signals.refault_file_bytes?;
    let added = signals.cache_added_bytes;
    let whole = added > 0 && share(refaults, added) >= THRASH_SHARE;
    let one_file = signals.most_refaulted_file.as_ref().is_some_and(|f| {
        f.refault_bytes >= THRASH_MIN_BYTES
            && f.added_bytes > 0
            && share(f.refault_bytes, f.added_bytes) >= THRASH_SHARE
    });
    if refaults < THRASH_MIN_BYTES || !(whole || one_file) {
        return None;
    }
    let mut text = format!(
        "file refaults {} (pages read again soon after reclaim evicted them) against {} of \
         page cache added ({}): its files do not fit beside the rest of its memory",
        human_bytes(refaults),
        human_bytes(added),
        percent(refaults, added)
    );
    // The file re-read most, where memtrace counted refaults per file; else (a strategy that
    // cannot count them, the counters' totals only) the file added most, said as such.
    if let Some(f) = &signals.most_refaulted_file {
        let _ = write!(
            text,
            "; the file re-read most is {} ({} of refaults against {} added, {})",
            f.name,
            human_bytes(f.refault_bytes),
            human_bytes(f.added_bytes),
            percent(f.refault_bytes, f.added_bytes)
        );
    } else if let Some((file, bytes)) = &signals.most_added_file {
        let _ = write!(
            text,
            "; the file it added most is {file} ({} added; refaults were not counted per file)",
            human_bytes(*bytes)
        );
    }
    Some((
        Finding {
            kind: VerdictKind::Thrashing,
            text,
        },
        refaults,
    ))
}

/// `memory.high` went over at least once.
fn throttled(signals: &Signals) -> Option<(Finding, u64)> {
    let t = signals.throttling.as_ref()?;
    let stalls = match (t.stall_some_seconds, t.stall_full_seconds) {
        (Some(some), Some(full)) => format!(
            "; its tasks stalled on memory {some:.2}s (some) and {full:.2}s (all at once, full)"
        ),
        (Some(some), None) => format!("; its tasks stalled on memory {some:.2}s (some)"),
        _ => "; no stall time (PSI) was recorded".to_owned(),
    };
    Some((
        Finding {
            kind: VerdictKind::Throttled,
            text: format!(
                "usage went over memory.high {} time{} over {:.1}s and the kernel throttled its \
                 allocations (reclaim by its own tasks, then sleeps){stalls}; {} limit reclaims \
                 by its tasks",
                t.high_events,
                if t.high_events == 1 { "" } else { "s" },
                t.seconds,
                t.reclaims
            ),
        },
        0,
    ))
}

/// The pod's limit below the sum of its containers' own limits.
fn pod_limit(signals: &Signals) -> Option<(Finding, u64)> {
    let p = signals.pod_limit.as_ref()?;
    Some((
        Finding {
            kind: VerdictKind::PodLimitBelowContainers,
            text: format!(
                "{}'s limit {} (cgroup {}) is below the sum of its {} containers' limits, {}: a \
                 container can be OOM-killed by the pod's limit while under its own",
                p.owner,
                human_bytes(p.limit_bytes),
                p.cgroup,
                p.children,
                human_bytes(p.children_limit_bytes)
            ),
        },
        0,
    ))
}

/// What is known of a container that was not OOM-killed.
#[derive(Clone, Debug, Default)]
pub struct RiskEvidence {
    pub peak_working_set: Option<u64>,
    pub peak_usage: Option<u64>,
    /// The limit that applies (its own, or an ancestor's), and whose when not its own.
    pub limit: Option<u64>,
    pub limit_owner: Option<String>,
    pub reclaims: u64,
    pub ineffective_reclaims: u64,
    pub charge_failures: u64,
    pub signals: Signals,
}

/// Working set at least [`NEAR_LIMIT_SHARE`] of the limit while reclaim failed.
fn near_limit(r: &RiskEvidence) -> Option<(Finding, u64)> {
    let (ws, limit) = (r.peak_working_set?, r.limit?);
    let failing = r.ineffective_reclaims > 0 || r.charge_failures > 0;
    if !failing || share(ws, limit) < NEAR_LIMIT_SHARE {
        return None;
    }
    let whose = r
        .limit_owner
        .as_deref()
        .map_or_else(String::new, |o| format!(" ({o}'s)"));
    Some((
        Finding {
            kind: VerdictKind::NearLimit,
            text: format!(
                "working set peaked at {} ({}) of the {} limit{whose}; {} of {} limit reclaims \
                 freed nothing and {} charges were refused",
                human_bytes(ws),
                percent(ws, limit),
                human_bytes(limit),
                r.ineffective_reclaims,
                r.reclaims,
                r.charge_failures
            ),
        },
        ws,
    ))
}

/// Whether a container that was not OOM-killed is at risk: throttled, thrashing, or at its
/// limit with reclaim failing (the first that holds is the verdict, the others its evidence,
/// with shmem, dirty cache and a pod limit below its containers' when they hold too).
#[must_use]
pub fn judge_risk(r: &RiskEvidence) -> Option<Verdict> {
    let context = Context {
        usage: r.peak_usage.unwrap_or(0),
        shmem_at: None,
    };
    let mut all = findings(&r.signals, &context);
    if let Some(near) = near_limit(r) {
        // After throttling and thrashing, which say more of why.
        let at = all
            .iter()
            .position(|(f, _)| !matches!(f.kind, VerdictKind::Throttled | VerdictKind::Thrashing))
            .unwrap_or(all.len());
        all.insert(at, near);
    }
    let primary = all.iter().position(|(f, _)| {
        matches!(
            f.kind,
            VerdictKind::Throttled | VerdictKind::Thrashing | VerdictKind::NearLimit
        )
    })?;
    let (first, _) = all.remove(primary);
    Some(Verdict {
        kind: first.kind,
        reason: first.text,
        evidence: all.into_iter().map(|(f, _)| f).collect(),
    })
}

/// The node's memcg ids running out: at least [`MEMCG_IDS_SHARE`] of the kernel's 65 535 in
/// use (live and dying) at the start of the recording. Past the limit, creating a memory
/// cgroup fails (`mkdir`: ENOSPC) and no new container starts.
#[must_use]
pub fn judge_memcg_ids(in_use: u64, dying: u64, dying_at_end: u64) -> Option<Verdict> {
    let limit = MEMCG_ID_LIMIT;
    if share(in_use, limit) < MEMCG_IDS_SHARE {
        return None;
    }
    Some(Verdict::new(
        VerdictKind::MemcgIdsRunningOut,
        format!(
            "{in_use} of the kernel's {limit} memcg ids were in use at the start ({}), {dying} \
             of them by dying memcgs (removed, still charged with page cache or slab); {} left \
             before creating a container fails; {dying_at_end} removed during the recording were \
             still dying at the end",
            percent(in_use, limit),
            limit.saturating_sub(in_use)
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::signals::{PodLimit, RefaultedFile, ShmemFile, Throttling};

    const MIB: u64 = 1 << 20;
    const LIMIT: u64 = 64 * MIB;

    fn assert_says(v: &Verdict, text: &str) {
        assert!(v.reason.contains(text), "{}", v.reason);
    }

    fn point(usage: u64, anon: u64, file: u64, kernel: u64) -> MemoryPoint {
        MemoryPoint {
            timestamp_ns: 0,
            time: "2026-11-27T15:47:01.000000Z".into(),
            usage: Some(usage),
            limit: Some(LIMIT),
            working_set: Some(usage),
            anon: Some(anon),
            file: Some(file),
            kernel: Some(kernel),
            shmem: None,
        }
    }

    fn judge_with(at: MemoryPoint, history: &[MemoryPoint]) -> Verdict {
        judge(&Evidence {
            at_kill: Some(at),
            history,
            reclaims: 10,
            ineffective_reclaims: 7,
            top_slab_cache: Some(("dentry".into(), 20 << 20)),
            signals: Signals::default(),
        })
    }

    fn judge_signals(at: MemoryPoint, signals: Signals) -> Verdict {
        judge(&Evidence {
            at_kill: Some(at),
            history: &[],
            reclaims: 3,
            ineffective_reclaims: 3,
            top_slab_cache: None,
            signals,
        })
    }

    fn kinds(v: &Verdict) -> Vec<VerdictKind> {
        v.evidence.iter().map(|f| f.kind).collect()
    }

    fn thrash_signals() -> Signals {
        Signals {
            cache_added_bytes: 400 * MIB,
            most_added_file: Some(("/data/cold-128m".into(), 380 * MIB)),
            most_refaulted_file: Some(RefaultedFile {
                name: "/data/hot-64m".into(),
                refault_bytes: 200 * MIB,
                added_bytes: 260 * MIB,
            }),
            refault_file_bytes: Some(250 * MIB),
            ..Signals::default()
        }
    }

    /// The memory of a tmpfs file is shmem: the kill is blamed on it and on its mount, not on
    /// "page cache".
    #[test]
    fn page_cache_that_is_mostly_shmem_is_shmem() {
        let mut at = point(LIMIT, 4 * MIB, 58 * MIB, 2 * MIB);
        at.shmem = Some(57 * MIB);
        let v = judge_signals(
            at,
            Signals {
                shmem_file: Some(ShmemFile {
                    name: "/dev/shm/t/f (shmem)".into(),
                    mount: Some("/dev/shm".into()),
                    peak_bytes: 56 * MIB,
                }),
                ..Signals::default()
            },
        );
        assert_eq!(v.kind, VerdictKind::Shmem, "{v:?}");
        assert_says(&v, "shmem/tmpfs held 57.0MiB (89% of the 64.0MiB in use)");
        assert_says(
            &v,
            "most in /dev/shm/t/f (shmem): +56.0MiB at its peak, on the tmpfs mounted at /dev/shm",
        );
        assert!(!v.reason.contains("page cache"), "{v:?}");
        assert!(v.evidence.is_empty(), "{v:?}");
    }

    #[test]
    fn page_cache_that_is_mostly_dirty_is_dirty_cache() {
        let v = judge_signals(
            point(LIMIT, 20 * MIB, 40 * MIB, 4 * MIB),
            Signals {
                dirty_bytes: Some(24 * MIB),
                writeback_bytes: Some(2 * MIB),
                ..Signals::default()
            },
        );
        assert_eq!(v.kind, VerdictKind::DirtyCache, "{v:?}");
        assert_says(
            &v,
            "dirty page cache 24.0MiB and 2.0MiB under writeback (41% of",
        );
    }

    #[test]
    fn page_cache_re_read_after_eviction_is_thrashing() {
        let v = judge_signals(point(LIMIT, 20 * MIB, 40 * MIB, 4 * MIB), thrash_signals());
        assert_eq!(v.kind, VerdictKind::Thrashing, "{v:?}");
        assert_says(&v, "file refaults 250.0MiB");
        assert_says(&v, "against 400.0MiB of page cache added (62%)");
        assert_says(
            &v,
            "the file re-read most is /data/hot-64m (200.0MiB of refaults against 260.0MiB \
             added, 77%)",
        );
        assert!(!v.reason.contains("cold-128m"), "{v:?}");
    }

    /// Where refaults were not counted per file, the file added most, said as such.
    #[test]
    fn without_per_file_refaults_the_file_added_most_is_named() {
        let v = judge_signals(
            point(LIMIT, 20 * MIB, 40 * MIB, 4 * MIB),
            Signals {
                most_refaulted_file: None,
                ..thrash_signals()
            },
        );
        assert_says(
            &v,
            "the file it added most is /data/cold-128m (380.0MiB added; refaults were not \
             counted per file)",
        );
    }

    #[test]
    fn a_few_refaults_are_not_thrashing() {
        let v = judge_signals(
            point(LIMIT, 20 * MIB, 40 * MIB, 4 * MIB),
            Signals {
                refault_file_bytes: Some(4 * MIB),
                cache_added_bytes: 6 * MIB,
                ..Signals::default()
            },
        );
        assert_eq!(v.kind, VerdictKind::PageCacheNotReclaimed, "{v:?}");
        let v = judge_signals(
            point(LIMIT, 20 * MIB, 40 * MIB, 4 * MIB),
            Signals {
                refault_file_bytes: Some(10 * MIB),
                cache_added_bytes: 900 * MIB,
                ..Signals::default()
            },
        );
        assert_eq!(v.kind, VerdictKind::PageCacheNotReclaimed, "{v:?}");
    }

    /// A file re-read after eviction is thrashing even when a file streamed once beside it
    /// added so much cache that the refaults are a small share of the total (measured on 6.12
    /// with MGLRU: 78.8MiB of refaults against 434.8MiB added, 66.8MiB of them in one file).
    #[test]
    fn one_file_re_read_after_eviction_is_thrashing() {
        let signals = Signals {
            cache_added_bytes: 435 * MIB,
            refault_file_bytes: Some(79 * MIB),
            most_refaulted_file: Some(RefaultedFile {
                name: "/data/reread-56m".into(),
                refault_bytes: 67 * MIB,
                added_bytes: 123 * MIB,
            }),
            ..thrash_signals()
        };
        let v = judge_risk(&risk(signals.clone())).expect("at risk");
        assert_eq!(v.kind, VerdictKind::Thrashing, "{v:?}");
        assert_says(&v, "against 435.0MiB of page cache added (18%)");
        assert_says(
            &v,
            "the file re-read most is /data/reread-56m (67.0MiB of refaults against 123.0MiB \
             added, 54%)",
        );
        // The file's own refaults must be more than a few pages.
        let few = Signals {
            most_refaulted_file: Some(RefaultedFile {
                name: "/data/small".into(),
                refault_bytes: 4 * MIB,
                added_bytes: 5 * MIB,
            }),
            ..signals
        };
        assert!(judge_risk(&risk(few)).is_none());
    }

    /// An anon kill keeps its verdict; what else held memory is its evidence.
    #[test]
    fn other_findings_are_evidence_of_a_kill() {
        let mut at = point(LIMIT, 40 * MIB, 20 * MIB, 2 * MIB);
        at.shmem = Some(18 * MIB);
        let v = judge_signals(
            at,
            Signals {
                pod_limit: Some(pod()),
                ..thrash_signals()
            },
        );
        assert_eq!(v.kind, VerdictKind::AnonGrowth, "{v:?}");
        assert_eq!(
            kinds(&v),
            [
                VerdictKind::Thrashing,
                VerdictKind::Shmem,
                VerdictKind::PodLimitBelowContainers
            ]
        );
    }

    fn pod() -> PodLimit {
        PodLimit {
            cgroup: "/kubepods/burstable/podX".into(),
            owner: "pod:X".into(),
            limit_bytes: 128 * MIB,
            children_limit_bytes: 192 * MIB,
            children: 3,
        }
    }

    #[test]
    fn a_pod_limit_below_its_containers_is_named() {
        let (f, _) = pod_limit(&Signals {
            pod_limit: Some(pod()),
            ..Signals::default()
        })
        .expect("finding");
        assert_eq!(
            f.text,
            "pod:X's limit 128.0MiB (cgroup /kubepods/burstable/podX) is below the sum of its 3 \
             containers' limits, 192.0MiB: a container can be OOM-killed by the pod's limit \
             while under its own"
        );
    }

    fn risk(signals: Signals) -> RiskEvidence {
        RiskEvidence {
            peak_working_set: Some(30 * MIB),
            peak_usage: Some(60 * MIB),
            limit: Some(LIMIT),
            limit_owner: None,
            reclaims: 40,
            ineffective_reclaims: 0,
            charge_failures: 0,
            signals,
        }
    }

    #[test]
    fn nothing_wrong_is_not_at_risk() {
        assert_eq!(judge_risk(&risk(Signals::default())), None);
        // Shmem or a pod limit alone is evidence, not a risk.
        let shmem = Signals {
            shmem_bytes: Some(40 * MIB),
            pod_limit: Some(pod()),
            ..Signals::default()
        };
        assert_eq!(judge_risk(&risk(shmem)), None);
    }

    #[test]
    fn thrashing_without_a_kill_is_at_risk() {
        let v = judge_risk(&risk(thrash_signals())).expect("at risk");
        assert_eq!(v.kind, VerdictKind::Thrashing);
        assert_says(&v, "the file re-read most is /data/hot-64m");
    }

    #[test]
    fn a_working_set_at_the_limit_with_reclaim_failing_is_at_risk() {
        let mut r = risk(Signals::default());
        r.peak_working_set = Some(60 * MIB);
        assert_eq!(judge_risk(&r), None, "reclaim did not fail");
        r.ineffective_reclaims = 7;
        r.limit_owner = Some("pod:X".into());
        let v = judge_risk(&r).expect("at risk");
        assert_eq!(v.kind, VerdictKind::NearLimit);
        assert_eq!(
            v.reason,
            "working set peaked at 60.0MiB (94%) of the 64.0MiB limit (pod:X's); 7 of 40 limit \
             reclaims freed nothing and 0 charges were refused"
        );
        r.peak_working_set = Some(50 * MIB);
        assert_eq!(judge_risk(&r), None, "78% is not at the limit");
    }

    /// memory.high exists only on cgroup v2; this project's test hosts are v1, so throttling is
    /// judged from synthetic signals here (and from synthetic events in the model's tests).
    #[test]
    fn throttling_at_memory_high_is_at_risk_with_how_long_and_how_much_it_stalled() {
        let throttled = Signals {
            throttling: Some(Throttling {
                high_events: 57,
                first_ns: 0,
                last_ns: 12_300_000_000,
                seconds: 12.3,
                stall_some_seconds: Some(4.5),
                stall_full_seconds: Some(1.2),
                reclaims: 40,
            }),
            ..thrash_signals()
        };
        let v = judge_risk(&risk(throttled)).expect("at risk");
        assert_eq!(v.kind, VerdictKind::Throttled);
        assert_eq!(
            v.reason,
            "usage went over memory.high 57 times over 12.3s and the kernel throttled its \
             allocations (reclaim by its own tasks, then sleeps); its tasks stalled on memory \
             4.50s (some) and 1.20s (all at once, full); 40 limit reclaims by its tasks"
        );
        assert_eq!(kinds(&v), [VerdictKind::Thrashing]);
    }

    #[test]
    fn memcg_ids_running_out_is_a_node_verdict() {
        assert_eq!(judge_memcg_ids(1_000, 10, 0), None);
        let v = judge_memcg_ids(60_000, 59_000, 2).expect("running out");
        assert_eq!(v.kind, VerdictKind::MemcgIdsRunningOut);
        assert_says(
            &v,
            "60000 of the kernel's 65535 memcg ids were in use at the start (92%)",
        );
        assert_says(&v, "59000 of them by dying memcgs");
        assert_says(&v, "5535 left");
    }

    #[test]
    fn anon_that_grew_to_the_limit_is_anon_growth() {
        let v = judge_with(
            point(LIMIT, 62 * MIB, MIB, MIB),
            &[point(2 * MIB, MIB, MIB, 0)],
        );
        assert_eq!(v.kind, VerdictKind::AnonGrowth, "{v:?}");
        assert_says(&v, "grew by 61.0MiB");
    }

    /// 5.10's v2 `memory.stat` had no `kernel` line: a breakdown without the part that holds
    /// the memory must not be called anon growth.
    #[test]
    fn a_breakdown_that_does_not_explain_usage_is_unknown() {
        let mut at = point(32 * MIB, 0, 0, 0);
        at.kernel = None;
        let v = judge_with(at.clone(), &[point(MIB, 0, 0, 0)]);
        assert_eq!(v.kind, VerdictKind::Unknown);
        assert_says(
            &v,
            "no part of the memory at the kill explains its 32.0MiB in use",
        );
        assert_says(&v, "kernel unknown");
        assert_eq!(judge_with(at, &[]).kind, VerdictKind::Unknown);
    }

    #[test]
    fn anon_without_history_is_anon_growth_said_as_unknown_speed() {
        let v = judge_with(point(LIMIT, 60 * MIB, 2 * MIB, 2 * MIB), &[]);
        assert_eq!(v.kind, VerdictKind::AnonGrowth);
        assert_says(&v, "no sample before");
    }

    #[test]
    fn page_cache_at_the_kill_is_cache_reclaim_could_not_free() {
        let v = judge_with(point(LIMIT, 20 * MIB, 40 * MIB, 4 * MIB), &[]);
        assert_eq!(v.kind, VerdictKind::PageCacheNotReclaimed);
        assert_says(&v, "7 of 10 limit reclaims");
        assert_says(&v, "62%");
    }

    #[test]
    fn kernel_memory_at_the_kill_is_slab_growth() {
        let v = judge_with(
            point(LIMIT, 24 * MIB, 10 * MIB, 30 * MIB),
            &[point(8 * MIB, 4 * MIB, MIB, 3 * MIB)],
        );
        assert_eq!(v.kind, VerdictKind::SlabGrowth);
        assert_says(&v, "up from 3.0MiB");
        assert_says(&v, "grew most is dentry (+20.0MiB)");
    }

    #[test]
    fn cache_and_slab_both_high_picks_the_larger() {
        let v = judge_with(point(LIMIT, 0, 28 * MIB, 36 * MIB), &[]);
        assert_eq!(v.kind, VerdictKind::SlabGrowth);
        let v = judge_with(point(LIMIT, 0, 36 * MIB, 28 * MIB), &[]);
        assert_eq!(v.kind, VerdictKind::PageCacheNotReclaimed);
    }

    #[test]
    fn usage_at_the_limit_from_the_start_is_a_limit_set_too_low() {
        let v = judge_with(
            point(LIMIT, 60 * MIB, 2 * MIB, 2 * MIB),
            &[point(58 * MIB, 56 * MIB, MIB, MIB)],
        );
        assert_eq!(v.kind, VerdictKind::LimitTooLow, "{v:?}");
        assert_says(&v, "91%");
    }

    #[test]
    fn small_growth_from_low_usage_still_blames_anon() {
        let v = judge_with(
            point(LIMIT, 40 * MIB, 10 * MIB, 5 * MIB),
            &[point(40 * MIB, 30 * MIB, 5 * MIB, 5 * MIB)],
        );
        assert_eq!(v.kind, VerdictKind::AnonGrowth);
        assert_says(&v, "grew only 10.0MiB");
    }

    #[test]
    fn no_memory_is_unknown() {
        let v = judge(&Evidence::default());
        assert_eq!(v.kind, VerdictKind::Unknown);
    }
}
