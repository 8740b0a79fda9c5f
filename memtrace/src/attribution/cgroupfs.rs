//! Finding the memory-controller hierarchy and reading it.

use std::{
    collections::HashMap,
    fs, io,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupVersion {
    V1,
    V2,
}

/// Where the memory controller is mounted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemoryHierarchy {
    pub root: PathBuf,
    pub version: CgroupVersion,
}

#[derive(Debug, thiserror::Error)]
pub enum HierarchyError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error(
        "no memory cgroup controller is mounted (neither a cgroup v1 `memory` hierarchy nor a \
         cgroup2 mount with `memory` in cgroup.controllers): memtrace attributes memory by memcg"
    )]
    NotMounted,
}

impl MemoryHierarchy {
    /// Finds the memory controller's mount from `/proc/self/mountinfo`: a v1 `cgroup` mount
    /// with the `memory` option wins (hybrid hosts also have a cgroup2 mount without it).
    ///
    /// # Errors
    ///
    /// When mountinfo cannot be read or no mount carries the memory controller.
    pub fn discover() -> Result<Self, HierarchyError> {
        let path = Path::new("/proc/self/mountinfo");
        let mountinfo = fs::read_to_string(path).map_err(|source| HierarchyError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_mountinfo(&mountinfo, |root| {
            fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default()
        })
        .ok_or(HierarchyError::NotMounted)
    }

    fn from_mountinfo(mountinfo: &str, controllers: impl Fn(&Path) -> String) -> Option<Self> {
        let mut v2 = None;
        for line in mountinfo.lines() {
            // "36 25 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory"
            let Some((left, right)) = line.split_once(" - ") else {
                continue;
            };
            let Some(mount_point) = left.split(' ').nth(4) else {
                continue;
            };
            let mut right = right.split(' ');
            let (Some(fstype), _, Some(options)) = (right.next(), right.next(), right.next())
            else {
                continue;
            };
            let mount_point = PathBuf::from(unescape_mountinfo(mount_point));
            match fstype {
                "cgroup" if options.split(',').any(|o| o == "memory") => {
                    return Some(Self {
                        root: mount_point,
                        version: CgroupVersion::V1,
                    });
                }
                "cgroup2"
                    if v2.is_none()
                        && controllers(&mount_point)
                            .split_whitespace()
                            .any(|c| c == "memory") =>
                {
                    v2 = Some(Self {
                        root: mount_point,
                        version: CgroupVersion::V2,
                    });
                }
                _ => {}
            }
        }
        v2
    }

    /// The directory of a cgroup given its path relative to the hierarchy (`/a/b`).
    #[must_use]
    pub fn dir(&self, cgroup: &str) -> PathBuf {
        self.root.join(cgroup.trim_start_matches('/'))
    }

    /// The memcg's limit in bytes, `None` when unlimited or unreadable (the cgroup is gone).
    #[must_use]
    pub fn limit_bytes(&self, cgroup: &str) -> Option<u64> {
        let file = match self.version {
            CgroupVersion::V1 => "memory.limit_in_bytes",
            CgroupVersion::V2 => "memory.max",
        };
        let value = read_u64(&self.dir(cgroup).join(file))?;
        // v1 reports "no limit" as PAGE_COUNTER_MAX * PAGE_SIZE rounded down to the page size.
        (value < 1 << 62).then_some(value)
    }

    /// The memcg's current usage in bytes, `None` when unreadable (the cgroup is gone).
    #[must_use]
    pub fn usage_bytes(&self, cgroup: &str) -> Option<u64> {
        let file = match self.version {
            CgroupVersion::V1 => "memory.usage_in_bytes",
            CgroupVersion::V2 => "memory.current",
        };
        read_u64(&self.dir(cgroup).join(file))
    }

    /// How often the memcg's page counter refused a charge: v1 `memory.failcnt`, v2 the `max`
    /// line of `memory.events`. `None` when unreadable (the cgroup is gone).
    #[must_use]
    pub fn charge_failures(&self, cgroup: &str) -> Option<u64> {
        let dir = self.dir(cgroup);
        match self.version {
            CgroupVersion::V1 => read_u64(&dir.join("memory.failcnt")),
            CgroupVersion::V2 => fs::read_to_string(dir.join("memory.events"))
                .ok()?
                .lines()
                .find_map(|line| line.strip_prefix("max ")?.trim().parse().ok()),
        }
    }
}

/// Reads a cgroupfs number; `max` (v2's "unlimited") and errors are `None`.
fn read_u64(path: &Path) -> Option<u64> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('\\') {
        out.push_str(&rest[..i]);
        let code = rest
            .get(i + 1..i + 4)
            .and_then(|o| u8::from_str_radix(o, 8).ok());
        if let Some(code) = code {
            out.push(char::from(code));
            rest = &rest[i + 4..];
        } else {
            out.push('\\');
            rest = &rest[i + 1..];
        }
    }
    out.push_str(rest);
    out
}

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

    /// Cgroups that exist now, counted by walking the hierarchy.
    #[must_use]
    pub fn count_live(&self) -> u64 {
        self.hierarchy.walk().len() as u64
    }

    /// Ids with a known name (for tests and `--debug`).
    #[must_use]
    pub fn known(&self) -> usize {
        self.paths.len()
    }
}

