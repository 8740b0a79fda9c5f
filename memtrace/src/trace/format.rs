//! Trace file layout, version 5 (versions 2 to 4 differ only inside blocks, see `records`);
//! docs/trace-format.md is the byte-by-byte description. All integers little-endian.
//!
//! ```text
//! file     := preamble frame*
//! preamble := magic "MEMTRACE" | version u16 | reserved u16 | header_len u32
//!             | header (JSON `TraceHeader`, header_len bytes) | crc32 u32 (of all before it)
//! frame    := kind u8 | codec u8 | flags u8 | reserved u8 | stored_len u32 | raw_len u32
//!             | payload_crc u32 | head_crc u32 (of the 16 bytes before it) | payload
//! CHUNK (1)  codec 1 (zstd): payload decompresses to raw_len bytes of whole records (see
//!            `records`); flags: FIRST (a block starts), LAST (the block ends)
//! END   (2)  codec 0: events u64 | lost_kinds u32 | reserved u32 | lost u64 × lost_kinds
//! ```
//!
//! A block is one zstd frame of up to about 1 MiB of records, written as chunks: the writer
//! flushes the compressor at least every second and writes what it produced as a chunk, so
//! each second's events are on disk while later chunks still compress against earlier ones.
//! Each block decodes on its own (from its FIRST chunk); a recorder killed mid-chunk loses
//! that chunk only.
//!
//! The framing is written by hand, on purpose: what it must do — chunks flushed every second
//! inside a zstd frame that keeps compressing across them, a checksum on every chunk head and
//! payload, a reader that returns every whole chunk of a file cut anywhere and says where —
//! is what no container crate offers (zstd's own seekable format and `zip`/`tar` need the
//! file finished to be read, and lose the tail a `kill -9` leaves). What is inside a chunk is
//! the event model through postcard.

use serde::{Deserialize, Serialize};

use crate::attribution::MemcgCensus;

pub const MAGIC: &[u8; 8] = b"MEMTRACE";
pub const VERSION: u16 = 5;
/// The oldest version this memtrace reads.
pub const OLDEST_READABLE: u16 = 2;
pub const PREAMBLE_LEN: usize = 16;
pub const FRAME_HEAD_LEN: usize = 20;
pub const FRAME_CHUNK: u8 = 1;
/// `flags` of a chunk: the first of its block (the decompressor starts afresh).
pub const FLAG_FIRST: u8 = 1;
/// `flags` of a chunk: the last of its block (its zstd frame ends in it).
pub const FLAG_LAST: u8 = 2;
pub const FRAME_END: u8 = 2;
pub const CODEC_NONE: u8 = 0;
pub const CODEC_ZSTD: u8 = 1;
/// No header is larger; a bigger length means damage, not a reason to allocate.
pub const MAX_HEADER: u32 = 1 << 20;
/// No chunk, stored or decompressed, is larger, and no block's zstd window (the writer ends
/// blocks at a quarter of this): the reader's allocation bound for any input.
pub const MAX_BLOCK: u32 = 4 << 20;
/// At most this many lost-event kinds in an end marker.
pub const MAX_LOST_KINDS: u32 = 1024;

/// Everything needed to read the events on another machine.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceHeader {
    pub memtrace_version: String,
    pub host: String,
    pub kernel_release: String,
    /// Wall-clock time of boot, ns since the Unix epoch; event timestamps count from it.
    pub boot_time_wall_ns: u64,
    /// The clock of event timestamps (`CLOCK_BOOTTIME`).
    pub clock: String,
    /// Page size of the recording host, for page counts in kernel records.
    pub page_size: u64,
    /// Wall time the recording (this file, when rotating) started, ns since the Unix epoch.
    pub started_wall_ns: u64,
    /// What each probe point attached, e.g. `oom_kill=raw_tp/mark_victim`.
    pub probes: Vec<String>,
    /// `v1` or `v2`: the memory controller's cgroup version on the recording host.
    pub cgroup_version: String,
    /// Memory cgroups on the host (live and dying) when the recording started, for the report's
    /// headroom to the kernel's 65 535 memcg ids. Absent in files from before it was recorded,
    /// or when they could not be counted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memcgs_at_start: Option<MemcgCensus>,
    /// A flight recorder's file (`record --flight`): the window it was to keep around an OOM
    /// kill and what it could not keep. For such a file `memcgs_at_start` was counted at or
    /// before the window's start. Absent in continuous recordings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flight: Option<FlightWindow>,
}

