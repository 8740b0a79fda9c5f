//! Where the memory controller is mounted, a process's memory cgroup, and the memcg files
//! memtrace reads. One implementation for memtrace and for `cargo xtask bench` (which puts its
//! workloads in a memcg of their own and must find it the way memtrace does); mountinfo and
//! `/proc/PID/cgroup` are read by `procfs-core`.

use std::{
    fmt, fs, io,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    string::String,
    vec::Vec,
};

pub use procfs_core::process::MountInfo;
use procfs_core::{FromBufRead as _, ProcessCGroups};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CgroupVersion {
    V1,
    V2,
}

impl fmt::Display for CgroupVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::V1 => "v1",
            Self::V2 => "v2",
        })
    }
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

const MOUNTINFO: &str = "/proc/self/mountinfo";

/// This process's mounts, in mountinfo's order; lines `procfs-core` cannot parse are skipped.
/// Mount points keep mountinfo's octal escapes (`\040` for a space): `procfs-core` leaves them,
/// and no cgroup mount has one.
///
/// # Errors
///
/// When `/proc/self/mountinfo` cannot be read.
pub fn mounts() -> Result<Vec<MountInfo>, HierarchyError> {
    let text = fs::read_to_string(MOUNTINFO).map_err(|source| HierarchyError::Read {
        path: MOUNTINFO.into(),
        source,
    })?;
    Ok(parse_mounts(&text))
}

fn parse_mounts(mountinfo: &str) -> Vec<MountInfo> {
    mountinfo
        .lines()
        .filter_map(|line| MountInfo::from_line(line).ok())
        .collect()
}

impl MemoryHierarchy {
    /// Finds the memory controller's mount from `/proc/self/mountinfo`: a v1 `cgroup` mount
    /// with the `memory` option wins (hybrid hosts also have a cgroup2 mount without it), else a
    /// cgroup2 mount whose `cgroup.controllers` has `memory`.
    ///
    /// # Errors
    ///
    /// When mountinfo cannot be read or no mount carries the memory controller.
    pub fn discover() -> Result<Self, HierarchyError> {
        Self::find(&mounts()?, |root| {
            fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default()
        })
        .ok_or(HierarchyError::NotMounted)
    }

    /// The memory controller among `mounts`; `controllers` reads a cgroup2 root's
    /// `cgroup.controllers`.
    pub fn find(mounts: &[MountInfo], controllers: impl Fn(&Path) -> String) -> Option<Self> {
        let v1 = mounts
            .iter()
            .find(|m| m.fs_type == "cgroup" && m.super_options.contains_key("memory"));
        if let Some(mount) = v1 {
            return Some(Self {
                root: mount.mount_point.clone(),
                version: CgroupVersion::V1,
            });
        }
        mounts
            .iter()
            .find(|m| {
                m.fs_type == "cgroup2"
                    && controllers(&m.mount_point)
                        .split_whitespace()
                        .any(|c| c == "memory")
            })
            .map(|mount| Self {
                root: mount.mount_point.clone(),
                version: CgroupVersion::V2,
            })
    }

    /// The directory of a cgroup given its path relative to the hierarchy (`/a/b`).
    #[must_use]
    pub fn dir(&self, cgroup: &str) -> PathBuf {
        self.root.join(cgroup.trim_start_matches('/'))
    }

    /// Every cgroup that exists now, as (memcg id, path); cgroups that vanish during the walk
    /// are skipped.
    #[must_use]
    pub fn walk(&self) -> Vec<(u64, String)> {
        let mut found = Vec::new();
        let mut stack = std::vec![(self.root.clone(), String::from("/"))];
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
                        std::format!("/{name}")
                    } else {
                        std::format!("{path}/{name}")
                    };
                    stack.push((entry.path(), child));
                }
            }
        }
        found
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

    /// How often the memcg's page counter refused a charge: v1 [`v1_failcnt`], v2 the `max`
    /// line of `memory.events`. `None` when unreadable (the cgroup is gone).
    #[must_use]
    pub fn charge_failures(&self, cgroup: &str) -> Option<u64> {
        let dir = self.dir(cgroup);
        match self.version {
            CgroupVersion::V1 => v1_failcnt(&dir),
            CgroupVersion::V2 => fs::read_to_string(dir.join("memory.events"))
                .ok()?
                .lines()
                .find_map(|line| line.strip_prefix("max ")?.trim().parse().ok()),
        }
    }
}

/// The charges a v1 memcg's limits refused: `memory.failcnt` (the memory limit) plus, with swap
/// accounting, `memory.memsw.failcnt` (the memory+swap limit). The kernel tries the memory+swap
/// counter first, and a charge it refuses is counted there only: a container whose memory+swap
/// limit is its memory limit (`--memory-swap` equal to `--memory`: no swap) hits that one, and its
/// `memory.failcnt` stays 0 however often it is refused (on kernels that count it: 6.18 here
/// counted neither). `None` when unreadable (the cgroup is gone).
#[must_use]
pub fn v1_failcnt(dir: &Path) -> Option<u64> {
    let memory = read_u64(&dir.join("memory.failcnt"))?;
    Some(memory.saturating_add(read_u64(&dir.join("memory.memsw.failcnt")).unwrap_or(0)))
}

