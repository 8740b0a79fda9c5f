//! What `top` shows, built from events alone: one row per container or pod, the node's dying
//! memcgs, and per row what the detail view lists. No terminal here: the view draws a
//! [`Model`], and the unit tests below feed it events.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use crate::{
    attribution::{ContainerIdentity, IdentityKind, MemoryStats},
    event::{
        CgroupAction, Device, Event, FileCache, HostClock, MemorySource, OomKill, What, add_known,
    },
    report::{Evidence, MemoryPoint, RefaultedFile, Signals, Verdict, judge},
};

/// Rates (page-cache growth, reclaim, stall) are averaged over this much of the latest events.
pub const RATE_WINDOW_NS: u64 = 5_000_000_000;
/// Samples kept per memcg for OOM verdicts (at a 1 s interval: ten minutes).
const HISTORY: usize = 600;
/// Events kept per row for the detail view.
pub const RECENT: usize = 50;

/// The columns of the table, in order; each sorts with its key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, strum::VariantArray)]
pub enum Column {
    Name,
    WorkingSet,
    LimitShare,
    Anon,
    ActiveFile,
    InactiveFile,
    Shmem,
    Kernel,
    CacheGrowth,
    Reclaims,
    Stall,
    ChargeFailures,
    OomKills,
}

impl Column {
    pub const ALL: &[Self] = <Self as strum::VariantArray>::VARIANTS;

    /// The heading, as the table shows it.
    #[must_use]
    pub const fn heading(self) -> &'static str {
        match self {
            Self::Name => "CONTAINER",
            Self::WorkingSet => "WSET",
            Self::LimitShare => "%LIM",
            Self::Anon => "ANON",
            Self::ActiveFile => "FILE_ACT",
            Self::InactiveFile => "FILE_INA",
            Self::Shmem => "SHMEM",
            Self::Kernel => "KERNEL",
            Self::CacheGrowth => "CACHE/s",
            Self::Reclaims => "RECL/s",
            Self::Stall => "STALL/s",
            Self::ChargeFailures => "FAILS",
            Self::OomKills => "OOM",
        }
    }

    /// The key that sorts by it (pressed again: the other direction).
    #[must_use]
    pub const fn key(self) -> char {
        match self {
            Self::Name => 'n',
            Self::WorkingSet => 'w',
            Self::LimitShare => 'l',
            Self::Anon => 'a',
            Self::ActiveFile => 'f',
            Self::InactiveFile => 'i',
            Self::Shmem => 'h',
            Self::Kernel => 'k',
            Self::CacheGrowth => 'c',
            Self::Reclaims => 'r',
            Self::Stall => 't',
            Self::ChargeFailures => 'x',
            Self::OomKills => 'o',
        }
    }

    #[must_use]
    pub fn from_key(key: char) -> Option<Self> {
        Self::ALL.iter().copied().find(|c| c.key() == key)
    }
}

/// How the table is ordered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sort {
    pub column: Column,
    pub descending: bool,
}

impl Default for Sort {
    /// Nearest to its limit first.
    fn default() -> Self {
        Self {
            column: Column::LimitShare,
            descending: true,
        }
    }
}

impl Sort {
    /// `column`'s key pressed: sort by it (largest first, names A→Z), or turn the order round
    /// when it is already the column.
    #[must_use]
    pub fn pressed(self, column: Column) -> Self {
        if self.column == column {
            Self {
                column,
                descending: !self.descending,
            }
        } else {
            Self {
                column,
                descending: column != Column::Name,
            }
        }
    }
}

/// An OOM kill in a row, kept for as long as `top` runs.
#[derive(Clone, Debug)]
pub struct Kill {
    pub timestamp_ns: u64,
    pub pid: u32,
    pub comm: Option<String>,
    /// The cgroup whose limit fired, when the kernel said.
    pub limit_cgroup: Option<String>,
    pub verdict: Verdict,
}

/// A file's page cache in a row since `top` started.
#[derive(Clone, Debug)]
pub struct FileTotal {
    /// The latest interval's entry: what names the file.
    pub file: FileCache,
    pub added_bytes: u64,
    pub removed_bytes: u64,
    /// Of `added_bytes`, what was re-read after eviction (`None`: not counted).
    pub refault_bytes: Option<u64>,
}

impl FileTotal {
    #[must_use]
    pub fn net_bytes(&self) -> i64 {
        crate::event::net(self.added_bytes, self.removed_bytes)
    }
}

