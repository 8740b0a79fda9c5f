//! Appending to a trace file: events collect in a block that is compressed and written whole,
//! at the latest [`SEAL_AGE`] after its first event (the pipeline asks at least every
//! [`crate::pipeline::FLUSH_EVERY`]), so a recorder killed with `kill -9` loses under a second.

use std::{
    fs::{File, OpenOptions},
    io::{self, Write},
    os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _},
    path::Path,
    time::{Duration, Instant},
};

use memtrace_common::LostKind;

use super::{
    format::{
        CODEC_NONE, CODEC_ZSTD, FRAME_BLOCK, FRAME_END, FRAME_HEAD_LEN, FrameHead, MAGIC,
        MAX_BLOCK, MAX_HEADER, PREAMBLE_LEN, TraceHeader, VERSION, crc,
    },
    records::Encoder,
};
use crate::{
    event::{Event, Observed},
    sinks::Sink,
};

/// A block is sealed once its records reach this size (a quarter of what readers accept).
pub const SEAL_BYTES: usize = (MAX_BLOCK / 4) as usize;
/// A block is sealed on the first flush once its oldest event is this old.
pub const SEAL_AGE: Duration = Duration::from_millis(500);
/// zstd level: 3 is zstd's default; higher levels cost more time than they save bytes on
/// records this repetitive.
const LEVEL: i32 = 3;
/// Bytes an end marker adds, for callers that bound the file size.
pub const END_BYTES: u64 = FRAME_HEAD_LEN as u64 + 16 + 8 * 64;

pub struct TraceWriter {
    file: File,
    encoder: Encoder,
    /// Records of the open block.
    raw: Vec<u8>,
    /// When the open block got its first record.
    oldest: Option<Instant>,
    compressor: zstd::bulk::Compressor<'static>,
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
            compressor: zstd::bulk::Compressor::new(LEVEL)?,
            frame: Vec::new(),
            events: 0,
            bytes: preamble.len() as u64,
        })
    }

    /// Adds one event to the open block, sealing the block when it is full.
    ///
    /// # Errors
    ///
    /// I/O errors, or an event the format cannot hold.
    pub fn append(&mut self, observed: &Observed) -> io::Result<()> {
        self.encoder
            .event(observed, &mut self.raw)
            .map_err(io::Error::other)?;
        self.events += 1;
        self.oldest.get_or_insert_with(Instant::now);
        if self.raw.len() >= SEAL_BYTES {
            self.seal()?;
        }
        Ok(())
    }

    /// Seals the open block if its oldest event has waited [`SEAL_AGE`].
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

    /// Compresses the open block and writes it with one `write` call, so that a killed recorder
    /// leaves whole blocks and at most one cut one.
    ///
    /// # Errors
    ///
    /// I/O errors.
    pub fn seal(&mut self) -> io::Result<()> {
        if self.raw.is_empty() {
            return Ok(());
        }
        let bound = zstd::zstd_safe::compress_bound(self.raw.len());
        self.frame.clear();
        self.frame.resize(FRAME_HEAD_LEN + bound, 0);
        let stored = self
            .compressor
            .compress_to_buffer(&self.raw, &mut self.frame[FRAME_HEAD_LEN..])?;
        self.frame.truncate(FRAME_HEAD_LEN + stored);
        let head = FrameHead {
            kind: FRAME_BLOCK,
            codec: CODEC_ZSTD,
            stored_len: len_u32(stored)?,
            raw_len: len_u32(self.raw.len())?,
            payload_crc: crc(&[&self.frame[FRAME_HEAD_LEN..]]),
        };
        self.frame[..FRAME_HEAD_LEN].copy_from_slice(&head.encode());
        self.file.write_all(&self.frame)?;
        self.bytes += self.frame.len() as u64;
        self.raw.clear();
        self.oldest = None;
        Ok(())
    }

    /// Events appended so far.
    #[must_use]
    pub fn events(&self) -> u64 {
        self.events
    }

    /// Bytes on disk so far, plus the open block's records (an upper bound of what sealing
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
        self.seal()?;
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

fn len_u32(len: usize) -> io::Result<u32> {
    u32::try_from(len)
        .ok()
        .filter(|&l| l <= MAX_BLOCK)
        .ok_or_else(|| io::Error::other("trace block too large"))
}

impl Sink for TraceWriter {
    fn write(&mut self, observed: &Observed, _event: &Event) -> io::Result<()> {
        self.append(observed)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.flush_due()
    }
}
