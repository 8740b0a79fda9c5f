//! Appending to a trace file: events are compressed into a block (one zstd frame), flushed to
//! the file as a chunk at the latest [`SEAL_AGE`] after the chunk's first event (the pipeline
//! asks at least every [`crate::pipeline::FLUSH_EVERY`]), so a recorder killed with `kill -9`
//! loses under a second; the block ends after [`SEAL_BYTES`] of records.

use std::{
    fs::{File, OpenOptions},
    io::{self, Write},
    os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _},
    path::Path,
    time::{Duration, Instant},
};

use memtrace_common::LostKind;
use zstd::zstd_safe::{CParameter, InBuffer, OutBuffer, zstd_sys::ZSTD_EndDirective};

use super::{
    format::{
        CODEC_NONE, CODEC_ZSTD, FLAG_FIRST, FLAG_LAST, FRAME_CHUNK, FRAME_END, FRAME_HEAD_LEN,
        FrameHead, MAGIC, MAX_BLOCK, MAX_HEADER, PREAMBLE_LEN, TraceHeader, VERSION, crc,
    },
    records::Encoder,
};
use crate::{event::Event, sinks::Sink};

/// A block ends once its records reach this size (a quarter of what readers accept).
pub const SEAL_BYTES: usize = (MAX_BLOCK / 4) as usize;
/// A chunk is written on the first flush once its oldest event is this old.
pub const SEAL_AGE: Duration = Duration::from_millis(500);
/// zstd's default level: higher ones cost more time than they save bytes at high event rates.
const LEVEL: i32 = 3;
/// zstd window: a whole block, and no more than readers accept.
const WINDOW_LOG: u32 = MAX_BLOCK.ilog2() - 1;
/// Bytes an end marker adds, for callers that bound the file size.
pub const END_BYTES: u64 = FRAME_HEAD_LEN as u64 + 16 + 8 * 64;

pub struct TraceWriter {
    file: File,
    encoder: Encoder,
    /// Records of the open chunk.
    raw: Vec<u8>,
    /// When the open chunk got its first record.
    oldest: Option<Instant>,
    compressor: zstd::zstd_safe::CCtx<'static>,
    /// Records already in the open block's earlier chunks; 0: the next chunk starts a block.
    block_raw: usize,
    frame: Vec<u8>,
    events: u64,
    bytes: u64,
}

