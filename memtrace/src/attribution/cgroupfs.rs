//! Finding the memory-controller hierarchy and reading it.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

// Found and read the same way by `cargo xtask bench`, so it lives in memtrace-common.
pub use memtrace_common::cgroup::{
    CgroupVersion, HierarchyError, MemoryHierarchy, memcg_path_of_pid,
};

/// Maps memcg ids (cgroup directory inode numbers) to cgroup paths, walking the hierarchy again
/// when an id is not known yet.
pub struct MemcgResolver {
    hierarchy: MemoryHierarchy,
    paths: HashMap<u64, String>,
    /// Ids a walk did not find, and when: a cgroup that is gone stays gone, so asking again for
    /// it (every page-cache interval, say) must not walk the hierarchy each time.
    missing: HashMap<u64, Instant>,
    /// Hierarchy walks so far.
    walks: u64,
}

/// How long an id a walk did not find is not looked for again.
const MISSING_TTL: Duration = Duration::from_secs(10);

impl MemcgResolver {
    /// Scans the hierarchy once.
    #[must_use]
    pub fn new(hierarchy: MemoryHierarchy) -> Self {
        let mut resolver = Self {
            hierarchy,
            paths: HashMap::new(),
            missing: HashMap::new(),
            walks: 0,
        };
        let _ = resolver.rescan();
        resolver
    }

    #[must_use]
    pub fn hierarchy(&self) -> &MemoryHierarchy {
        &self.hierarchy
    }

    /// The cgroup path of a memcg id, `/` for the root. A miss triggers one rescan: the cgroup
    /// may have been created since the last one. `None` when it is gone already; such an id is
    /// not looked for again for a while.
    pub fn path(&mut self, memcg_id: u64) -> Option<&str> {
        let recently_missing = self
            .missing
            .get(&memcg_id)
            .is_some_and(|at| at.elapsed() < MISSING_TTL);
        if !self.paths.contains_key(&memcg_id) && !recently_missing {
            let _ = self.rescan();
            if !self.paths.contains_key(&memcg_id) {
                self.missing.insert(memcg_id, Instant::now());
            }
        }
        self.paths.get(&memcg_id).map(String::as_str)
    }

    /// Records a cgroup's name as the kernel reported it at creation.
    pub fn insert(&mut self, memcg_id: u64, path: String) {
        self.paths.insert(memcg_id, path);
    }

    /// Cgroups that exist now, counted by walking the hierarchy.
    #[must_use]
    pub fn count_live(&self) -> u64 {
        self.hierarchy.walk().len() as u64
    }

    /// Walks the hierarchy, learning every cgroup's name, and returns the paths that exist now.
    /// Known ids are kept, so a cgroup removed since it was first seen keeps its name.
    pub fn rescan(&mut self) -> Vec<String> {
        self.walks += 1;
        let live = self.hierarchy.walk();
        for (id, _) in &live {
            self.missing.remove(id);
        }
        let paths = live.iter().map(|(_, path)| path.clone()).collect();
        self.paths.extend(live);
        paths
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
        assert_eq!(resolver.path(ino("")), Some("/"));
        assert_eq!(
            resolver.path(ino("kubepods/pod1/ctr")),
            Some("/kubepods/pod1/ctr")
        );
        assert_eq!(resolver.path(ino("system.slice")), Some("/system.slice"));

        // Created after the first scan: found by the rescan a miss triggers.
        fs::create_dir(root.path().join("late")).expect("mkdir");
        let late = ino("late");
        assert_eq!(resolver.path(late), Some("/late"));
        assert_eq!(resolver.path(u64::MAX), None);
        // A gone id is not looked for again at once: no walk per question.
        let walks = resolver.walks;
        assert_eq!(resolver.path(u64::MAX), None);
        assert_eq!(resolver.walks, walks);
        // Unknown new ids still trigger a walk. (Created while `late` exists: tmpfs, unlike
        // cgroupfs, reuses a removed directory's inode number at once.)
        fs::create_dir(root.path().join("later")).expect("mkdir");
        assert_eq!(resolver.path(ino("later")), Some("/later"));
        assert_eq!(resolver.walks, walks + 1);
        // Removed: the name it had is kept.
        fs::remove_dir(root.path().join("late")).expect("rmdir");
        assert_eq!(resolver.path(late), Some("/late"));
    }
}
