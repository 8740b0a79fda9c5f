//! The flight recorder (`memtrace record --flight DURATION --out DIR`): the newest events kept
//! in memory, bounded by age and bytes (`ring`), and a trace file written for each OOM kill
//! with what came before it and a little after (`recorder`), in the trace format `record`
//! writes, so `report`, `replay` and `export` read it as any recording.

mod census;
mod recorder;
mod ring;

pub use census::CensusHistory;
pub use recorder::{FlightRecorder, LostCounts, Settings};
pub use ring::{Cut, MIN_BYTES, Ring, SEGMENT_RAW_BYTES, Segment};

/// `--flight-bytes` by default: minutes of a busy node's events (about 15 bytes an event
/// compressed), and a small share of a node's memory.
pub const DEFAULT_MAX_BYTES: u64 = 64 << 20;
