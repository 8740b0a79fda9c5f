//! Reading a trace file back, defensively: every length is checked before it is trusted, and
//! every way a file can be wrong is an error that says which.

use std::{
    collections::HashMap,
    fs::File,
    io::{self, BufReader, Read},
    path::{Path, PathBuf},
};

use memtrace_common::event::{DecodeError, Record};

use super::format::{
    FRAME_HEADER_LEN, MAGIC, MAX_PAYLOAD, NO_CGROUP, TAG_CACHE, TAG_CGROUP, TAG_CHARGE, TAG_END,
    TAG_EVENT, TAG_SLAB, TAG_STATS, TraceHeader, VERSION, crc,
};
use crate::event::{CacheSample, ChargeSample, Context, Observed, SlabSample, StatsSample};

#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("cannot read {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path} is not a memtrace trace file")]
    NotATrace { path: PathBuf },
    #[error(
        "{path} is a version {found} trace; this memtrace reads version {VERSION}: \
         use a newer memtrace"
    )]
    FutureVersion { path: PathBuf, found: u16 },
    #[error(
        "{path} is truncated at byte {offset} after {events} events (the recording was cut short)"
    )]
    Truncated {
        path: PathBuf,
        offset: u64,
        events: u64,
    },
    #[error("{path} is corrupt at byte {offset}: {why}")]
    Corrupt {
        path: PathBuf,
        offset: u64,
        why: String,
    },
}

/// What a trace yields, in file order.
#[derive(Debug, PartialEq, Eq)]
#[expect(
    clippy::large_enum_variant,
    reason = "read, handed on and dropped one at a time"
)]
pub enum TraceItem {
    Event(Observed),
    /// The end marker: totals as the recorder counted them.
    End {
        events: u64,
        lost: Vec<u64>,
    },
}

pub struct TraceReader {
    path: PathBuf,
    input: BufReader<File>,
    offset: u64,
    header: TraceHeader,
    cgroups: HashMap<u32, String>,
    events: u64,
    ended: bool,
}

