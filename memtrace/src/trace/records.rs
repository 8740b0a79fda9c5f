//! Records inside a decompressed block: the cgroup table as it grows, and the events.
//!
//! ```text
//! record := tag u8 | body_len varint | body
//! CGROUP (1) := table_id varint | has_path u8 | path_len varint | path
//!               | identity (JSON `ContainerIdentity`; empty: none; rest of body)
//! KERNEL (2) := cgroup_ref varint | limit_ref varint
//!               | postcard(context without cgroup and containers) | kernel record (ABI, rest)
//! STATS  (3) := cgroup_ref varint | postcard(sample without cgroup and container)
//! CACHE  (4) := cgroup_ref varint | postcard(sample without cgroup and container)
//! CHARGE (5) := cgroup_ref varint | timestamp_ns, interval_ns, memcg_id, pages, charges,
//!               source (0 charge, 1 stat_updates, 2 page_cache), each a varint
//! SLAB   (6) := cgroup_ref varint | postcard((timestamp_ns, interval_ns, memcg_id, caches))
//! cgroup_ref := 0: no cgroup and no container; n: table entry n − 1
//! ```
//!
//! A cgroup and its container identity are written once per file, as a table record before the
//! first event that names them; events carry the table reference. That is most of what makes
//! a sample small, and it lets a reader list every container without decoding events.
//!
//! A new `Observed` variant needs: a tag below, an arm in [`Encoder::event`] and one in
//! [`Decoder::event`] (both matches are exhaustive, so the compiler points at them), and a
//! sample in the round-trip test of `trace::tests`. Samples are destructured field by field,
//! never with `..`, so a field added to a sample type is a compile error here, not a field
//! silently left out of the file.

use std::collections::HashMap;

use memtrace_common::event::{DecodeError, Record};

use crate::{
    attribution::ContainerIdentity,
    event::{
        CacheSample, ChargeSample, ChargeSource, Context, FileDelta, Observed, OomContext,
        SlabCacheDelta, SlabSample, StatsSample,
    },
};

pub const TAG_CGROUP: u8 = 1;
pub const TAG_KERNEL: u8 = 2;
pub const TAG_STATS: u8 = 3;
pub const TAG_CACHE: u8 = 4;
pub const TAG_CHARGE: u8 = 5;
pub const TAG_SLAB: u8 = 6;

/// A file naming more distinct cgroups than this is damaged (a node has at most 65535 live
/// memcgs; identities change rarely).
pub const MAX_TABLE: usize = 1 << 20;

type Entry = (Option<String>, Option<ContainerIdentity>);

/// Writes records into a block buffer, keeping the file's cgroup table.
#[derive(Default)]
pub struct Encoder {
    /// Cgroup path → its newest table id and the identity that entry holds.
    paths: HashMap<String, (u32, Option<ContainerIdentity>)>,
    /// The same for events with a container but no cgroup path.
    pathless: Option<(u32, Option<ContainerIdentity>)>,
    next_id: u32,
    body: Vec<u8>,
}

