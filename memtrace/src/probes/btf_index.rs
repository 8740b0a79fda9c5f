//! The ids of the few dozen type names memtrace looks up in the kernel's BTF, and the values of
//! a few enum members, found in one pass over the raw type section.
//!
//! btf-rs, with the mmap backend that spares start-up from decoding all ~130 000 types, finds a
//! name by walking every type again (about 0.7 ms each here, several times that on a busy
//! machine); the offsets alone look up about 90 names, most of them more than once, which made
//! BTF the largest part of start-up. btf-rs has no lookup of many names at once (its regex
//! lookup converts and matches every name: 8–14 ms), so this walks the section itself, knowing
//! only each type's size (`Documentation/bpf/btf.rst`, "Type Encoding"), and compares names as
//! bytes: about 2 ms. btf-rs still decodes every type found here, by id.

use std::collections::HashMap;

/// `BTF_MAGIC` as the file's first two bytes on a little-endian host (`0xeB9F`).
const MAGIC: u16 = 0xeb9f;
/// `struct btf_header`: `magic`, `version`, `flags`, then five `u32`s: `hdr_len`, `type_off`,
/// `type_len`, `str_off`, `str_len`.
const HEADER_LEN: usize = 24;
/// `struct btf_type`: `name_off`, `info`, `size` or `type`.
const TYPE_LEN: usize = 12;
const KIND_ENUM: u32 = 6;

/// What one pass found.
#[derive(Debug, Default)]
pub struct NameIndex {
    /// Every type id of each wanted name, in id order; an empty list: the kernel has none.
    types: HashMap<&'static str, Vec<u32>>,
    /// The value of each wanted member of a (32-bit) enum, the first in id order, and its
    /// place among all enum members (which of two names came first).
    enum_values: HashMap<&'static str, (u32, usize)>,
}