impl TraceReader {
    /// Opens a trace and reads its header.
    ///
    /// # Errors
    ///
    /// When the file cannot be read, is not a trace, is from a newer format, or its header is
    /// cut or damaged.
    pub fn open(path: &Path) -> Result<Self, TraceError> {
        let file = File::open(path).map_err(|source| TraceError::Io {
            path: path.to_owned(),
            source,
        })?;
        let mut reader = Self {
            path: path.to_owned(),
            input: BufReader::new(file),
            offset: 0,
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
            },
            cgroups: HashMap::new(),
            events: 0,
            ended: false,
        };
        let mut fixed = [0u8; 16];
        match reader.read_exact(&mut fixed)? {
            Fill::Full => {}
            Fill::Empty | Fill::Partial if fixed[..8] != MAGIC[..] => {
                return Err(TraceError::NotATrace { path: reader.path });
            }
            Fill::Empty | Fill::Partial => return Err(reader.truncated()),
        }
        if fixed[..8] != MAGIC[..] {
            return Err(TraceError::NotATrace { path: reader.path });
        }
        let version = u16::from_le_bytes([fixed[8], fixed[9]]);
        if version > VERSION {
            return Err(TraceError::FutureVersion {
                path: reader.path,
                found: version,
            });
        }
        if version == 0 {
            return Err(reader.corrupt(8, "format version 0".into()));
        }
        let len = le_u32(&fixed[12..16]);
        if len > MAX_PAYLOAD {
            return Err(reader.corrupt(12, format!("header length {len} is implausible")));
        }
        let mut json = vec![0u8; len as usize + 4];
        if reader.read_exact(&mut json)? != Fill::Full {
            return Err(reader.truncated());
        }
        let stored = le_u32(&json[len as usize..]);
        json.truncate(len as usize);
        if crc(&fixed, &json) != stored {
            return Err(reader.corrupt(16, "header checksum mismatch".into()));
        }
        reader.header = serde_json::from_slice(&json)
            .map_err(|e| reader.corrupt(16, format!("header is not valid: {e}")))?;
        if reader.header.page_size == 0 {
            return Err(reader.corrupt(16, "header has page size 0".into()));
        }
        Ok(reader)
    }

    #[must_use]
    pub fn header(&self) -> &TraceHeader {
        &self.header
    }

    /// How far into the file reading has come, for progress bars.
    #[must_use]
    pub fn bytes_read(&self) -> u64 {
        self.offset
    }

    /// The next event or the end marker; `None` after the end marker.
    ///
    /// # Errors
    ///
    /// [`TraceError::Truncated`] when the file stops before its end marker (a recorder that was
    /// killed): everything before was complete and has been returned. Other variants for
    /// damaged content.
    pub fn next_item(&mut self) -> Result<Option<TraceItem>, TraceError> {
        loop {
            if self.ended {
                return Ok(None);
            }
            let frame_offset = self.offset;
            let mut head = [0u8; FRAME_HEADER_LEN];
            if self.read_exact(&mut head)? != Fill::Full {
                return Err(self.truncated_at(frame_offset));
            }
            let tag = head[0];
            let len = le_u32(&head[4..8]);
            if len > MAX_PAYLOAD {
                return Err(
                    self.corrupt(frame_offset, format!("frame length {len} is implausible"))
                );
            }
            let mut payload = vec![0u8; len as usize];
            if self.read_exact(&mut payload)? != Fill::Full {
                return Err(self.truncated_at(frame_offset));
            }
            if crc(&head[..8], &payload) != le_u32(&head[8..12]) {
                return Err(self.corrupt(frame_offset, "frame checksum mismatch".into()));
            }
            match tag {
                TAG_CGROUP => self.cgroup(frame_offset, &payload)?,
                TAG_EVENT => return self.event(frame_offset, &payload).map(Some),
                TAG_END => return self.end(frame_offset, &payload).map(Some),
                TAG_STATS => return self.stats(frame_offset, &payload).map(Some),
                TAG_CACHE => return self.cache(frame_offset, &payload).map(Some),
                TAG_CHARGE => {
                    let (cgroup, sample) = self.sample::<ChargeSample>(frame_offset, &payload)?;
                    return Ok(Some(TraceItem::Event(Observed::Charge(ChargeSample {
                        cgroup,
                        ..sample
                    }))));
                }
                TAG_SLAB => {
                    let (cgroup, sample) = self.sample::<SlabSample>(frame_offset, &payload)?;
                    return Ok(Some(TraceItem::Event(Observed::Slab(SlabSample {
                        cgroup,
                        ..sample
                    }))));
                }
                other => {
                    return Err(self.corrupt(frame_offset, format!("unknown frame type {other}")));
                }
            }
        }
    }

    fn cgroup(&mut self, at: u64, payload: &[u8]) -> Result<(), TraceError> {
        if payload.len() < 16 {
            return Err(self.corrupt(at, "short cgroup frame".into()));
        }
        let id = le_u32(&payload[..4]);
        let path = std::str::from_utf8(&payload[16..])
            .map_err(|_| self.corrupt(at, "cgroup path is not UTF-8".into()))?;
        self.cgroups.insert(id, path.to_owned());
        Ok(())
    }

    fn table_cgroup(&self, at: u64, table_id: u32) -> Result<Option<String>, TraceError> {
        if table_id == NO_CGROUP {
            return Ok(None);
        }
        self.cgroups
            .get(&table_id)
            .cloned()
            .map(Some)
            .ok_or_else(|| {
                self.corrupt(at, format!("event names cgroup #{table_id}, never defined"))
            })
    }

    fn event(&mut self, at: u64, payload: &[u8]) -> Result<TraceItem, TraceError> {
        if payload.len() < 8 {
            return Err(self.corrupt(at, "short event frame".into()));
        }
        let cgroup = self.table_cgroup(at, le_u32(&payload[..4]))?;
        let context_len = le_u32(&payload[4..8]) as usize;
        let Some((context, record)) = payload[8..].split_at_checked(context_len) else {
            return Err(self.corrupt(at, "event context runs past its frame".into()));
        };
        let context: Context = serde_json::from_slice(context)
            .map_err(|e| self.corrupt(at, format!("event context is not valid: {e}")))?;
        let record = Record::decode(record).map_err(|e| {
            self.corrupt(
                at,
                match e {
                    DecodeError::Short { kind, need, got } => {
                        format!("event of kind {kind} has {got} bytes, needs {need}")
                    }
                    DecodeError::UnknownKind(kind) => format!("unknown event kind {kind}"),
                },
            )
        })?;
        self.events += 1;
        Ok(TraceItem::Event(Observed::Kernel {
            record,
            context: Context { cgroup, ..context },
        }))
    }

    fn stats(&mut self, at: u64, payload: &[u8]) -> Result<TraceItem, TraceError> {
        if payload.len() < 8 {
            return Err(self.corrupt(at, "short stats frame".into()));
        }
        let cgroup = self
            .table_cgroup(at, le_u32(&payload[..4]))?
            .ok_or_else(|| self.corrupt(at, "stats frame without a cgroup".into()))?;
        let sample: StatsSample = serde_json::from_slice(&payload[8..])
            .map_err(|e| self.corrupt(at, format!("stats are not valid: {e}")))?;
        self.events += 1;
        Ok(TraceItem::Event(Observed::Stats(StatsSample {
            cgroup,
            ..sample
        })))
    }

    fn cache(&mut self, at: u64, payload: &[u8]) -> Result<TraceItem, TraceError> {
        if payload.len() < 8 {
            return Err(self.corrupt(at, "short cache frame".into()));
        }
        let cgroup = self.table_cgroup(at, le_u32(&payload[..4]))?;
        let sample: CacheSample = serde_json::from_slice(&payload[8..])
            .map_err(|e| self.corrupt(at, format!("cache sample is not valid: {e}")))?;
        self.events += 1;
        Ok(TraceItem::Event(Observed::Cache(CacheSample {
            cgroup,
            ..sample
        })))
    }

    /// A userspace sample frame: its cgroup and its JSON body.
    fn sample<T: serde::de::DeserializeOwned>(
        &mut self,
        at: u64,
        payload: &[u8],
    ) -> Result<(Option<String>, T), TraceError> {
        if payload.len() < 8 {
            return Err(self.corrupt(at, "short sample frame".into()));
        }
        let cgroup = self.table_cgroup(at, le_u32(&payload[..4]))?;
        let sample = serde_json::from_slice(&payload[8..])
            .map_err(|e| self.corrupt(at, format!("sample is not valid: {e}")))?;
        self.events += 1;
        Ok((cgroup, sample))
    }

    fn end(&mut self, at: u64, payload: &[u8]) -> Result<TraceItem, TraceError> {
        if payload.len() < 16 {
            return Err(self.corrupt(at, "short end frame".into()));
        }
        let events = le_u64(&payload[..8]);
        let kinds = le_u32(&payload[8..12]) as usize;
        let (counters, rest) = payload[16..].as_chunks::<8>();
        let lost: Vec<u64> = counters.iter().map(|c| u64::from_le_bytes(*c)).collect();
        if lost.len() != kinds || !rest.is_empty() {
            return Err(self.corrupt(at, "end frame's lost counters do not match".into()));
        }
        if events != self.events {
            return Err(self.corrupt(
                at,
                format!(
                    "end marker counts {events} events, file holds {}",
                    self.events
                ),
            ));
        }
        self.ended = true;
        Ok(TraceItem::End { events, lost })
    }

    /// Reads exactly `buf.len()` bytes, or says how much was there.
    fn read_exact(&mut self, buf: &mut [u8]) -> Result<Fill, TraceError> {
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
        Ok(match filled {
            0 if !buf.is_empty() => Fill::Empty,
            n if n == buf.len() => Fill::Full,
            _ => Fill::Partial,
        })
    }

    fn truncated(&self) -> TraceError {
        self.truncated_at(self.offset)
    }

    fn truncated_at(&self, offset: u64) -> TraceError {
        TraceError::Truncated {
            path: self.path.clone(),
            offset,
            events: self.events,
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

#[derive(Debug, PartialEq, Eq)]
enum Fill {
    Empty,
    Partial,
    Full,
}

fn le_u32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

fn le_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

#[cfg(test)]
mod tests {
    use std::{fs, os::unix::fs::PermissionsExt as _};

    use memtrace_common::{CgroupRecord, EventHeader, EventKind, LostKind, OomKillRecord};

    use super::*;
    use crate::{attribution::MemoryStats, event::OomContext, trace::TraceWriter};

    fn header() -> TraceHeader {
        TraceHeader {
            memtrace_version: "0.1.0".into(),
            host: "node-1".into(),
            kernel_release: "6.18.0".into(),
            boot_time_wall_ns: 1_795_000_000_000_000_000,
            clock: "CLOCK_BOOTTIME".into(),
            page_size: 4096,
            started_wall_ns: 1_795_000_100_000_000_000,
            probes: vec!["oom_kill=raw_tp/mark_victim".into()],
            cgroup_version: "v1".into(),
        }
    }

    fn observed(pid: u32, cgroup: Option<&str>) -> Observed {
        Observed::Kernel {
            record: Record::OomKill(OomKillRecord {
                header: EventHeader {
                    kind: EventKind::OomKill as u32,
                    cpu: 1,
                    timestamp_ns: u64::from(pid) * 1000,
                },
                memcg_id: 99,
                pid,
                tgid: pid,
                anon_rss_pages: 16_000,
                flags: 7,
                ..OomKillRecord::default()
            }),
            context: Context {
                cgroup: cgroup.map(Into::into),
                memcg_limit_bytes: Some(64 << 20),
                oom: Some(OomContext {
                    constraint: Some("CONSTRAINT_MEMCG".into()),
                    limit_cgroup: Some("/".into()),
                    limit_container: None,
                    memory: Some(MemoryStats {
                        usage_bytes: Some(1),
                        ..MemoryStats::default()
                    }),
                    memory_source: Some("kernel_oom_report".into()),
                    task: None,
                }),
                ..Context::default()
            },
        }
    }

    fn write_sample(path: &Path) -> Vec<Observed> {
        let mut lifecycle = CgroupRecord {
            header: EventHeader {
                kind: EventKind::Cgroup as u32,
                cpu: 0,
                timestamp_ns: 9,
            },
            memcg_id: 5,
            action: memtrace_common::event::CGROUP_RMDIR,
            ..CgroupRecord::default()
        };
        lifecycle.path[..2].copy_from_slice(b"/a");
        let events = vec![
            observed(1, Some("/a")),
            observed(2, None),
            observed(3, Some("/a")),
            Observed::Kernel {
                record: Record::Cgroup(lifecycle),
                context: Context {
                    cgroup: Some("/a".into()),
                    removed_ns: Some(3),
                    ..Context::default()
                },
            },
            Observed::Stats(StatsSample {
                timestamp_ns: 10,
                cgroup: "/b/c".into(),
                container: None,
                memory: MemoryStats {
                    usage_bytes: Some(4096),
                    limit_bytes: None,
                    ..MemoryStats::default()
                },
            }),
            Observed::Cache(CacheSample {
                timestamp_ns: 11,
                interval_ns: 1_000_000_000,
                memcg_id: 5,
                cgroup: Some("/a".into()),
                container: None,
                added_pages: 10,
                removed_pages: 2,
                top_files: vec![crate::event::FileDelta {
                    dev: 8 << 20 | 1,
                    ino: 1234,
                    added_pages: 10,
                    removed_pages: 2,
                }],
            }),
            Observed::Kernel {
                record: Record::Reclaim(memtrace_common::ReclaimRecord {
                    header: EventHeader {
                        kind: EventKind::Reclaim as u32,
                        cpu: 1,
                        timestamp_ns: 12,
                    },
                    memcg_id: 5,
                    duration_ns: 1000,
                    nr_reclaimed: 0,
                    gfp_flags: 0xcc0,
                    order: 0,
                    pid: 77,
                }),
                context: Context {
                    cgroup: Some("/a".into()),
                    ..Context::default()
                },
            },
            observed(4, Some("/b/c")),
        ];
        let mut w = TraceWriter::create(path, &header()).expect("create");
        for e in &events {
            w.append(e).expect("append");
        }
        w.finish(&[(LostKind::OomKill, 5)]).expect("finish");
        events
    }

    fn read_all(path: &Path) -> Result<(Vec<Observed>, Option<TraceItem>), TraceError> {
        let mut r = TraceReader::open(path)?;
        let mut events = Vec::new();
        let mut end = None;
        while let Some(item) = r.next_item()? {
            match item {
                TraceItem::Event(e) => events.push(e),
                end_item @ TraceItem::End { .. } => end = Some(end_item),
            }
        }
        Ok((events, end))
    }

    #[test]
    fn round_trip() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("t.mtrace");
        let written = write_sample(&path);
        assert_eq!(
            fs::metadata(&path).expect("stat").permissions().mode() & 0o777,
            0o600
        );
        let r = TraceReader::open(&path).expect("open");
        assert_eq!(r.header(), &header());
        let (events, end) = read_all(&path).expect("read");
        assert_eq!(events, written);
        assert_eq!(
            end,
            Some(TraceItem::End {
                events: 8,
                lost: vec![5]
            })
        );
    }

    #[test]
    fn rejects_garbage_empty_and_future_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("x");
        for garbage in [
            &b""[..],
            b"hello",
            b"\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00",
        ] {
            fs::write(&path, garbage).expect("write");
            let err = TraceReader::open(&path).err().expect("must fail");
            assert!(matches!(err, TraceError::NotATrace { .. }), "{err}");
        }
        write_sample(&path);
        let mut bytes = fs::read(&path).expect("read");
        bytes[8..10].copy_from_slice(&2u16.to_le_bytes());
        fs::write(&path, &bytes).expect("write");
        let err = TraceReader::open(&path).err().expect("must fail");
        assert_eq!(
            err.to_string(),
            format!(
                "{} is a version 2 trace; this memtrace reads version 1: use a newer memtrace",
                path.display()
            )
        );
    }

    #[test]
    fn every_truncation_is_reported_never_a_panic() {
        let dir = tempfile::tempdir().expect("tempdir");
        let full = dir.path().join("full");
        write_sample(&full);
        let bytes = fs::read(&full).expect("read");
        let cut = dir.path().join("cut");
        for len in 8..bytes.len() {
            fs::write(&cut, &bytes[..len]).expect("write");
            let err = read_all(&cut).expect_err("a cut file must not read cleanly");
            assert!(
                matches!(err, TraceError::Truncated { .. }),
                "cut at {len}: {err}"
            );
        }
    }

    #[test]
    fn every_flipped_byte_is_an_error_never_a_panic() {
        let dir = tempfile::tempdir().expect("tempdir");
        let full = dir.path().join("full");
        write_sample(&full);
        let bytes = fs::read(&full).expect("read");
        let bad = dir.path().join("bad");
        for i in 0..bytes.len() {
            let mut flipped = bytes.clone();
            flipped[i] ^= 0x41;
            fs::write(&bad, &flipped).expect("write");
            assert!(read_all(&bad).is_err(), "flip at byte {i} went unnoticed");
        }
    }
}
