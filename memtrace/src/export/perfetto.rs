//! Chrome trace event JSON (the "JSON trace format" Perfetto and `chrome://tracing` load),
//! written as events arrive so a trace of any length is exported in constant memory.
//!
//! Each container is a process (named by `process_name` metadata) with:
//! - counter (`C`) tracks for its memory samples (usage, limit, working set, anon, page cache,
//!   kernel), page cache added/removed per interval, and a track per file the `cache` events
//!   list, named as every output names it, with the file's page cache growth since the start
//!   of the recording (a file read and then dropped ends at 0; "other files" sums the rest);
//! - a `reclaim` thread of complete (`X`) slices, one per limit reclaim, with its duration;
//! - counter tracks of what was charged and what accounted slab allocated and freed per
//!   interval;
//! - an `events` thread of instant (`i`) events for OOM kills and charge failures.
//!
//! Cgroup lifecycle and the count of dying memcgs go to a `memtrace` process of their own.
//! Timestamps are microseconds of the recording host's `CLOCK_BOOTTIME`.
//! Format: <https://docs.google.com/document/d/1CvAClvFfyA5R-PhYUmn5OOQtYMH4h6I0nSsKchNAySU>

use std::{
    collections::{HashMap, HashSet},
    io::{self, Write},
};

use serde_json::{Value, json};

use crate::{
    attribution::{ContainerIdentity, MemoryStats},
    event::{
        CgroupAction, CgroupChange, Charges, ChargesFromPageCache, Event, Memcg, PageCache,
        Reclaim, What,
    },
    report::{Owner, TraceInfo},
    units::{micros, seconds},
};

/// The process that holds node-wide tracks (cgroup lifecycle, dying memcgs).
const NODE_PID: u32 = 1;
const TID_COUNTERS: u32 = 1;
const TID_RECLAIM: u32 = 2;
const TID_EVENTS: u32 = 3;

pub struct PerfettoWriter<W: Write> {
    out: io::BufWriter<W>,
    /// Whether an element has been written to `traceEvents` (for the commas).
    any: bool,
    /// Each owner's process, and how many names the identity it was last named after knew.
    pids: HashMap<String, (u32, usize)>,
    dying: HashSet<u64>,
    written: u64,
    /// Each file's growth so far and its track's name (as first named: a file deleted later
    /// stays on its track), per container: (pid, major, minor, inode).
    files: HashMap<(u32, u32, u32, u64), (i64, String)>,
}

impl<W: Write> PerfettoWriter<W> {
    /// Starts the document; `info` names the node's process.
    ///
    /// # Errors
    ///
    /// I/O errors of `out`.
    pub fn new(out: W, info: &TraceInfo) -> io::Result<Self> {
        let mut me = Self {
            out: io::BufWriter::new(out),
            any: false,
            pids: HashMap::new(),
            dying: HashSet::new(),
            written: 0,
            files: HashMap::new(),
        };
        me.out
            .write_all(b"{\"displayTimeUnit\":\"ms\",\"traceEvents\":[\n")?;
        me.element(
            &json!({"ph": "M", "name": "process_name", "pid": NODE_PID, "tid": 0,
                           "args": {"name": format!("memtrace: {}", info.host)}}),
        )?;
        me.element(
            &json!({"ph": "M", "name": "process_sort_index", "pid": NODE_PID, "tid": 0,
                           "args": {"sort_index": 0}}),
        )?;
        Ok(me)
    }

    fn element(&mut self, value: &Value) -> io::Result<()> {
        if self.any {
            self.out.write_all(b",\n")?;
        }
        self.any = true;
        self.written += 1;
        serde_json::to_writer(&mut self.out, value).map_err(io::Error::from)
    }

    /// The process of a container, named the first time it is seen.
    fn pid(&mut self, m: &Memcg) -> io::Result<u32> {
        let Owner { key, name } = Owner::of(m.cgroup.as_deref(), m.container.as_ref());
        let known = m
            .container
            .as_ref()
            .map_or(0, ContainerIdentity::known_names);
        if let Some(&(pid, known_before)) = self.pids.get(&key) {
            // The runtime's names (container name, image, pod) may come after a container's
            // first events: the process is renamed once they do.
            if known > known_before {
                self.element(
                    &json!({"ph": "M", "name": "process_name", "pid": pid, "tid": 0,
                                     "args": {"name": name}}),
                )?;
                self.pids.insert(key, (pid, known));
            }
            return Ok(pid);
        }
        let pid = NODE_PID + 1 + u32::try_from(self.pids.len()).unwrap_or(u32::MAX - 2);
        self.pids.insert(key, (pid, known));
        self.element(
            &json!({"ph": "M", "name": "process_name", "pid": pid, "tid": 0,
                             "args": {"name": name}}),
        )?;
        for (tid, thread) in [
            (TID_COUNTERS, "memory"),
            (TID_RECLAIM, "reclaim"),
            (TID_EVENTS, "events"),
        ] {
            self.element(
                &json!({"ph": "M", "name": "thread_name", "pid": pid, "tid": tid,
                                 "args": {"name": thread}}),
            )?;
        }
        Ok(pid)
    }