/// A slab cache's accounted memory in a row since `top` started.
#[derive(Clone, Debug, Default)]
pub struct SlabTotal {
    pub allocated_bytes: u64,
    pub freed_bytes: u64,
}

impl SlabTotal {
    #[must_use]
    pub fn net_bytes(&self) -> i64 {
        crate::event::net(self.allocated_bytes, self.freed_bytes)
    }
}

/// One container or pod.
#[derive(Clone, Debug, Default)]
pub struct Row {
    pub cgroup: String,
    pub container: Option<ContainerIdentity>,
    /// The latest `stats` sample.
    pub memory: Option<MemoryStats>,
    /// `(timestamp, net bytes)` of page-cache intervals within the rate window.
    cache: VecDeque<(u64, i64)>,
    /// `(timestamp, stall ns)` of limit reclaim episodes within the rate window.
    reclaims: VecDeque<(u64, u64)>,
    pub reclaims_total: u64,
    pub ineffective_reclaims: u64,
    pub charge_failures: u64,
    pub kills: Vec<Kill>,
    /// Page cache added since `top` started, and of it the refaults memtrace counted.
    pub cache_added_bytes: u64,
    pub refault_bytes: Option<u64>,
    pub files: HashMap<(Device, u64), FileTotal>,
    pub slab: HashMap<String, SlabTotal>,
    /// Latest last, at most [`RECENT`]; `stats` samples are not kept here.
    pub recent: VecDeque<Event>,
    /// The cgroup was removed (`Some(true)`: memory still charged, dying).
    pub removed: Option<bool>,
}

impl Row {
    /// The container, pod or unit, else the cgroup path.
    #[must_use]
    pub fn name(&self) -> String {
        self.container
            .as_ref()
            .filter(|c| c.kind() != IdentityKind::Unknown)
            .map_or_else(|| self.cgroup.clone(), ContainerIdentity::display_name)
    }

    /// Files, largest net growth first.
    #[must_use]
    pub fn files_by_growth(&self) -> Vec<&FileTotal> {
        let mut files: Vec<&FileTotal> = self.files.values().collect();
        files.sort_by_key(|f| std::cmp::Reverse(f.net_bytes()));
        files
    }

    /// What the page cache says for a verdict (`report::Signals`): added, refaulted, and the
    /// files added and re-read most.
    #[must_use]
    pub fn signals(&self) -> Signals {
        let named = || self.files.values().filter(|f| !f.file.name.is_other());
        let most_added_file = named()
            .filter(|f| f.added_bytes > 0)
            .max_by_key(|f| (f.added_bytes, f.file.inode))
            .map(|f| (f.file.name().to_string(), f.added_bytes));
        let most_refaulted_file = named()
            .filter_map(|f| Some((f, f.refault_bytes.filter(|&r| r > 0)?)))
            .max_by_key(|&(f, r)| (r, f.file.inode))
            .map(|(f, refault_bytes)| RefaultedFile {
                name: f.file.name().to_string(),
                refault_bytes,
                added_bytes: f.added_bytes,
            });
        Signals {
            cache_added_bytes: self.cache_added_bytes,
            most_added_file,
            most_refaulted_file,
            refault_file_bytes: self.refault_bytes,
            ..Signals::default()
        }
    }

    /// Slab caches, largest net growth first.
    #[must_use]
    pub fn slab_by_growth(&self) -> Vec<(&str, &SlabTotal)> {
        let mut caches: Vec<(&str, &SlabTotal)> =
            self.slab.iter().map(|(n, s)| (n.as_str(), s)).collect();
        caches.sort_by_key(|(n, s)| (std::cmp::Reverse(s.net_bytes()), *n));
        caches
    }

    fn forget_before(&mut self, start_ns: u64) {
        while self.cache.front().is_some_and(|&(t, _)| t <= start_ns) {
            self.cache.pop_front();
        }
        while self.reclaims.front().is_some_and(|&(t, _)| t <= start_ns) {
            self.reclaims.pop_front();
        }
    }
}