/// The part of a kernel record's context that is not in the table.
#[derive(serde::Serialize, serde::Deserialize)]
struct KernelContext {
    memcg_limit_bytes: Option<u64>,
    memcg_usage_bytes: Option<u64>,
    removed_ns: Option<u64>,
    oom: Option<OomRest>,
    charge_failures: Option<u64>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct OomRest {
    constraint: Option<String>,
    memory: Option<crate::attribution::MemoryStats>,
    memory_source: Option<String>,
    task: Option<String>,
}

impl Encoder {
    /// Appends `observed` (after any table records it needs) to `out`.
    ///
    /// # Errors
    ///
    /// When the table is full or a sample cannot be serialized.
    #[expect(
        clippy::too_many_lines,
        reason = "one arm per Observed variant, side by side: a new variant goes in one place"
    )]
    pub fn event(&mut self, observed: &Observed, out: &mut Vec<u8>) -> Result<(), String> {
        self.body.clear();
        let tag = match observed {
            Observed::Kernel { record, context } => {
                let Context {
                    cgroup,
                    container,
                    memcg_limit_bytes,
                    memcg_usage_bytes,
                    oom,
                    removed_ns,
                    charge_failures,
                } = context;
                let cgroup_ref = self.reference(cgroup.as_ref(), container.as_ref(), out)?;
                let (limit_ref, oom) = match oom {
                    None => (0, None),
                    Some(OomContext {
                        constraint,
                        limit_cgroup,
                        limit_container,
                        memory,
                        memory_source,
                        task,
                    }) => (
                        self.reference(limit_cgroup.as_ref(), limit_container.as_ref(), out)?,
                        Some(OomRest {
                            constraint: constraint.clone(),
                            memory: memory.clone(),
                            memory_source: memory_source.clone(),
                            task: task.clone(),
                        }),
                    ),
                };
                put_varint(&mut self.body, u64::from(cgroup_ref));
                put_varint(&mut self.body, u64::from(limit_ref));
                let rest = KernelContext {
                    memcg_limit_bytes: *memcg_limit_bytes,
                    memcg_usage_bytes: *memcg_usage_bytes,
                    removed_ns: *removed_ns,
                    oom,
                    charge_failures: *charge_failures,
                };
                self.body = postcard::to_extend(&rest, std::mem::take(&mut self.body))
                    .map_err(|e| e.to_string())?;
                self.body.extend_from_slice(record.bytes());
                TAG_KERNEL
            }
            Observed::Stats(StatsSample {
                timestamp_ns,
                cgroup,
                container,
                memory,
            }) => {
                let cgroup_ref = self.reference(Some(cgroup), container.as_ref(), out)?;
                put_varint(&mut self.body, u64::from(cgroup_ref));
                self.body =
                    postcard::to_extend(&(timestamp_ns, memory), std::mem::take(&mut self.body))
                        .map_err(|e| e.to_string())?;
                TAG_STATS
            }
            Observed::Cache(CacheSample {
                timestamp_ns,
                interval_ns,
                memcg_id,
                cgroup,
                container,
                added_pages,
                removed_pages,
                top_files,
            }) => {
                let cgroup_ref = self.reference(cgroup.as_ref(), container.as_ref(), out)?;
                put_varint(&mut self.body, u64::from(cgroup_ref));
                for v in [
                    *timestamp_ns,
                    *interval_ns,
                    *memcg_id,
                    *added_pages,
                    *removed_pages,
                    top_files.len() as u64,
                ] {
                    put_varint(&mut self.body, v);
                }
                for FileDelta {
                    dev,
                    ino,
                    added_pages,
                    removed_pages,
                } in top_files
                {
                    // Major and minor apart: two small numbers, where `major << 20 | minor`
                    // is a four-byte varint for every disk.
                    for v in [
                        u64::from(dev >> 20),
                        u64::from(dev & 0xf_ffff),
                        *ino,
                        *added_pages,
                        *removed_pages,
                    ] {
                        put_varint(&mut self.body, v);
                    }
                }
                TAG_CACHE
            }
            Observed::Charge(ChargeSample {
                timestamp_ns,
                interval_ns,
                memcg_id,
                cgroup,
                container,
                pages,
                charges,
                source,
            }) => {
                let cgroup_ref = self.reference(cgroup.as_ref(), container.as_ref(), out)?;
                put_varint(&mut self.body, u64::from(cgroup_ref));
                for v in [
                    *timestamp_ns,
                    *interval_ns,
                    *memcg_id,
                    *pages,
                    *charges,
                    *source as u64,
                ] {
                    put_varint(&mut self.body, v);
                }
                TAG_CHARGE
            }
            Observed::Slab(SlabSample {
                timestamp_ns,
                interval_ns,
                memcg_id,
                cgroup,
                container,
                caches,
            }) => {
                let cgroup_ref = self.reference(cgroup.as_ref(), container.as_ref(), out)?;
                put_varint(&mut self.body, u64::from(cgroup_ref));
                self.body = postcard::to_extend(
                    &(timestamp_ns, interval_ns, memcg_id, caches),
                    std::mem::take(&mut self.body),
                )
                .map_err(|e| e.to_string())?;
                TAG_SLAB
            }
        };
        put_record(out, tag, &self.body);
        Ok(())
    }

    /// The table reference of a cgroup and its identity, adding a table record to `out` when
    /// the pair is new.
    fn reference(
        &mut self,
        cgroup: Option<&String>,
        identity: Option<&ContainerIdentity>,
        out: &mut Vec<u8>,
    ) -> Result<u32, String> {
        if cgroup.is_none() && identity.is_none() {
            return Ok(0);
        }
        let known = match cgroup {
            Some(path) => self.paths.get(path.as_str()),
            None => self.pathless.as_ref(),
        };
        if let Some((id, known)) = known
            && known.as_ref() == identity
        {
            return Ok(id + 1);
        }
        if self.next_id as usize >= MAX_TABLE {
            return Err(format!(
                "more than {MAX_TABLE} distinct cgroups in one file"
            ));
        }
        let id = self.next_id;
        self.next_id += 1;
        let mut body = Vec::with_capacity(64);
        put_varint(&mut body, u64::from(id));
        body.push(u8::from(cgroup.is_some()));
        let path = cgroup.map_or("", String::as_str);
        put_varint(&mut body, path.len() as u64);
        body.extend_from_slice(path.as_bytes());
        if let Some(identity) = identity {
            serde_json::to_writer(&mut body, identity).map_err(|e| e.to_string())?;
        }
        put_record(out, TAG_CGROUP, &body);
        let entry = (id, identity.cloned());
        match cgroup {
            Some(path) => {
                self.paths.insert(path.clone(), entry);
            }
            None => self.pathless = Some(entry),
        }
        Ok(id + 1)
    }
}

