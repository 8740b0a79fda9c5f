//! Appending to a trace file.

use std::{
    collections::HashMap,
    fs::{File, OpenOptions},
    io::{self, BufWriter, Write},
    os::unix::fs::OpenOptionsExt as _,
    path::Path,
};

use memtrace_common::{LostKind, event::Record};

use super::format::{
    FRAME_HEADER_LEN, MAGIC, MAX_PAYLOAD, NO_CGROUP, TAG_CACHE, TAG_CGROUP, TAG_CHARGE, TAG_END,
    TAG_EVENT, TAG_SLAB, TAG_STATS, TraceHeader, VERSION, crc,
};
use crate::{
    event::{CacheSample, ChargeSample, Context, Event, Observed, SlabSample, StatsSample},
    sinks::Sink,
};

pub struct TraceWriter {
    out: BufWriter<File>,
    cgroups: HashMap<String, u32>,
    events: u64,
}

impl TraceWriter {
    /// Creates `path` (mode 0600: traces name every cgroup and process on the node) and writes
    /// the header.
    ///
    /// # Errors
    ///
    /// When the file cannot be created or written.
    pub fn create(path: &Path, header: &TraceHeader) -> io::Result<Self> {
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)?;
        let mut out = BufWriter::new(file);
        let json = serde_json::to_vec(header)?;
        let len = u32::try_from(json.len())
            .ok()
            .filter(|&l| l <= MAX_PAYLOAD)
            .ok_or_else(|| io::Error::other("trace header too large"))?;
        let mut fixed = [0u8; 16];
        fixed[..8].copy_from_slice(MAGIC);
        fixed[8..10].copy_from_slice(&VERSION.to_le_bytes());
        fixed[12..16].copy_from_slice(&len.to_le_bytes());
        out.write_all(&fixed)?;
        out.write_all(&json)?;
        out.write_all(&crc(&fixed, &json).to_le_bytes())?;
        out.flush()?;
        Ok(Self {
            out,
            cgroups: HashMap::new(),
            events: 0,
        })
    }

    /// Appends one event, preceded by its cgroup's table frame the first time it is named.
    ///
    /// # Errors
    ///
    /// I/O errors.
    pub fn append(&mut self, observed: &Observed) -> io::Result<()> {
        match observed {
            Observed::Kernel { record, context } => {
                let table_id = self.table_id(context.cgroup.as_deref(), memcg_id(record))?;
                let context = serde_json::to_vec(&Context {
                    cgroup: None,
                    ..context.clone()
                })?;
                let context_len = u32::try_from(context.len()).map_err(io::Error::other)?;
                let record = record.bytes();
                let mut payload = Vec::with_capacity(8 + context.len() + record.len());
                payload.extend_from_slice(&table_id.to_le_bytes());
                payload.extend_from_slice(&context_len.to_le_bytes());
                payload.extend_from_slice(&context);
                payload.extend_from_slice(record);
                self.frame(TAG_EVENT, &payload)?;
            }
            Observed::Cache(sample) => {
                let table_id = self.table_id(sample.cgroup.as_deref(), sample.memcg_id)?;
                let body = CacheSample {
                    cgroup: None,
                    ..sample.clone()
                };
                self.json_frame(TAG_CACHE, table_id, &body)?;
            }
            Observed::Charge(sample) => {
                let table_id = self.table_id(sample.cgroup.as_deref(), sample.memcg_id)?;
                let body = ChargeSample {
                    cgroup: None,
                    ..sample.clone()
                };
                self.json_frame(TAG_CHARGE, table_id, &body)?;
            }
            Observed::Slab(sample) => {
                let table_id = self.table_id(sample.cgroup.as_deref(), sample.memcg_id)?;
                let body = SlabSample {
                    cgroup: None,
                    ..sample.clone()
                };
                self.json_frame(TAG_SLAB, table_id, &body)?;
            }
            Observed::Stats(sample) => {
                let table_id = self.table_id(Some(&sample.cgroup), 0)?;
                let body = StatsSample {
                    cgroup: String::new(),
                    ..sample.clone()
                };
                self.json_frame(TAG_STATS, table_id, &body)?;
            }
        }
        self.events += 1;
        Ok(())
    }

    /// `table_id u32 | reserved u32 | JSON body`: the frames of userspace-made samples.
    fn json_frame(
        &mut self,
        tag: u8,
        table_id: u32,
        body: &impl serde::Serialize,
    ) -> io::Result<()> {
        let mut payload = Vec::with_capacity(256);
        payload.extend_from_slice(&table_id.to_le_bytes());
        payload.extend_from_slice(&0u32.to_le_bytes());
        serde_json::to_writer(&mut payload, body)?;
        self.frame(tag, &payload)
    }

    fn table_id(&mut self, cgroup: Option<&str>, memcg_id: u64) -> io::Result<u32> {
        match cgroup {
            None => Ok(NO_CGROUP),
            Some(path) => match self.cgroups.get(path) {
                Some(&id) => Ok(id),
                None => self.add_cgroup(path, memcg_id),
            },
        }
    }

    fn add_cgroup(&mut self, path: &str, memcg_id: u64) -> io::Result<u32> {
        let id = u32::try_from(self.cgroups.len())
            .map_err(|_| io::Error::other("too many cgroups for one trace"))?;
        let mut payload = Vec::with_capacity(16 + path.len());
        payload.extend_from_slice(&id.to_le_bytes());
        payload.extend_from_slice(&0u32.to_le_bytes());
        payload.extend_from_slice(&memcg_id.to_le_bytes());
        payload.extend_from_slice(path.as_bytes());
        self.frame(TAG_CGROUP, &payload)?;
        self.cgroups.insert(path.to_owned(), id);
        Ok(id)
    }

    fn frame(&mut self, tag: u8, payload: &[u8]) -> io::Result<()> {
        let len = u32::try_from(payload.len())
            .ok()
            .filter(|&l| l <= MAX_PAYLOAD)
            .ok_or_else(|| io::Error::other("trace frame too large"))?;
        let mut head = [0u8; FRAME_HEADER_LEN];
        head[0] = tag;
        head[4..8].copy_from_slice(&len.to_le_bytes());
        let sum = crc(&head[..8], payload);
        head[8..12].copy_from_slice(&sum.to_le_bytes());
        self.out.write_all(&head)?;
        self.out.write_all(payload)
    }

    /// Writes the end marker with the totals and flushes to disk.
    ///
    /// # Errors
    ///
    /// I/O errors.
    pub fn finish(mut self, lost: &[(LostKind, u64)]) -> io::Result<u64> {
        let mut payload = Vec::new();
        payload.extend_from_slice(&self.events.to_le_bytes());
        let kinds = u32::try_from(lost.len()).map_err(io::Error::other)?;
        payload.extend_from_slice(&kinds.to_le_bytes());
        payload.extend_from_slice(&0u32.to_le_bytes());
        for (_, count) in lost {
            payload.extend_from_slice(&count.to_le_bytes());
        }
        self.frame(TAG_END, &payload)?;
        self.out.flush()?;
        self.out.get_ref().sync_all()?;
        Ok(self.events)
    }
}

fn memcg_id(record: &Record) -> u64 {
    match record {
        Record::OomKill(r) => r.memcg_id,
        Record::Cgroup(r) => r.memcg_id,
        Record::Reclaim(r) => r.memcg_id,
        Record::ChargeFail(r) => r.memcg_id,
    }
}

impl Sink for TraceWriter {
    fn write(&mut self, observed: &Observed, _event: &Event) -> io::Result<()> {
        self.append(observed)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}
