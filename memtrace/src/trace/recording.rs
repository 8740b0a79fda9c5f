//! A recording bounded on disk: `--max-size` ends a file before it grows past the size, and
//! `--rotate N` then continues in a new numbered file, deleting the oldest beyond N.
//!
//! Names: without `--rotate`, the one file is `OUT`. With `--rotate N`, the files are
//! `OUT.000001`, `OUT.000002`, … (six digits, so they sort by name in recording order); each is
//! a complete trace with its own header and cgroup table, readable on its own. Files of an
//! earlier rotated recording to the same `OUT` are removed at the start, as `-o` replaces an
//! existing `OUT`.

use std::{
    collections::VecDeque,
    fs, io,
    path::{Path, PathBuf},
};

use memtrace_common::LostKind;

use super::{
    format::TraceHeader,
    writer::{END_BYTES, TraceWriter},
};
use crate::{clock, event::Event, sinks::Sink};

/// How big a recording may grow.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    /// Bytes per file; `None`: unbounded.
    pub max_size: Option<u64>,
    /// Keep at most this many files, rotating when one is full; `None`: stop when full.
    pub rotate: Option<u32>,
}

/// The recording reached `--max-size` and `--rotate` was not given: it has ended.
#[derive(Debug, thiserror::Error)]
#[error("{path} reached --max-size ({max_size} bytes)")]
pub struct FileFull {
    pub path: PathBuf,
    pub max_size: u64,
}

pub struct Recording {
    base: PathBuf,
    header: TraceHeader,
    limits: Limits,
    writer: Option<TraceWriter>,
    current: PathBuf,
    sequence: u64,
    /// Files of this recording still on disk, oldest first.
    kept: VecDeque<PathBuf>,
    /// Events in files already finished.
    finished_events: u64,
}

/// The name of the `sequence`th file (from 1) of a rotated recording to `base`.
#[must_use]
pub fn rotated_name(base: &Path, sequence: u64) -> PathBuf {
    let mut name = base.as_os_str().to_owned();
    name.push(format!(".{sequence:06}"));
    PathBuf::from(name)
}

impl Recording {
    /// Starts the recording: creates `base` (or, rotating, `base.000001`).
    ///
    /// # Errors
    ///
    /// When the file cannot be created, or old rotated files cannot be removed.
    pub fn create(base: &Path, header: &TraceHeader, limits: Limits) -> io::Result<Self> {
        if limits.rotate.is_some() {
            remove_rotated(base)?;
        }
        let mut recording = Self {
            base: base.to_owned(),
            header: header.clone(),
            limits,
            writer: None,
            current: base.to_owned(),
            sequence: 0,
            kept: VecDeque::new(),
            finished_events: 0,
        };
        recording.next_file()?;
        Ok(recording)
    }

    /// The file being written now.
    #[must_use]
    pub fn current(&self) -> &Path {
        &self.current
    }

    fn next_file(&mut self) -> io::Result<()> {
        self.sequence += 1;
        self.current = match self.limits.rotate {
            Some(_) => rotated_name(&self.base, self.sequence),
            None => self.base.clone(),
        };
        if self.sequence > 1 {
            self.header.started_wall_ns = clock::now_wall_ns();
        }
        self.writer = Some(TraceWriter::create(&self.current, &self.header)?);
        self.kept.push_back(self.current.clone());
        if let Some(keep) = self.limits.rotate {
            while self.kept.len() > keep as usize {
                if let Some(oldest) = self.kept.pop_front() {
                    fs::remove_file(&oldest)?;
                }
            }
        }
        Ok(())
    }

    fn writer(&mut self) -> io::Result<&mut TraceWriter> {
        self.writer.as_mut().ok_or_else(|| {
            io::Error::other(FileFull {
                path: self.current.clone(),
                max_size: self.limits.max_size.unwrap_or_default(),
            })
        })
    }

    /// Ends the current file when the next block could take it past `--max-size`, then goes
    /// on in the next file or reports [`FileFull`].
    fn enforce(&mut self) -> io::Result<()> {
        let Some(max) = self.limits.max_size else {
            return Ok(());
        };
        let writer = self.writer()?;
        // Counted as if the open chunk did not compress: the file can only come out smaller.
        if writer.bytes_with_pending() + END_BYTES < max {
            return Ok(());
        }
        // It compresses, typically tenfold: write it, and end the file only when what is
        // really on disk leaves less than a thirty-second of the size.
        writer.seal()?;
        if writer.bytes_written() + END_BYTES + max / 32 < max {
            return Ok(());
        }
        if let Some(writer) = self.writer.take() {
            self.finished_events += writer.finish(&[])?;
        }
        if self.limits.rotate.is_none() {
            return Err(io::Error::other(FileFull {
                path: self.current.clone(),
                max_size: max,
            }));
        }
        self.next_file()
    }

    /// Ends the recording: the last file's end marker gets the session's lost counts. Returns
    /// the events of all files.
    ///
    /// # Errors
    ///
    /// I/O errors.
    pub fn finish(mut self, lost: &[(LostKind, u64)]) -> io::Result<u64> {
        if let Some(writer) = self.writer.take() {
            self.finished_events += writer.finish(lost)?;
        }
        Ok(self.finished_events)
    }

    #[cfg(test)]
    #[expect(clippy::missing_panics_doc, reason = "tests only")]
    pub fn seal_for_test(&mut self) {
        if let Some(writer) = self.writer.as_mut() {
            writer.seal().expect("seal");
        }
    }

    /// The files of this recording on disk, oldest first.
    #[must_use]
    pub fn files(&self) -> Vec<PathBuf> {
        self.kept.iter().cloned().collect()
    }
}

impl Sink for Recording {
    fn write(&mut self, event: &Event) -> io::Result<()> {
        self.writer()?.append(event)?;
        self.enforce()
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.writer.as_mut() {
            Some(writer) => writer.flush_due(),
            None => Ok(()),
        }
    }
}

/// Removes `base.NNNNNN` files of an earlier rotated recording.
fn remove_rotated(base: &Path) -> io::Result<()> {
    let dir = match base.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let Some(stem) = base.file_name().and_then(|n| n.to_str()) else {
        return Ok(());
    };
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let is_ours = name
            .to_str()
            .and_then(|n| n.strip_prefix(stem))
            .and_then(|rest| rest.strip_prefix('.'))
            .is_some_and(|digits| digits.len() == 6 && digits.bytes().all(|b| b.is_ascii_digit()));
        if is_ours {
            fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}
