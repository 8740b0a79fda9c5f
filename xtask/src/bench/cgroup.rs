//! The memory cgroup the workloads run in, so that memtrace attributes what they do to a
//! container of their own. The hierarchy is found the way memtrace finds it: a v1 `memory`
//! mount wins (hybrid hosts also have a cgroup2 mount without the controller), else a cgroup2
//! mount whose `cgroup.controllers` has `memory`.

use std::{
    fmt, fs,
    path::{Path, PathBuf},
    process,
};

use anyhow::{Context as _, bail};

use super::mountinfo::Mount;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::V1 => "v1",
            Self::V2 => "v2",
        })
    }
}

/// Where the memory controller is mounted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hierarchy {
    pub root: PathBuf,
    pub version: Version,
}

impl Hierarchy {
    /// Finds the memory controller among `mounts`.
    pub fn discover(mounts: &[Mount]) -> anyhow::Result<Self> {
        Self::find(mounts, |root| {
            fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default()
        })
        .context(
            "no memory cgroup controller is mounted (neither a cgroup v1 `memory` hierarchy nor \
             a cgroup2 mount with `memory` in cgroup.controllers); the bench runs its workloads \
             in a memory cgroup of their own",
        )
    }

    fn find(mounts: &[Mount], controllers: impl Fn(&Path) -> String) -> Option<Self> {
        let v1 = mounts.iter().find(|mount| {
            mount.fs_type == "cgroup" && mount.super_options.split(',').any(|o| o == "memory")
        });
        if let Some(mount) = v1 {
            return Some(Self {
                root: mount.path.clone(),
                version: Version::V1,
            });
        }
        mounts
            .iter()
            .find(|mount| {
                mount.fs_type == "cgroup2"
                    && controllers(&mount.path)
                        .split_whitespace()
                        .any(|c| c == "memory")
            })
            .map(|mount| Self {
                root: mount.path.clone(),
                version: Version::V2,
            })
    }
}

/// This process's cgroup in `version`'s hierarchy, from `/proc/self/cgroup` (`4:memory:/a/b`
/// for v1, `0::/a/b` for v2).
fn own_cgroup(proc_self_cgroup: &str, version: Version) -> Option<&str> {
    proc_self_cgroup.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let matches = match version {
            Version::V1 => controllers.split(',').any(|c| c == "memory"),
            Version::V2 => controllers.is_empty(),
        };
        matches.then_some(path)
    })
}

/// A memory cgroup created for the bench, removed when dropped. This process moves into it for
/// each timed workload and back to where it was after, so that the tracers it starts, and
/// everything else it does, stay outside.
pub struct BenchCgroup {
    /// Its path in the hierarchy, as memtrace names it (`/memtrace-bench-1234`).
    pub path: String,
    pub version: Version,
    dir: PathBuf,
    /// The directory of the cgroup this process came from.
    home: PathBuf,
    inside: bool,
}

impl BenchCgroup {
    /// Creates `/memtrace-bench-<pid>` at the top of `hierarchy` (on v2 with the memory
    /// controller enabled for the root's children).
    pub fn create(hierarchy: &Hierarchy) -> anyhow::Result<Self> {
        let proc_cgroup = Path::new("/proc/self/cgroup");
        let own = fs::read_to_string(proc_cgroup)
            .with_context(|| format!("reading {}", proc_cgroup.display()))?;
        let home_path = own_cgroup(&own, hierarchy.version).with_context(|| {
            format!(
                "{} names no {} memory cgroup for this process",
                proc_cgroup.display(),
                hierarchy.version
            )
        })?;
        let home = hierarchy.root.join(home_path.trim_start_matches('/'));

        if hierarchy.version == Version::V2 {
            let control = hierarchy.root.join("cgroup.subtree_control");
            let enabled = fs::read_to_string(&control)
                .with_context(|| format!("reading {}", control.display()))?;
            if !enabled.split_whitespace().any(|c| c == "memory") {
                fs::write(&control, "+memory").with_context(|| {
                    format!("enabling the memory controller in {}", control.display())
                })?;
            }
        }

        let name = format!("memtrace-bench-{}", process::id());
        let dir = hierarchy.root.join(&name);
        // A previous bench with the same pid that was killed outright leaves its (empty) cgroup.
        if dir.is_dir() {
            fs::remove_dir(&dir)
                .with_context(|| format!("removing the stale cgroup {}", dir.display()))?;
        }
        fs::create_dir(&dir).with_context(|| format!("creating the cgroup {}", dir.display()))?;
        Ok(Self {
            path: format!("/{name}"),
            version: hierarchy.version,
            dir,
            home,
            inside: false,
        })
    }

    /// Moves this process into the bench's cgroup.
    pub fn enter(&mut self) -> anyhow::Result<()> {
        move_self(&self.dir)?;
        self.inside = true;
        Ok(())
    }

    /// Moves this process back to the cgroup it came from.
    pub fn leave(&mut self) -> anyhow::Result<()> {
        if self.inside {
            move_self(&self.home)?;
            self.inside = false;
        }
        Ok(())
    }
}

impl Drop for BenchCgroup {
    fn drop(&mut self) {
        if let Err(error) = self.leave() {
            eprintln!("bench: {error:#}");
        }
        // Memory still charged to it (page cache) does not keep a cgroup from being removed;
        // the kernel frees the rest once the pages go.
        if let Err(error) = fs::remove_dir(&self.dir) {
            eprintln!(
                "bench: could not remove the cgroup {}: {error}; remove it with `rmdir {}`",
                self.dir.display(),
                self.dir.display()
            );
        }
    }
}

fn move_self(dir: &Path) -> anyhow::Result<()> {
    let procs = dir.join("cgroup.procs");
    if !dir.is_dir() {
        bail!("the cgroup {} is gone", dir.display());
    }
    fs::write(&procs, process::id().to_string())
        .with_context(|| format!("moving this process into {}", procs.display()))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::{Hierarchy, Version, own_cgroup};
    use crate::bench::mountinfo;

    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn a_hybrid_host_uses_the_v1_memory_hierarchy() {
        let found = Hierarchy::find(&mountinfo::parse(HYBRID), |_| "memory".into());
        assert_eq!(
            found,
            Some(Hierarchy {
                root: "/sys/fs/cgroup/memory".into(),
                version: Version::V1
            })
        );
    }

    #[test]
    fn a_pure_v2_host_needs_memory_in_its_controllers() {
        let mounts = mountinfo::parse("30 23 0:27 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n");
        let found = Hierarchy::find(&mounts, |_| "cpuset cpu io memory pids".into())
            .map(|h| (h.root, h.version));
        assert_eq!(
            found,
            Some((Path::new("/sys/fs/cgroup").into(), Version::V2))
        );
        assert_eq!(Hierarchy::find(&mounts, |_| "cpu io".into()), None);
    }

    #[test]
    fn reads_this_process_s_cgroup() {
        let proc_self = "9:name=systemd:/\n4:memory:/process_api/4f76\n0::/user.slice\n";
        assert_eq!(
            own_cgroup(proc_self, Version::V1),
            Some("/process_api/4f76")
        );
        assert_eq!(own_cgroup(proc_self, Version::V2), Some("/user.slice"));
        assert_eq!(own_cgroup("1:cpu:/\n", Version::V1), None);
    }
}
