//! The flight recorder's memory: the newest events as trace-file records (the trace format's
//! own encoder, so a segment decodes with the trace reader's decoder), in zstd-compressed
//! segments of about a second each, dropped oldest first when they are older than the window or
//! when the ring would pass its byte bound.
//!
//! Each segment has its own cgroup table and file names (a fresh encoder): dropping the oldest
//! segment never leaves a later one naming a table entry that is gone. Segments are shared
//! (`Arc`) so that a file can be written from them on another thread while the ring goes on.

use std::{collections::VecDeque, io, sync::Arc};

use crate::{
    event::Event,
    trace::{Decoder, Encoder, VERSION},
};

/// A segment is sealed (compressed) once its records reach this size…
pub const SEGMENT_RAW_BYTES: usize = 128 << 10;
/// … or once it has been open this long, so eviction by age is about this fine.
pub const SEGMENT_SPAN_NS: u64 = 1_000_000_000;
/// The smallest byte bound that holds an open segment and a few sealed ones.
pub const MIN_BYTES: u64 = 1 << 20;
/// zstd's default level, as the trace writer uses.
const LEVEL: i32 = 3;

/// Events of about a second, compressed.
pub struct Segment {
    /// Oldest and newest event time in it (`CLOCK_BOOTTIME` ns); events come nearly in order.
    pub first_ns: u64,
    pub last_ns: u64,
    pub events: u64,
    raw_len: usize,
    data: Vec<u8>,
}

impl Segment {
    /// Bytes it holds in memory.
    #[must_use]
    pub fn bytes(&self) -> usize {
        self.data.capacity()
    }

    /// Calls `each` with every event whose time is in `from_ns..=to_ns`, in the order they came.
    ///
    /// # Errors
    ///
    /// A segment that does not decompress or decode (a bug: the ring wrote it itself), or
    /// `each`'s error.
    pub fn for_each_between(
        &self,
        from_ns: u64,
        to_ns: u64,
        page_size: u64,
        each: &mut dyn FnMut(Event) -> io::Result<()>,
    ) -> io::Result<()> {
        let raw = zstd::bulk::decompress(&self.data, self.raw_len)?;
        decode_between(&raw, from_ns, to_ns, page_size, each)
    }
}

fn decode_between(
    raw: &[u8],
    from_ns: u64,
    to_ns: u64,
    page_size: u64,
    each: &mut dyn FnMut(Event) -> io::Result<()>,
) -> io::Result<()> {
    let mut decoder = Decoder::new(VERSION, page_size);
    let mut pos = 0;
    while let Some(event) = decoder.next(raw, &mut pos).map_err(io::Error::other)? {
        if (from_ns..=to_ns).contains(&event.timestamp_ns) {
            each(event)?;
        }
    }
    Ok(())
}

/// The segment being filled.
#[derive(Default)]
struct Open {
    encoder: Encoder,
    raw: Vec<u8>,
    first_ns: u64,
    last_ns: u64,
    events: u64,
    /// When (now, `CLOCK_BOOTTIME`) its first event came.
    opened_ns: u64,
}

/// What the ring dropped to stay within its byte bound.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cut {
    /// The newest event time dropped (`CLOCK_BOOTTIME` ns).
    pub until_ns: u64,
    /// Events dropped so far for bytes.
    pub events: u64,
}

/// The newest events, within `max_bytes`.
pub struct Ring {
    max_bytes: usize,
    page_size: u64,
    sealed: VecDeque<Arc<Segment>>,
    sealed_bytes: usize,
    open: Open,
    compressor: zstd::bulk::Compressor<'static>,
    cut: Option<Cut>,
}

impl Ring {
    /// # Errors
    ///
    /// When zstd cannot make a compressor.
    pub fn new(max_bytes: u64, page_size: u64) -> io::Result<Self> {
        Ok(Self {
            max_bytes: usize::try_from(max_bytes.max(MIN_BYTES)).unwrap_or(usize::MAX),
            page_size,
            sealed: VecDeque::new(),
            sealed_bytes: 0,
            open: Open::default(),
            compressor: zstd::bulk::Compressor::new(LEVEL)?,
            cut: None,
        })
    }