/// A row's numbers as the table shows them.
#[derive(Clone, Debug, PartialEq)]
pub struct Line {
    pub cgroup: String,
    pub name: String,
    pub working_set: Option<u64>,
    /// Usage over the limit that applies: the row's own, else its nearest ancestor's.
    pub limit_share: Option<f64>,
    /// The limit that applies and, when it is an ancestor's, whose.
    pub limit: Option<(u64, Option<String>)>,
    pub anon: Option<u64>,
    pub active_file: Option<u64>,
    pub inactive_file: Option<u64>,
    pub shmem: Option<u64>,
    pub kernel: Option<u64>,
    /// Bytes per second, negative when the cache shrank.
    pub cache_per_s: f64,
    pub reclaims_per_s: f64,
    /// Seconds stalled in reclaim per second.
    pub stall_per_s: f64,
    pub charge_failures: u64,
    pub kills: usize,
    /// The latest kill's verdict.
    pub verdict: Option<Verdict>,
    pub removed: Option<bool>,
}

impl Line {
    /// The value sorted on; `None` sorts below every number.
    fn key(&self, column: Column) -> Option<f64> {
        #[expect(clippy::cast_precision_loss, reason = "sorting only")]
        let bytes = |b: Option<u64>| b.map(|b| b as f64);
        #[expect(clippy::cast_precision_loss, reason = "sorting only")]
        match column {
            Column::Name => None,
            Column::WorkingSet => bytes(self.working_set),
            Column::LimitShare => self.limit_share,
            Column::Anon => bytes(self.anon),
            Column::ActiveFile => bytes(self.active_file),
            Column::InactiveFile => bytes(self.inactive_file),
            Column::Shmem => bytes(self.shmem),
            Column::Kernel => bytes(self.kernel),
            Column::CacheGrowth => Some(self.cache_per_s),
            Column::Reclaims => Some(self.reclaims_per_s),
            Column::Stall => Some(self.stall_per_s),
            Column::ChargeFailures => Some(self.charge_failures as f64),
            Column::OomKills => Some(self.kills as f64),
        }
    }
}

/// Memcgs removed while memory is still charged to them.
#[derive(Clone, Debug, Default)]
pub struct Dying {
    /// The kernel's count for the whole node, when it was read (live only).
    pub on_node: Option<u64>,
    /// Removed while `top` watched, still dying: by memcg id, else path.
    pub seen: HashSet<String>,
    /// Removed while `top` watched and freed since.
    pub freed: u64,
}

/// Everything `top` knows.
#[derive(Debug)]
pub struct Model {
    clock: HostClock,
    rows: BTreeMap<String, Row>,
    /// Samples of every memcg that was sampled, oldest first, for limits and verdicts.
    samples: HashMap<String, VecDeque<MemoryPoint>>,
    pub dying: Dying,
    /// The latest event's time: what rates are measured back from.
    pub now_ns: u64,
    pub events: u64,
    /// Events counted instead of delivered (`lost` events), all kinds and causes.
    pub lost: u64,
}

impl Model {
    #[must_use]
    pub fn new(clock: HostClock) -> Self {
        Self {
            clock,
            rows: BTreeMap::new(),
            samples: HashMap::new(),
            dying: Dying::default(),
            now_ns: 0,
            events: 0,
            lost: 0,
        }
    }

    #[must_use]
    pub fn clock(&self) -> HostClock {
        self.clock
    }

    #[must_use]
    pub fn row(&self, cgroup: &str) -> Option<&Row> {
        self.rows.get(cgroup)
    }

    pub fn rows(&self) -> impl Iterator<Item = &Row> {
        self.rows.values()
    }

    /// Takes one event in.
    pub fn apply(&mut self, event: &Event) {
        self.events += 1;
        self.now_ns = self.now_ns.max(event.timestamp_ns);
        match &event.what {
            // memtrace's own, of no container: counted for the header.
            What::Lost(lost) => self.lost += lost.count,
            _ => self.apply_to_rows(event),
        }
    }

