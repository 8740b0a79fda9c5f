//! The flight recorder as a sink: every event goes into the ring; an OOM kill opens a file's
//! window (`--flight` before it, `--flight-after` after it), and once the window has passed its
//! events are written as a trace file, on a thread of its own so that the stream never waits.
//!
//! Kills close together: a kill that comes before the open window has closed (less than
//! `--flight-after` after the previous one) joins that window's file, which then also keeps
//! `--flight-after` after it, and is named for every container in it. A file's kills span at
//! most `--flight`; the next kill after that starts a new file (a crash-looping container gets
//! a file per `--flight` or so, not one per kill).

use std::{
    collections::VecDeque,
    fmt::Write as _,
    fs, io,
    path::{Path, PathBuf},
    sync::Arc,
    thread::{self, JoinHandle},
    time::Duration,
};

use memtrace_common::LostKind;
use time::{OffsetDateTime, format_description::BorrowedFormatItem, macros::format_description};

use super::{
    CensusHistory,
    ring::{Ring, Segment},
};
use crate::{
    clock,
    event::{Event, HostClock, What},
    sinks::Sink,
    trace::{FlightCut, FlightWindow, TraceHeader, TraceWriter},
    units::human_bytes,
};

/// Events stamped inside a window may arrive this much after its end (an interval's page-cache
/// and charge counts, an OOM kill held for the kernel's report): the file is written then.
const LATE_NS: u64 = 1_500_000_000;
/// The ring keeps this much more than `--flight`, so that a kill that arrives late (held for
/// the kernel's report) still finds the whole window before it.
const MARGIN_NS: u64 = 5_000_000_000;
/// At most this many containers in a file's name; the rest are counted (`+3more`).
const NAMED_IN_FILE: usize = 3;
/// A name in a file name is cut to this many characters.
const NAME_CHARS: usize = 48;
/// A warning that the byte bound holds less than the window is repeated at most this often.
const WARN_EVERY_NS: u64 = 600_000_000_000;

/// `--flight`, `--flight-after`, `--flight-bytes`, `--out`.
#[derive(Clone, Debug)]
pub struct Settings {
    pub dir: PathBuf,
    pub before: Duration,
    pub after: Duration,
    pub max_bytes: u64,
}

/// Reads the kernel side's lost-event counters (totals since the programs were loaded).
pub type LostCounts = Box<dyn FnMut() -> Vec<(LostKind, u64)>>;

pub struct FlightRecorder {
    settings: Settings,
    before_ns: u64,
    after_ns: u64,
    ring: Ring,
    /// The header every file gets, with its window filled in.
    header: TraceHeader,
    clock: HostClock,
    session_start_ns: u64,
    census: CensusHistory,
    lost: LostCounts,
    /// Lost-event totals, read about every second, oldest first, as far back as the ring.
    lost_history: VecDeque<(u64, Vec<(LostKind, u64)>)>,
    open: Option<Window>,
    writers: Vec<JoinHandle<Option<PathBuf>>>,
    written: Vec<PathBuf>,
    warned_short_ns: Option<u64>,
}

/// A file's window, open until its end has passed.
struct Window {
    from_ns: u64,
    to_ns: u64,
    kills: Vec<Kill>,
}

struct Kill {
    at_ns: u64,
    pid: u32,
    comm: String,
    /// Container (or cgroup) for people and for the file name.
    who: String,
}

impl FlightRecorder {
    /// `header` is the recording's header (its `started_wall_ns` and `flight` are set per
    /// file); `lost` reads the lost-event counters; `census` counts the host's memcgs.
    ///
    /// # Errors
    ///
    /// When zstd cannot make a compressor.
    pub fn new(
        settings: Settings,
        header: TraceHeader,
        clock: HostClock,
        census: CensusHistory,
        lost: LostCounts,
    ) -> io::Result<Self> {
        let ns = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let now = clock::boot_ns();
        Ok(Self {
            before_ns: ns(settings.before),
            after_ns: ns(settings.after),
            ring: Ring::new(settings.max_bytes, clock.page_size)?,
            settings,
            header,
            clock,
            session_start_ns: now,
            census,
            lost,
            lost_history: VecDeque::from([(now, Vec::new())]),
            open: None,
            writers: Vec::new(),
            written: Vec::new(),
            warned_short_ns: None,
        })
    }

