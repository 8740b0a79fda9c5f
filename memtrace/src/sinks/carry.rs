//! Interval lines too small to read, carried until they are worth a line.
//!
//! On a node, most memcgs allocate and free a few KiB of slab and page cache every interval: a
//! line each per second says nothing. A `cache`, `charge` or `slab` event that moved less than
//! [`WORTH_READING_BYTES`] is held and merged into the memcg's next event of the same kind; the
//! merged event is written once what it carries is worth reading, or when the stream ends. The
//! totals are sums, so nothing is lost; the per-file and per-cache lists are merged by file and
//! by cache, never cut (a merged event with many rows is written at once).

use std::collections::HashMap;

use crate::event::{
    Charges, ChargesFromPageCache, Event, FileCache, PageCache, Slab, SlabCache, What, add_known,
    net,
};

/// Below this much movement (added or removed, allocated or freed, charged), an interval event
/// is carried rather than written.
pub const WORTH_READING_BYTES: u64 = 1 << 20;

/// Held interval events, by memcg and kind.
#[derive(Default)]
pub struct Carry {
    held: HashMap<(Option<u64>, Option<String>, &'static str), Event>,
}

impl Carry {
    /// The event to write now (`event`, with what was carried merged in), or `None`: held.
    pub fn take(&mut self, event: &Event) -> Option<Event> {
        let key = (
            event.memcg.id,
            event.memcg.cgroup.clone(),
            event.what.type_name(),
        );
        let merged = match self.held.remove(&key) {
            Some(mut held) => {
                merge(&mut held, event);
                held
            }
            None => event.clone(),
        };
        if worth_reading(&merged.what) {
            Some(merged)
        } else {
            self.held.insert(key, merged);
            None
        }
    }

