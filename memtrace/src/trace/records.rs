//! Records inside a decompressed block: the cgroup table as it grows, and the events.
//!
//! ```text
//! record := tag u8 | body_len varint | body
//! CGROUP (1) := table_id varint | has_path u8 | path_len varint | path
//!               | identity (JSON `ContainerIdentity`; empty: none; rest of body)
//! EVENT  (7) := cgroup_ref varint | postcard((timestamp_ns − previous event's i64,
//!               memcg_id + 1 (0: none) u64, What))
//! FILE   (8) := postcard((major u32, minor u32, inode u64, path Option<String>,
//!               container_path Option<String>, shmem bool, deleted bool,
//!               note Option<String>, other_files Option<u64>))       (version 4)
//! cgroup_ref := 0: no cgroup and no container; n: table entry n − 1
//! ```
//!
//! Versions 3 and 4 store the event model itself ([`crate::event::What`], postcard), so an event
//! kind added to the model is in trace files without a change here. Version 4 differs in two
//! things:
//!
//! - a container identity inside an event (an OOM kill's `limit_container`) is its JSON as a
//!   postcard string, where version 3 had a fixed list of fields, which a new field (the image)
//!   would have broken; version 3 files are read with that layout ([`with_version_3_layout`]);
//! - FILE records: a page-cache file's name (`FileName`), written before the first event that
//!   lists the file and again when it changes (deleted since); events do not store names, and
//!   the reader gives each listed file the name its last FILE record said. Version 3 files have
//!   none: their files are `dev:inode`.
//!
//! Version 5 differs from 4 in one thing: a `stats` sample ([`crate::event::Sample`]) stores the
//! memcg's counters after its memory; versions 3 and 4 are read with the memory alone
//! ([`with_layout_before_version_5`]).
//!
//! A cgroup and its container
//! identity are written once per file, as a table record before the first event that names
//! them; events carry the table reference. That is most of what makes an event small, and it
//! lets a reader list every container without decoding events. Tags 2–6 are version 2's
//! records, read by [`super::v2`].

use std::collections::HashMap;

use crate::{
    attribution::{ContainerIdentity, with_version_3_layout},
    event::{Event, FileCache, FileName, Memcg, What, with_layout_before_version_5},
};

pub const TAG_CGROUP: u8 = 1;
pub const TAG_EVENT: u8 = 7;
pub const TAG_FILE: u8 = 8;

/// File names an encoder remembers having written: past this it forgets them all (and writes
/// each again when next listed).
const MAX_FILES: usize = 1 << 18;

/// A file, as FILE records and the events that list it name it: (major, minor, inode).
type FileKey = (u32, u32, u64);

/// A FILE record's body.
type FileRecord = (
    u32,
    u32,
    u64,
    Option<String>,
    Option<String>,
    bool,
    bool,
    Option<String>,
    Option<u64>,
);

fn file_key(f: &FileCache) -> FileKey {
    (f.device.major, f.device.minor, f.inode)
}

/// A file naming more distinct cgroups than this is damaged (a node has at most 65535 live
/// memcgs; identities change rarely).
pub const MAX_TABLE: usize = 1 << 20;

pub type Entry = (Option<String>, Option<ContainerIdentity>);

/// Writes records into a block buffer, keeping the file's cgroup table.
#[derive(Default)]
pub struct Encoder {
    /// Cgroup path → its newest table id and the identity that entry holds.
    paths: HashMap<String, (u32, Option<ContainerIdentity>)>,
    /// The same for events with a container but no cgroup path.
    pathless: Option<(u32, Option<ContainerIdentity>)>,
    next_id: u32,
    /// The previous event's time: each event stores its distance from it.
    last_ns: u64,
    body: Vec<u8>,
    /// Each file's name as its last FILE record wrote it.
    files: HashMap<FileKey, FileName>,
}

impl Encoder {
    /// Appends `event` (after any table record it needs) to `out`.
    ///
    /// # Errors
    ///
    /// When the table is full or the event cannot be serialized.
    pub fn event(&mut self, event: &Event, out: &mut Vec<u8>) -> Result<(), String> {
        self.body.clear();
        let cgroup_ref = self.reference(
            event.memcg.cgroup.as_ref(),
            event.memcg.container.as_ref(),
            out,
        )?;
        if let What::Cache(cache) = &event.what {
            for f in &cache.top_files {
                self.file(f, out)?;
            }
        }
        put_varint(&mut self.body, u64::from(cgroup_ref));
        self.body = postcard::to_extend(
            &(
                since(self.last_ns, event.timestamp_ns),
                memcg_id(event.memcg.id),
                &event.what,
            ),
            std::mem::take(&mut self.body),
        )
        .map_err(|e| e.to_string())?;
        self.last_ns = event.timestamp_ns;
        put_record(out, TAG_EVENT, &self.body);
        Ok(())
    }