    /// Adds one event's trace events.
    ///
    /// # Errors
    ///
    /// I/O errors of the destination.
    pub fn add(&mut self, event: &Event) -> io::Result<()> {
        let ts = micros(event.timestamp_ns);
        let m = &event.memcg;
        // Every kind by name: a new event kind does not compile until it has a track here.
        match &event.what {
            What::Stats(e) => self.stats(m, ts, e),
            What::Cache(e) => self.cache(m, ts, e),
            What::Reclaim(e) => self.reclaim(m, ts, e),
            What::OomKill(e) => {
                let name = format!(
                    "OOM kill: {} pid {}",
                    e.comm.as_deref().unwrap_or("?"),
                    e.pid
                );
                self.instant(m, ts, ("oom", "p", name), e)
            }
            What::Cgroup(e) => self.cgroup(m, ts, e),
            What::Lost(e) => {
                let name = format!("lost: {} {} events ({})", e.count, e.kind, e.cause.name());
                self.instant(m, ts, ("lost", "g", name), e)
            }
            What::Charge(Charges { charged_bytes, .. })
            | What::ChargeFromPageCache(ChargesFromPageCache { charged_bytes, .. }) => self
                .memcg_counter(
                    m,
                    "charged per interval",
                    ts,
                    &json!({ "bytes": charged_bytes }),
                ),
            What::ChargeFail(e) => {
                let name = format!("charge failure: {}", e.error());
                self.instant(m, ts, ("charge_fail", "t", name), e)
            }
            What::ChargeFailFromReclaim(e) => {
                let name = "charge failure: limit reclaim (derived)".to_owned();
                self.instant(m, ts, ("charge_fail", "t", name), e)
            }
            What::Counters(e) => {
                for (counter, change) in &e.changed {
                    let name = format!("counter {counter}");
                    self.memcg_counter(m, &name, ts, &json!({ "value": change.value }))?;
                }
                Ok(())
            }
            What::Slab(e) => self.memcg_counter(
                m,
                "slab per interval",
                ts,
                &json!({"allocated bytes": e.allocated_bytes, "freed bytes": e.freed_bytes}),
            ),
        }
    }

    fn counter(&mut self, pid: u32, name: &str, ts: f64, args: &Value) -> io::Result<()> {
        self.element(
            &json!({"ph": "C", "name": name, "pid": pid, "tid": TID_COUNTERS,
                             "ts": ts, "args": args}),
        )
    }

    fn stats(&mut self, memcg: &Memcg, ts: f64, m: &MemoryStats) -> io::Result<()> {
        let pid = self.pid(memcg)?;
        // One counter per quantity: a counter event with several args is drawn stacked by
        // chrome://tracing, and usage is not the sum of its parts with the limit on top.
        for (name, value) in [
            ("usage", m.usage_bytes),
            ("limit", m.limit_bytes),
            ("working set", m.working_set_bytes),
            ("anon", m.anon_bytes),
            ("page cache", m.file_bytes),
            ("kernel", m.kernel_bytes),
        ] {
            if let Some(bytes) = value {
                self.counter(pid, name, ts, &json!({ "bytes": bytes }))?;
            }
        }
        Ok(())
    }

    fn cache(&mut self, m: &Memcg, ts: f64, e: &PageCache) -> io::Result<()> {
        let pid = self.pid(m)?;
        self.counter(
            pid,
            "page cache per interval",
            ts,
            &json!({"added bytes": e.added_bytes, "removed bytes": e.removed_bytes}),
        )?;
        for f in &e.top_files {
            let (growth, track) = self
                .files
                .entry((pid, f.device.major, f.device.minor, f.inode))
                .or_insert_with(|| {
                    let track = if f.name.is_other() {
                        "file: other files".to_owned()
                    } else {
                        format!("file: {}", f.name())
                    };
                    (0, track)
                });
            *growth = growth.saturating_add(f.net_bytes);
            let args = json!({ "bytes": *growth });
            let track = track.clone();
            self.counter(pid, &track, ts, &args)?;
        }
        Ok(())
    }

    fn reclaim(&mut self, m: &Memcg, ts: f64, e: &Reclaim) -> io::Result<()> {
        let pid = self.pid(m)?;
        let name = if e.ineffective {
            "reclaim (freed nothing)"
        } else {
            "reclaim"
        };
        self.element(&json!({
            "ph": "X", "name": name, "cat": "reclaim", "pid": pid, "tid": TID_RECLAIM,
            "ts": ts, "dur": micros(e.duration_ns),
            "args": {"cgroup": m.cgroup, "task pid": e.pid,
                     "reclaimed bytes": e.reclaimed_bytes, "order": e.order,
                     "gfp_flags": format!("{:#x}", e.gfp_flags)},
        }))
    }

    /// A counter on the track of the memcg's container.
    fn memcg_counter(&mut self, m: &Memcg, name: &str, ts: f64, args: &Value) -> io::Result<()> {
        let pid = self.pid(m)?;
        self.counter(pid, name, ts, args)
    }

