//! Byte counts as trace files store them. Most are whole pages (page cache, charges, rss), whose
//! low 12 bits are zero: as plain varints they cost two bytes more than the page count the
//! kernel gave. Stored (postcard, not human-readable) a count is `pages << 1` when it is whole
//! 4 KiB pages and `bytes << 1 | 1` otherwise (slab objects), as a `u128` varint so that every
//! `u64` round-trips; JSON and other human-readable formats get the plain number. Used with
//! `#[serde(with = "compact")]` on the model's `*_bytes` fields.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Whole pages of this size are stored as page counts.
const PAGE_SHIFT: u32 = 12;

fn pack(bytes: u64) -> u128 {
    if bytes.trailing_zeros() >= PAGE_SHIFT {
        u128::from(bytes >> PAGE_SHIFT) << 1
    } else {
        u128::from(bytes) << 1 | 1
    }
}

fn unpack<E: serde::de::Error>(packed: u128) -> Result<u64, E> {
    let value = u64::try_from(packed >> 1).map_err(|_| E::custom("byte count out of range"))?;
    if packed & 1 == 1 {
        Ok(value)
    } else {
        value
            .checked_mul(1 << PAGE_SHIFT)
            .ok_or_else(|| E::custom("page count out of range"))
    }
}

/// `shown` for people and JSON, `stored` in trace files.
fn shown_or_stored<S: Serializer>(
    serializer: S,
    shown: impl Serialize,
    stored: impl Serialize,
) -> Result<S::Ok, S::Error> {
    if serializer.is_human_readable() {
        shown.serialize(serializer)
    } else {
        stored.serialize(serializer)
    }
}

#[expect(
    clippy::trivially_copy_pass_by_ref,
    reason = "serde's `with` hands the field by reference"
)]
pub fn serialize<S: Serializer>(bytes: &u64, serializer: S) -> Result<S::Ok, S::Error> {
    shown_or_stored(serializer, bytes, pack(*bytes))
}

pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    if deserializer.is_human_readable() {
        u64::deserialize(deserializer)
    } else {
        unpack(u128::deserialize(deserializer)?)
    }
}

/// `Option<u64>` byte counts.
pub mod option {
    use super::{Deserialize, Deserializer, Serializer, pack, shown_or_stored, unpack};

    #[expect(
        clippy::ref_option,
        reason = "serde's `with` hands the field by reference"
    )]
    pub fn serialize<S: Serializer>(bytes: &Option<u64>, serializer: S) -> Result<S::Ok, S::Error> {
        shown_or_stored(serializer, bytes, bytes.map(pack))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<u64>, D::Error> {
        if deserializer.is_human_readable() {
            Option::<u64>::deserialize(deserializer)
        } else {
            Option::<u128>::deserialize(deserializer)?
                .map(unpack)
                .transpose()
        }
    }
}

/// Growth that follows from other fields (`added − removed`): shown to people, not stored
/// (trace readers recompute it, `What::restore_derived`).
pub mod derived {
    use super::{Deserialize, Deserializer, Serializer, shown_or_stored};

    #[expect(
        clippy::trivially_copy_pass_by_ref,
        reason = "serde's `with` hands the field by reference"
    )]
    pub fn serialize<S: Serializer>(bytes: &i64, serializer: S) -> Result<S::Ok, S::Error> {
        shown_or_stored(serializer, bytes, ())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
        if deserializer.is_human_readable() {
            i64::deserialize(deserializer)
        } else {
            <()>::deserialize(deserializer).map(|()| 0)
        }
    }
}

/// A field trace files keep elsewhere (file names: once per file, in their own records): shown
/// to people and in JSON, nothing in the binary encoding (the reader fills it in).
pub mod apart {
    use super::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<T: Serialize, S: Serializer>(
        value: &T,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            value.serialize(serializer)
        } else {
            serializer.serialize_unit()
        }
    }

    pub fn deserialize<'de, T: Deserialize<'de> + Default, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<T, D::Error> {
        if deserializer.is_human_readable() {
            T::deserialize(deserializer)
        } else {
            <()>::deserialize(deserializer).map(|()| T::default())
        }
    }
}

/// An `Option<u64>` byte count added in trace format version 5, at the end of its struct:
/// stored as [`option`], but read as `None` without consuming anything from files of
/// earlier versions ([`crate::event::with_layout_before_version_5`]). JSON always has the field (`null`: unknown).
pub mod since_v5 {
    use super::{Deserializer, Serializer, option};
    // One switch for everything version 5 added, samples' counters too.
    use crate::event::before_version_5;

    #[expect(
        clippy::ref_option,
        reason = "serde's `with` hands the field by reference"
    )]
    pub fn serialize<S: Serializer>(bytes: &Option<u64>, serializer: S) -> Result<S::Ok, S::Error> {
        if !serializer.is_human_readable() && before_version_5() {
            // Only the tests write version 4, to pin that it still reads.
            return serializer.serialize_unit();
        }
        option::serialize(bytes, serializer)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<u64>, D::Error> {
        if !deserializer.is_human_readable() && before_version_5() {
            return Ok(None);
        }
        option::deserialize(deserializer)
    }
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Counts {
        #[serde(with = "super")]
        plain: u64,
        #[serde(with = "super::option")]
        maybe: Option<u64>,
        #[serde(with = "super::derived")]
        growth: i64,
    }

    #[test]
    fn whole_pages_cost_what_page_counts_cost_and_every_value_round_trips() {
        let pages = Counts {
            plain: 100 << 12,
            maybe: Some(3 << 12),
            growth: -(50 << 12),
        };
        let stored = postcard::to_stdvec(&pages).expect("encode");
        // 100 pages → 200: two varint bytes; 3 → 6 and Some: two; the growth: none.
        assert_eq!(stored.len(), 4, "{stored:?}");
        let json = serde_json::to_value(&pages).expect("json");
        assert_eq!(json["growth"], -(50 << 12), "people see the growth");
        for c in [
            Counts { growth: 0, ..pages },
            Counts {
                plain: 192,
                maybe: None,
                growth: 0,
            },
            Counts {
                plain: u64::MAX,
                maybe: Some(u64::MAX),
                growth: 0,
            },
            Counts {
                plain: 0,
                maybe: Some(1),
                growth: 0,
            },
        ] {
            let back: Counts =
                postcard::from_bytes(&postcard::to_stdvec(&c).expect("encode")).expect("decode");
            assert_eq!(
                back, c,
                "a stored growth reads back as 0, for the reader to fill in"
            );
            let json = serde_json::to_value(&c).expect("json");
            assert_eq!(json["plain"], c.plain);
        }
    }
}