    /// Files written so far (all of them once [`Sink::end`] has returned).
    #[must_use]
    pub fn written(&self) -> &[PathBuf] {
        &self.written
    }

    /// Bytes the ring holds now.
    #[must_use]
    pub fn ring_bytes(&self) -> usize {
        self.ring.bytes()
    }

    fn kill(&mut self, event: &Event, kill: &crate::event::OomKill) {
        let who = who(event);
        let note = Kill {
            at_ns: event.timestamp_ns,
            pid: kill.pid,
            comm: kill.comm.clone().unwrap_or_default(),
            who,
        };
        let at = self.clock.wall(note.at_ns);
        let joins = self.open.as_ref().is_some_and(|w| {
            note.at_ns <= w.to_ns
                && w.kills
                    .first()
                    .is_none_or(|k| note.at_ns.saturating_sub(k.at_ns) <= self.before_ns)
        });
        eprintln!(
            "memtrace: flight recorder: OOM kill of {} (pid {} {}) at {at}: {} in {}",
            note.who,
            note.pid,
            note.comm,
            if joins {
                "joins the file of the kill before it, written"
            } else {
                "its file is written"
            },
            humantime::format_duration(self.settings.after),
        );
        let to_ns = note.at_ns.saturating_add(self.after_ns);
        match self.open.as_mut() {
            Some(window) if joins => {
                window.to_ns = window.to_ns.max(to_ns);
                window.kills.push(note);
            }
            _ => {
                // A window still open that this kill does not join is written now.
                self.close();
                self.open = Some(Window {
                    from_ns: note.at_ns.saturating_sub(self.before_ns),
                    to_ns,
                    kills: vec![note],
                });
            }
        }
    }

    /// Keeps the ring within its window, notes the lost counters, and writes the open window's
    /// file once its end has passed.
    fn tick(&mut self, now_ns: u64) -> io::Result<()> {
        let mut horizon = now_ns.saturating_sub(self.before_ns.saturating_add(MARGIN_NS));
        if let Some(window) = &self.open {
            horizon = horizon.min(window.from_ns);
        }
        self.ring.maintain(now_ns, horizon)?;
        if self
            .lost_history
            .back()
            .is_none_or(|&(t, _)| now_ns.saturating_sub(t) >= 1_000_000_000)
        {
            self.lost_history.push_back((now_ns, (self.lost)()));
            while self.lost_history.get(1).is_some_and(|&(t, _)| t < horizon) {
                self.lost_history.pop_front();
            }
        }
        self.warn_if_short(now_ns);
        if self
            .open
            .as_ref()
            .is_some_and(|w| now_ns >= w.to_ns.saturating_add(LATE_NS))
        {
            self.close();
        }
        Ok(())
    }

    /// Says so when the byte bound keeps less than the window (at most every ten minutes).
    fn warn_if_short(&mut self, now_ns: u64) {
        let Some(cut) = self.ring.cut() else { return };
        let Some(oldest) = self.ring.oldest_ns() else {
            return;
        };
        let kept = now_ns.saturating_sub(oldest);
        if cut.until_ns.saturating_add(self.before_ns) < now_ns
            || kept >= self.before_ns
            || self
                .warned_short_ns
                .is_some_and(|t| now_ns.saturating_sub(t) < WARN_EVERY_NS)
        {
            return;
        }
        self.warned_short_ns = Some(now_ns);
        eprintln!(
            "memtrace: flight recorder: warning: --flight-bytes {} holds only the last {} of \
             events now, not {}: a file written now starts later than asked (raise \
             --flight-bytes, or shorten --flight)",
            human_bytes(self.settings.max_bytes),
            humantime::format_duration(Duration::from_secs(kept / 1_000_000_000)),
            humantime::format_duration(self.settings.before),
        );
    }