impl TraceWriter {
    /// Creates `path` (mode 0600: traces name every cgroup and process on the node; an existing
    /// file is replaced) and writes the header.
    ///
    /// # Errors
    ///
    /// When the file cannot be created or written.
    pub fn create(path: &Path, header: &TraceHeader) -> io::Result<Self> {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)?;
        // `mode` applies only when the file is new; a replaced file may have been readable.
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        let json = serde_json::to_vec(header)?;
        let len = u32::try_from(json.len())
            .ok()
            .filter(|&l| l <= MAX_HEADER)
            .ok_or_else(|| io::Error::other("trace header too large"))?;
        let mut preamble = Vec::with_capacity(PREAMBLE_LEN + json.len() + 4);
        preamble.extend_from_slice(MAGIC);
        preamble.extend_from_slice(&VERSION.to_le_bytes());
        preamble.extend_from_slice(&0u16.to_le_bytes());
        preamble.extend_from_slice(&len.to_le_bytes());
        preamble.extend_from_slice(&json);
        let sum = crc(&[&preamble]);
        preamble.extend_from_slice(&sum.to_le_bytes());
        file.write_all(&preamble)?;
        Ok(Self {
            file,
            encoder: Encoder::default(),
            raw: Vec::with_capacity(SEAL_BYTES + 4096),
            oldest: None,
            compressor: compressor()?,
            block_raw: 0,
            frame: Vec::new(),
            events: 0,
            bytes: preamble.len() as u64,
        })
    }

    /// Adds one event to the open chunk, ending the block when it is full.
    ///
    /// # Errors
    ///
    /// I/O errors, or an event the format cannot hold.
    pub fn append(&mut self, event: &Event) -> io::Result<()> {
        self.encoder
            .event(event, &mut self.raw)
            .map_err(io::Error::other)?;
        self.events += 1;
        self.oldest.get_or_insert_with(Instant::now);
        if self.block_raw + self.raw.len() >= SEAL_BYTES {
            self.seal()?;
        }
        Ok(())
    }

    /// Writes the open chunk if its oldest event has waited [`SEAL_AGE`].
    ///
    /// # Errors
    ///
    /// I/O errors.
    pub fn flush_due(&mut self) -> io::Result<()> {
        if self.oldest.is_some_and(|t| t.elapsed() >= SEAL_AGE) {
            self.seal()?;
        }
        Ok(())
    }

    /// Compresses the open chunk (flushing the compressor, or ending the block when it is
    /// full) and writes it with one `write` call, so that a killed recorder leaves whole
    /// chunks and at most one cut one.
    ///
    /// # Errors
    ///
    /// I/O errors.
    pub fn seal(&mut self) -> io::Result<()> {
        let last = self.block_raw + self.raw.len() >= SEAL_BYTES;
        self.write_chunk(last)
    }

    fn write_chunk(&mut self, last: bool) -> io::Result<()> {
        if self.raw.is_empty() && !(last && self.block_raw > 0) {
            return Ok(());
        }
        let first = self.block_raw == 0;
        let directive = if last {
            ZSTD_EndDirective::ZSTD_e_end
        } else {
            ZSTD_EndDirective::ZSTD_e_flush
        };
        self.frame.clear();
        self.frame.resize(FRAME_HEAD_LEN, 0);
        self.frame
            .reserve(zstd::zstd_safe::compress_bound(self.raw.len()) + 64);
        let mut input = InBuffer::around(&self.raw);
        loop {
            let start = self.frame.len();
            let mut output = OutBuffer::around_pos(&mut self.frame, start);
            let remaining = self
                .compressor
                .compress_stream2(&mut output, &mut input, directive)
                .map_err(zstd_error)?;
            if remaining == 0 && input.pos() == self.raw.len() {
                break;
            }
            self.frame.reserve(remaining.max(4096));
        }
        let stored = self.frame.len() - FRAME_HEAD_LEN;
        let head = FrameHead {
            kind: FRAME_CHUNK,
            codec: CODEC_ZSTD,
            flags: if first { FLAG_FIRST } else { 0 } | if last { FLAG_LAST } else { 0 },
            stored_len: len_u32(stored)?,
            raw_len: len_u32(self.raw.len())?,
            payload_crc: crc(&[&self.frame[FRAME_HEAD_LEN..]]),
        };
        self.frame[..FRAME_HEAD_LEN].copy_from_slice(&head.encode());
        self.file.write_all(&self.frame)?;
        self.bytes += self.frame.len() as u64;
        self.block_raw = if last {
            0
        } else {
            self.block_raw + self.raw.len()
        };
        self.raw.clear();
        self.oldest = None;
        Ok(())
    }

    /// Events appended so far.
    #[must_use]
    pub fn events(&self) -> u64 {
        self.events
    }

    /// Bytes on disk so far, plus the open chunk's records (an upper bound of what sealing
    /// them adds, compression aside).
    #[must_use]
    pub fn bytes_with_pending(&self) -> u64 {
        self.bytes + self.raw.len() as u64 + FRAME_HEAD_LEN as u64
    }

    /// Bytes written to the file so far.
    #[must_use]
    pub fn bytes_written(&self) -> u64 {
        self.bytes
    }

    /// Seals the open block, writes the end marker with the totals (`lost` may be empty: not
    /// counted for this file) and syncs to disk. Returns the number of events.
    ///
    /// # Errors
    ///
    /// I/O errors.
    pub fn finish(mut self, lost: &[(LostKind, u64)]) -> io::Result<u64> {
        self.write_chunk(true)?;
        let mut payload = Vec::with_capacity(16 + 8 * lost.len());
        payload.extend_from_slice(&self.events.to_le_bytes());
        payload.extend_from_slice(&len_u32(lost.len())?.to_le_bytes());
        payload.extend_from_slice(&0u32.to_le_bytes());
        for (_, count) in lost {
            payload.extend_from_slice(&count.to_le_bytes());
        }
        let head = FrameHead {
            kind: FRAME_END,
            codec: CODEC_NONE,
            flags: 0,
            stored_len: len_u32(payload.len())?,
            raw_len: len_u32(payload.len())?,
            payload_crc: crc(&[&payload]),
        };
        let mut frame = head.encode().to_vec();
        frame.extend_from_slice(&payload);
        self.file.write_all(&frame)?;
        self.file.sync_all()?;
        Ok(self.events)
    }
}

fn compressor() -> io::Result<zstd::zstd_safe::CCtx<'static>> {
    let mut c = zstd::zstd_safe::CCtx::try_create()
        .ok_or_else(|| io::Error::other("cannot create a zstd compressor"))?;
    c.set_parameter(CParameter::CompressionLevel(LEVEL))
        .map_err(zstd_error)?;
    c.set_parameter(CParameter::WindowLog(WINDOW_LOG))
        .map_err(zstd_error)?;
    Ok(c)
}

fn zstd_error(code: usize) -> io::Error {
    io::Error::other(format!("zstd: {}", zstd::zstd_safe::get_error_name(code)))
}

fn len_u32(len: usize) -> io::Result<u32> {
    u32::try_from(len)
        .ok()
        .filter(|&l| l <= MAX_BLOCK)
        .ok_or_else(|| io::Error::other("trace block too large"))
}

impl Sink for TraceWriter {
    fn write(&mut self, event: &Event) -> io::Result<()> {
        self.append(event)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.flush_due()
    }
}