    /// Adds `event`; `now_ns` is the time now (`CLOCK_BOOTTIME`). Seals the open segment when
    /// it is full, and drops the oldest segments when the ring would pass its bound.
    ///
    /// # Errors
    ///
    /// An event the trace format cannot hold, or a compression error.
    pub fn push(&mut self, event: &Event, now_ns: u64) -> io::Result<()> {
        let open = &mut self.open;
        open.encoder
            .event(event, &mut open.raw)
            .map_err(io::Error::other)?;
        if open.events == 0 {
            open.first_ns = event.timestamp_ns;
            open.last_ns = event.timestamp_ns;
            open.opened_ns = now_ns;
        } else {
            open.first_ns = open.first_ns.min(event.timestamp_ns);
            open.last_ns = open.last_ns.max(event.timestamp_ns);
        }
        open.events += 1;
        if open.raw.len() >= SEGMENT_RAW_BYTES {
            self.seal()?;
        }
        self.bound();
        Ok(())
    }

    /// Seals the open segment if it has been open for [`SEGMENT_SPAN_NS`], and drops sealed
    /// segments whose newest event is older than `horizon_ns`.
    ///
    /// # Errors
    ///
    /// A compression error.
    pub fn maintain(&mut self, now_ns: u64, horizon_ns: u64) -> io::Result<()> {
        if self.open.events > 0 && now_ns.saturating_sub(self.open.opened_ns) >= SEGMENT_SPAN_NS {
            self.seal()?;
        }
        while self.sealed.front().is_some_and(|s| s.last_ns < horizon_ns) {
            self.pop();
        }
        Ok(())
    }

    /// Compresses the open segment into a sealed one.
    ///
    /// # Errors
    ///
    /// A compression error.
    pub fn seal(&mut self) -> io::Result<()> {
        if self.open.events == 0 {
            return Ok(());
        }
        let mut data = self.compressor.compress(&self.open.raw)?;
        // The compressor allocates its worst case; what is kept is what it produced.
        data.shrink_to_fit();
        let segment = Segment {
            first_ns: self.open.first_ns,
            last_ns: self.open.last_ns,
            events: self.open.events,
            raw_len: self.open.raw.len(),
            data,
        };
        self.sealed_bytes += segment.bytes();
        self.sealed.push_back(Arc::new(segment));
        // A fresh encoder: each segment has its own cgroup table and file names.
        self.open.encoder = Encoder::default();
        self.open.raw.clear();
        self.open.events = 0;
        self.bound();
        Ok(())
    }

    /// Drops the oldest sealed segments while the ring holds more than its bound.
    fn bound(&mut self) {
        while self.bytes() > self.max_bytes && !self.sealed.is_empty() {
            if let Some(segment) = self.pop() {
                let cut = self.cut.get_or_insert_with(Cut::default);
                cut.until_ns = cut.until_ns.max(segment.last_ns);
                cut.events += segment.events;
            }
        }
    }

    fn pop(&mut self) -> Option<Arc<Segment>> {
        let segment = self.sealed.pop_front()?;
        self.sealed_bytes -= segment.bytes();
        Some(segment)
    }

    /// Bytes the ring holds: sealed segments and the open one's records.
    #[must_use]
    pub fn bytes(&self) -> usize {
        self.sealed_bytes + self.open.raw.capacity()
    }

    /// Events the ring holds.
    #[must_use]
    pub fn events(&self) -> u64 {
        self.sealed.iter().map(|s| s.events).sum::<u64>() + self.open.events
    }

    /// The oldest event time the ring holds.
    #[must_use]
    pub fn oldest_ns(&self) -> Option<u64> {
        self.sealed
            .iter()
            .map(|s| s.first_ns)
            .chain((self.open.events > 0).then_some(self.open.first_ns))
            .min()
    }

    /// What was dropped for bytes so far, if anything.
    #[must_use]
    pub fn cut(&self) -> Option<Cut> {
        self.cut
    }

    /// Seals the open segment and returns the segments that hold events in `from_ns..=to_ns`,
    /// oldest first, to be read with [`Segment::for_each_between`].
    ///
    /// # Errors
    ///
    /// A compression error.
    pub fn take_between(&mut self, from_ns: u64, to_ns: u64) -> io::Result<Vec<Arc<Segment>>> {
        self.seal()?;
        Ok(self
            .sealed
            .iter()
            .filter(|s| s.last_ns >= from_ns && s.first_ns <= to_ns)
            .cloned()
            .collect())
    }

