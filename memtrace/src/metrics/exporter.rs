//! Events in, series out: the exporter folds the one event stream into counters and gauges per
//! container, and forgets a container's series a grace period after its cgroup is removed.
//!
//! Memory stays bounded when containers come and go: a series exists while its cgroup does and
//! for [`Exporter::grace`] after; then its path joins a bounded list of gone cgroups, whose
//! late events (a dying memcg's page cache being reclaimed, its release) are not counted, so
//! they cannot bring the series back.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::{Mutex, MutexGuard, PoisonError},
    time::{Duration, Instant},
};

use memtrace_common::LostKind;
use prometheus_client::encoding::prometheus_text;

use super::{
    families::Families,
    labels::{ContainerLabels, LostLabels, OomLabels},
    verdict::{Samples, judge_kill, label},
};
use crate::{
    attribution::{MEMCG_ID_LIMIT, MemoryHierarchy, MemoryStats},
    event::{CgroupAction, Event, HostClock, OomKill, Sample, What},
    report::MemoryPoint,
    sinks::Sink,
};

/// How long the series of a removed container stay, by default: two scrapes at a one-minute
/// interval see its final counts.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(120);

/// Gone cgroups remembered so that their late events are not counted: at most as many as the
/// kernel has memcg ids (a cgroup that is gone but still sends events is a dying memcg, which
/// holds one).
#[expect(clippy::cast_possible_truncation, reason = "65535 fits any usize")]
const GONE_LIMIT: usize = MEMCG_ID_LIMIT as usize;

/// The metrics of a live session, fed by [`Sink::write`] and read by [`Exporter::encode`].
#[derive(Debug)]
pub struct Exporter {
    families: Families,
    state: Mutex<State>,
    grace: Duration,
    clock: HostClock,
}

#[derive(Debug, Default)]
struct State {
    /// By cgroup path (`""`: events whose cgroup was not known).
    series: HashMap<String, Series>,
    /// Removed cgroups, in the order their grace periods end.
    expiring: VecDeque<(Instant, String)>,
    gone: Gone,
    /// The timestamp of the `stats` samples being received: every sample of one walk of the
    /// hierarchy has the same.
    stats_batch: Option<u64>,
}

#[derive(Debug)]
struct Series {
    labels: ContainerLabels,
    /// The verdicts its OOM kills have had (each a series of its own).
    verdicts: Vec<&'static str>,
    samples: Samples,
    reclaims: u64,
    freed_nothing: u64,
    /// When its cgroup was seen removed (or gone from cgroupfs).
    removed: Option<Instant>,
    /// The kernel freed the memcg: no event will come for it any more.
    freed: bool,
    /// The last walk of the hierarchy that sampled it.
    stats_batch: Option<u64>,
}

/// Paths of cgroups whose series expired, oldest first, at most [`GONE_LIMIT`].
#[derive(Debug, Default)]
struct Gone {
    paths: HashSet<String>,
    order: VecDeque<String>,
}

impl Gone {
    fn insert(&mut self, path: String) {
        if self.paths.insert(path.clone()) {
            self.order.push_back(path);
        }
        while self.order.len() > GONE_LIMIT {
            if let Some(oldest) = self.order.pop_front() {
                self.paths.remove(&oldest);
            }
        }
    }

    /// A cgroup created again at the same path, or freed: nothing more will come from the gone
    /// one. The order list keeps the path until it is the oldest; it is skipped then.
    fn remove(&mut self, path: &str) -> bool {
        self.paths.remove(path)
    }

    fn contains(&self, path: &str) -> bool {
        self.paths.contains(path)
    }
}

impl Exporter {
    #[must_use]
    pub fn new(hierarchy: MemoryHierarchy, grace: Duration, clock: HostClock) -> Self {
        let families = Families::new(hierarchy);
        for kind in LostKind::ALL {
            // Every kind from the start, at 0: "nothing lost" is an answer too.
            let _ = families
                .lost_events
                .get_or_create(&LostLabels { kind: kind.name() });
        }
        Self {
            families,
            state: Mutex::default(),
            grace,
            clock,
        }
    }

    #[must_use]
    pub fn grace(&self) -> Duration {
        self.grace
    }

    /// The kernel side's lost-event counters, as `Probes::lost` reads them (totals).
    pub fn set_lost(&self, lost: &[(LostKind, u64)]) {
        for &(kind, total) in lost {
            let counter = self
                .families
                .lost_events
                .get_or_create_owned(&LostLabels { kind: kind.name() });
            // The kernel's counters are the totals; counters only go up.
            let current = counter.get();
            if total > current {
                counter.inc_by(total - current);
            }
        }
    }

