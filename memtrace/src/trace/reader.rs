//! Reading a trace file back, defensively: every length is checked (and checksummed) before it
//! is trusted, every allocation is bounded by [`MAX_BLOCK`], and every way a file can be wrong
//! is an error that says which. A file that simply stops (a recorder killed mid-chunk) is not
//! an error: everything up to the last whole chunk is returned, then [`TraceItem::TailCut`].

use std::{
    fs::File,
    io::{self, BufReader, Read},
    path::{Path, PathBuf},
};

use super::{
    format::{
        CODEC_NONE, CODEC_ZSTD, FLAG_FIRST, FLAG_LAST, FRAME_CHUNK, FRAME_END, FRAME_HEAD_LEN,
        FrameHead, MAGIC, MAX_BLOCK, MAX_HEADER, MAX_LOST_KINDS, OLDEST_READABLE, PREAMBLE_LEN,
        TraceHeader, VERSION, checksum_ok, crc, le_u32, le_u64,
    },
    records::Decoder,
};
use zstd::zstd_safe::{DCtx, DParameter, InBuffer, OutBuffer, ResetDirective, get_error_name};

use crate::{attribution::ContainerIdentity, event::Event};

#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// The reason is the error's source: `memtrace: error:` prints the chain, so naming it
    /// here too printed it twice.
    #[error("cannot read {path}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path} is not a memtrace trace file")]
    NotATrace { path: PathBuf },
    #[error(
        "{path} is a version {found} trace; this memtrace reads versions {OLDEST_READABLE} to \
         {VERSION}: use a newer memtrace"
    )]
    FutureVersion { path: PathBuf, found: u16 },
    #[error(
        "{path} is a version 1 trace (memtrace before trace format 2); this memtrace reads \
         versions {OLDEST_READABLE} to {VERSION}: replay it with the memtrace that recorded it"
    )]
    OldVersion { path: PathBuf },
    #[error("{path} is truncated at byte {offset}, inside its header")]
    Truncated { path: PathBuf, offset: u64 },
    #[error("{path} is corrupt at byte {offset}: {why}")]
    Corrupt {
        path: PathBuf,
        offset: u64,
        why: String,
    },
}

/// What a trace yields, in file order.
#[derive(Debug, PartialEq)]
#[expect(
    clippy::large_enum_variant,
    reason = "read, handed on and dropped one at a time"
)]
pub enum TraceItem {
    Event(Event),
    /// The end marker: totals as the recorder counted them. `lost` is per lost-event kind,
    /// empty when this file did not count them (a file closed by `--max-size`/`--rotate`: the
    /// last file of the recording has the session's counts).
    End {
        events: u64,
        lost: Vec<u64>,
    },
    /// The file stops before its end marker (the recorder was killed or the disk filled):
    /// every event of the whole blocks before `offset` was returned. Nothing follows.
    TailCut {
        /// Where the last whole block ends (the cut block, if any, starts here).
        offset: u64,
        /// Events returned.
        events: u64,
        /// Bytes after `offset` that were not read (a partly written block).
        dropped_bytes: u64,
    },
}

/// What a reader says of a file that ends before its end marker (`TraceItem::TailCut`).
#[must_use]
pub fn cut_short(file: &str, offset: u64, events: u64, dropped_bytes: u64) -> String {
    format!(
        "{file} is cut short at byte {offset} (no end marker: the recorder was killed or the \
         disk filled) after {events} events, {dropped_bytes} bytes of an unfinished block ignored"
    )
}

pub struct TraceReader {
    path: PathBuf,
    input: Box<dyn Read + Send>,
    offset: u64,
    total: Option<u64>,
    header: TraceHeader,
    decoder: Decoder,
    block: Vec<u8>,
    pos: usize,
    block_offset: u64,
    stored: Vec<u8>,
    decompressor: DCtx<'static>,
    /// A block (zstd frame) is open: the next chunk continues it.
    in_block: bool,
    events: u64,
    done: bool,
}