    /// An event about a memcg: its container's row, samples and dying state.
    fn apply_to_rows(&mut self, event: &Event) {
        let cgroup = cgroup_key(event);
        if let What::Cgroup(change) = &event.what {
            self.dying_change(event, change.action, change.dying);
            if change.action == CgroupAction::Freed {
                // Its kills are judged already; a churning node must not keep every history.
                self.samples.remove(&cgroup);
            }
        }
        if let What::Stats(m) = &event.what {
            let history = self.samples.entry(cgroup.clone()).or_default();
            history.push_back(MemoryPoint::new(
                event.timestamp_ns,
                self.clock.wall(event.timestamp_ns),
                m,
            ));
            if history.len() > HISTORY {
                history.pop_front();
            }
        }
        if !self.rows.contains_key(&cgroup) && !deserves_row(event) {
            return;
        }
        let verdict = match &event.what {
            What::OomKill(k) => Some(self.verdict(event, k, &cgroup)),
            _ => None,
        };
        let row = self.rows.entry(cgroup.clone()).or_insert_with(|| Row {
            cgroup,
            ..Row::default()
        });
        if row.container.is_none() {
            row.container.clone_from(&event.memcg.container);
        }
        match &event.what {
            What::Stats(m) => row.memory = Some(m.memory.clone()),
            What::Cache(c) => {
                row.cache.push_back((event.timestamp_ns, c.net_bytes));
                row.cache_added_bytes = row.cache_added_bytes.saturating_add(c.added_bytes);
                row.refault_bytes = add_known(row.refault_bytes, c.refault_bytes);
                for f in &c.top_files {
                    let total = row
                        .files
                        .entry((f.device, f.inode))
                        .or_insert_with(|| FileTotal {
                            file: f.clone(),
                            added_bytes: 0,
                            removed_bytes: 0,
                            refault_bytes: None,
                        });
                    total.file = f.clone();
                    total.refault_bytes = add_known(total.refault_bytes, f.refault_bytes);
                    total.added_bytes = total.added_bytes.saturating_add(f.added_bytes);
                    total.removed_bytes = total.removed_bytes.saturating_add(f.removed_bytes);
                }
            }
            What::Reclaim(r) => {
                row.reclaims.push_back((event.timestamp_ns, r.duration_ns));
                row.reclaims_total += 1;
                row.ineffective_reclaims += u64::from(r.ineffective);
            }
            What::ChargeFail(_) | What::ChargeFailFromReclaim(_) => row.charge_failures += 1,
            What::Slab(s) => {
                for c in &s.caches {
                    let total = row.slab.entry(c.cache.clone()).or_default();
                    total.allocated_bytes = total.allocated_bytes.saturating_add(c.allocated_bytes);
                    total.freed_bytes = total.freed_bytes.saturating_add(c.freed_bytes);
                }
            }
            What::OomKill(k) => {
                if let Some(verdict) = verdict {
                    row.kills.push(Kill {
                        timestamp_ns: event.timestamp_ns,
                        pid: k.pid,
                        comm: k.comm.clone(),
                        limit_cgroup: k.limit_cgroup.clone(),
                        verdict,
                    });
                }
            }
            What::Cgroup(change) => match change.action {
                CgroupAction::Created => row.removed = None,
                CgroupAction::Removed => row.removed = Some(change.dying),
                CgroupAction::Freed => row.removed = Some(false),
            },
            What::Charge(_) | What::ChargeFromPageCache(_) | What::Counters(_) | What::Lost(_) => {}
        }
        if !matches!(event.what, What::Stats(_)) {
            row.recent.push_back(event.clone());
            if row.recent.len() > RECENT {
                row.recent.pop_front();
            }
        }
        let freed_without_story = row.removed == Some(false) && row.kills.is_empty();
        if freed_without_story {
            // A container that exited cleanly leaves the table; one with a kill stays.
            let key = row.cgroup.clone();
            self.rows.remove(&key);
        }
    }

    fn dying_change(&mut self, event: &Event, action: CgroupAction, dying: bool) {
        let key = event
            .memcg
            .id
            .map_or_else(|| cgroup_key(event), |id| id.to_string());
        match action {
            CgroupAction::Removed if dying => {
                self.dying.seen.insert(key);
            }
            CgroupAction::Freed if self.dying.seen.remove(&key) => self.dying.freed += 1,
            _ => {}
        }
    }