    /// The Prometheus text exposition (format 0.0.4) of every series, after forgetting the
    /// containers whose grace period is over. Reads the node's memcg counts from cgroupfs:
    /// call it off the async runtime.
    ///
    /// # Errors
    ///
    /// Only if formatting fails, which writing to a `String` does not.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        self.expire(Instant::now());
        let mut text = String::new();
        prometheus_text::encode(&mut text, &self.families.registry)?;
        Ok(text)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves counts that are still counts.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Forgets the series of containers removed more than the grace period before `now`.
    pub fn expire(&self, now: Instant) {
        let mut state = self.state();
        while let Some((deadline, _)) = state.expiring.front()
            && *deadline <= now
        {
            let Some((_, path)) = state.expiring.pop_front() else {
                break;
            };
            // Still removed, and not removed again later (its own, later, deadline).
            let due = state
                .series
                .get(&path)
                .is_some_and(|s| s.removed.is_some_and(|at| at + self.grace <= now));
            if !due {
                continue;
            }
            if let Some(series) = state.series.remove(&path) {
                self.families.remove(&series.labels);
                for verdict in series.verdicts {
                    self.families.oom_kills.remove(&OomLabels {
                        container: series.labels.clone(),
                        verdict,
                    });
                }
                if !series.freed {
                    // Dying: its page cache or slab may still be reclaimed, and counted.
                    state.gone.insert(path);
                }
            }
        }
    }

    /// Folds one event into the series.
    pub fn observe(&self, event: &Event) {
        // memtrace's own, of no memcg: `memtrace_lost_events_total` is set from the counters
        // themselves (`set_lost`).
        if !matches!(event.what, What::Lost(_)) {
            self.observe_memcg(event);
        }
    }

    fn observe_memcg(&self, event: &Event) {
        let now = Instant::now();
        self.expire(now);
        let mut state = self.state();
        let path = event.memcg.cgroup.clone().unwrap_or_default();
        if let What::Cgroup(change) = &event.what {
            match change.action {
                CgroupAction::Created => {
                    state.gone.remove(&path);
                    if let Some(series) = state.series.get_mut(&path) {
                        series.removed = None;
                    }
                }
                CgroupAction::Removed => self.removed(&mut state, &path, event, now),
                CgroupAction::Freed => {
                    if !state.gone.remove(&path) {
                        self.removed(&mut state, &path, event, now);
                        if let Some(series) = state.series.get_mut(&path) {
                            series.freed = true;
                        }
                    }
                }
            }
            return;
        }
        if !path.is_empty() && state.gone.contains(&path) {
            return;
        }
        if let What::Stats(sample) = &event.what {
            self.sample(&mut state, &path, event, sample, now);
            return;
        }
        if let What::OomKill(kill) = &event.what {
            let verdict = self.verdict(&state, &path, kill, event.timestamp_ns);
            let series = self.series(&mut state, &path, event);
            if !series.verdicts.contains(&verdict) {
                series.verdicts.push(verdict);
            }
            let labels = OomLabels {
                container: series.labels.clone(),
                verdict,
            };
            self.families.oom_kills.get_or_create(&labels).inc();
            return;
        }
        let series = self.series(&mut state, &path, event);
        if let What::Reclaim(r) = &event.what {
            // For the verdict of a kill that follows.
            series.reclaims += 1;
            series.freed_nothing += u64::from(r.ineffective);
        }
        let f = &self.families;
        let labels = &series.labels;
        match &event.what {
            What::Cache(c) => {
                f.page_cache_added_bytes
                    .get_or_create(labels)
                    .inc_by(c.added_bytes);
                f.page_cache_removed_bytes
                    .get_or_create(labels)
                    .inc_by(c.removed_bytes);
                if let Some(refaults) = c.refault_bytes {
                    f.page_cache_refault_bytes
                        .get_or_create(labels)
                        .inc_by(refaults);
                }
            }
            What::Reclaim(r) => {
                f.reclaims.get_or_create(labels).inc();
                // Created at 0 with the first episode, so `rate()` sees the first one that
                // frees nothing.
                let freed_nothing = f.reclaims_freed_nothing.get_or_create(labels);
                if r.ineffective {
                    freed_nothing.inc();
                }
                #[expect(clippy::cast_precision_loss, reason = "seconds as a float")]
                f.reclaim_seconds
                    .get_or_create(labels)
                    .inc_by(r.duration_ns as f64 / 1e9);
                f.reclaimed_bytes
                    .get_or_create(labels)
                    .inc_by(r.reclaimed_bytes);
            }
            What::ChargeFail(_) | What::ChargeFailFromReclaim(_) => {
                f.charge_failures.get_or_create(labels).inc();
            }
            What::Slab(s) => {
                f.slab_allocated_bytes
                    .get_or_create(labels)
                    .inc_by(s.allocated_bytes);
                f.slab_freed_bytes
                    .get_or_create(labels)
                    .inc_by(s.freed_bytes);
            }
            What::Counters(changes) => f.memcg.changed(labels, changes),
            // Charges are not a metric of their own (page cache and slab are, and failures);
            // the others were handled above.
            What::Charge(_)
            | What::ChargeFromPageCache(_)
            | What::OomKill(_)
            | What::Stats(_)
            | What::Cgroup(_)
            | What::Lost(_) => {}
        }
    }