impl TraceReader {
    /// Opens a trace and reads its header.
    ///
    /// # Errors
    ///
    /// When the file cannot be read, is not a trace, is from another format version, or its
    /// header is cut or damaged.
    pub fn open(path: &Path) -> Result<Self, TraceError> {
        let io_error = |source| TraceError::Io {
            path: path.to_owned(),
            source,
        };
        let file = File::open(path).map_err(io_error)?;
        let total = file.metadata().map_err(io_error)?.len();
        Self::from_reader(
            path,
            Box::new(BufReader::with_capacity(1 << 16, file)),
            Some(total),
        )
    }

    /// Reads a trace from any byte source; `name` is what errors call it, `total` its size
    /// when known (for progress).
    ///
    /// # Errors
    ///
    /// As [`TraceReader::open`].
    pub fn from_reader(
        name: &Path,
        input: Box<dyn Read + Send>,
        total: Option<u64>,
    ) -> Result<Self, TraceError> {
        let mut reader = Self {
            path: name.to_owned(),
            input,
            offset: 0,
            total,
            header: TraceHeader {
                memtrace_version: String::new(),
                host: String::new(),
                kernel_release: String::new(),
                boot_time_wall_ns: 0,
                clock: String::new(),
                page_size: 0,
                started_wall_ns: 0,
                probes: Vec::new(),
                cgroup_version: String::new(),
                memcgs_at_start: None,
                flight: None,
            },
            decoder: Decoder::new(VERSION, 1),
            block: Vec::new(),
            pos: 0,
            block_offset: 0,
            stored: Vec::new(),
            decompressor: decompressor().map_err(|source| TraceError::Io {
                path: name.to_owned(),
                source,
            })?,
            in_block: false,
            events: 0,
            done: false,
        };
        reader.read_preamble()?;
        Ok(reader)
    }

    fn read_preamble(&mut self) -> Result<(), TraceError> {
        let mut fixed = [0u8; PREAMBLE_LEN];
        let got = self.fill(&mut fixed)?;
        if got < MAGIC.len() || fixed[..MAGIC.len()] != MAGIC[..] {
            return Err(TraceError::NotATrace {
                path: self.path.clone(),
            });
        }
        if got < PREAMBLE_LEN {
            return Err(self.truncated());
        }
        let version = u16::from_le_bytes([fixed[8], fixed[9]]);
        match version {
            0 => return Err(self.corrupt(8, "format version 0".into())),
            1 => {
                return Err(TraceError::OldVersion {
                    path: self.path.clone(),
                });
            }
            OLDEST_READABLE..=VERSION => {}
            found => {
                return Err(TraceError::FutureVersion {
                    path: self.path.clone(),
                    found,
                });
            }
        }
        let len = le_u32(&fixed[12..16]);
        if len > MAX_HEADER {
            return Err(self.corrupt(12, format!("header length {len} is implausible")));
        }
        let mut json = vec![0u8; len as usize + 4];
        if self.fill(&mut json)? != json.len() {
            return Err(self.truncated());
        }
        let stored = le_u32(&json[len as usize..]);
        json.truncate(len as usize);
        if !checksum_ok(crc(&[&fixed, &json]), stored) {
            return Err(self.corrupt(16, "header checksum mismatch".into()));
        }
        self.header = serde_json::from_slice(&json)
            .map_err(|e| self.corrupt(16, format!("header is not valid: {e}")))?;
        if self.header.page_size == 0 {
            return Err(self.corrupt(16, "header has page size 0".into()));
        }
        self.decoder = Decoder::new(version, self.header.page_size);
        Ok(())
    }

    #[must_use]
    pub fn header(&self) -> &TraceHeader {
        &self.header
    }

    /// Bytes of the file consumed so far (whole blocks), for progress.
    #[must_use]
    pub fn bytes_read(&self) -> u64 {
        self.offset
    }