    /// An instant on the container's `events` thread with the memcg (a container's track
    /// holds all its cgroups) and the payload as its args; `scope` is the format's `s` (`p`:
    /// across the process, `t`: on the thread).
    fn instant(
        &mut self,
        m: &Memcg,
        ts: f64,
        (category, scope, name): (&str, &str, String),
        payload: &impl serde::Serialize,
    ) -> io::Result<()> {
        let pid = self.pid(m)?;
        let mut args = serde_json::to_value(m).map_err(io::Error::from)?;
        if let (Some(args), Value::Object(payload)) = (
            args.as_object_mut(),
            serde_json::to_value(payload).map_err(io::Error::from)?,
        ) {
            args.extend(payload);
        }
        self.element(&json!({
            "ph": "i", "s": scope, "name": name, "cat": category, "pid": pid, "tid": TID_EVENTS,
            "ts": ts, "args": args,
        }))
    }

    fn cgroup(&mut self, m: &Memcg, ts: f64, e: &CgroupChange) -> io::Result<()> {
        let memcg_id = m.id.unwrap_or_default();
        self.element(&json!({
            "ph": "i", "s": "t", "name": format!("cgroup {}", e.action.name()), "cat": "cgroup",
            "pid": NODE_PID, "tid": TID_EVENTS, "ts": ts,
            "args": {"cgroup": m.cgroup, "memcg_id": memcg_id, "dying": e.dying,
                     "charged bytes": e.charged_bytes,
                     "dying seconds": e.dying_ns.map(seconds)},
        }))?;
        let changed = match e.action {
            CgroupAction::Removed if e.dying => self.dying.insert(memcg_id),
            CgroupAction::Freed => self.dying.remove(&memcg_id),
            CgroupAction::Created | CgroupAction::Removed => false,
        };
        if changed {
            self.counter(
                NODE_PID,
                "dying memcgs",
                ts,
                &json!({ "count": self.dying.len() }),
            )?;
        }
        Ok(())
    }

    /// Closes the document with `info` (end marker included) as its `otherData`; returns how
    /// many trace events it holds.
    ///
    /// # Errors
    ///
    /// I/O errors of the destination.
    pub fn finish(mut self, info: &TraceInfo) -> io::Result<u64> {
        self.out.write_all(b"\n],\"otherData\":")?;
        serde_json::to_writer(&mut self.out, info)?;
        self.out.write_all(b"}\n")?;
        self.out.flush()?;
        Ok(self.written)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::model_tests::scenario;

    fn export() -> Value {
        let mut out = Vec::new();
        let mut w = PerfettoWriter::new(&mut out, &TraceInfo::default()).expect("start");
        for e in scenario() {
            w.add(&e).expect("add");
        }
        w.finish(&TraceInfo::default()).expect("finish");
        serde_json::from_slice(&out).expect("valid JSON")
    }

    #[test]
    fn containers_are_named_processes_with_counters_slices_and_instants() {
        let doc = export();
        let events = doc["traceEvents"].as_array().expect("array");
        let named: Vec<&str> = events
            .iter()
            .filter(|e| e["ph"] == "M" && e["name"] == "process_name")
            .filter_map(|e| e["args"]["name"].as_str())
            .collect();
        assert!(named.contains(&"container:4c01db0b339c"), "{named:?}");
        assert!(named.contains(&"backup.service"), "{named:?}");
        let of = |ph: &str| events.iter().filter(|e| e["ph"] == ph).count();
        assert_eq!(of("X"), 3, "one slice per reclaim");
        let oom: Vec<&Value> = events
            .iter()
            .filter(|e| e["ph"] == "i" && e["cat"] == "oom")
            .collect();
        assert_eq!(oom.len(), 1);
        assert_eq!(oom[0]["args"]["comm"], "memhog");
        assert!(oom[0]["args"]["cgroup"].is_string(), "{}", oom[0]);
        assert_eq!(oom[0]["ts"], 2_500_000.0);
        assert!(
            events
                .iter()
                .any(|e| e["ph"] == "C" && e["name"] == "usage" && e["args"]["bytes"].is_u64())
        );
        let failed = events
            .iter()
            .filter(|e| e["name"] == "reclaim (freed nothing)")
            .count();
        assert_eq!(failed, 2);
        let charge_failures = events.iter().filter(|e| e["cat"] == "charge_fail").count();
        assert_eq!(charge_failures, 1);
        for counter in ["charged per interval", "slab per interval"] {
            assert_eq!(
                events
                    .iter()
                    .filter(|e| e["ph"] == "C" && e["name"] == counter)
                    .count(),
                2,
                "{counter}"
            );
        }
        let dying: Vec<u64> = events
            .iter()
            .filter(|e| e["name"] == "dying memcgs")
            .filter_map(|e| e["args"]["count"].as_u64())
            .collect();
        assert_eq!(dying, [1, 0, 1]);
    }
}