impl MemoryHierarchy {
    /// Every cgroup that exists now, as (memcg id, path); cgroups that vanish during the walk
    /// are skipped.
    #[must_use]
    pub fn walk(&self) -> Vec<(u64, String)> {
        let mut found = Vec::new();
        let mut stack = vec![(self.root.clone(), String::from("/"))];
        while let Some((dir, path)) = stack.pop() {
            let Ok(meta) = fs::metadata(&dir) else {
                continue;
            };
            found.push((meta.ino(), path.clone()));
            let Ok(entries) = fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    let name = entry.file_name().to_string_lossy().into_owned();
                    let child = if path == "/" {
                        format!("/{name}")
                    } else {
                        format!("{path}/{name}")
                    };
                    stack.push((entry.path(), child));
                }
            }
        }
        found
    }
}

/// The memory cgroup path of a live process from `/proc/PID/cgroup` (v1 `N:memory:/path` or,
/// with only v2, `0::/path`). Used when the kernel gave only a pid.
#[must_use]
pub fn memcg_path_of_pid(pid: u32, version: CgroupVersion) -> Option<String> {
    let text = fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    memcg_path_from_proc(&text, version)
}

fn memcg_path_from_proc(text: &str, version: CgroupVersion) -> Option<String> {
    text.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let matches = match version {
            CgroupVersion::V1 => controllers.split(',').any(|c| c == "memory"),
            CgroupVersion::V2 => controllers.is_empty(),
        };
        matches.then(|| path.to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn hybrid_host_uses_the_v1_memory_hierarchy() {
        let h = MemoryHierarchy::from_mountinfo(HYBRID, |_| String::new()).expect("found");
        assert_eq!(h.root, Path::new("/sys/fs/cgroup/memory"));
        assert_eq!(h.version, CgroupVersion::V1);
    }

    #[test]
    fn pure_v2_host_needs_memory_in_controllers() {
        let info = "30 23 0:27 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n";
        let h = MemoryHierarchy::from_mountinfo(info, |_| "cpuset cpu io memory pids".into())
            .expect("found");
        assert_eq!(h.version, CgroupVersion::V2);
        assert_eq!(
            MemoryHierarchy::from_mountinfo(info, |_| "cpu io".into()),
            None
        );
        assert_eq!(
            MemoryHierarchy::from_mountinfo("garbage\n\n - \n", |_| String::new()),
            None
        );
    }

    #[test]
    fn mountinfo_escapes_are_decoded() {
        assert_eq!(unescape_mountinfo(r"/a\040b\134c"), r"/a b\c");
        assert_eq!(unescape_mountinfo(r"/trailing\"), r"/trailing\");
    }

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

    #[test]
    fn limits_read_from_cgroupfs_files() {
        let root = tempfile::tempdir().expect("tempdir");
        fs::create_dir(root.path().join("x")).expect("mkdir");
        fs::write(root.path().join("x/memory.max"), "67108864\n").expect("write");
        fs::write(root.path().join("memory.max"), "max\n").expect("write");
        let h = MemoryHierarchy {
            root: root.path().to_owned(),
            version: CgroupVersion::V2,
        };
        assert_eq!(h.limit_bytes("/x"), Some(64 << 20));
        assert_eq!(h.limit_bytes("/"), None);
        assert_eq!(h.limit_bytes("/gone"), None);
        let v1 = MemoryHierarchy {
            version: CgroupVersion::V1,
            ..h
        };
        fs::write(
            root.path().join("memory.limit_in_bytes"),
            "9223372036854771712\n",
        )
        .expect("write");
        assert_eq!(v1.limit_bytes("/"), None, "v1 'unlimited' is not a limit");
    }

    #[test]
    fn proc_cgroup_lines() {
        let v1 = "12:pids:/x\n4:memory:/kubepods/pod1\n0::/\n";
        assert_eq!(
            memcg_path_from_proc(v1, CgroupVersion::V1).as_deref(),
            Some("/kubepods/pod1")
        );
        assert_eq!(
            memcg_path_from_proc(v1, CgroupVersion::V2).as_deref(),
            Some("/")
        );
        assert_eq!(memcg_path_from_proc("junk", CgroupVersion::V1), None);
    }
}
