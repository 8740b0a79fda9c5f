//! Why an OOM kill happened, in one word and one sentence, from the memory at the kill and the
//! samples before it.
//!
//! The thresholds are deliberately coarse: they pick the dominant story, and the sentence gives
//! the numbers so an operator can disagree. In order:
//!
//! 1. **Page cache reclaim could not free**: page cache (`file`) is at least
//!    [`CACHE_SHARE`] of usage at the kill. Reclaim runs before every memcg OOM, so page cache
//!    still charged then is cache the kernel could not free (dirty, under writeback, mapped,
//!    shmem) or kept re-faulting; ineffective reclaims before the kill are named as evidence.
//! 2. **Slab growth**: kernel memory is at least [`SLAB_SHARE`] of usage at the kill (checked
//!    before 1 when it is the larger of the two).
//! 3. **Anon growth**: anonymous memory grew by at least [`GROWTH_SHARE`] of the limit between
//!    the first sample and the kill, or there are no earlier samples to tell (the usual
//!    story: a process allocated until the limit).
//! 4. **Limit set too low**: usage was already at least [`STEADY_SHARE`] of the limit at the
//!    first sample and anon did not grow by [`GROWTH_SHARE`] of the limit: the workload's
//!    steady footprint does not fit.
//! 5. Otherwise whatever is largest at the kill, said as such.

use std::fmt::Write as _;

use serde::Serialize;

use super::model::MemoryPoint;
use crate::units::human_bytes;

/// Page cache share of usage at the kill from which the kill is blamed on page cache.
pub const CACHE_SHARE: f64 = 0.40;
/// Kernel memory (slab) share of usage at the kill from which the kill is blamed on slab.
pub const SLAB_SHARE: f64 = 0.30;
/// Anon growth before the kill, as a share of the limit, that counts as growth.
pub const GROWTH_SHARE: f64 = 0.25;
/// Usage at the first sample, as a share of the limit, that counts as running at the limit.
pub const STEADY_SHARE: f64 = 0.75;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VerdictKind {
    AnonGrowth,
    PageCacheNotReclaimed,
    SlabGrowth,
    LimitTooLow,
    /// Neither the kernel's report nor a sample gave the memory at the kill.
    Unknown,
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
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Verdict {
    pub kind: VerdictKind,
    /// One sentence with the numbers behind the verdict.
    pub reason: String,
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
            reason: "no memory breakdown at the kill (the kernel's report was not seen and no \
                     sample was taken): record with --stats-interval to have one"
                .to_owned(),
        };
    };
    let mut verdict = cache_or_slab(at, evidence).unwrap_or_else(|| anon_or_limit(at, evidence));
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
            reason: format!(
                "page cache was {} ({}) of the {} in use at the kill and reclaim could not free \
                 it (dirty, under writeback, mapped or shmem pages)",
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
                reason: format!(
                    "usage was already {}{of_limit} at the first sample ({}) and anon grew only \
                     {} before the kill: the workload's steady footprint does not fit its limit",
                    percent(first.usage.unwrap_or(0), limit.unwrap_or(0)),
                    first.time,
                    human_bytes(grew.unwrap_or(0)),
                ),
            }
        }
        (None, _) => Verdict {
            kind: VerdictKind::AnonGrowth,
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

#[cfg(test)]
mod tests {
    use super::*;

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
        }
    }

    fn judge_with(at: MemoryPoint, history: &[MemoryPoint]) -> Verdict {
        judge(&Evidence {
            at_kill: Some(at),
            history,
            reclaims: 10,
            ineffective_reclaims: 7,
            top_slab_cache: Some(("dentry".into(), 20 << 20)),
        })
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
