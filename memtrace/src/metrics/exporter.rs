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
    event::{CgroupAction, Event, HostClock, OomKill, What},
    report::MemoryPoint,
    sinks::Sink,
};

/// How long the series of a removed container stay, by default: two scrapes at a one-minute
/// interval see its final counts.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(120);

/// Gone cgroups remembered so that their late events are not counted: at most as many as the
/// kernel has memcg ids (a cgroup that is gone but still sends events is a dying memcg, which
/// holds one).
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
            let _ = families.lost_events.get_or_create(&LostLabels { kind: kind.name() });
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
            let due = state.series.get(&path).is_some_and(|s| {
                s.removed
                    .is_some_and(|at| at + self.grace <= now)
            });
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
            }
            state.gone.insert(path);
        }
    }

    /// Folds one event into the series.
    pub fn observe(&self, event: &Event) {
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
                    }
                }
            }
            return;
        }
        if !path.is_empty() && state.gone.contains(&path) {
            return;
        }
        if let What::Stats(memory) = &event.what {
            self.stats_batch(&mut state, event.timestamp_ns, now);
            let series = self.series(&mut state, &path, event);
            // Read from cgroupfs: the cgroup exists (a walk that misses it marks it again).
            series.removed = None;
            series.stats_batch = Some(event.timestamp_ns);
            series
                .samples
                .push(MemoryPoint::new(event.timestamp_ns, String::new(), memory));
            let labels = series.labels.clone();
            self.set_gauges(&labels, memory);
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
            // Charges are not a metric of their own: page cache and slab are, and failures.
            What::Charge(_) | What::ChargeFromPageCache(_) => {}
            What::OomKill(_) | What::Stats(_) | What::Cgroup(_) => {}
        }
    }

    /// The series of `path`, created (or given the names learnt since) from the event's
    /// cgroup and container.
    fn series<'s>(&self, state: &'s mut State, path: &str, event: &Event) -> &'s mut Series {
        let labels = ContainerLabels::of(event.memcg.cgroup.as_deref(), event.memcg.container.as_ref());
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
        // Gauges come back with the next sample.
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
            state.expiring.push_back((now + self.grace, path.to_owned()));
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
            .filter(|(_, s)| {
                s.removed.is_none() && s.stats_batch.is_some_and(|b| b != previous)
            })
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