impl NameIndex {
    /// Walks the raw BTF `data` once.
    ///
    /// # Errors
    ///
    /// What is wrong with `data` (not native-endian BTF, a kind this walk does not know, a
    /// section that runs past the end): the caller then looks names up with btf-rs.
    pub fn build(
        data: &[u8],
        type_names: &[&'static str],
        enum_members: &[&'static str],
    ) -> Result<Self, String> {
        let header = |at: usize| read_u32(data, at).ok_or("BTF header truncated");
        let magic = data
            .get(..2)
            .map(|b| u16::from_ne_bytes([b[0], b[1]]))
            .ok_or("BTF header truncated")?;
        if magic != MAGIC {
            return Err(format!("BTF magic {magic:#x} is not this host's"));
        }
        let hdr_len = usize_of(header(4)?);
        if hdr_len < HEADER_LEN {
            return Err(format!("BTF header of {hdr_len} bytes"));
        }
        let (type_off, type_len) = (usize_of(header(8)?), usize_of(header(12)?));
        let (str_off, str_len) = (usize_of(header(16)?), usize_of(header(20)?));
        let types = section(data, hdr_len, type_off, type_len).ok_or("BTF types past the end")?;
        let strings = section(data, hdr_len, str_off, str_len).ok_or("BTF strings past the end")?;
        let name = |offset: u32| {
            let rest = strings.get(usize_of(offset)..)?;
            rest.get(..rest.iter().position(|&b| b == 0)?)
        };
        let wanted: HashMap<&[u8], &'static str> =
            type_names.iter().map(|n| (n.as_bytes(), *n)).collect();
        let wanted_members: HashMap<&[u8], &'static str> =
            enum_members.iter().map(|n| (n.as_bytes(), *n)).collect();

        let mut index = Self {
            types: type_names.iter().map(|n| (*n, Vec::new())).collect(),
            enum_values: HashMap::new(),
        };
        let mut at = 0;
        let mut id = 0_u32;
        let mut members_seen = 0;
        while at < types.len() {
            id += 1;
            let field =
                |i: usize| read_u32(types, at.saturating_add(4 * i)).ok_or("BTF type truncated");
            let (name_off, info) = (field(0)?, field(1)?);
            let kind = (info >> 24) & 0x1f;
            let vlen = usize_of(info & 0xffff);
            if name_off != 0
                && let Some(found) = name(name_off).and_then(|n| wanted.get(n))
                && let Some(ids) = index.types.get_mut(found)
            {
                ids.push(id);
            }
            let extra = extra_len(kind, vlen).ok_or_else(|| format!("BTF kind {kind}"))?;
            if kind == KIND_ENUM {
                // `struct btf_enum`: name_off, val.
                for member in 0..vlen {
                    let at = at.saturating_add(TYPE_LEN + 8 * member);
                    let member_name = read_u32(types, at).ok_or("BTF enum truncated")?;
                    if let Some(found) = name(member_name).and_then(|n| wanted_members.get(n)) {
                        let value =
                            read_u32(types, at.saturating_add(4)).ok_or("BTF enum truncated")?;
                        index
                            .enum_values
                            .entry(found)
                            .or_insert((value, members_seen));
                    }
                    members_seen += 1;
                }
            }
            at = at
                .checked_add(TYPE_LEN + extra)
                .ok_or("BTF type section too long")?;
        }
        if at != types.len() {
            return Err("BTF type section ends inside a type".into());
        }
        Ok(index)
    }

    /// The ids of `name`'s types; `None` when `name` was not asked for.
    #[must_use]
    pub fn ids(&self, name: &str) -> Option<&[u32]> {
        self.types.get(name).map(Vec::as_slice)
    }

    /// The value of whichever of `names` comes first among the members of the kernel's enums;
    /// `None` when no enum has any (or they were not asked for).
    #[must_use]
    pub fn first_enum_value(&self, names: &[&str]) -> Option<u32> {
        names
            .iter()
            .filter_map(|name| self.enum_values.get(name))
            .min_by_key(|(_, place)| *place)
            .map(|(value, _)| *value)
    }
}

/// Bytes after `struct btf_type` for each kind (`include/uapi/linux/btf.h`).
fn extra_len(kind: u32, vlen: usize) -> Option<usize> {
    Some(match kind {
        // PTR, FWD, TYPEDEF, VOLATILE, CONST, RESTRICT, FUNC, FLOAT, TYPE_TAG
        2 | 7..=12 | 16 | 18 => 0,
        // INT (its encoding), VAR (linkage), DECL_TAG (component index)
        1 | 14 | 17 => 4,
        // ARRAY: struct btf_array
        3 => 12,
        // STRUCT, UNION: struct btf_member; DATASEC: struct btf_var_secinfo; ENUM64
        4 | 5 | 15 | 19 => 12 * vlen,
        // ENUM: struct btf_enum; FUNC_PROTO: struct btf_param
        KIND_ENUM | 13 => 8 * vlen,
        _ => return None,
    })
}

/// `len` bytes at `offset` after the header, if all are in `data`.
fn section(data: &[u8], hdr_len: usize, offset: usize, len: usize) -> Option<&[u8]> {
    let start = hdr_len.checked_add(offset)?;
    data.get(start..start.checked_add(len)?)
}

fn read_u32(data: &[u8], at: usize) -> Option<u32> {
    let bytes = data.get(at..at.checked_add(4)?)?;
    Some(u32::from_ne_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
}

fn usize_of(value: u32) -> usize {
    usize::try_from(value).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A BTF blob: `types` as (name offset, kind, vlen, extra bytes), then `strings`.
    fn blob(types: &[(u32, u32, u32, Vec<u32>)], strings: &[u8]) -> Vec<u8> {
        let mut section = Vec::new();
        for (name, kind, vlen, extra) in types {
            for word in [*name, kind << 24 | vlen, 0].iter().chain(extra) {
                section.extend_from_slice(&word.to_ne_bytes());
            }
        }
        let mut data = MAGIC.to_ne_bytes().to_vec();
        data.extend_from_slice(&[1, 0]);
        let len = |b: &[u8]| u32::try_from(b.len()).expect("small");
        for word in [24, 0, len(&section), len(&section), len(strings)] {
            data.extend_from_slice(&word.to_ne_bytes());
        }
        data.extend_from_slice(&section);
        data.extend_from_slice(strings);
        data
    }

    // Offsets into STRINGS: 1 "page", 6 "X", 8 "Y", 10 "m".
    const STRINGS: &[u8] = b"\0page\0X\0Y\0m\0";

    #[test]
    fn finds_every_type_of_a_name_and_the_first_enum_member_of_each() {
        let data = blob(
            &[
                // 1: struct page { m at bit 0 }
                (1, 4, 1, vec![10, 2, 0]),
                // 2: int
                (0, 1, 0, vec![0]),
                // 3: enum { X = 5, Y = 7 }
                (0, KIND_ENUM, 2, vec![6, 5, 8, 7]),
                // 4: typedef page
                (1, 8, 0, vec![]),
                // 5: enum { Y = 9 }
                (0, KIND_ENUM, 1, vec![8, 9]),
            ],
            STRINGS,
        );
        let index = NameIndex::build(&data, &["page", "folio"], &["X", "Y", "Z"]).expect("valid");
        assert_eq!(index.ids("page"), Some(&[1, 4][..]));
        assert_eq!(index.ids("folio"), Some(&[][..]), "asked for, absent");
        assert_eq!(index.ids("m"), None, "not asked for");
        assert_eq!(index.first_enum_value(&["Y"]), Some(7));
        assert_eq!(
            index.first_enum_value(&["Y", "X"]),
            Some(5),
            "X comes first"
        );
        assert_eq!(index.first_enum_value(&["Z"]), None);
    }

    #[test]
    fn refuses_what_it_cannot_walk() {
        let unknown_kind = blob(&[(1, 31, 0, vec![])], STRINGS);
        assert!(NameIndex::build(&unknown_kind, &["page"], &[]).is_err());
        let mut truncated = blob(&[(1, 4, 2, vec![10, 2, 0])], STRINGS);
        truncated.truncate(24 + 12);
        assert!(NameIndex::build(&truncated, &["page"], &[]).is_err());
        let mut swapped = blob(&[], STRINGS);
        swapped.swap(0, 1);
        assert!(NameIndex::build(&swapped, &["page"], &[]).is_err());
        assert!(NameIndex::build(&[], &["page"], &[]).is_err());
    }
}