    /// A `stats` sample: the gauges, and the memcg's counters read with it.
    fn sample(&self, state: &mut State, path: &str, event: &Event, sample: &Sample, now: Instant) {
        self.stats_batch(state, event.timestamp_ns, now);
        let series = self.series(state, path, event);
        // Read from cgroupfs: the cgroup exists (a walk that misses it marks it again).
        series.removed = None;
        series.stats_batch = Some(event.timestamp_ns);
        series
            .samples
            .push(MemoryPoint::new(event.timestamp_ns, String::new(), sample));
        let labels = series.labels.clone();
        self.set_gauges(&labels, sample);
        if !sample.counters.is_empty() {
            // Empty when counters are not read (`--counters-interval 0`): then no series.
            self.families.memcg.sample(&labels, &sample.counters);
        }
    }

    /// The series of `path`, created (or given the names learnt since) from the event's
    /// cgroup and container.
    fn series<'s>(&self, state: &'s mut State, path: &str, event: &Event) -> &'s mut Series {
        let labels = ContainerLabels::of(
            event.memcg.cgroup.as_deref(),
            event.memcg.container.as_ref(),
        );
        let series = state
            .series
            .entry(path.to_owned())
            .or_insert_with(|| Series {
                labels: labels.clone(),
                verdicts: Vec::new(),
                samples: Samples::default(),
                reclaims: 0,
                freed_nothing: 0,
                removed: None,
                freed: false,
                stats_batch: None,
            });
        if labels != series.labels && labels.names() >= series.labels.names() {
            // Names looked up after the container started (its runtime's state): the series
            // go on under them, with the counts so far.
            self.relabel(series, labels);
        }
        series
    }

    fn relabel(&self, series: &mut Series, labels: ContainerLabels) {
        let old = std::mem::replace(&mut series.labels, labels);
        let new = &series.labels;
        let f = &self.families;
        for family in [
            &f.reclaims,
            &f.reclaims_freed_nothing,
            &f.reclaimed_bytes,
            &f.charge_failures,
            &f.page_cache_added_bytes,
            &f.page_cache_removed_bytes,
            &f.page_cache_refault_bytes,
            &f.slab_allocated_bytes,
            &f.slab_freed_bytes,
        ] {
            if let Some(count) = family.get(&old).map(|c| c.get()) {
                family.get_or_create(new).inc_by(count);
            }
        }
        if let Some(seconds) = f.reclaim_seconds.get(&old).map(|c| c.get()) {
            f.reclaim_seconds.get_or_create(new).inc_by(seconds);
        }
        for &verdict in &series.verdicts {
            let at = |container: &ContainerLabels| OomLabels {
                container: container.clone(),
                verdict,
            };
            if let Some(count) = f.oom_kills.get(&at(&old)).map(|c| c.get()) {
                f.oom_kills.get_or_create(&at(new)).inc_by(count);
            }
            f.oom_kills.remove(&at(&old));
        }
        // Gauges and the kernel's counters come back with the next sample.
        f.remove(&old);
    }

    /// A cgroup removed (or freed unseen): its series go when the grace period is over.
    fn removed(&self, state: &mut State, path: &str, event: &Event, now: Instant) {
        if path.is_empty() || state.gone.contains(path) {
            return;
        }
        let series = self.series(state, path, event);
        if series.removed.is_none() {
            series.removed = Some(now);
            state
                .expiring
                .push_back((now + self.grace, path.to_owned()));
        }
    }

    /// At the first sample of a walk of the hierarchy: containers the previous walk did not
    /// find are gone, also if their removal was not seen (lost, or before a filter matched).
    fn stats_batch(&self, state: &mut State, timestamp_ns: u64, now: Instant) {
        if state.stats_batch == Some(timestamp_ns) {
            return;
        }
        let previous = state.stats_batch.replace(timestamp_ns);
        let Some(previous) = previous else { return };
        let missing: Vec<String> = state
            .series
            .iter()
            .filter(|(_, s)| s.removed.is_none() && s.stats_batch.is_some_and(|b| b != previous))
            .map(|(path, _)| path.clone())
            .collect();
        for path in missing {
            if let Some(series) = state.series.get_mut(&path) {
                series.removed = Some(now);
                state.expiring.push_back((now + self.grace, path));
            }
        }
    }

    fn set_gauges(&self, labels: &ContainerLabels, m: &MemoryStats) {
        let f = &self.families;
        for (family, value) in [
            (&f.working_set_bytes, m.working_set_bytes),
            (&f.usage_bytes, m.usage_bytes),
            (&f.limit_bytes, m.limit_bytes),
            (&f.anon_bytes, m.anon_bytes),
            (&f.file_bytes, m.file_bytes),
            (&f.shmem_bytes, m.shmem_bytes),
            (&f.kernel_bytes, m.kernel_bytes),
        ] {
            match value {
                Some(v) => {
                    family
                        .get_or_create(labels)
                        .set(i64::try_from(v).unwrap_or(i64::MAX));
                }
                None => {
                    family.remove(labels);
                }
            }
        }
    }

    fn verdict(&self, state: &State, path: &str, kill: &OomKill, at: u64) -> &'static str {
        let limit_cgroup = kill.limit_cgroup.as_deref().unwrap_or(path);
        let samples = state.series.get(limit_cgroup).map(|s| &s.samples);
        let reclaims = state
            .series
            .get(path)
            .map_or((0, 0), |s| (s.reclaims, s.freed_nothing));
        label(judge_kill(kill, at, samples, reclaims, self.clock))
    }
}