/// Reads a cgroupfs number; `max` (v2's "unlimited") and errors are `None`.
#[must_use]
pub fn read_u64(path: &Path) -> Option<u64> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The memory cgroup path of a live process from `/proc/PID/cgroup` (v1 `N:memory:/path` or,
/// with only v2, `0::/path`).
#[must_use]
pub fn memcg_path_of_pid(pid: u32, version: CgroupVersion) -> Option<String> {
    let text = fs::read(std::format!("/proc/{pid}/cgroup")).ok()?;
    memcg_path_from_proc(&text, version)
}

fn memcg_path_from_proc(text: &[u8], version: CgroupVersion) -> Option<String> {
    ProcessCGroups::from_buf_read(text)
        .ok()?
        .into_iter()
        .find(|cgroup| match version {
            CgroupVersion::V1 => cgroup.controllers.iter().any(|c| c == "memory"),
            CgroupVersion::V2 => cgroup.hierarchy == 0 && cgroup.controllers.is_empty(),
        })
        .map(|cgroup| cgroup.pathname)
}

#[cfg(test)]
mod tests {
    use std::{fs, path::Path};

    use super::{CgroupVersion, MemoryHierarchy, memcg_path_from_proc, parse_mounts};

    const HYBRID: &str = "\
23 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
garbage
";

    #[test]
    fn a_hybrid_host_uses_the_v1_memory_hierarchy() {
        let mounts = parse_mounts(HYBRID);
        assert_eq!(mounts.len(), 5, "the garbage line is skipped");
        assert_eq!(
            MemoryHierarchy::find(&mounts, |_| "memory".into()),
            Some(MemoryHierarchy {
                root: "/sys/fs/cgroup/memory".into(),
                version: CgroupVersion::V1
            })
        );
    }

    #[test]
    fn a_pure_v2_host_needs_memory_in_its_controllers() {
        let mounts =
            parse_mounts("30 23 0:27 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n");
        let found = MemoryHierarchy::find(&mounts, |_| "cpuset cpu io memory pids".into());
        assert_eq!(
            found.map(|h| (h.root, h.version)),
            Some((Path::new("/sys/fs/cgroup").into(), CgroupVersion::V2))
        );
        assert_eq!(MemoryHierarchy::find(&mounts, |_| "cpu io".into()), None);
        assert_eq!(
            MemoryHierarchy::find(&parse_mounts("garbage\n\n - \n"), |_| "memory".into()),
            None
        );
    }

    #[test]
    fn reads_a_process_s_memory_cgroup() {
        let proc_cgroup =
            b"12:pids:/x\n9:name=systemd:/\n4:memory:/kubepods/pod1\n0::/user.slice\n";
        assert_eq!(
            memcg_path_from_proc(proc_cgroup, CgroupVersion::V1).as_deref(),
            Some("/kubepods/pod1")
        );
        assert_eq!(
            memcg_path_from_proc(proc_cgroup, CgroupVersion::V2).as_deref(),
            Some("/user.slice")
        );
        assert_eq!(memcg_path_from_proc(b"1:cpu:/\n", CgroupVersion::V1), None);
    }

    #[test]
    fn limits_read_from_cgroupfs_files() -> std::io::Result<()> {
        let root = tempfile::tempdir()?;
        fs::create_dir(root.path().join("x"))?;
        fs::write(root.path().join("x/memory.max"), "67108864\n")?;
        fs::write(root.path().join("memory.max"), "max\n")?;
        let h = MemoryHierarchy {
            root: root.path().to_path_buf(),
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
        )?;
        assert_eq!(v1.limit_bytes("/"), None, "v1 'unlimited' is not a limit");
        Ok(())
    }

    #[test]
    fn v1_charge_failures_count_both_limits_refusals() -> std::io::Result<()> {
        let root = tempfile::tempdir()?;
        let h = MemoryHierarchy {
            root: root.path().to_path_buf(),
            version: CgroupVersion::V1,
        };
        for (dir, memory, memsw) in [("noswap", "0", Some("7")), ("plain", "3", None)] {
            fs::create_dir(root.path().join(dir))?;
            fs::write(root.path().join(dir).join("memory.failcnt"), memory)?;
            if let Some(memsw) = memsw {
                fs::write(root.path().join(dir).join("memory.memsw.failcnt"), memsw)?;
            }
        }
        assert_eq!(
            h.charge_failures("/noswap"),
            Some(7),
            "refused at memory+swap"
        );
        assert_eq!(h.charge_failures("/plain"), Some(3), "no swap accounting");
        assert_eq!(h.charge_failures("/gone"), None);
        Ok(())
    }
}