    /// Hands the open window to a writer thread.
    fn close(&mut self) {
        let Some(window) = self.open.take() else {
            return;
        };
        let now = clock::boot_ns();
        let stopped_early = now < window.to_ns;
        let to_ns = window.to_ns.min(now);
        let segments = match self.ring.take_between(window.from_ns, to_ns) {
            Ok(segments) => segments,
            Err(e) => {
                eprintln!("memtrace: flight recorder: error: cannot read the events kept: {e}");
                return;
            }
        };
        let cut = self
            .ring
            .cut()
            .filter(|c| c.until_ns >= window.from_ns)
            .map(|c| FlightCut {
                until_ns: c.until_ns,
                events: c.events,
            });
        let lost = self.lost_during(window.from_ns);
        let kept_from = window.from_ns.max(self.session_start_ns);
        let mut header = self.header.clone();
        header.started_wall_ns = self.clock.boot_time_wall_ns.saturating_add(kept_from);
        header.memcgs_at_start = self.census.at(window.from_ns).or(header.memcgs_at_start);
        header.flight = Some(FlightWindow {
            before_ns: self.before_ns,
            after_ns: self.after_ns,
            kills_ns: window.kills.iter().map(|k| k.at_ns).collect(),
            from_ns: window.from_ns,
            to_ns: window.to_ns,
            session_start_ns: self.session_start_ns,
            max_bytes: self.settings.max_bytes,
            cut_by_bytes: cut,
            stopped_early,
        });
        let Some(first) = window.kills.first() else {
            return;
        };
        let path = unused_path(&self.settings.dir, &file_name(&window, self.clock, first));
        let job = Job {
            path,
            header,
            segments,
            from_ns: window.from_ns,
            to_ns,
            page_size: self.ring.page_size(),
            lost,
            describe: self.describe(&window, cut, stopped_early),
        };
        match thread::Builder::new()
            .name("flight-writer".into())
            .spawn(move || job.run())
        {
            Ok(handle) => self.writers.push(handle),
            Err(e) => eprintln!("memtrace: flight recorder: error: cannot start a writer: {e}"),
        }
        self.reap(false);
    }

    /// Lost-event counts since `from_ns` (to the second), per kind.
    fn lost_during(&mut self, from_ns: u64) -> Vec<(LostKind, u64)> {
        let now = (self.lost)();
        let base = self
            .lost_history
            .iter()
            .rev()
            .find(|&&(t, _)| t <= from_ns)
            .or_else(|| self.lost_history.front())
            .map(|(_, totals)| totals.clone())
            .unwrap_or_default();
        now.into_iter()
            .map(|(kind, n)| {
                let before = base
                    .iter()
                    .find(|&&(k, _)| k == kind)
                    .map_or(0, |&(_, b)| b);
                (kind, n.saturating_sub(before))
            })
            .collect()
    }

    /// What stderr says of a file beside its name.
    fn describe(&self, window: &Window, cut: Option<FlightCut>, stopped_early: bool) -> String {
        let mut s = String::new();
        let kills: Vec<String> = window
            .kills
            .iter()
            .map(|k| {
                format!(
                    "{} (pid {} {}) at {}",
                    k.who,
                    k.pid,
                    k.comm,
                    self.clock.wall(k.at_ns)
                )
            })
            .collect();
        let _ = write!(
            s,
            "OOM kill{} of {}",
            if kills.len() == 1 { "" } else { "s" },
            kills.join(", ")
        );
        if window.from_ns < self.session_start_ns {
            let _ = write!(
                s,
                "; WINDOW CUT SHORT: memtrace started {} before the kill, not {} (--flight)",
                humantime::format_duration(secs(
                    window.kills[0].at_ns.saturating_sub(self.session_start_ns)
                )),
                humantime::format_duration(self.settings.before)
            );
        }
        if let Some(cut) = cut {
            let _ = write!(
                s,
                "; WINDOW CUT SHORT by --flight-bytes {}: events before {} are not in it",
                human_bytes(self.settings.max_bytes),
                self.clock.wall(cut.until_ns)
            );
        }
        if stopped_early {
            s.push_str("; the recording stopped before --flight-after had passed");
        }
        s
    }

