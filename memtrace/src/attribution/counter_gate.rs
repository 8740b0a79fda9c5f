//! Which followed memcgs a pass over cgroupfs reads — a counters pass or a `stats` pass — so
//! that passes over an idle node are nearly free.
//!
//! Reading a memcg's counters costs four files (`memory.stat` and v1 `memory.failcnt` and
//! `memory.oom_control`, or v2 `memory.events` and `memory.pressure`), its `stats` sample four
//! more, and finding the memcgs a walk of the whole hierarchy: on a node with 1 000 containers
//! 137–450 ms every counters pass. Most of them did nothing since the last pass, so a pass reads
//! a memcg's files only when something says they may have changed:
//! - its usage (v1 `memory.usage_in_bytes`, v2 `memory.current`, hierarchical on both) moved,
//!   read with one `pread` on a descriptor kept open;
//! - the kernel's aggregates counted charges, page cache or slab for it since the last pass;
//! - (counters) the kernel notified its `memory.events` or `memory.oom_control`;
//! - (counters) its last counters had [`UNSETTLED_MIN_BYTES`] dirty or under writeback, or it
//!   was under OOM — those move without a charge —, on every [`UNSETTLED_EVERY`]th pass;
//! - it is new;
//! - its turn came: each pass reads a [`FULL_EVERY`]th of the memcgs anyway (turns are dealt
//!   in the order memcgs are first followed: memcg ids step unevenly, by a cgroup's files), so
//!   that every memcg is read at least every that many passes; and the first pass and the last
//!   read them all. What moves without any of the above (a clean page cache page dirtied again in
//!   place, a charge served from the kernel's per-CPU stock, the LRU's aging of active and
//!   inactive pages, a limit raised) is said at most that many passes late. The turns are spread
//!   rather than all on one pass so that no pass costs a full read of the node (100–400 ms at
//!   1 000 containers, every 2 minutes) and any stretch of time costs its share: the same reads in
//!   all.
//!
//! A memcg not read keeps what it was last read with: its counters stay (no `counters` event),
//! its `stats` sample is the last one again.
//!
//! The hierarchy is walked on the first and the last pass, every [`FULL_EVERY`]th, and when the
//! kernel's count of memory cgroups (`/proc/cgroups`) changed; in between, the memcgs of the
//! last walk are the ones followed, and a removed one is dropped when its usage can no longer be
//! read.

use std::{
    collections::{HashMap, HashSet},
    fs::File,
    os::unix::fs::FileExt,
};

use super::{CgroupVersion, MemoryHierarchy, MemoryStats};
use crate::event::{Counter, CounterValues};

/// Every followed memcg is read at least every this many passes (2 minutes at the default 5 s
/// counters interval), a share of them on each pass; the hierarchy is walked every this many.
pub const FULL_EVERY: u64 = 24;
/// Every this many passes, a counters pass reads the memcgs with dirty or writeback pages:
/// every pass would read most of a busy node's.
pub const UNSETTLED_EVERY: u64 = 4;
/// Dirty and writeback bytes from which a memcg is re-read on those passes: a container's few
/// dirty pages of logs or of its cgroup's own directory (on a node of 1 000 containers, the
/// ~1 150 memcgs re-read every 20 s for 4 KiB each, 56 ms a time) say nothing an operator acts
/// on, and the next full pass says where they went.
pub const UNSETTLED_MIN_BYTES: u64 = 1 << 20;

/// The two passes over cgroupfs, each with its own idea of what changed since it last read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pass {
    Counters = 0,
    Stats = 1,
}

/// What the last passes learnt, kept between passes.
#[derive(Default)]
pub struct CounterGate {
    passes: [u64; 2],
    /// Per pass, the number of the pass under way (which memcgs' turn it is).
    current: [u64; 2],
    /// `/proc/cgroups`' count of memory cgroups at the last walk.
    cgroups_counted: Option<u64>,
    /// The memcgs followed: (memcg id, cgroup path), as of the last walk.
    followed: Vec<(u64, String)>,
    memcgs: HashMap<String, Followed>,
    /// Per pass, memcg ids the kernel's aggregates counted something for since it last ran.
    active: [HashSet<u64>; 2],
    /// Cgroups the kernel notified since the last counters pass.
    notified: HashSet<String>,
    /// This pass reads the memcgs whose counters move without charges.
    unsettled_due: bool,
    /// How many descriptors may be kept open (`None`: not worked out yet).
    keep_open: Option<usize>,
    open: usize,
    /// Turns dealt so far (the next memcg followed gets this one, modulo [`FULL_EVERY`]).
    turns_dealt: u64,
}