    /// Why the kill happened, by the report's rules ([`crate::report::judge`]), from what the
    /// events so far say: the memory of the memcg whose limit fired at the kill (the kernel's
    /// report, else the last sample before it), its samples, the row's reclaims and slab.
    fn verdict(&self, event: &Event, kill: &OomKill, cgroup: &str) -> Verdict {
        let limit_memcg = kill.limit_cgroup.as_deref().unwrap_or(cgroup);
        let history: Vec<MemoryPoint> = self
            .samples
            .get(limit_memcg)
            .map(|s| {
                s.iter()
                    .filter(|m| m.timestamp_ns < event.timestamp_ns)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        let time = self.clock.wall(event.timestamp_ns);
        let at_kill = match (&kill.memory, history.last()) {
            (Some(m), _) if kill.memory_source == Some(MemorySource::KernelOomReport) => {
                Some(MemoryPoint::new(event.timestamp_ns, time, m))
            }
            (_, Some(last)) => Some(last.clone()),
            (Some(m), None) => Some(MemoryPoint::new(event.timestamp_ns, time, m)),
            (None, None) => None,
        }
        .map(|mut p| {
            p.usage = p.usage.or(kill.memcg_usage_bytes);
            p.limit = p.limit.or(kill.memcg_limit_bytes);
            p
        });
        let row = self.rows.get(cgroup);
        let top_slab_cache = row.and_then(|r| {
            r.slab_by_growth()
                .first()
                .filter(|(_, s)| s.net_bytes() > 0)
                .map(|(name, s)| ((*name).to_owned(), s.net_bytes()))
        });
        judge(&Evidence {
            at_kill,
            history: &history,
            reclaims: row.map_or(0, |r| r.reclaims_total),
            ineffective_reclaims: row.map_or(0, |r| r.ineffective_reclaims),
            top_slab_cache,
            signals: row.map(Row::signals).unwrap_or_default(),
        })
    }

    /// The limit that applies to `cgroup`: its own, else its nearest ancestor's, with whose
    /// it is when it is an ancestor's.
    #[must_use]
    pub fn limit(&self, cgroup: &str) -> Option<(u64, Option<String>)> {
        let own = |c: &str| self.samples.get(c)?.back()?.limit;
        if let Some(limit) = own(cgroup) {
            return Some((limit, None));
        }
        let mut path = cgroup;
        while let Some(cut) = path.rfind('/') {
            path = if cut == 0 { "/" } else { &path[..cut] };
            if let Some(limit) = own(path) {
                return Some((limit, Some(path.to_owned())));
            }
            if path == "/" {
                break;
            }
        }
        None
    }

    /// The table: rows whose name or cgroup contains `filter` (any case), in `sort` order,
    /// rates measured over the [`RATE_WINDOW_NS`] before the latest event.
    pub fn lines(&mut self, sort: Sort, filter: &str) -> Vec<Line> {
        let start = self.now_ns.saturating_sub(RATE_WINDOW_NS);
        for row in self.rows.values_mut() {
            row.forget_before(start);
        }
        let filter = filter.to_lowercase();
        let mut lines: Vec<Line> = self
            .rows
            .values()
            .filter(|r| {
                filter.is_empty()
                    || r.name().to_lowercase().contains(&filter)
                    || r.cgroup.to_lowercase().contains(&filter)
            })
            .map(|r| self.line(r))
            .collect();
        lines.sort_by(|a, b| {
            let order = match sort.column {
                Column::Name => a.name.cmp(&b.name),
                column => a
                    .key(column)
                    .partial_cmp(&b.key(column))
                    .unwrap_or(std::cmp::Ordering::Equal),
            };
            let order = if sort.descending {
                order.reverse()
            } else {
                order
            };
            order.then_with(|| a.cgroup.cmp(&b.cgroup))
        });
        lines
    }

    fn line(&self, r: &Row) -> Line {
        #[expect(clippy::cast_precision_loss, reason = "rates for people")]
        let per_s = |total: f64| total / (RATE_WINDOW_NS as f64 / 1e9);
        #[expect(clippy::cast_precision_loss, reason = "rates for people")]
        let cache = r.cache.iter().fold(0.0, |sum, &(_, n)| sum + n as f64);
        #[expect(clippy::cast_precision_loss, reason = "rates for people")]
        let stall = r
            .reclaims
            .iter()
            .fold(0.0, |sum, &(_, d)| sum + d as f64 / 1e9);
        let m = r.memory.as_ref();
        let limit = self.limit(&r.cgroup);
        #[expect(clippy::cast_precision_loss, reason = "a share for people")]
        let limit_share = match (m.and_then(|m| m.usage_bytes), &limit) {
            (Some(usage), Some((limit, _))) if *limit > 0 => Some(usage as f64 / *limit as f64),
            _ => None,
        };
        #[expect(clippy::cast_precision_loss, reason = "rates for people")]
        let reclaims = r.reclaims.len() as f64;
        Line {
            cgroup: r.cgroup.clone(),
            name: r.name(),
            working_set: m.and_then(|m| m.working_set_bytes),
            limit_share,
            limit,
            anon: m.and_then(|m| m.anon_bytes),
            active_file: m.and_then(|m| m.active_file_bytes),
            inactive_file: m.and_then(|m| m.inactive_file_bytes),
            shmem: m.and_then(|m| m.shmem_bytes),
            kernel: m.and_then(|m| m.kernel_bytes),
            cache_per_s: per_s(cache),
            reclaims_per_s: per_s(reclaims),
            stall_per_s: per_s(stall),
            charge_failures: r.charge_failures,
            kills: r.kills.len(),
            verdict: r.kills.last().map(|k| k.verdict.clone()),
            removed: r.removed,
        }
    }
}

/// Rows are keyed by cgroup path; a memcg the kernel named only by id gets one from it.
fn cgroup_key(event: &Event) -> String {
    match (&event.memcg.cgroup, event.memcg.id) {
        (Some(c), _) => c.clone(),
        (None, Some(id)) => format!("memcg {id}"),
        (None, None) => "?".to_owned(),
    }
}

/// Containers and pods get a row; any memcg that was sampled (the `--cgroup` a user named) or
/// had an OOM kill does too.
fn deserves_row(event: &Event) -> bool {
    let container = event.memcg.container.as_ref().is_some_and(|c| {
        matches!(c.kind(), IdentityKind::Container | IdentityKind::Pod) && !c.is_conmon()
    });
    container || matches!(event.what, What::Stats(_) | What::OomKill(_))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        event::{
            CgroupChange, ChargeFail, ChargeProbe, Memcg, PageCache, Reclaim, Slab, SlabCache,
        },
        report::VerdictKind,
    };

    const MIB: u64 = 1 << 20;
    const SEC: u64 = 1_000_000_000;
    const DOCKER_ID: &str = "0ad1c0ffee5eed5a1ad0b5e55ed0d00d2bad1dea5c0de5ca1ab1e0ddba11f00d";

    fn clock() -> HostClock {
        crate::event::samples::CLOCK
    }

    fn memcg(cgroup: &str) -> Memcg {
        let identity = ContainerIdentity::from_cgroup_path(cgroup);
        Memcg {
            id: Some(cgroup.len() as u64),
            cgroup: Some(cgroup.to_owned()),
            container: (identity.kind() != IdentityKind::Unknown).then_some(identity),
        }
    }

    fn event(ns: u64, cgroup: &str, what: What) -> Event {
        Event {
            timestamp_ns: ns,
            memcg: memcg(cgroup),
            what,
        }
    }

    fn stats(usage: u64, limit: Option<u64>, anon: u64, file: u64) -> What {
        What::Stats(
            MemoryStats {
                usage_bytes: Some(usage),
                limit_bytes: limit,
                working_set_bytes: Some(usage),
                anon_bytes: Some(anon),
                file_bytes: Some(file),
                active_file_bytes: Some(file / 2),
                inactive_file_bytes: Some(file / 2),
                shmem_bytes: Some(0),
                kernel_bytes: Some(MIB),
                ..MemoryStats::default()
            }
            .into(),
        )
    }

    fn reclaim(ineffective: bool) -> What {
        What::Reclaim(Reclaim {
            pid: 1,
            duration_ns: 100_000_000,
            reclaimed_bytes: 0,
            order: 0,
            gfp_flags: 0,
            ineffective,
        })
    }

    fn container() -> String {
        format!("/docker/{DOCKER_ID}")
    }

    #[test]
    fn a_kill_stays_on_its_container_with_the_reports_verdict() {
        let mut model = Model::new(clock());
        let c = container();
        model.apply(&event(
            SEC,
            &c,
            stats(4 * MIB, Some(64 * MIB), 3 * MIB, MIB),
        ));
        model.apply(&event(
            2 * SEC,
            &c,
            stats(60 * MIB, Some(64 * MIB), 59 * MIB, MIB),
        ));
        model.apply(&event(2 * SEC, &c, reclaim(true)));
        let kill = OomKill {
            pid: 7,
            comm: Some("memhog".into()),
            memcg_limit_bytes: Some(64 * MIB),
            ..OomKill::default()
        };
        model.apply(&event(3 * SEC, &c, What::OomKill(kill)));
        // Much later, with nothing else: the kill is still there.
        model.apply(&event(600 * SEC, &c, stats(0, Some(64 * MIB), 0, 0)));
        let lines = model.lines(Sort::default(), "");
        assert_eq!(lines.len(), 1);
        let line = &lines[0];
        assert_eq!(line.name, "docker:0ad1c0ffee5e");
        assert_eq!(line.kills, 1);
        let verdict = line.verdict.as_ref().expect("a verdict");
        assert_eq!(verdict.kind, VerdictKind::AnonGrowth, "{verdict:?}");
        assert!(
            verdict.reason.contains("1 of 1 limit reclaims"),
            "{verdict:?}"
        );
        let row = model.row(&c).expect("row");
        assert_eq!(row.kills[0].comm.as_deref(), Some("memhog"));
    }

    #[test]
    fn the_limit_that_applies_is_the_nearest_ancestors() {
        let mut model = Model::new(clock());
        let pod = "/kubepods/burstable/pod0f1e2d3c-aaaa-bbbb-cccc-000000000001";
        let ctr = format!("{pod}/{DOCKER_ID}");
        model.apply(&event(
            SEC,
            pod,
            stats(100 * MIB, Some(256 * MIB), 90 * MIB, 0),
        ));
        model.apply(&event(SEC, &ctr, stats(64 * MIB, None, 60 * MIB, 0)));
        let lines = model.lines(Sort::default(), "");
        let line = lines.iter().find(|l| l.cgroup == ctr).expect("container");
        assert_eq!(line.limit, Some((256 * MIB, Some(pod.to_owned()))));
        assert!((line.limit_share.expect("share") - 0.25).abs() < 1e-9);
        let pod_line = lines.iter().find(|l| l.cgroup == pod).expect("pod");
        assert_eq!(pod_line.limit, Some((256 * MIB, None)));
    }

    #[test]
    fn sorting_by_any_column_and_filtering() {
        let mut model = Model::new(clock());
        let a = "/docker/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
        let b = "/docker/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
        model.apply(&event(
            SEC,
            a,
            stats(10 * MIB, Some(100 * MIB), 9 * MIB, MIB),
        ));
        model.apply(&event(
            SEC,
            b,
            stats(20 * MIB, Some(30 * MIB), MIB, 19 * MIB),
        ));
        let order = |model: &mut Model, sort: Sort, filter: &str| -> Vec<String> {
            model
                .lines(sort, filter)
                .into_iter()
                .map(|l| l.cgroup)
                .collect()
        };
        let by_limit = Sort::default();
        assert_eq!(order(&mut model, by_limit, ""), [b, a]);
        let by_anon = by_limit.pressed(Column::Anon);
        assert_eq!(order(&mut model, by_anon, ""), [a, b]);
        assert_eq!(order(&mut model, by_anon.pressed(Column::Anon), ""), [b, a]);
        let by_name = by_limit.pressed(Column::Name);
        assert!(!by_name.descending);
        assert_eq!(order(&mut model, by_name, ""), [a, b]);
        assert_eq!(order(&mut model, by_limit, "docker:bbb"), [b]);
        assert_eq!(order(&mut model, by_limit, "AAAA"), [a]);
        for &column in Column::ALL {
            assert_eq!(Column::from_key(column.key()), Some(column));
            let _ = order(&mut model, by_limit.pressed(column), "");
        }
    }

    #[test]
    fn rates_cover_the_window_before_the_latest_event() {
        let mut model = Model::new(clock());
        let c = container();
        for i in 0..10 {
            model.apply(&event((i + 1) * SEC / 2, &c, reclaim(i % 2 == 0)));
        }
        let mut cache = PageCache::new(SEC, 10 * MIB, 0);
        cache.top_files.push(FileCache::new(
            Device::from_kernel(8 << 20 | 1),
            11,
            10 * MIB,
            0,
        ));
        model.apply(&event(4 * SEC, &c, What::Cache(cache)));
        let line = &model.lines(Sort::default(), "")[0];
        // 10 reclaims of 100 ms in 5 s, averaged over the 5 s window.
        assert!((line.reclaims_per_s - 2.0).abs() < 1e-9, "{line:?}");
        assert!((line.stall_per_s - 0.2).abs() < 1e-9, "{line:?}");
        assert!((line.cache_per_s - 2_097_152.0).abs() < 1.0, "{line:?}");
        // 20 s later the window holds none of them; totals stay.
        model.apply(&event(24 * SEC, &c, stats(MIB, None, MIB, 0)));
        let line = &model.lines(Sort::default(), "")[0];
        assert!(line.reclaims_per_s.abs() < f64::EPSILON && line.cache_per_s.abs() < f64::EPSILON);
        let row = model.row(&c).expect("row");
        assert_eq!((row.reclaims_total, row.ineffective_reclaims), (10, 5));
        assert_eq!(row.files_by_growth()[0].net_bytes(), 10 << 20);
    }

    /// The verdict's page-cache signals: the file re-read most, not the one added most.
    #[test]
    fn refaults_are_summed_per_file_for_the_verdict() {
        let mut model = Model::new(clock());
        let c = container();
        let dev = Device::from_kernel(8 << 20 | 1);
        for _ in 0..2 {
            let mut cache = PageCache::new(SEC, 30 * MIB, 30 * MIB);
            cache.refault_bytes = Some(8 * MIB);
            cache
                .top_files
                .push(FileCache::new(dev, 11, 20 * MIB, 20 * MIB));
            let mut hot = FileCache::new(dev, 12, 10 * MIB, 10 * MIB);
            hot.refault_bytes = Some(8 * MIB);
            cache.top_files.push(hot);
            model.apply(&event(SEC, &c, What::Cache(cache)));
        }
        let signals = model.row(&c).expect("row").signals();
        assert_eq!(
            (signals.cache_added_bytes, signals.refault_file_bytes),
            (60 * MIB, Some(16 * MIB))
        );
        let hot = signals.most_refaulted_file.expect("a file re-read");
        assert_eq!((hot.refault_bytes, hot.added_bytes), (16 * MIB, 20 * MIB));
        assert!(hot.name.contains("12"), "inode 12: {hot:?}");
        let added = signals.most_added_file.expect("a file added");
        assert!(added.0.contains("11"), "inode 11: {added:?}");
    }

    #[test]
    fn files_slab_and_failures_add_up_per_container() {
        let mut model = Model::new(clock());
        let c = container();
        let dev = Device::from_kernel(8 << 20 | 1);
        for (added, removed) in [(8 * MIB, 0), (0, 8 * MIB)] {
            let mut cache = PageCache::new(SEC, added, removed);
            cache
                .top_files
                .push(FileCache::new(dev, 11, added, removed));
            model.apply(&event(SEC, &c, What::Cache(cache)));
        }
        let caches = vec![SlabCache::new("dentry".into(), (4096, 16), (1024, 4))];
        model.apply(&event(SEC, &c, What::Slab(Slab::new(SEC, caches))));
        model.apply(&event(
            SEC,
            &c,
            What::ChargeFail(ChargeFail {
                pid: 1,
                tgid: 1,
                comm: "x".into(),
                nr_pages: 1,
                gfp_flags: 0,
                errno: 12,
                probe: ChargeProbe::Fexit,
                charge_failures: None,
            }),
        ));
        let row = model.row(&c).expect("row");
        let file = row.files_by_growth()[0];
        assert_eq!(
            (file.added_bytes, file.net_bytes()),
            (8 * MIB, 0),
            "read then dropped"
        );
        assert_eq!(row.slab_by_growth()[0].1.net_bytes(), 3072);
        assert_eq!(row.charge_failures, 1);
        assert_eq!(row.recent.len(), 4);
    }

    #[test]
    fn dying_memcgs_are_counted_until_freed_and_clean_exits_leave() {
        let mut model = Model::new(clock());
        let c = container();
        let change = |action, dying| {
            What::Cgroup(CgroupChange {
                action,
                dying,
                charged_bytes: None,
                dying_ns: None,
            })
        };
        model.apply(&event(SEC, &c, stats(MIB, Some(64 * MIB), MIB, 0)));
        model.apply(&event(2 * SEC, &c, change(CgroupAction::Removed, true)));
        assert_eq!(model.limit(&c), Some((64 * MIB, None)));
        assert_eq!(model.dying.seen.len(), 1);
        assert_eq!(model.row(&c).expect("row").removed, Some(true));
        model.apply(&event(3 * SEC, &c, change(CgroupAction::Freed, false)));
        assert_eq!((model.dying.seen.len(), model.dying.freed), (0, 1));
        assert!(model.row(&c).is_none(), "a clean exit leaves the table");
        assert!(model.limit(&c).is_none(), "and its samples go");
        // Host cgroups without a sample or a kill get no row.
        model.apply(&event(
            4 * SEC,
            "/system.slice/cron.service",
            reclaim(false),
        ));
        assert_eq!(model.rows().count(), 0);
    }
}
