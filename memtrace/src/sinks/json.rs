//! JSON Lines: one object per event, flat, with a `"type"` and the wall-clock `"time"` first.

use std::io::{self, Write};

use serde::Serialize;

use super::Sink;
use crate::{
    event::{Event, HostClock, Memcg, What},
    probes::ProbePoint,
};

pub struct JsonSink<W: Write> {
    out: io::BufWriter<W>,
    clock: HostClock,
}

impl<W: Write> JsonSink<W> {
    pub fn new(out: W, clock: HostClock) -> Self {
        Self {
            out: io::BufWriter::new(out),
            clock,
        }
    }
}

impl<W: Write> Sink for JsonSink<W> {
    fn write(&mut self, event: &Event) -> io::Result<()> {
        serde_json::to_writer(&mut self.out, &JsonLine::new(event, self.clock))?;
        self.out.write_all(b"\n")
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// An event as one flat JSON object: the model's own fields (`Memcg`'s, then the payload's),
/// after `type`, `time` and `timestamp_ns`; `derived` names the probe point a derived event
/// was inferred from.
#[derive(Serialize)]
pub struct JsonLine<'a> {
    #[serde(rename = "type")]
    type_name: &'static str,
    time: String,
    timestamp_ns: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    derived: Option<ProbePoint>,
    #[serde(flatten)]
    memcg: &'a Memcg,
    /// The payload's own fields (`What` serializes as its payload for people and tools).
    #[serde(flatten)]
    what: &'a What,
}

impl<'a> JsonLine<'a> {
    #[must_use]
    pub fn new(event: &'a Event, clock: HostClock) -> Self {
        Self {
            type_name: event.what.type_name(),
            time: clock.wall(event.timestamp_ns),
            timestamp_ns: event.timestamp_ns,
            derived: event.what.derived_from(),
            memcg: &event.memcg,
            what: &event.what,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::samples::{CLOCK, oom_kill};

    #[test]
    fn one_flat_object_with_type_time_memcg_and_payload() {
        let mut out = Vec::new();
        JsonSink::new(&mut out, CLOCK)
            .write(&oom_kill())
            .expect("write");
        let json: serde_json::Value = serde_json::from_slice(&out).expect("json");
        assert_eq!(json["type"], "oom_kill");
        assert_eq!(json["time"], "2026-11-27T15:47:01.000001Z");
        assert_eq!(json["memcg_id"], 42);
        assert_eq!(json["cgroup"], "/x");
        assert_eq!(json["comm"], "memhog");
        assert_eq!(json["anon_rss_bytes"], 63 << 20);
        assert_eq!(json["constraint"], "CONSTRAINT_MEMCG");
        assert_eq!(json["probe"], "raw_tp");
        assert_eq!(json["limit_cgroup"], "/");
        assert!(json["memcg_usage_bytes"].is_null());
        assert!(json.get("derived").is_none());
    }
}
