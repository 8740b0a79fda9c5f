//! memtrace: why a container's memory stays high and why it was OOM-killed, from eBPF probes on
//! the kernel's memory-cgroup paths.
//!
//! - `probes`: capability detection, BTF offsets, load/attach.
//! - `attribution`: memcg id → cgroup path, limits.
//! - `pipeline`: ring buffer → records → events → sinks.
//! - `sinks`: terminal (text, JSON Lines); `trace`: the trace file format; `flight`: the
//!   flight recorder (the minutes before each OOM kill, in memory, written per kill).
//! - `report`: a recorded trace analysed per container; `export`: it for other tools.
//! - `metrics`: `--metrics`, the live events as Prometheus metrics.
//! - `top`: the full-screen live view, a model of events and its drawing.
//! - `cli`: the subcommands; `startup`: where start-up time goes, on the debug log.

pub mod attribution;
pub mod backlog;
pub mod cli;
pub mod clock;
pub mod event;
pub mod export;
pub mod flight;
pub mod metrics;
mod named;
pub mod pipeline;
mod priority;
pub mod probes;
pub mod report;
pub mod sinks;
pub mod startup;
pub mod top;
pub mod trace;
pub mod units;
