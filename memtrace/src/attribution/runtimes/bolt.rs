//! A read-only reader of bbolt files, the key/value store containerd keeps its metadata in
//! (`io.containerd.metadata.v1.bolt/meta.db`).
//!
//! Written by hand on purpose: the Rust ports of bbolt are full read-write databases that lock
//! and map the file (containerd holds it open for writing: memtrace must never take its lock),
//! and the one read-only parser on crates.io is a young single-release crate. What memtrace
//! needs is small: walk nested buckets of a copy of the file and read values. The layout is
//! bbolt's version 2, unchanged since 2014 (`page.go`, `bucket.go`, `db.go` in etcd-io/bbolt):
//!
//! ```text
//! page     := id u64 | flags u16 | count u16 | overflow u32 | elements…   (overflow: more pages)
//! meta     := (page 0 and 1, after the page head) magic u32 | version u32 | page_size u32
//!             | flags u32 | root bucket (root u64, sequence u64) | freelist u64 | pgid u64
//!             | txid u64 | checksum u64 (FNV-1a of the 56 bytes before it)
//! branch   := pos u32 | ksize u32 | pgid u64            (key at the element's offset + pos)
//! leaf     := flags u32 | pos u32 | ksize u32 | vsize u32 (key, then value, at offset + pos)
//! bucket value := root u64 | sequence u64 | (root 0: an inline leaf page follows)
//! ```
//!
//! The file is read while containerd may be writing it. bbolt writes pages copy-on-write and
//! the meta page last, so the newest meta with a good checksum names a consistent tree unless
//! a later transaction reused its pages between our reads; every offset is checked, and a
//! damaged tree is an error that the caller retries, never a panic.

use thiserror::Error;

const MAGIC: u32 = 0xED0C_DAED;
const VERSION: u32 = 2;
const PAGE_HEAD: usize = 16;
const ELEMENT: usize = 16;
const FLAG_BRANCH: u16 = 0x01;
const FLAG_LEAF: u16 = 0x02;
/// A leaf element whose value is a nested bucket.
const LEAF_BUCKET: u32 = 0x01;
/// Deeper than any tree a real file holds: a cycle in a damaged file stops here.
const MAX_DEPTH: usize = 64;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum BoltError {
    #[error("not a bbolt file (no valid meta page)")]
    NoMeta,
    #[error("page {0} is outside the file or damaged")]
    BadPage(u64),
    #[error("the tree is deeper than {MAX_DEPTH} levels (damaged file)")]
    TooDeep,
}

/// A bbolt file, read into memory.
pub struct Db {
    data: Vec<u8>,
    page_size: usize,
    root: u64,
}

/// A bucket of a [`Db`]: its tree's root page, or an inline leaf page.
#[derive(Clone, Copy)]
pub struct Bucket<'a> {
    db: &'a Db,
    root: Root<'a>,
}

#[derive(Clone, Copy)]
enum Root<'a> {
    Page(u64),
    Inline(&'a [u8]),
}

/// A key's value: bytes, or a nested bucket.
pub enum Value<'a> {
    Bytes(&'a [u8]),
    Bucket(Bucket<'a>),
}

impl Db {
    /// Takes a copy of a bbolt file.
    ///
    /// # Errors
    ///
    /// When neither meta page is valid.
    pub fn parse(data: Vec<u8>) -> Result<Self, BoltError> {
        // Page 0's meta gives the page size, page 1 is at that offset; a torn page 0 leaves
        // page 1 at the usual 4 KiB.
        let page_size = meta(&data, 0)
            .or_else(|| meta(&data, 4096))
            .map(|m| m.page_size)
            .ok_or(BoltError::NoMeta)?;
        let newest = [meta(&data, 0), meta(&data, page_size)]
            .into_iter()
            .flatten()
            .max_by_key(|m| m.txid)
            .ok_or(BoltError::NoMeta)?;
        Ok(Self {
            page_size,
            root: newest.root,
            data,
        })
    }

    /// The top-level bucket, holding every named bucket.
    #[must_use]
    pub fn root(&self) -> Bucket<'_> {
        Bucket {
            db: self,
            root: Root::Page(self.root),
        }
    }

    /// Page `id` with its overflow pages.
    fn page(&self, id: u64) -> Result<&[u8], BoltError> {
        let bad = || BoltError::BadPage(id);
        let start = usize::try_from(id)
            .ok()
            .and_then(|i| i.checked_mul(self.page_size))
            .ok_or_else(bad)?;
        let head = self.data.get(start..start + PAGE_HEAD).ok_or_else(bad)?;
        let overflow = u32_at(head, 12) as usize;
        let len = overflow
            .checked_add(1)
            .and_then(|n| n.checked_mul(self.page_size))
            .ok_or_else(bad)?;
        let end = start.checked_add(len).ok_or_else(bad)?;
        // The last page of a file may be cut short of a full page.
        Ok(&self.data[start..end.min(self.data.len())])
    }
}

