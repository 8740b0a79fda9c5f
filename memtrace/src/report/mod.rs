//! `memtrace report`: what a recorded trace says, per container — OOM kills with a verdict,
//! page-cache growth, reclaim, slab, dying memcgs.
//!
//! - `model`: events folded into a [`Report`] (pure, unit-tested).
//! - `verdict`: why an OOM kill happened, with its thresholds.
//! - `text`, `html` (with `chart` for its SVG timelines): renderers; JSON is the model
//!   serialized.

mod chart;
mod html;
mod model;
mod text;
mod verdict;

pub use html::render as html;
pub use model::{
    CacheGrower, ContainerReport, DyingReport, FileGrowth, Mark, MarkKind, MemoryPoint, OomReport,
    Owner, PageCache, Reclaim, ReclaimFailure, Report, ReportBuilder, Slab, TraceInfo,
};
pub use text::render as text;
pub use verdict::{
    CACHE_SHARE, GROWTH_SHARE, SLAB_SHARE, STEADY_SHARE, Verdict, VerdictKind, judge,
};

#[cfg(test)]
pub(crate) use model::tests as model_tests;