struct Followed {
    /// Its turn: it is read on the passes whose number plus this is a multiple of
    /// [`FULL_EVERY`].
    turn: u64,
    /// The usage file, kept open when the descriptor limit allows.
    usage_file: Option<File>,
    /// The usage each pass last saw.
    usage: [Option<u64>; 2],
    /// Its last counters move without charges (dirty, writeback, under OOM).
    unsettled: bool,
    /// Its last `stats` sample.
    sample: Option<MemoryStats>,
}

/// What a pass decided for a memcg.
pub enum Decision {
    /// Read its files.
    Read,
    /// Nothing says they changed.
    Unchanged,
}

impl CounterGate {
    /// The kernel counted something for these memcgs.
    pub fn mark_active(&mut self, memcg_ids: impl IntoIterator<Item = u64>) {
        for id in memcg_ids {
            self.active[0].insert(id);
            self.active[1].insert(id);
        }
    }

    /// The kernel notified a change of this cgroup's counters.
    pub fn mark_notified(&mut self, cgroup: &str) {
        if self.memcgs.contains_key(cgroup) {
            self.notified.insert(cgroup.to_owned());
        }
    }

    /// Starts a pass: whether it reads every memcg (`force`, or the first), and what a walk of
    /// the hierarchy found when it walked (then the memcgs it finds that `follows` are the ones
    /// followed).
    pub fn begin(
        &mut self,
        hierarchy: &MemoryHierarchy,
        (pass, force): (Pass, bool),
        follows: impl Fn(&str) -> bool,
    ) -> (bool, Option<Vec<(u64, String)>>) {
        let (full, walk) = self.full_and_walk(pass, force);
        self.unsettled_due = self.passes[pass as usize].is_multiple_of(UNSETTLED_EVERY);
        if !walk {
            return (full, None);
        }
        let found = hierarchy.walk();
        self.set_followed(
            found
                .iter()
                .filter(|(_, path)| follows(path))
                .cloned()
                .collect(),
        );
        (full, Some(found))
    }

    fn full_and_walk(&mut self, pass: Pass, force: bool) -> (bool, bool) {
        let passes = &mut self.passes[pass as usize];
        self.current[pass as usize] = *passes;
        let full = force || *passes == 0;
        let walk_due = full || passes.is_multiple_of(FULL_EVERY);
        *passes += 1;
        let counted = memory_cgroups();
        let walk = walk_due || counted.is_none() || counted != self.cgroups_counted;
        if walk {
            self.cgroups_counted = counted;
        }
        (full, walk)
    }

    /// The memcgs a walk found that are followed.
    fn set_followed(&mut self, followed: Vec<(u64, String)>) {
        let keep: HashSet<&str> = followed.iter().map(|(_, p)| p.as_str()).collect();
        let open = &mut self.open;
        self.memcgs.retain(|path, f| {
            let kept = keep.contains(path.as_str());
            if !kept && f.usage_file.is_some() {
                *open -= 1;
            }
            kept
        });
        self.followed = followed;
    }

    /// The memcgs followed, as of the last walk.
    #[must_use]
    pub fn followed(&self) -> &[(u64, String)] {
        &self.followed
    }

    /// Whether `pass` reads `path`'s files (`full`: read them anyway, if they exist; so are they
    /// on the passes of its turn).
    pub fn decide(
        &mut self,
        hierarchy: &MemoryHierarchy,
        pass: Pass,
        (id, path): (u64, &str),
        full: bool,
    ) -> Decision {
        let keep_open = *self.keep_open.get_or_insert_with(descriptors_to_keep);
        let turns_dealt = &mut self.turns_dealt;
        let followed = self.memcgs.entry(path.to_owned()).or_insert_with(|| {
            *turns_dealt += 1;
            Followed {
                turn: *turns_dealt % FULL_EVERY,
                usage_file: None,
                usage: [None; 2],
                unsettled: false,
                sample: None,
            }
        });
        if followed.usage_file.is_none() && self.open < keep_open {
            followed.usage_file = File::open(usage_path(hierarchy, path)).ok();
            self.open += usize::from(followed.usage_file.is_some());
        }
        let usage = match &followed.usage_file {
            Some(file) => pread_u64(file),
            None => File::open(usage_path(hierarchy, path))
                .ok()
                .and_then(|f| pread_u64(&f)),
        };
        let Some(usage) = usage else {
            // Gone (`ENODEV`), or a cgroup without the file (v2's root): its files say which.
            return Decision::Read;
        };
        let before = followed.usage[pass as usize].replace(usage);
        let turn = (followed.turn + self.current[pass as usize]).is_multiple_of(FULL_EVERY);
        let wanted = full
            || turn
            || before != Some(usage)
            || self.active[pass as usize].contains(&id)
            || match pass {
                Pass::Counters => {
                    (followed.unsettled && self.unsettled_due) || self.notified.contains(path)
                }
                Pass::Stats => followed.sample.is_none(),
            };
        if wanted {
            Decision::Read
        } else {
            Decision::Unchanged
        }
    }