impl<'a> Bucket<'a> {
    /// The value of `key`, if it is bytes.
    #[must_use]
    pub fn get(&self, key: &[u8]) -> Option<&'a [u8]> {
        self.entries().ok()?.into_iter().find_map(|(k, v)| match v {
            Value::Bytes(b) if k == key => Some(b),
            _ => None,
        })
    }

    /// The nested bucket `key`.
    #[must_use]
    pub fn bucket(&self, key: &[u8]) -> Option<Bucket<'a>> {
        self.entries().ok()?.into_iter().find_map(|(k, v)| match v {
            Value::Bucket(b) if k == key => Some(b),
            _ => None,
        })
    }

    /// Every key of the bucket with its value, in key order.
    ///
    /// # Errors
    ///
    /// When the bucket's tree is damaged.
    pub fn entries(&self) -> Result<Vec<(&'a [u8], Value<'a>)>, BoltError> {
        let mut out = Vec::new();
        match self.root {
            Root::Inline(page) => self.leaf(page, u64::MAX, &mut out)?,
            Root::Page(id) => self.walk(id, 0, &mut out)?,
        }
        Ok(out)
    }

    fn walk(
        &self,
        id: u64,
        depth: usize,
        out: &mut Vec<(&'a [u8], Value<'a>)>,
    ) -> Result<(), BoltError> {
        if depth > MAX_DEPTH {
            return Err(BoltError::TooDeep);
        }
        let page = self.db.page(id)?;
        match u16_at(page, 8) {
            FLAG_LEAF => self.leaf(page, id, out),
            FLAG_BRANCH => {
                for i in 0..usize::from(u16_at(page, 10)) {
                    let element = page
                        .get(PAGE_HEAD + i * ELEMENT..PAGE_HEAD + (i + 1) * ELEMENT)
                        .ok_or(BoltError::BadPage(id))?;
                    self.walk(u64_at(element, 8), depth + 1, out)?;
                }
                Ok(())
            }
            _ => Err(BoltError::BadPage(id)),
        }
    }

    /// The elements of a leaf page (`id` only names it in errors).
    fn leaf(
        &self,
        page: &'a [u8],
        id: u64,
        out: &mut Vec<(&'a [u8], Value<'a>)>,
    ) -> Result<(), BoltError> {
        let bad = || BoltError::BadPage(id);
        if page.len() < PAGE_HEAD || u16_at(page, 8) != FLAG_LEAF {
            return Err(bad());
        }
        for i in 0..usize::from(u16_at(page, 10)) {
            let at = PAGE_HEAD + i * ELEMENT;
            let element = page.get(at..at + ELEMENT).ok_or_else(bad)?;
            let (flags, pos, ksize, vsize) = (
                u32_at(element, 0),
                u32_at(element, 4) as usize,
                u32_at(element, 8) as usize,
                u32_at(element, 12) as usize,
            );
            let key_at = at.checked_add(pos).ok_or_else(bad)?;
            let key = page.get(key_at..key_at + ksize).ok_or_else(bad)?;
            let value = page
                .get(key_at + ksize..key_at + ksize + vsize)
                .ok_or_else(bad)?;
            let value = if flags & LEAF_BUCKET == 0 {
                Value::Bytes(value)
            } else {
                let root = u64_at(value.get(..16).ok_or_else(bad)?, 0);
                Value::Bucket(Bucket {
                    db: self.db,
                    root: if root == 0 {
                        Root::Inline(&value[16..])
                    } else {
                        Root::Page(root)
                    },
                })
            };
            out.push((key, value));
        }
        Ok(())
    }
}