    /// Everything held, oldest first: the stream ends.
    pub fn drain(&mut self) -> Vec<Event> {
        let mut held: Vec<Event> = self.held.drain().map(|(_, e)| e).collect();
        held.sort_by(|a, b| {
            (a.timestamp_ns, &a.memcg.cgroup).cmp(&(b.timestamp_ns, &b.memcg.cgroup))
        });
        held
    }
}

fn worth_reading(what: &What) -> bool {
    let moved = match what {
        What::Cache(c) => c.added_bytes.max(c.removed_bytes),
        What::Charge(c) => c.charged_bytes,
        What::ChargeFromPageCache(c) => c.charged_bytes,
        What::Slab(s) => s.allocated_bytes.max(s.freed_bytes),
        _ => return true,
    };
    moved >= WORTH_READING_BYTES || many_rows(what)
}

/// Merged file rows are never cut (they add up to the totals): a carried event with this many
/// is written, however little it moved.
const MAX_CARRIED_ROWS: usize = 32;

fn many_rows(what: &What) -> bool {
    match what {
        What::Cache(c) => c.top_files.len() >= MAX_CARRIED_ROWS,
        What::Slab(s) => s.caches.len() >= MAX_CARRIED_ROWS,
        _ => false,
    }
}

/// `later` into `held`: sums, lists merged, the interval stretched to cover both.
fn merge(held: &mut Event, later: &Event) {
    let start = held
        .timestamp_ns
        .saturating_sub(interval_of(&held.what).unwrap_or(0));
    let end = held.timestamp_ns.max(later.timestamp_ns);
    let interval_ns = end.saturating_sub(start);
    held.timestamp_ns = end;
    held.memcg.container = later
        .memcg
        .container
        .clone()
        .or(held.memcg.container.take());
    match (&mut held.what, &later.what) {
        (What::Cache(a), What::Cache(b)) => merge_cache(a, b, interval_ns),
        (What::Charge(a), What::Charge(b)) => {
            let Charges {
                interval_ns: _,
                charged_bytes,
                charges,
                source: _,
            } = b;
            a.interval_ns = interval_ns;
            a.charged_bytes += charged_bytes;
            a.charges = a.charges.zip(*charges).map(|(x, y)| x + y);
        }
        (What::ChargeFromPageCache(a), What::ChargeFromPageCache(b)) => {
            let ChargesFromPageCache {
                interval_ns: _,
                charged_bytes,
            } = b;
            a.interval_ns = interval_ns;
            a.charged_bytes += charged_bytes;
        }
        (What::Slab(a), What::Slab(b)) => merge_slab(a, b, interval_ns),
        // Keyed by type name: the same kind always.
        _ => {}
    }
}

/// An interval event's interval: `None` for events that are not one.
pub(super) fn interval_of(what: &What) -> Option<u64> {
    match what {
        What::Cache(e) => Some(e.interval_ns),
        What::Charge(e) => Some(e.interval_ns),
        What::ChargeFromPageCache(e) => Some(e.interval_ns),
        What::Slab(e) => Some(e.interval_ns),
        _ => None,
    }
}

// Every field that counts is named: a count added to these payloads must be merged here too,
// or this stops compiling. A file's other fields (its name) are the file's, kept as they came.
fn merge_cache(a: &mut PageCache, b: &PageCache, interval_ns: u64) {
    let PageCache {
        interval_ns: _,
        added_bytes,
        removed_bytes,
        net_bytes: _,
        top_files,
        refault_bytes,
    } = b;
    a.interval_ns = interval_ns;
    a.added_bytes += added_bytes;
    a.removed_bytes += removed_bytes;
    a.refault_bytes = add_known(a.refault_bytes, *refault_bytes);
    a.net_bytes = net(a.added_bytes, a.removed_bytes);
    for file in top_files {
        let FileCache {
            device,
            inode,
            added_bytes,
            removed_bytes,
            refault_bytes,
            ..
        } = file;
        match a
            .top_files
            .iter_mut()
            .find(|f| f.device == *device && f.inode == *inode)
        {
            Some(f) => {
                f.added_bytes += added_bytes;
                f.removed_bytes += removed_bytes;
                f.refault_bytes = add_known(f.refault_bytes, *refault_bytes);
                f.net_bytes = net(f.added_bytes, f.removed_bytes);
            }
            None => a.top_files.push(file.clone()),
        }
    }
    // Not cut: what an interval's rows add up to, the merged rows add up to.
    a.top_files
        .sort_by_key(|f| std::cmp::Reverse((f.net_bytes, f.added_bytes)));
}

fn merge_slab(a: &mut Slab, b: &Slab, interval_ns: u64) {
    let Slab {
        interval_ns: _,
        allocated_bytes,
        freed_bytes,
        net_bytes: _,
        caches,
    } = b;
    a.interval_ns = interval_ns;
    a.allocated_bytes += allocated_bytes;
    a.freed_bytes += freed_bytes;
    a.net_bytes = net(a.allocated_bytes, a.freed_bytes);
    for cache in caches {
        let SlabCache {
            cache: name,
            allocated_bytes,
            freed_bytes,
            net_bytes: _,
            allocated_objects,
            freed_objects,
        } = cache;
        match a.caches.iter_mut().find(|c| c.cache == *name) {
            Some(c) => {
                c.allocated_bytes += allocated_bytes;
                c.freed_bytes += freed_bytes;
                c.net_bytes = net(c.allocated_bytes, c.freed_bytes);
                c.allocated_objects += allocated_objects;
                c.freed_objects += freed_objects;
            }
            None => a.caches.push(cache.clone()),
        }
    }
    a.caches.sort_by(|x, y| {
        y.net_bytes
            .cmp(&x.net_bytes)
            .then_with(|| x.cache.cmp(&y.cache))
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{ChargeSource, Device, Memcg};

    const SECOND: u64 = 1_000_000_000;

    fn event(ns: u64, what: What) -> Event {
        Event {
            timestamp_ns: ns,
            memcg: Memcg {
                id: Some(3),
                cgroup: Some("/c".into()),
                container: None,
            },
            what,
        }
    }

    fn slab(ns: u64, cache: &str, allocated: u64, freed: u64) -> Event {
        event(
            ns,
            What::Slab(Slab::new(
                SECOND,
                vec![SlabCache::new(cache.into(), (allocated, 1), (freed, 1))],
            )),
        )
    }

    #[test]
    fn small_intervals_are_merged_until_worth_a_line_and_the_sums_are_exact() {
        let mut carry = Carry::default();
        let kib = 1 << 10;
        let mut written = Vec::new();
        for i in 1..=10 {
            // 200 KiB allocated, 100 KiB freed a second, in two caches.
            let cache = if i % 2 == 0 { "dentry" } else { "inode_cache" };
            written.extend(carry.take(&slab(i * SECOND, cache, 200 * kib, 100 * kib)));
        }
        assert_eq!(written.len(), 1, "{written:#?}");
        let What::Slab(s) = &written[0].what else {
            panic!("{written:?}");
        };
        // Written when 1 MiB had been allocated: after the sixth second.
        assert_eq!(written[0].timestamp_ns, 6 * SECOND);
        assert_eq!(s.interval_ns, 6 * SECOND);
        assert_eq!(s.allocated_bytes, 6 * 200 * kib);
        assert_eq!(s.freed_bytes, 6 * 100 * kib);
        assert_eq!(s.net_bytes, 6 * 100 * 1024);
        let dentry = s
            .caches
            .iter()
            .find(|c| c.cache == "dentry")
            .expect("dentry");
        assert_eq!(
            (dentry.allocated_bytes, dentry.allocated_objects),
            (600 * kib, 3)
        );
        // The rest is held until the end, not lost.
        let left = carry.drain();
        assert_eq!(left.len(), 1);
        let What::Slab(s) = &left[0].what else {
            panic!("{left:?}");
        };
        assert_eq!(s.allocated_bytes, 4 * 200 * kib);
        assert_eq!(carry.drain(), Vec::<Event>::new());
    }

    #[test]
    fn merged_rows_are_never_cut_and_many_are_written_at_once() {
        let mut carry = Carry::default();
        let mut written = None;
        for i in 0..u64::try_from(MAX_CARRIED_ROWS).expect("small") {
            let file = FileCache::new(Device { major: 8, minor: 1 }, i, 4096, 0);
            let cache = PageCache {
                top_files: vec![file],
                ..PageCache::new(SECOND, 4096, 0)
            };
            written = carry.take(&event((i + 1) * SECOND, What::Cache(cache)));
        }
        let written = written.expect("written with its 32nd row");
        let What::Cache(c) = &written.what else {
            panic!("{written:?}");
        };
        assert_eq!(c.top_files.len(), MAX_CARRIED_ROWS);
        let rows: u64 = c.top_files.iter().map(|f| f.added_bytes).sum();
        assert_eq!(rows, c.added_bytes, "the rows add up to the total");
        assert_eq!(carry.drain(), Vec::<Event>::new());
    }

    #[test]
    fn large_intervals_are_written_as_they_are_and_kinds_and_memcgs_are_apart() {
        let mut carry = Carry::default();
        let big = event(
            SECOND,
            What::Cache(PageCache {
                top_files: vec![FileCache::new(
                    Device { major: 8, minor: 1 },
                    12,
                    4 << 20,
                    0,
                )],
                ..PageCache::new(SECOND, 4 << 20, 0)
            }),
        );
        assert_eq!(carry.take(&big), Some(big.clone()));
        let small_charge = event(
            SECOND,
            What::Charge(Charges {
                interval_ns: SECOND,
                charged_bytes: 4096,
                charges: Some(1),
                source: ChargeSource::Charge,
            }),
        );
        let mut other = small_charge.clone();
        other.memcg.id = Some(4);
        assert_eq!(carry.take(&small_charge), None);
        assert_eq!(carry.take(&other), None);
        assert_eq!(carry.drain().len(), 2);
    }
}