/// What a flight recorder's file covers. Times are `CLOCK_BOOTTIME` ns, as event times.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlightWindow {
    /// `--flight`: how much before the (first) kill the file was to keep.
    pub before_ns: u64,
    /// `--flight-after`: how much after the (last) kill.
    pub after_ns: u64,
    /// The OOM kills the file was written for, in order.
    pub kills_ns: Vec<u64>,
    /// The window asked for: `first kill − before` to `last kill + after`.
    pub from_ns: u64,
    pub to_ns: u64,
    /// When memtrace started: a window asked to start earlier starts here.
    pub session_start_ns: u64,
    /// `--flight-bytes`: the memory bound of the events kept.
    pub max_bytes: u64,
    /// Events of the window dropped to stay within `max_bytes`: the newest time dropped, and
    /// how many events (since the session started, for the whole ring) were dropped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cut_by_bytes: Option<FlightCut>,
    /// The recording stopped before `to_ns`: the file ends where it stopped.
    #[serde(default)]
    pub stopped_early: bool,
}

/// The start of a flight window dropped to stay within `--flight-bytes`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlightCut {
    /// Events up to this time (`CLOCK_BOOTTIME` ns) are not in the file.
    pub until_ns: u64,
    /// Events the ring dropped for bytes, in all.
    pub events: u64,
}

/// Whether a stored checksum matches. Fuzzing builds (`cargo fuzz` sets `cfg(fuzzing)`) accept
/// any, so that mutated inputs reach the decoders behind the checksums.
#[must_use]
pub fn checksum_ok(computed: u32, stored: u32) -> bool {
    cfg!(fuzzing) || computed == stored
}

#[must_use]
pub fn crc(parts: &[&[u8]]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    for part in parts {
        h.update(part);
    }
    h.finalize()
}

/// A frame's fixed-size head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHead {
    pub kind: u8,
    pub codec: u8,
    pub flags: u8,
    pub stored_len: u32,
    pub raw_len: u32,
    pub payload_crc: u32,
}

impl FrameHead {
    #[must_use]
    pub fn encode(&self) -> [u8; FRAME_HEAD_LEN] {
        let mut b = [0u8; FRAME_HEAD_LEN];
        b[0] = self.kind;
        b[1] = self.codec;
        b[2] = self.flags;
        b[4..8].copy_from_slice(&self.stored_len.to_le_bytes());
        b[8..12].copy_from_slice(&self.raw_len.to_le_bytes());
        b[12..16].copy_from_slice(&self.payload_crc.to_le_bytes());
        let head_crc = crc(&[&b[..16]]);
        b[16..20].copy_from_slice(&head_crc.to_le_bytes());
        b
    }

    /// `None` when the head's own checksum does not match: its lengths cannot be trusted.
    #[must_use]
    pub fn decode(b: &[u8; FRAME_HEAD_LEN]) -> Option<Self> {
        checksum_ok(crc(&[&b[..16]]), le_u32(&b[16..20])).then(|| Self {
            kind: b[0],
            codec: b[1],
            flags: b[2],
            stored_len: le_u32(&b[4..8]),
            raw_len: le_u32(&b[8..12]),
            payload_crc: le_u32(&b[12..16]),
        })
    }
}

#[must_use]
pub fn le_u32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_le_bytes(a)
}

#[must_use]
pub fn le_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}