    /// Collects writers that are done (all of them, waiting, when `all`).
    fn reap(&mut self, all: bool) {
        let (done, running): (Vec<_>, Vec<_>) = std::mem::take(&mut self.writers)
            .into_iter()
            .partition(|h| all || h.is_finished());
        self.writers = running;
        for handle in done {
            if let Ok(Some(path)) = handle.join() {
                self.written.push(path);
            }
        }
    }
}

fn secs(ns: u64) -> Duration {
    Duration::from_secs(ns / 1_000_000_000)
}

/// A file to write: the window's segments, read on the writer's thread.
struct Job {
    path: PathBuf,
    header: TraceHeader,
    segments: Vec<Arc<Segment>>,
    from_ns: u64,
    to_ns: u64,
    page_size: u64,
    lost: Vec<(LostKind, u64)>,
    describe: String,
}

impl Job {
    fn run(self) -> Option<PathBuf> {
        // Written under a dot name and renamed: whoever watches DIR sees whole files only.
        let partial = self.path.with_file_name(format!(
            ".{}.partial",
            self.path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        ));
        match self.write(&partial) {
            Ok(events) => {
                let lost: u64 = self.lost.iter().map(|(_, n)| n).sum();
                let lost_line = if lost == 0 {
                    "0 lost".to_owned()
                } else {
                    let kinds: Vec<String> = self
                        .lost
                        .iter()
                        .filter(|(_, n)| *n > 0)
                        .map(|(k, n)| format!("{}={n}", k.name()))
                        .collect();
                    format!(
                        "EVENTS LOST in the window: {lost} ({}): the file is incomplete",
                        kinds.join(" ")
                    )
                };
                eprintln!(
                    "memtrace: flight recorder: wrote {} ({events} events, {lost_line}): {}",
                    self.path.display(),
                    self.describe
                );
                Some(self.path)
            }
            Err(e) => {
                let _ = fs::remove_file(&partial);
                eprintln!(
                    "memtrace: flight recorder: error: writing {}: {e}",
                    self.path.display()
                );
                None
            }
        }
    }

    fn write(&self, partial: &Path) -> io::Result<u64> {
        let mut writer = TraceWriter::create(partial, &self.header)?;
        for segment in &self.segments {
            segment.for_each_between(self.from_ns, self.to_ns, self.page_size, &mut |e| {
                writer.append(&e)
            })?;
        }
        let events = writer.finish(&self.lost)?;
        fs::rename(partial, &self.path)?;
        Ok(events)
    }
}

/// Who an event is about, for people and file names: its container, else its cgroup.
fn who(event: &Event) -> String {
    event
        .memcg
        .container
        .as_ref()
        .map(crate::attribution::ContainerIdentity::name)
        .filter(|n| n != "-")
        .or_else(|| event.memcg.cgroup.clone())
        .or_else(|| event.memcg.id.map(|id| format!("memcg{id}")))
        .unwrap_or_else(|| "unknown".to_owned())
}

/// `oom-<container>[+<container>…]-<UTC time of the first kill>.mtrace`, e.g.
/// `oom-shop_cart-7d9f_api-20261129T080604Z.mtrace`; a container's name (or its cgroup's
/// last component) with characters other than letters, digits, `.`, `_`, `-` made `_`.
fn file_name(window: &Window, clock: HostClock, first: &Kill) -> String {
    let mut names: Vec<String> = Vec::new();
    for kill in &window.kills {
        let name = file_safe(&kill.who);
        if !names.contains(&name) {
            names.push(name);
        }
    }
    let more = names.len().saturating_sub(NAMED_IN_FILE);
    names.truncate(NAMED_IN_FILE);
    let mut who = names.join("+");
    if more > 0 {
        let _ = write!(who, "+{more}more");
    }
    let when = utc_compact(clock.boot_time_wall_ns.saturating_add(first.at_ns));
    format!("oom-{who}-{when}.mtrace")
}