fn put_record(out: &mut Vec<u8>, tag: u8, body: &[u8]) {
    out.push(tag);
    put_varint(out, body.len() as u64);
    out.extend_from_slice(body);
}

/// LEB128: 7 bits a byte, low first.
pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        #[expect(clippy::cast_possible_truncation, reason = "the low 7 bits, by design")]
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    #[expect(clippy::cast_possible_truncation, reason = "v < 0x80 here")]
    out.push(v as u8);
}

/// Reads a LEB128 varint at `*pos`; `None` when it runs past the end or past 64 bits.
pub fn get_varint(buf: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *buf.get(*pos)?;
        *pos += 1;
        let bits = u64::from(byte & 0x7f);
        if shift == 63 && bits > 1 {
            return None;
        }
        v |= bits << shift;
        if byte & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// Reads records back, keeping the file's cgroup table.
#[derive(Default)]
pub struct Decoder {
    table: Vec<Entry>,
}

impl Decoder {
    /// The next event in `block` from `*pos`, applying table records on the way; `None` at the
    /// end of the block. The error says what is wrong with the record.
    ///
    /// # Errors
    ///
    /// A record that is cut, names an undefined table entry, or does not decode.
    pub fn next(&mut self, block: &[u8], pos: &mut usize) -> Result<Option<Observed>, String> {
        while *pos < block.len() {
            let tag = block[*pos];
            *pos += 1;
            let len = get_varint(block, pos).ok_or("record length runs past its block")?;
            let body = usize::try_from(len)
                .ok()
                .and_then(|len| block.get(*pos..pos.checked_add(len)?))
                .ok_or("record runs past its block")?;
            *pos += body.len();
            if tag == TAG_CGROUP {
                self.cgroup(body)?;
            } else {
                return self.event(tag, body).map(Some);
            }
        }
        Ok(None)
    }

    /// Every cgroup the table held so far with its container, in table order.
    #[must_use]
    pub fn table(&self) -> &[Entry] {
        &self.table
    }

    fn cgroup(&mut self, body: &[u8]) -> Result<(), String> {
        let mut pos = 0;
        let id = get_varint(body, &mut pos).ok_or("cut cgroup record")?;
        if id != self.table.len() as u64 || self.table.len() >= MAX_TABLE {
            return Err(format!("cgroup record #{id} out of sequence"));
        }
        let has_path = *body.get(pos).ok_or("cut cgroup record")?;
        pos += 1;
        let len = get_varint(body, &mut pos).ok_or("cut cgroup record")?;
        let path = usize::try_from(len)
            .ok()
            .and_then(|len| body.get(pos..pos.checked_add(len)?))
            .ok_or("cgroup path runs past its record")?;
        pos += path.len();
        let path = std::str::from_utf8(path).map_err(|_| "cgroup path is not UTF-8")?;
        let path = match has_path {
            0 if path.is_empty() => None,
            1 => Some(path.to_owned()),
            _ => return Err("bad cgroup record".into()),
        };
        let identity = match &body[pos..] {
            [] => None,
            json => Some(
                serde_json::from_slice(json)
                    .map_err(|e| format!("container identity is not valid: {e}"))?,
            ),
        };
        self.table.push((path, identity));
        Ok(())
    }

    fn entry(&self, reference: u64) -> Result<Entry, String> {
        if reference == 0 {
            return Ok((None, None));
        }
        usize::try_from(reference - 1)
            .ok()
            .and_then(|i| self.table.get(i))
            .cloned()
            .ok_or_else(|| format!("event names cgroup #{}, never defined", reference - 1))
    }

    #[expect(
        clippy::too_many_lines,
        reason = "one arm per record type, side by side: a new variant goes in one place"
    )]
    fn event(&self, tag: u8, body: &[u8]) -> Result<Observed, String> {
        let mut pos = 0;
        let cgroup_ref = get_varint(body, &mut pos).ok_or("cut event record")?;
        let (cgroup, container) = self.entry(cgroup_ref)?;
        match tag {
            TAG_KERNEL => {
                let limit_ref = get_varint(body, &mut pos).ok_or("cut event record")?;
                let (rest, record): (KernelContext, &[u8]) =
                    postcard::take_from_bytes(&body[pos..])
                        .map_err(|e| format!("event context is not valid: {e}"))?;
                let KernelContext {
                    memcg_limit_bytes,
                    memcg_usage_bytes,
                    removed_ns,
                    oom,
                    charge_failures,
                } = rest;
                let oom = match oom {
                    None if limit_ref == 0 => None,
                    None => return Err("limit cgroup without OOM context".into()),
                    Some(OomRest {
                        constraint,
                        memory,
                        memory_source,
                        task,
                    }) => {
                        let (limit_cgroup, limit_container) = self.entry(limit_ref)?;
                        Some(OomContext {
                            constraint,
                            limit_cgroup,
                            limit_container,
                            memory,
                            memory_source,
                            task,
                        })
                    }
                };
                let rest = record;
                let record = Record::decode(rest).map_err(|e| match e {
                    DecodeError::Short { kind, need, got } => {
                        format!("event of kind {kind} has {got} bytes, needs {need}")
                    }
                    DecodeError::UnknownKind(kind) => format!("unknown event kind {kind}"),
                })?;
                if record.bytes().len() != rest.len() {
                    return Err("kernel record has trailing bytes".into());
                }
                Ok(Observed::Kernel {
                    record,
                    context: Context {
                        cgroup,
                        container,
                        memcg_limit_bytes,
                        memcg_usage_bytes,
                        oom,
                        removed_ns,
                        charge_failures,
                    },
                })
            }
            TAG_STATS => {
                let ((timestamp_ns, memory), rest) = postcard::take_from_bytes(&body[pos..])
                    .map_err(|e| format!("stats sample is not valid: {e}"))?;
                if !rest.is_empty() {
                    return Err("stats sample has trailing bytes".into());
                }
                Ok(Observed::Stats(StatsSample {
                    timestamp_ns,
                    cgroup: cgroup.ok_or("stats sample without a cgroup")?,
                    container,
                    memory,
                }))
            }
            TAG_CACHE => {
                let mut next = || get_varint(body, &mut pos).ok_or("cut cache sample");
                let (timestamp_ns, interval_ns, memcg_id, added_pages, removed_pages) =
                    (next()?, next()?, next()?, next()?, next()?);
                let files = next()?;
                // Each file takes at least 5 bytes: a count beyond that is damage, and must not
                // size an allocation.
                if files > (body.len() / 5) as u64 {
                    return Err("cache sample's file count runs past its record".into());
                }
                let mut top_files = Vec::new();
                for _ in 0..files {
                    let (major, minor, ino, added_pages, removed_pages) =
                        (next()?, next()?, next()?, next()?, next()?);
                    let dev = u32::try_from(major)
                        .ok()
                        .filter(|&m| m < 1 << 12 && minor < 1 << 20)
                        .map(|m| m << 20 | u32::try_from(minor).unwrap_or(0))
                        .ok_or("bad device number in cache sample")?;
                    top_files.push(FileDelta {
                        dev,
                        ino,
                        added_pages,
                        removed_pages,
                    });
                }
                if pos != body.len() {
                    return Err("cache sample has trailing bytes".into());
                }
                Ok(Observed::Cache(CacheSample {
                    timestamp_ns,
                    interval_ns,
                    memcg_id,
                    cgroup,
                    container,
                    added_pages,
                    removed_pages,
                    top_files,
                }))
            }
            TAG_CHARGE => {
                let mut next = || get_varint(body, &mut pos).ok_or("cut charge sample");
                let (timestamp_ns, interval_ns, memcg_id, pages, charges, source) =
                    (next()?, next()?, next()?, next()?, next()?, next()?);
                let source = usize::try_from(source)
                    .ok()
                    .and_then(|i| ChargeSource::ALL.get(i).copied());
                let (Some(source), true) = (source, pos == body.len()) else {
                    return Err("charge sample is not valid".into());
                };
                Ok(Observed::Charge(ChargeSample {
                    timestamp_ns,
                    interval_ns,
                    memcg_id,
                    cgroup,
                    container,
                    pages,
                    charges,
                    source,
                }))
            }
            TAG_SLAB => {
                let ((timestamp_ns, interval_ns, memcg_id, caches), rest): (
                    (u64, u64, u64, Vec<SlabCacheDelta>),
                    _,
                ) = postcard::take_from_bytes(&body[pos..])
                    .map_err(|e| format!("slab sample is not valid: {e}"))?;
                if !rest.is_empty() {
                    return Err("slab sample has trailing bytes".into());
                }
                Ok(Observed::Slab(SlabSample {
                    timestamp_ns,
                    interval_ns,
                    memcg_id,
                    cgroup,
                    container,
                    caches,
                }))
            }
            other => Err(format!("unknown record type {other}")),
        }
    }
}