impl ContainerLabels {
    /// How many names (not the path) the labels carry.
    fn names(&self) -> usize {
        [&self.namespace, &self.pod, &self.container, &self.image]
            .iter()
            .filter(|s| !s.is_empty())
            .count()
    }
}

/// The exporter as one more output of the pipeline (`Tee` it with the others).
impl Sink for &Exporter {
    fn write(&mut self, event: &Event) -> std::io::Result<()> {
        self.observe(event);
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        attribution::{CgroupVersion, ContainerIdentity},
        event::{
            CgroupChange, Change, Counter, CounterChanges, CounterSource, Memcg, PageCache,
            Reclaim, samples::CLOCK,
        },
    };

    const MIB: u64 = 1 << 20;
    const PATH: &str = "/docker/0ad1c0ffee5eed5a1ad0b5e55ed0d00d2bad1dea5c0de5ca1ab1e0ddba11f00d";

    fn exporter(grace: Duration) -> (Exporter, tempfile::TempDir) {
        let root = tempfile::tempdir().expect("tempdir");
        let hierarchy = MemoryHierarchy {
            root: root.path().to_owned(),
            version: CgroupVersion::V1,
        };
        (Exporter::new(hierarchy, grace, CLOCK), root)
    }

    fn event(at: u64, what: What) -> Event {
        Event {
            timestamp_ns: at,
            memcg: Memcg {
                id: Some(7),
                cgroup: Some(PATH.into()),
                container: Some(ContainerIdentity::from_cgroup_path(PATH)),
            },
            what,
        }
    }

    fn stats(at: u64, anon: u64) -> Event {
        event(
            at,
            What::Stats(
                MemoryStats {
                    usage_bytes: Some(anon + MIB),
                    limit_bytes: Some(64 * MIB),
                    working_set_bytes: Some(anon),
                    anon_bytes: Some(anon),
                    file_bytes: Some(MIB),
                    inactive_file_bytes: Some(MIB),
                    shmem_bytes: Some(0),
                    kernel_bytes: Some(0),
                    ..MemoryStats::default()
                }
                .into(),
            ),
        )
    }

    fn cgroup(at: u64, action: CgroupAction) -> Event {
        event(
            at,
            What::Cgroup(CgroupChange {
                action,
                dying: false,
                charged_bytes: None,
                dying_ns: None,
            }),
        )
    }