    /// What a counters pass read of `path`'s counters.
    pub fn counters_read(&mut self, path: &str, values: &CounterValues) {
        if let Some(followed) = self.memcgs.get_mut(path) {
            let unwritten = [Counter::DirtyBytes, Counter::WritebackBytes]
                .into_iter()
                .filter_map(|c| values.get(c))
                .fold(0u64, u64::saturating_add);
            followed.unsettled = unwritten >= UNSETTLED_MIN_BYTES
                || values.get(Counter::UnderOom).is_some_and(|v| v > 0);
        }
    }

    /// A `stats` pass read `path`'s memory: kept for the passes that find it unchanged.
    pub fn sampled(&mut self, path: &str, sample: &MemoryStats) {
        if let Some(followed) = self.memcgs.get_mut(path) {
            followed.sample = Some(sample.clone());
        }
    }

    /// `path`'s last `stats` sample.
    #[must_use]
    pub fn last_sample(&self, path: &str) -> Option<&MemoryStats> {
        self.memcgs.get(path)?.sample.as_ref()
    }

    /// A memcg is gone (its files could not be read): no longer followed; the next pass walks
    /// (another may have its path).
    pub fn gone(&mut self, path: &str) {
        self.cgroups_counted = None;
        if let Some(f) = self.memcgs.remove(path)
            && f.usage_file.is_some()
        {
            self.open -= 1;
        }
        self.followed.retain(|(_, p)| p != path);
    }

    /// Ends a pass: what was marked for it is taken into account.
    pub fn end(&mut self, pass: Pass) {
        self.active[pass as usize].clear();
        if pass == Pass::Counters {
            self.notified.clear();
        }
    }

    /// Descriptors kept open.
    #[must_use]
    pub fn open_files(&self) -> usize {
        self.open
    }
}

fn usage_path(hierarchy: &MemoryHierarchy, path: &str) -> std::path::PathBuf {
    hierarchy.dir(path).join(match hierarchy.version {
        CgroupVersion::V1 => "memory.usage_in_bytes",
        CgroupVersion::V2 => "memory.current",
    })
}

/// A cgroupfs number read from the start of an open file (a cgroupfs file shows its value anew
/// at each read from offset 0); `None` when the cgroup is gone (`ENODEV`).
fn pread_u64(file: &File) -> Option<u64> {
    let mut buf = [0u8; 32];
    let n = file.read_at(&mut buf, 0).ok()?;
    std::str::from_utf8(&buf[..n]).ok()?.trim().parse().ok()
}

/// `/proc/cgroups`' `num_cgroups` of the memory controller: counts creations and frees, so a
/// change says the hierarchy may have new memcgs.
fn memory_cgroups() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/cgroups").ok()?;
    memory_cgroups_in(&text)
}

fn memory_cgroups_in(text: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        (words.next()? == "memory").then_some(())?;
        words.nth(1)?.parse().ok()
    })
}