/// A name as a file-name part: a cgroup path becomes its last component.
fn file_safe(who: &str) -> String {
    let last = if who.starts_with('/') {
        who.rsplit('/').find(|c| !c.is_empty()).unwrap_or("root")
    } else {
        who
    };
    let safe: String = last
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .take(NAME_CHARS)
        .collect();
    // Never a hidden file, never `..`.
    safe.trim_start_matches('.').to_owned()
}

/// `20261129T080604Z`: sorts as time does, no `:` (which some file systems and tools refuse).
fn utc_compact(wall_ns: u64) -> String {
    const FORMAT: &[BorrowedFormatItem<'_>] =
        format_description!("[year][month][day]T[hour][minute][second]Z");
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(wall_ns))
        .ok()
        .and_then(|t| t.format(FORMAT).ok())
        .unwrap_or_else(|| wall_ns.to_string())
}

/// `dir/name`, or `dir/name-2.mtrace`, … when a file of that name exists (two windows whose
/// first kills are of one container in one second).
fn unused_path(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    if !path.exists() {
        return path;
    }
    let stem = name.trim_end_matches(".mtrace");
    (2..u32::MAX)
        .map(|n| dir.join(format!("{stem}-{n}.mtrace")))
        .find(|p| !p.exists())
        .unwrap_or(path)
}