    /// A FILE record for a file whose name is new or changed (none for an unnamed one).
    fn file(&mut self, f: &FileCache, out: &mut Vec<u8>) -> Result<(), String> {
        let key = file_key(f);
        let known = self.files.get(&key);
        if known == Some(&f.name) || (known.is_none() && f.name == FileName::default()) {
            return Ok(());
        }
        let n = &f.name;
        let record: FileRecord = (
            key.0,
            key.1,
            key.2,
            n.path.clone(),
            n.container_path.clone(),
            n.shmem,
            n.deleted,
            n.note.clone(),
            n.other_files,
        );
        let body = postcard::to_allocvec(&record).map_err(|e| e.to_string())?;
        put_record(out, TAG_FILE, &body);
        if self.files.len() >= MAX_FILES {
            self.files.clear();
        }
        self.files.insert(key, f.name.clone());
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

/// An event's time as stored: its distance from the previous event's, which is small (events
/// come in time order but for a held OOM kill or an interval's end), as a signed varint.
#[expect(
    clippy::cast_possible_wrap,
    reason = "a wrapping difference: `wrapping_add_signed` on read gives the time back exactly"
)]
fn since(last_ns: u64, timestamp_ns: u64) -> i64 {
    timestamp_ns.wrapping_sub(last_ns) as i64
}

/// A memcg id as stored: 0 when the event has none, else the id plus one (no `Option` tag).
fn memcg_id(id: Option<u64>) -> u64 {
    id.map_or(0, |id| id.wrapping_add(1))
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
pub struct Decoder {
    table: Vec<Entry>,
    /// The file's format version: version 2 records are read by [`super::v2`].
    version: u16,
    /// The recording host's page size, for version 2's page counts.
    page_size: u64,
    /// The previous event's time, which the next is stored relative to.
    last_ns: u64,
    /// Files' names from FILE records (version 4).
    files: HashMap<FileKey, FileName>,
}

impl Decoder {
    #[must_use]
    pub fn new(version: u16, page_size: u64) -> Self {
        Self {
            table: Vec::new(),
            version,
            page_size,
            last_ns: 0,
            files: HashMap::new(),
        }
    }

    /// The next event in `block` from `*pos`, applying table records on the way; `None` at the
    /// end of the block. The error says what is wrong with the record.
    ///
    /// # Errors
    ///
    /// A record that is cut, names an undefined table entry, or does not decode.
    pub fn next(&mut self, block: &[u8], pos: &mut usize) -> Result<Option<Event>, String> {
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
            } else if tag == TAG_FILE && self.version >= 4 {
                self.file(body)?;
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

    fn file(&mut self, body: &[u8]) -> Result<(), String> {
        let (major, minor, inode, path, container_path, shmem, deleted, note, other_files): FileRecord =
            postcard::from_bytes(body).map_err(|e| format!("file record is not valid: {e}"))?;
        if self.files.len() >= MAX_FILES {
            self.files.clear();
        }
        self.files.insert(
            (major, minor, inode),
            FileName {
                path,
                container_path,
                shmem,
                deleted,
                note,
                other_files,
            },
        );
        Ok(())
    }

    pub(super) fn entry(&self, reference: u64) -> Result<Entry, String> {
        if reference == 0 {
            return Ok((None, None));
        }
        usize::try_from(reference - 1)
            .ok()
            .and_then(|i| self.table.get(i))
            .cloned()
            .ok_or_else(|| format!("event names cgroup #{}, never defined", reference - 1))
    }

    fn event(&mut self, tag: u8, body: &[u8]) -> Result<Event, String> {
        match (self.version, tag) {
            (version @ 3..=5, TAG_EVENT) => {
                let mut pos = 0;
                let cgroup_ref = get_varint(body, &mut pos).ok_or("cut event record")?;
                let (cgroup, container) = self.entry(cgroup_ref)?;
                let decode = || postcard::take_from_bytes(&body[pos..]);
                let decoded = match version {
                    3 => with_layout_before_version_5(|| with_version_3_layout(decode)),
                    4 => with_layout_before_version_5(decode),
                    _ => decode(),
                };
                let ((delta, id, mut what), rest): ((i64, u64, What), _) =
                    decoded.map_err(|e| format!("event is not valid: {e}"))?;
                what.restore_derived();
                if let What::Cache(cache) = &mut what {
                    for f in &mut cache.top_files {
                        if let Some(name) = self.files.get(&file_key(f)) {
                            f.name = name.clone();
                        }
                    }
                }
                let timestamp_ns = self.last_ns.wrapping_add_signed(delta);
                self.last_ns = timestamp_ns;
                let id = id.checked_sub(1);
                if !rest.is_empty() {
                    return Err("event has trailing bytes".into());
                }
                Ok(Event {
                    timestamp_ns,
                    memcg: Memcg {
                        id,
                        cgroup,
                        container,
                    },
                    what,
                })
            }
            (2, _) => super::v2::event(self, tag, body, self.page_size),
            (_, other) => Err(format!("unknown record type {other}")),
        }
    }
}
