//! The memory cgroup the workloads run in, so that memtrace attributes what they do to a
//! container of their own, in the hierarchy memtrace finds (memtrace-common's
//! [`MemoryHierarchy`]).

use std::{
    fs,
    path::{Path, PathBuf},
    process,
};

use anyhow::{Context as _, bail};
use memtrace_common::cgroup::{CgroupVersion, MemoryHierarchy, memcg_path_of_pid};

/// A memory cgroup created for the bench, removed when dropped. This process moves into it for
/// each timed workload and back to where it was after, so that the tracers it starts, and
/// everything else it does, stay outside.
pub struct BenchCgroup {
    /// Its path in the hierarchy, as memtrace names it (`/memtrace-bench-1234`).
    pub path: String,
    pub version: CgroupVersion,
    dir: PathBuf,
    /// The directory of the cgroup this process came from.
    home: PathBuf,
    inside: bool,
}

impl BenchCgroup {
    /// Creates `/memtrace-bench-<pid>` at the top of `hierarchy` (on v2 with the memory
    /// controller enabled for the root's children).
    pub fn create(hierarchy: &MemoryHierarchy) -> anyhow::Result<Self> {
        let home_path = memcg_path_of_pid(process::id(), hierarchy.version).with_context(|| {
            format!(
                "/proc/self/cgroup names no {} memory cgroup for this process",
                hierarchy.version
            )
        })?;
        let home = hierarchy.dir(&home_path);

        if hierarchy.version == CgroupVersion::V2 {
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