    fn reclaim(at: u64, ineffective: bool) -> Event {
        event(
            at,
            What::Reclaim(Reclaim {
                pid: 1,
                duration_ns: 250_000_000,
                reclaimed_bytes: if ineffective { 0 } else { MIB },
                order: 0,
                gfp_flags: 0,
                ineffective,
            }),
        )
    }

    /// The sample lines of `text` whose name is `name` (no HELP/TYPE).
    fn samples<'t>(text: &'t str, name: &str) -> Vec<&'t str> {
        text.lines()
            .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
            .collect()
    }

    fn container_series(text: &str) -> usize {
        text.lines()
            .filter(|l| !l.starts_with('#') && l.contains(&format!("id=\"{PATH}\"")))
            .count()
    }

    #[test]
    fn counts_a_containers_events_under_its_labels() {
        let (e, _root) = exporter(DEFAULT_GRACE);
        e.observe(&stats(1, 2 * MIB));
        e.observe(&stats(2, 50 * MIB));
        e.observe(&reclaim(3, false));
        e.observe(&reclaim(4, true));
        e.observe(&event(5, What::Cache(PageCache::new(1, 3 * MIB, MIB))));
        e.observe(&event(
            5,
            What::Cache(PageCache {
                refault_bytes: Some(MIB),
                ..PageCache::new(1, 0, 0)
            }),
        ));
        e.observe(&event(
            6,
            What::OomKill(OomKill {
                pid: 9,
                ..OomKill::default()
            }),
        ));
        let text = e.encode().expect("encode");
        let labels = format!("namespace=\"\",pod=\"\",container=\"\",image=\"\",id=\"{PATH}\"");
        assert_eq!(
            samples(&text, "memtrace_oom_kills_total"),
            [format!(
                "memtrace_oom_kills_total{{{labels},verdict=\"anon_growth\"}} 1"
            )]
        );
        assert_eq!(
            samples(&text, "memtrace_reclaims_total"),
            [format!("memtrace_reclaims_total{{{labels}}} 2")]
        );
        assert_eq!(
            samples(&text, "memtrace_reclaims_freed_nothing_total"),
            [format!(
                "memtrace_reclaims_freed_nothing_total{{{labels}}} 1"
            )]
        );
        assert_eq!(
            samples(&text, "memtrace_reclaim_seconds_total"),
            [format!("memtrace_reclaim_seconds_total{{{labels}}} 0.5")]
        );
        assert_eq!(
            samples(&text, "memtrace_page_cache_added_bytes_total"),
            [format!(
                "memtrace_page_cache_added_bytes_total{{{labels}}} {}",
                3 * MIB
            )]
        );
        assert_eq!(
            samples(&text, "memtrace_page_cache_refaults_bytes_total"),
            [format!(
                "memtrace_page_cache_refaults_bytes_total{{{labels}}} {MIB}"
            )],
            "a series per container, none per file"
        );
        assert_eq!(
            samples(&text, "memtrace_memory_working_set_bytes"),
            [format!(
                "memtrace_memory_working_set_bytes{{{labels}}} {}",
                50 * MIB
            )]
        );
        assert_eq!(samples(&text, "memtrace_lost_events_total").len(), 7);
        assert!(
            text.contains("# TYPE memtrace_oom_kills_total counter"),
            "{text}"
        );
        assert!(!text.contains("# EOF"), "Prometheus text, not OpenMetrics");
    }

    #[test]
    fn a_removed_containers_series_stay_for_the_grace_period() {
        let (e, _root) = exporter(Duration::from_secs(3600));
        e.observe(&stats(1, MIB));
        e.observe(&cgroup(2, CgroupAction::Removed));
        let text = e.encode().expect("encode");
        assert_eq!(container_series(&text), 7, "gauges stay: {text}");
    }

    #[test]
    fn a_removed_containers_series_go_after_the_grace_period_and_stay_gone() {
        let (e, _root) = exporter(Duration::ZERO);
        e.observe(&stats(1, MIB));
        e.observe(&reclaim(2, true));
        e.observe(&cgroup(3, CgroupAction::Removed));
        assert_eq!(container_series(&e.encode().expect("encode")), 0);
        // A dying memcg's late events do not bring its series back…
        e.observe(&event(4, What::Cache(PageCache::new(1, 0, MIB))));
        e.observe(&cgroup(5, CgroupAction::Freed));
        assert_eq!(container_series(&e.encode().expect("encode")), 0);
        assert!(e.state().series.is_empty() && e.state().gone.paths.is_empty());
        // …a cgroup created again at the path does.
        e.observe(&cgroup(6, CgroupAction::Created));
        e.observe(&reclaim(7, false));
        assert_eq!(container_series(&e.encode().expect("encode")), 4);
    }

    #[test]
    fn a_container_a_walk_no_longer_finds_is_gone() {
        let (e, _root) = exporter(Duration::ZERO);
        e.observe(&stats(1, MIB));
        let mut other = stats(1, MIB);
        other.memcg.cgroup = Some("/docker/other".into());
        e.observe(&other);
        // The next walk finds only the other one; the one after tells.
        other.timestamp_ns = 2;
        e.observe(&other);
        other.timestamp_ns = 3;
        e.observe(&other);
        let text = e.encode().expect("encode");
        assert_eq!(container_series(&text), 0, "{text}");
        assert!(text.contains("id=\"/docker/other\""), "{text}");
    }

    #[test]
    fn names_learnt_later_carry_the_counts_over() {
        let (e, _root) = exporter(DEFAULT_GRACE);
        e.observe(&reclaim(1, false));
        let mut named = reclaim(2, false);
        if let Some(c) = named.memcg.container.as_mut() {
            c.container_name = Some("hog".into());
        }
        e.observe(&named);
        let text = e.encode().expect("encode");
        let lines = samples(&text, "memtrace_reclaims_total");
        assert_eq!(lines.len(), 1, "{text}");
        assert!(
            lines[0].contains("container=\"hog\"") && lines[0].ends_with(" 2"),
            "{text}"
        );
    }

    #[test]
    fn kernel_counters_follow_samples_and_events_and_go_with_the_container() {
        let (e, _root) = exporter(Duration::ZERO);
        let mut sample = stats(1, MIB);
        if let What::Stats(s) = &mut sample.what {
            s.counters.set(Counter::OomKill, 1);
        }
        e.observe(&sample);
        let kill = |at| {
            event(
                at,
                What::Counters(CounterChanges {
                    interval_ns: 1,
                    source: CounterSource::Sampled,
                    changed: vec![(Counter::OomKill, Change { value: 2, delta: 1 })],
                }),
            )
        };
        e.observe(&kill(2));
        let text = e.encode().expect("encode");
        let labels = format!("namespace=\"\",pod=\"\",container=\"\",image=\"\",id=\"{PATH}\"");
        assert_eq!(
            samples(&text, "memtrace_memcg_events_total"),
            [format!(
                "memtrace_memcg_events_total{{{labels},event=\"oom_kill\"}} 2"
            )]
        );
        assert!(
            samples(&text, "memtrace_memcg_pressure_seconds_total").is_empty(),
            "absent, not 0: {text}"
        );
        e.observe(&cgroup(3, CgroupAction::Removed));
        // A dying memcg's late read does not bring them back.
        e.observe(&kill(4));
        assert_eq!(container_series(&e.encode().expect("encode")), 0);
    }

    #[test]
    fn lost_counters_follow_the_kernels_totals() {
        let (e, _root) = exporter(DEFAULT_GRACE);
        e.set_lost(&[(LostKind::Slab, 5)]);
        e.set_lost(&[(LostKind::Slab, 12)]);
        let text = e.encode().expect("encode");
        assert!(
            text.contains("memtrace_lost_events_total{kind=\"slab\"} 12"),
            "{text}"
        );
    }

    #[test]
    fn memory_stays_bounded_when_thousands_of_containers_come_and_go() {
        let (e, _root) = exporter(Duration::ZERO);
        for i in 0..5_000u64 {
            let mut s = stats(i, MIB);
            s.memcg.cgroup = Some(format!("/docker/{i:064x}"));
            e.observe(&s);
            for action in [CgroupAction::Removed, CgroupAction::Freed] {
                // Every other one is freed at once; the rest stay dying.
                if action == CgroupAction::Freed && i % 2 == 1 {
                    continue;
                }
                let mut change = cgroup(i, action);
                change.memcg.cgroup = s.memcg.cgroup.clone();
                e.observe(&change);
            }
        }
        let text = e.encode().expect("encode");
        assert!(!text.contains("id=\"/docker/"), "{text}");
        let state = e.state();
        assert!(state.series.is_empty());
        assert!(state.expiring.is_empty());
        // Only the dying ones are remembered, for their late events.
        assert_eq!(state.gone.paths.len(), 2_500);
    }
}