struct Meta {
    page_size: usize,
    root: u64,
    txid: u64,
}

/// The meta page at `offset`, if its magic, version and checksum are right.
fn meta(data: &[u8], offset: usize) -> Option<Meta> {
    let m = data.get(offset + PAGE_HEAD..offset + PAGE_HEAD + 64)?;
    let ok = u32_at(m, 0) == MAGIC && u32_at(m, 4) == VERSION && fnv1a(&m[..56]) == u64_at(m, 56);
    let page_size = u32_at(m, 8) as usize;
    (ok && page_size >= 512).then(|| Meta {
        page_size,
        root: u64_at(m, 16),
        txid: u64_at(m, 48),
    })
}

/// FNV-1a, 64 bits: bbolt's meta checksum.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap_or_default())
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap_or_default())
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// Builds a bbolt file the way bbolt lays one out: meta pages 0 and 1, then one leaf page
    /// per bucket (nested buckets as pages, or inline when `inline`).
    pub struct Builder {
        pub page_size: usize,
        pages: Vec<Vec<u8>>,
    }

    pub enum Item {
        Bytes(&'static [u8], Vec<u8>),
        Bucket(&'static [u8], Vec<Item>),
        Inline(&'static [u8], Vec<Item>),
    }

    impl Builder {
        #[must_use]
        pub fn new() -> Self {
            Self {
                page_size: 4096,
                // 0, 1: meta; 2: freelist.
                pages: vec![Vec::new(), Vec::new(), Vec::new()],
            }
        }

        /// The file holding `root`'s items, with two meta pages (the older one stale).
        pub fn file(mut self, root: Vec<Item>) -> Vec<u8> {
            let root_id = self.bucket_page(root);
            let mut file = Vec::new();
            for (i, page) in self.pages.iter().enumerate() {
                let mut p = match i {
                    0 | 1 => self.meta(i as u64, if i == 1 { root_id } else { 0 }, i as u64 + 7),
                    2 => head(2, 0x10, 0),
                    _ => page.clone(),
                };
                p.resize(self.page_size, 0);
                file.extend_from_slice(&p);
            }
            file
        }

        fn meta(&self, id: u64, root: u64, txid: u64) -> Vec<u8> {
            let mut p = head(id, 0x04, 0);
            let mut m = Vec::new();
            m.extend_from_slice(&MAGIC.to_le_bytes());
            m.extend_from_slice(&VERSION.to_le_bytes());
            m.extend_from_slice(&le32(self.page_size));
            m.extend_from_slice(&0u32.to_le_bytes());
            m.extend_from_slice(&root.to_le_bytes());
            m.extend_from_slice(&0u64.to_le_bytes());
            m.extend_from_slice(&2u64.to_le_bytes());
            m.extend_from_slice(&(self.pages.len() as u64).to_le_bytes());
            m.extend_from_slice(&txid.to_le_bytes());
            let checksum = fnv1a(&m);
            m.extend_from_slice(&checksum.to_le_bytes());
            p.extend_from_slice(&m);
            p
        }

        fn bucket_page(&mut self, items: Vec<Item>) -> u64 {
            let page = self.leaf(items, u64::MAX);
            let id = self.pages.len() as u64;
            let mut page = page;
            page[..8].copy_from_slice(&id.to_le_bytes());
            self.pages.push(page);
            id
        }

        fn leaf(&mut self, mut items: Vec<Item>, id: u64) -> Vec<u8> {
            items.sort_by(|a, b| a.key().cmp(b.key()));
            let mut elements = Vec::new();
            for item in items {
                let (flags, key, value) = match item {
                    Item::Bytes(k, v) => (0, k, v),
                    Item::Bucket(k, inner) => {
                        let root = self.bucket_page(inner);
                        (LEAF_BUCKET, k, [root.to_le_bytes(), [0; 8]].concat())
                    }
                    Item::Inline(k, inner) => {
                        let mut v = [0u8; 16].to_vec();
                        v.extend(self.leaf(inner, 0));
                        (LEAF_BUCKET, k, v)
                    }
                };
                elements.push((flags, key, value));
            }
            let count = u16::try_from(elements.len()).expect("test bucket too large");
            let mut page = head(id, FLAG_LEAF, count);
            let mut data = Vec::new();
            let base = PAGE_HEAD + elements.len() * ELEMENT;
            for (i, (flags, key, value)) in elements.iter().enumerate() {
                let pos = base + data.len() - (PAGE_HEAD + i * ELEMENT);
                page.extend_from_slice(&flags.to_le_bytes());
                page.extend_from_slice(&le32(pos));
                page.extend_from_slice(&le32(key.len()));
                page.extend_from_slice(&le32(value.len()));
                data.extend_from_slice(key);
                data.extend_from_slice(value);
            }
            page.extend_from_slice(&data);
            assert!(page.len() <= self.page_size, "test bucket too large");
            page
        }
    }

    impl Item {
        fn key(&self) -> &[u8] {
            match self {
                Self::Bytes(k, _) | Self::Bucket(k, _) | Self::Inline(k, _) => k,
            }
        }
    }

    fn le32(n: usize) -> [u8; 4] {
        u32::try_from(n).expect("fits a page").to_le_bytes()
    }

    fn head(id: u64, flags: u16, count: u16) -> Vec<u8> {
        let mut p = id.to_le_bytes().to_vec();
        p.extend_from_slice(&flags.to_le_bytes());
        p.extend_from_slice(&count.to_le_bytes());
        p.extend_from_slice(&0u32.to_le_bytes());
        p
    }

    #[test]
    fn reads_nested_and_inline_buckets_from_the_newest_meta() {
        let file = Builder::new().file(vec![Item::Bucket(
            b"v1",
            vec![
                Item::Bytes(b"version", b"3".to_vec()),
                Item::Inline(b"labels", vec![Item::Bytes(b"a", b"1".to_vec())]),
            ],
        )]);
        let db = Db::parse(file).expect("parses");
        let v1 = db.root().bucket(b"v1").expect("v1");
        assert_eq!(v1.get(b"version"), Some(&b"3"[..]));
        assert_eq!(v1.get(b"labels"), None, "a bucket is not bytes");
        let labels = v1.bucket(b"labels").expect("inline bucket");
        assert_eq!(labels.get(b"a"), Some(&b"1"[..]));
        assert!(db.root().bucket(b"v2").is_none());
    }

    #[test]
    fn damage_is_an_error_never_a_panic() {
        assert_eq!(Db::parse(Vec::new()).err(), Some(BoltError::NoMeta));
        assert_eq!(Db::parse(vec![0; 8192]).err(), Some(BoltError::NoMeta));
        let file = Builder::new().file(vec![Item::Bucket(
            b"v1",
            vec![Item::Bytes(b"k", b"v".to_vec())],
        )]);
        // Every byte flipped, one at a time, and the file cut everywhere.
        for i in 0..file.len() {
            let mut damaged = file.clone();
            damaged[i] ^= 0xff;
            if let Ok(db) = Db::parse(damaged) {
                let _ = db.root().entries();
                let _ = db.root().bucket(b"v1").map(|b| b.entries());
            }
            if i % 97 == 0
                && let Ok(db) = Db::parse(file[..i].to_vec())
            {
                let _ = db.root().bucket(b"v1").map(|b| b.entries());
            }
        }
    }
}