    /// The file's size when it was opened, if known.
    #[must_use]
    pub fn total_bytes(&self) -> Option<u64> {
        self.total
    }

    /// Every cgroup named so far, with its container: the file's cgroup table as read up to
    /// here.
    #[must_use]
    pub fn cgroups(&self) -> &[(Option<String>, Option<ContainerIdentity>)] {
        self.decoder.table()
    }

    /// The next event, then the end marker (or [`TraceItem::TailCut`] when the file stops
    /// early); `None` after that.
    ///
    /// # Errors
    ///
    /// Damaged content ([`TraceError::Corrupt`]) or a read error; everything before it was
    /// complete and has been returned.
    pub fn next_item(&mut self) -> Result<Option<TraceItem>, TraceError> {
        loop {
            if self.done {
                return Ok(None);
            }
            if self.pos < self.block.len() {
                let mut pos = self.pos;
                let next = self.decoder.next(&self.block, &mut pos);
                self.pos = pos;
                match next {
                    Ok(Some(observed)) => {
                        self.events += 1;
                        return Ok(Some(TraceItem::Event(observed)));
                    }
                    Ok(None) => {}
                    Err(why) => {
                        self.done = true;
                        return Err(self.corrupt(self.block_offset, format!("in block: {why}")));
                    }
                }
            }
            match self.next_frame() {
                Ok(Some(item)) => return Ok(Some(item)),
                Ok(None) => {}
                Err(e) => {
                    self.done = true;
                    return Err(e);
                }
            }
        }
    }

    /// Reads the next frame: a block becomes the current one (`None`), an end marker or a cut
    /// tail is returned.
    fn next_frame(&mut self) -> Result<Option<TraceItem>, TraceError> {
        let at = self.offset;
        let mut raw_head = [0u8; FRAME_HEAD_LEN];
        let got = self.fill(&mut raw_head)?;
        if got < FRAME_HEAD_LEN {
            return Ok(Some(self.tail_cut(at, got as u64)));
        }
        let head = FrameHead::decode(&raw_head)
            .ok_or_else(|| self.corrupt(at, "frame header checksum mismatch".into()))?;
        if head.stored_len > MAX_BLOCK || head.raw_len > MAX_BLOCK {
            return Err(self.corrupt(at, "frame length is implausible".into()));
        }
        self.stored.resize(head.stored_len as usize, 0);
        let mut stored = std::mem::take(&mut self.stored);
        let got = self.fill(&mut stored);
        self.stored = stored;
        let got = got?;
        if got < self.stored.len() {
            return Ok(Some(self.tail_cut(at, (FRAME_HEAD_LEN + got) as u64)));
        }
        if !checksum_ok(crc(&[&self.stored]), head.payload_crc) {
            return Err(self.corrupt(at, "block checksum mismatch".into()));
        }
        match (head.kind, head.codec) {
            (FRAME_CHUNK, CODEC_ZSTD) => {
                self.chunk(at, head)?;
                Ok(None)
            }
            (FRAME_END, CODEC_NONE) if !self.in_block => self.end(at).map(Some),
            (FRAME_END, CODEC_NONE) => Err(self.corrupt(at, "end marker inside a block".into())),
            (kind, codec) => {
                Err(self.corrupt(at, format!("unknown frame type {kind} (codec {codec})")))
            }
        }
    }