    /// The recording host's page size, for decoding.
    #[must_use]
    pub fn page_size(&self) -> u64 {
        self.page_size
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Memcg, PageCache, What};

    const SECOND: u64 = 1_000_000_000;

    fn cache_event(timestamp_ns: u64, n: u64) -> Event {
        Event {
            timestamp_ns,
            memcg: Memcg {
                id: Some(n % 7),
                cgroup: Some(format!("/kubepods/pod{}/ctr", n % 7)),
                container: None,
            },
            what: What::Cache(PageCache::new(SECOND, n * 4096, n * 17)),
        }
    }

    fn times(ring: &mut Ring, from_ns: u64, to_ns: u64) -> Vec<u64> {
        let page_size = ring.page_size();
        let mut seen = Vec::new();
        for segment in ring.take_between(from_ns, to_ns).expect("seal") {
            segment
                .for_each_between(from_ns, to_ns, page_size, &mut |e| {
                    seen.push(e.timestamp_ns);
                    Ok(())
                })
                .expect("decode");
        }
        seen
    }

    #[test]
    fn keeps_events_and_their_cgroups_across_segments() {
        let mut ring = Ring::new(MIN_BYTES, 4096).expect("ring");
        for s in 0..5 {
            for i in 0..10 {
                let n = s * 10 + i;
                ring.push(&cache_event(s * SECOND + i, n), s * SECOND)
                    .expect("push");
            }
            ring.maintain((s + 1) * SECOND, 0).expect("maintain");
        }
        assert_eq!(ring.events(), 50);
        let mut back = Vec::new();
        for segment in ring.take_between(0, u64::MAX).expect("seal") {
            segment
                .for_each_between(0, u64::MAX, 4096, &mut |e| {
                    back.push(e);
                    Ok(())
                })
                .expect("decode");
        }
        let expected: Vec<Event> = (0..5)
            .flat_map(|s| (0..10).map(move |i| cache_event(s * SECOND + i, s * 10 + i)))
            .collect();
        assert_eq!(back, expected);
        assert_eq!(ring.cut(), None);
    }

    #[test]
    fn evicts_by_age() {
        let mut ring = Ring::new(64 << 20, 4096).expect("ring");
        // One event a 100 ms for 30 s, keeping a 10 s window.
        for i in 0..300 {
            let now = i * SECOND / 10;
            ring.push(&cache_event(now, i), now).expect("push");
            ring.maintain(now, now.saturating_sub(10 * SECOND))
                .expect("maintain");
        }
        let oldest = ring.oldest_ns().expect("events");
        let newest = 299 * SECOND / 10;
        // Whole segments of about a second go: at most one more than the window is kept.
        assert!(oldest <= newest - 10 * SECOND, "oldest {oldest}");
        assert!(oldest >= newest - 12 * SECOND, "oldest {oldest}");
        assert!(ring.events() < 125, "{} events kept", ring.events());
        assert_eq!(ring.cut(), None, "age, not bytes, dropped them");
        let seen = times(&mut ring, newest - 5 * SECOND, newest);
        assert_eq!(seen.len(), 51);
        assert!(seen.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn evicts_by_bytes_and_says_so() {
        let mut ring = Ring::new(MIN_BYTES, 4096).expect("ring");
        // Events with long, varied paths that do not compress away; no age limit.
        let mut pushed = 0u64;
        for i in 0..200_000u64 {
            let mut e = cache_event(i * 1000, i);
            e.memcg.cgroup = Some(format!(
                "/c/{:x}/{:x}",
                i.wrapping_mul(0x9e37_79b9_7f4a_7c15),
                i
            ));
            ring.push(&e, i * 1000).expect("push");
            pushed += 1;
            assert!(
                ring.bytes() <= (1 << 20),
                "{} bytes at event {i}",
                ring.bytes()
            );
        }
        let cut = ring.cut().expect("bytes dropped some");
        assert_eq!(cut.events + ring.events(), pushed);
        let oldest = ring.oldest_ns().expect("events");
        assert!(cut.until_ns < oldest, "{cut:?} oldest {oldest}");
        assert!(ring.events() > 1000, "keeps what fits: {}", ring.events());
    }
}
