//! `memtrace report`: what a recorded trace says, per container — OOM kills with a verdict,
//! page-cache growth, reclaim, slab, dying memcgs.
//!
//! - `model`: events folded into a [`Report`] (pure, unit-tested).
//! - `flight`: what a flight recorder's file says of its window.
//! - `global`: who held the node's memory at a global OOM kill (`CONSTRAINT_NONE`).
//! - `summary`: the answer the report opens with, from the finished sections.
//! - `verdict`: why an OOM kill happened, or why a container not killed is at risk, with its
//!   thresholds; `signals`: the counters and cache rows those verdicts read.
//! - `text`, `html` (with `chart` for its SVG timelines): renderers; JSON is the model
//!   serialized.
//!
//! A new event kind is wired where the compiler says, as every match on events and marks is
//! exhaustive: [`ReportBuilder::add`] folds it into a section of [`ContainerReport`] (as `slab`
//! events feed [`Slab`]'s caches next to the samples' kernel memory, and `charge_fail` events
//! [`ChargeFailures`] and a [`MarkKind`], which `chart` gives a colour), the text and HTML
//! renderers show that section, and the Perfetto export gives it a track (`crate::export`).

mod chart;
mod flight;
mod global;
mod html;
mod model;
mod signals;
mod summary;
mod text;
mod verdict;

pub use flight::FlightInfo;
pub use global::{CENSUS_WINDOW_NS, Holder, LISTED_HOLDERS};
pub use html::render as html;
pub use model::{
    CacheGrower, ContainerReport, DyingReport, FileGrowth, LISTED_FAILURES, LISTED_FILES,
    LISTED_GROWERS, MARK_BUCKET_NS, MEMORY_FROM_SAMPLE, Mark, MarkKind, MemoryPoint, OomReport,
    Owner, PageCache, Reclaim, ReclaimFailure, Report, ReportBuilder, Slab, TraceInfo,
};
pub use signals::{PodLimit, RefaultedFile, ShmemFile, Signals, Throttling, tmpfs_mount};
pub use summary::{
    DyingSummary, Growth, GrowthForm, GrowthSource, KillGroup, LISTED_HOST_GROWERS,
    LISTED_KILL_GROUPS, LISTED_WORKLOAD_GROWERS, Summary,
};
pub use text::render as text;
pub use verdict::{
    CACHE_SHARE, DIRTY_SHARE, Evidence, Finding, GROWTH_SHARE, MEMCG_IDS_SHARE, NEAR_LIMIT_SHARE,
    RiskEvidence, SHMEM_SHARE, SLAB_SHARE, STEADY_SHARE, THRASH_MIN_BYTES, THRASH_SHARE, Verdict,
    VerdictKind, judge, judge_memcg_ids, judge_risk,
};

#[cfg(test)]
pub(crate) use model::tests as model_tests;
