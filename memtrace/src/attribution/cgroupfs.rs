//! Finding the memory-controller hierarchy and reading it.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

// Found and read the same way by `cargo xtask bench`, so it lives in memtrace-common.
pub use memtrace_common::cgroup::{
    CgroupVersion, HierarchyError, MemoryHierarchy, memcg_path_of_pid,
};

/// Maps memcg ids (cgroup directory inode numbers) to cgroup paths. Lookups never walk the
/// hierarchy: the pipeline sees which ids are [`unknown`](Self::is_unknown), walks off its
/// consumer (`MemoryHierarchy::walk` on a blocking thread) and hands the result to
/// [`learn`](Self::learn). Names are forgotten when the kernel frees the cgroup, so memory
/// stays bounded on a node where containers come and go.
pub struct MemcgResolver {
    hierarchy: MemoryHierarchy,
    paths: HashMap<u64, String>,
    /// Ids a walk did not find, and when: a cgroup that is gone stays gone, so asking again for
    /// it (every page-cache interval, say) must not walk the hierarchy each time.
    missing: HashMap<u64, Instant>,
    /// Hierarchy walks learnt from so far.
    walks: u64,
}

/// How long an id a walk did not find is not looked for again.
const MISSING_TTL: Duration = Duration::from_secs(10);
/// Ids remembered as missing at most; older ones are forgotten first.
const MISSING_MAX: usize = 65_536;

impl MemcgResolver {
    /// Scans the hierarchy once (at start-up, before any event).
    #[must_use]
    pub fn new(hierarchy: MemoryHierarchy) -> Self {
        let mut resolver = Self {
            hierarchy,
            paths: HashMap::new(),
            missing: HashMap::new(),
            walks: 0,
        };
        let found = resolver.hierarchy.walk();
        resolver.learn(found, &[]);
        resolver
    }

    #[must_use]
    pub fn hierarchy(&self) -> &MemoryHierarchy {
        &self.hierarchy
    }

    /// The cgroup path of a memcg id, `/` for the root; `None` when it is not known (yet).
    #[must_use]
    pub fn path(&self, memcg_id: u64) -> Option<&str> {
        self.paths.get(&memcg_id).map(String::as_str)
    }

    /// Whether a walk could tell more about this id: neither known nor recently looked for
    /// in vain.
    #[must_use]
    pub fn is_unknown(&self, memcg_id: u64) -> bool {
        memcg_id != 0
            && !self.paths.contains_key(&memcg_id)
            && self
                .missing
                .get(&memcg_id)
                .is_none_or(|at| at.elapsed() >= MISSING_TTL)
    }

    /// Takes in a walk of the hierarchy; the `asked` ids it did not find are gone, and are not
    /// looked for again for a while.
    pub fn learn(&mut self, found: Vec<(u64, String)>, asked: &[u64]) {
        self.walks += 1;
        for (id, _) in &found {
            self.missing.remove(id);
        }
        self.paths.extend(found);
        if self.missing.len() + asked.len() > MISSING_MAX {
            self.missing.retain(|_, at| at.elapsed() < MISSING_TTL);
        }
        let now = Instant::now();
        for id in asked {
            if !self.paths.contains_key(id) {
                self.missing.insert(*id, now);
            }
        }
    }

    /// Records a cgroup's name as the kernel reported it at creation.
    pub fn insert(&mut self, memcg_id: u64, path: String) {
        self.paths.insert(memcg_id, path);
    }

    /// Forgets a cgroup the kernel freed: its id is never reused for another one while it is
    /// known, and nothing names it after its release.
    pub fn forget(&mut self, memcg_id: u64) {
        self.paths.remove(&memcg_id);
    }

    /// Cgroups known now: right after [`new`](Self::new), those its walk found, without walking
    /// the hierarchy again (a node's thousands of cgroups cost milliseconds per walk).
    #[must_use]
    pub fn known(&self) -> u64 {
        self.paths.len() as u64
    }

    /// Cgroups that exist now, counted by walking the hierarchy.
    #[must_use]
    pub fn count_live(&self) -> u64 {
        self.hierarchy.walk().len() as u64
    }
}

#[cfg(test)]
mod tests {
    use std::{fs, os::unix::fs::MetadataExt as _};

    use super::*;

    #[test]
    fn resolves_ids_to_paths_on_a_temporary_tree() {
        let root = tempfile::tempdir().expect("tempdir");
        fs::create_dir_all(root.path().join("kubepods/pod1/ctr")).expect("mkdir");
        fs::create_dir_all(root.path().join("system.slice")).expect("mkdir");
        let ino = |p: &str| fs::metadata(root.path().join(p)).expect("stat").ino();
        let mut resolver = MemcgResolver::new(MemoryHierarchy {
            root: root.path().to_owned(),
            version: CgroupVersion::V2,
        });
        assert_eq!(resolver.known(), resolver.count_live());
        assert_eq!(
            resolver.known(),
            5,
            "the root, kubepods, pod1, ctr, system.slice"
        );
        assert_eq!(resolver.path(ino("")), Some("/"));
        assert_eq!(
            resolver.path(ino("kubepods/pod1/ctr")),
            Some("/kubepods/pod1/ctr")
        );
        assert_eq!(resolver.path(ino("system.slice")), Some("/system.slice"));

        // Created after the first scan: unknown, and a lookup does not walk.
        fs::create_dir(root.path().join("late")).expect("mkdir");
        let late = ino("late");
        assert_eq!(resolver.path(late), None);
        assert!(resolver.is_unknown(late));
        assert!(resolver.is_unknown(u64::MAX));
        // A walk (done elsewhere) teaches it; an id it asked for and did not find is gone,
        // and not looked for again at once.
        let found = resolver.hierarchy().walk();
        resolver.learn(found, &[late, u64::MAX]);
        assert_eq!(resolver.path(late), Some("/late"));
        assert!(!resolver.is_unknown(u64::MAX));
        assert_eq!(resolver.path(u64::MAX), None);
        // Removed: the name it had is kept until the kernel frees it.
        fs::remove_dir(root.path().join("late")).expect("rmdir");
        assert_eq!(resolver.path(late), Some("/late"));
        resolver.forget(late);
        assert_eq!(resolver.path(late), None);
    }
}