/// Usage files kept open: half of the soft descriptor limit, raised first to the hard one (at
/// most 65 536) — a node's thousands of memcgs need more than the usual 1 024. The others are
/// opened at each pass.
fn descriptors_to_keep() -> usize {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid rlimit for the kernel to fill.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut limit) } != 0 {
        return 0;
    }
    let wanted = limit.rlim_max.min(1 << 16);
    if limit.rlim_cur < wanted {
        let raised = libc::rlimit {
            rlim_cur: wanted,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: `raised` is a valid rlimit; the soft limit stays within the hard one.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raw const raised) } == 0 {
            limit.rlim_cur = wanted;
        }
    }
    usize::try_from(limit.rlim_cur / 2).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    #[test]
    fn proc_cgroups_gives_the_memory_count() {
        let text = "#subsys_name\thierarchy\tnum_cgroups\tenabled\ncpu\t3\t120\t1\n\
            memory\t5\t1327\t1\npids\t2\t90\t1\n";
        assert_eq!(memory_cgroups_in(text), Some(1327));
        assert_eq!(memory_cgroups_in("cpu 3 1 1\n"), None);
    }

    #[test]
    fn reads_a_memcg_when_its_usage_moves_or_it_is_marked_or_unsettled() {
        let root = tempfile::tempdir().expect("tempdir");
        let dir = root.path().join("c");
        fs::create_dir(&dir).expect("mkdir");
        fs::write(dir.join("memory.usage_in_bytes"), "4096\n").expect("write");
        let hierarchy = MemoryHierarchy {
            root: root.path().to_owned(),
            version: CgroupVersion::V1,
        };
        let mut gate = CounterGate::default();
        let read = |gate: &mut CounterGate, pass| {
            matches!(
                gate.decide(&hierarchy, pass, (7, "/c"), false),
                Decision::Read
            )
        };
        assert!(read(&mut gate, Pass::Counters), "new");
        assert!(!read(&mut gate, Pass::Counters), "nothing moved");
        assert!(read(&mut gate, Pass::Stats), "new to the stats pass");
        gate.sampled("/c", &MemoryStats::default());
        assert!(!read(&mut gate, Pass::Stats));
        assert!(matches!(
            gate.decide(&hierarchy, Pass::Counters, (7, "/c"), true),
            Decision::Read
        ));
        fs::write(dir.join("memory.usage_in_bytes"), "8192\n").expect("write");
        assert!(read(&mut gate, Pass::Counters), "usage moved");
        assert!(!read(&mut gate, Pass::Counters));
        assert!(read(&mut gate, Pass::Stats), "each pass sees the move");
        gate.mark_active([7]);
        assert!(
            read(&mut gate, Pass::Counters),
            "the kernel counted charges"
        );
        gate.end(Pass::Counters);
        assert!(!read(&mut gate, Pass::Counters));
        assert!(read(&mut gate, Pass::Stats), "the stats pass too");
        gate.end(Pass::Stats);
        gate.mark_notified("/c");
        assert!(read(&mut gate, Pass::Counters), "notified");
        assert!(!read(&mut gate, Pass::Stats), "counters only");
        gate.end(Pass::Counters);
        assert!(!read(&mut gate, Pass::Counters));
        gate.counters_read("/c", &CounterValues(vec![(Counter::DirtyBytes, 4096)]));
        gate.unsettled_due = true;
        assert!(
            !read(&mut gate, Pass::Counters),
            "a few dirty pages wait for a full pass"
        );
        gate.counters_read(
            "/c",
            &CounterValues(vec![
                (Counter::DirtyBytes, UNSETTLED_MIN_BYTES / 2),
                (Counter::WritebackBytes, UNSETTLED_MIN_BYTES / 2),
            ]),
        );
        assert!(
            read(&mut gate, Pass::Counters),
            "dirty pages move without charges"
        );
        gate.counters_read("/c", &CounterValues(vec![(Counter::DirtyBytes, 0)]));
        assert!(!read(&mut gate, Pass::Counters));
        assert_eq!(gate.open_files(), 1);
        gate.gone("/c");
        assert_eq!(gate.open_files(), 0);
        fs::remove_dir_all(&dir).expect("rm");
        // Unreadable: its files say whether it is gone.
        assert!(read(&mut gate, Pass::Counters));
    }

    #[test]
    fn only_the_first_pass_or_a_forced_one_is_full() {
        let mut gate = CounterGate::default();
        let fulls: Vec<bool> = (0..2 * FULL_EVERY)
            .map(|_| gate.full_and_walk(Pass::Counters, false).0)
            .collect();
        assert_eq!(fulls.iter().filter(|&&f| f).count(), 1);
        assert!(fulls[0]);
        assert!(gate.full_and_walk(Pass::Counters, true).0);
        assert!(
            gate.full_and_walk(Pass::Stats, false).0,
            "each pass counts its own"
        );
    }

    #[test]
    fn each_memcg_has_its_turn_every_full_every_passes() {
        let root = tempfile::tempdir().expect("tempdir");
        let hierarchy = MemoryHierarchy {
            root: root.path().to_owned(),
            version: CgroupVersion::V1,
        };
        let memcgs: Vec<(u64, String)> = (100..148).map(|id| (id, format!("/c{id}"))).collect();
        for (_, path) in &memcgs {
            let dir = hierarchy.dir(path);
            fs::create_dir(&dir).expect("mkdir");
            fs::write(dir.join("memory.usage_in_bytes"), "4096\n").expect("write");
        }
        let mut gate = CounterGate::default();
        let mut reads = vec![0u32; memcgs.len()];
        for pass in 0..=2 * FULL_EVERY {
            gate.current[Pass::Counters as usize] = pass;
            let read: Vec<bool> = memcgs
                .iter()
                .map(|(id, path)| {
                    matches!(
                        gate.decide(&hierarchy, Pass::Counters, (*id, path), false),
                        Decision::Read
                    )
                })
                .collect();
            if pass == 0 {
                assert!(read.iter().all(|&r| r), "new ones are read");
                continue;
            }
            assert_eq!(
                read.iter().filter(|&&r| r).count(),
                memcgs.len() / usize::try_from(FULL_EVERY).expect("small"),
                "pass {pass} reads its share, no more"
            );
            for (n, r) in reads.iter_mut().zip(read) {
                *n += u32::from(r);
            }
        }
        assert!(reads.iter().all(|&n| n == 2), "{reads:?}");
    }
}