impl Sink for FlightRecorder {
    fn write(&mut self, event: &Event) -> io::Result<()> {
        self.ring.push(event, clock::boot_ns())?;
        if let What::OomKill(kill) = &event.what {
            self.kill(event, kill);
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.tick(clock::boot_ns())?;
        self.reap(false);
        Ok(())
    }

    fn end(&mut self) -> io::Result<()> {
        self.close();
        self.reap(true);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;
    use crate::{
        attribution::ContainerIdentity,
        event::{Memcg, OomKill, PageCache},
        trace::{TraceItem, TraceReader},
    };

    const SECOND: u64 = 1_000_000_000;

    fn memcg(id: &str) -> Memcg {
        let path = format!("/docker/{id}");
        Memcg {
            id: Some(7),
            container: Some(ContainerIdentity::from_cgroup_path(&path)),
            cgroup: Some(path),
        }
    }

    fn header() -> TraceHeader {
        TraceHeader {
            memtrace_version: "test".into(),
            host: "node1".into(),
            kernel_release: "6.18".into(),
            boot_time_wall_ns: 1_795_794_421_000_000_000,
            clock: clock::EVENT_CLOCK.into(),
            page_size: 4096,
            started_wall_ns: 0,
            probes: Vec::new(),
            cgroup_version: "v1".into(),
            memcgs_at_start: None,
            flight: None,
        }
    }

    /// Reads a written file back: its header and events.
    fn read(path: &Path) -> (TraceHeader, Vec<Event>, Vec<u64>) {
        let mut reader = TraceReader::open(path).expect("open");
        let header = reader.header().clone();
        let (mut events, mut lost) = (Vec::new(), Vec::new());
        while let Some(item) = reader.next_item().expect("read") {
            match item {
                TraceItem::Event(e) => events.push(e),
                TraceItem::End { lost: l, .. } => lost = l,
                TraceItem::TailCut { .. } => panic!("cut"),
            }
        }
        (header, events, lost)
    }

    #[test]
    fn kills_close_together_share_a_file_and_a_later_one_gets_its_own() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (a, b) = ("a1".repeat(32), "b2".repeat(32));
        let clock = HostClock {
            boot_time_wall_ns: header().boot_time_wall_ns,
            page_size: 4096,
        };
        let mut lost_reads = 0u64;
        let mut recorder = FlightRecorder::new(
            Settings {
                dir: dir.path().to_owned(),
                before: Duration::from_secs(4),
                after: Duration::from_secs(1),
                max_bytes: 8 << 20,
            },
            header(),
            clock,
            CensusHistory::start(None, Duration::from_secs(60), || None),
            // One event of the page-cache kind lost per read: the file's END says how many.
            Box::new(move || {
                lost_reads += 1;
                vec![(LostKind::PageCache, lost_reads)]
            }),
        )
        .expect("recorder");
        // The recorder's clock is the real one: the events are stamped in the recent past.
        let now = clock::boot_ns();
        let start = now - 10 * SECOND;
        for i in 0..70 {
            let e = Event {
                timestamp_ns: start + i * SECOND / 10,
                memcg: memcg(&a),
                what: What::Cache(PageCache::new(SECOND / 10, 4096, 0)),
            };
            recorder.write(&e).expect("write");
        }
        let kill = |id: &str, at_ns| Event {
            timestamp_ns: at_ns,
            memcg: memcg(id),
            what: What::OomKill(OomKill {
                pid: 42,
                comm: Some("memhog".into()),
                ..OomKill::default()
            }),
        };
        // 7 s ago, and half a second later in another container: one file for both.
        recorder.write(&kill(&a, start + 3 * SECOND)).expect("kill");
        recorder
            .write(&kill(&b, start + 3 * SECOND + SECOND / 2))
            .expect("kill");
        recorder.flush().expect("flush");
        // Just now: its window is still open when the recording stops.
        recorder.write(&kill(&b, now)).expect("kill");
        recorder.end().expect("end");

        let written = recorder.written().to_vec();
        assert_eq!(written.len(), 2, "{written:?}");
        let first = written
            .iter()
            .find(|p| p.to_string_lossy().contains("+docker_b2b2b2b2b2b2-"))
            .expect("a file named for both containers");
        let (h, events, lost) = read(first);
        let w = h.flight.expect("flight window");
        assert_eq!(
            w.kills_ns,
            vec![start + 3 * SECOND, start + 3 * SECOND + SECOND / 2]
        );
        assert_eq!(
            (w.from_ns, w.to_ns),
            (start - SECOND, start + 4 * SECOND + SECOND / 2)
        );
        assert!(!w.stopped_early && w.cut_by_bytes.is_none(), "{w:?}");
        assert!(
            events
                .iter()
                .all(|e| (w.from_ns..=w.to_ns).contains(&e.timestamp_ns))
        );
        // The page cache from the window's start to its end (every 100 ms), and both kills.
        assert_eq!(events.len(), 46 + 2, "{}", events.len());
        assert!(
            lost.iter().sum::<u64>() > 0,
            "lost in the window are counted: {lost:?}"
        );
        let mode = fs::metadata(first).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);

        let second = written.iter().find(|p| *p != first).expect("second file");
        let (h, events, _) = read(second);
        let w = h.flight.expect("flight window");
        assert!(w.stopped_early, "{w:?}");
        assert_eq!(w.kills_ns, vec![now]);
        assert!(events.iter().any(|e| matches!(e.what, What::Cache(_))));
        let left: Vec<_> = fs::read_dir(dir.path())
            .expect("dir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(left.len(), 2, "no partial files left: {left:?}");
    }

    #[test]
    fn names_files_for_their_containers_and_time() {
        let clock = HostClock {
            boot_time_wall_ns: 1_795_794_421_000_000_000,
            page_size: 4096,
        };
        let kill = |who: &str, at_ns| Kill {
            at_ns,
            pid: 1,
            comm: "x".into(),
            who: who.into(),
        };
        let one = Window {
            from_ns: 0,
            to_ns: 0,
            kills: vec![kill("shop/cart-7d9f/api", 5_000_000_000)],
        };
        assert_eq!(
            file_name(&one, clock, &one.kills[0]),
            "oom-shop_cart-7d9f_api-20261127T154706Z.mtrace"
        );
        let many = Window {
            from_ns: 0,
            to_ns: 0,
            kills: vec![
                kill("/memtrace-test/../x", 0),
                kill("hog", 1),
                kill("/memtrace-test/../x", 2),
                kill("a", 3),
                kill("b", 4),
            ],
        };
        assert_eq!(
            file_name(&many, clock, &many.kills[0]),
            "oom-x+hog+a+1more-20261127T154701Z.mtrace"
        );
        assert_eq!(file_safe("/"), "root");
        assert_eq!(file_safe(".."), "");
    }
}