    /// Decompresses a chunk, continuing its block, into the current records.
    fn chunk(&mut self, at: u64, head: FrameHead) -> Result<(), TraceError> {
        let first = head.flags & FLAG_FIRST != 0;
        let last = head.flags & FLAG_LAST != 0;
        if head.flags & !(FLAG_FIRST | FLAG_LAST) != 0 || first == self.in_block {
            return Err(self.corrupt(
                at,
                if first {
                    "a block starts before the previous one ended".into()
                } else {
                    "chunk continues a block that never started".into()
                },
            ));
        }
        if first {
            self.decompressor
                .reset(ResetDirective::SessionOnly)
                .map_err(|c| self.corrupt(at, format!("zstd: {}", get_error_name(c))))?;
        }
        let raw_len = head.raw_len as usize;
        self.block.clear();
        self.block.reserve_exact(raw_len);
        let mut input = InBuffer::around(&self.stored);
        let mut output = OutBuffer::around(&mut self.block);
        let frame_done = loop {
            let before = (input.pos(), output.pos());
            let hint = self
                .decompressor
                .decompress_stream(&mut output, &mut input)
                .map_err(|c| TraceError::Corrupt {
                    path: self.path.clone(),
                    offset: at,
                    why: format!("chunk does not decompress: {}", get_error_name(c)),
                })?;
            if hint == 0 || output.pos() > raw_len || (input.pos(), output.pos()) == before {
                break hint == 0;
            }
        };
        let (consumed, produced) = (input.pos(), output.pos());
        if consumed != self.stored.len() || produced != raw_len {
            return Err(self.corrupt(
                at,
                format!(
                    "chunk decompresses to {produced} bytes from {consumed} of {}, not {raw_len}",
                    self.stored.len()
                ),
            ));
        }
        if frame_done != last {
            return Err(self.corrupt(at, "block does not end where its chunk says".into()));
        }
        self.in_block = !last;
        self.pos = 0;
        self.block_offset = at;
        Ok(())
    }

    fn end(&mut self, at: u64) -> Result<TraceItem, TraceError> {
        let p = &self.stored;
        if p.len() < 16 {
            return Err(self.corrupt(at, "short end marker".into()));
        }
        let events = le_u64(&p[..8]);
        let kinds = le_u32(&p[8..12]);
        let (counters, rest) = p[16..].as_chunks::<8>();
        if kinds > MAX_LOST_KINDS || counters.len() != kinds as usize || !rest.is_empty() {
            return Err(self.corrupt(at, "end marker's lost counters do not match".into()));
        }
        let lost = counters.iter().map(|c| u64::from_le_bytes(*c)).collect();
        if events != self.events {
            return Err(self.corrupt(
                at,
                format!(
                    "end marker counts {events} events, file holds {}",
                    self.events
                ),
            ));
        }
        self.done = true;
        Ok(TraceItem::End { events, lost })
    }

    fn tail_cut(&mut self, offset: u64, dropped_bytes: u64) -> TraceItem {
        self.done = true;
        TraceItem::TailCut {
            offset,
            events: self.events,
            dropped_bytes,
        }
    }

    /// Reads until `buf` is full or the input ends; returns how much was read.
    fn fill(&mut self, buf: &mut [u8]) -> Result<usize, TraceError> {
        let mut filled = 0;
        while filled < buf.len() {
            match self.input.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => {
                    return Err(TraceError::Io {
                        path: self.path.clone(),
                        source,
                    });
                }
            }
        }
        self.offset += filled as u64;
        Ok(filled)
    }

    fn truncated(&self) -> TraceError {
        TraceError::Truncated {
            path: self.path.clone(),
            offset: self.offset,
        }
    }

    fn corrupt(&self, offset: u64, why: String) -> TraceError {
        TraceError::Corrupt {
            path: self.path.clone(),
            offset,
            why,
        }
    }
}

/// A zstd decompressor that refuses frames asking for a window larger than a block: a damaged
/// or hostile frame header cannot make it allocate more than that.
fn decompressor() -> io::Result<DCtx<'static>> {
    let mut d =
        DCtx::try_create().ok_or_else(|| io::Error::other("cannot create a zstd decompressor"))?;
    d.set_parameter(DParameter::WindowLogMax(MAX_BLOCK.ilog2()))
        .map_err(|c| io::Error::other(format!("zstd: {}", get_error_name(c))))?;
    Ok(d)
}
