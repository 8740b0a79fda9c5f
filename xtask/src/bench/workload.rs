//! The two workloads, in Rust so that what is timed is the workload and nothing else (no shell,
//! no process start): slab churn in a tmpfs, and a cold read of a 1 GiB file from disk. Each
//! owns what it created and removes it when dropped.

use std::{
    fs::{self, File},
    io::{Read as _, Write as _},
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};
use memtrace_common::cgroup::MountInfo;

use crate::process;

/// Files created, then unlinked, per slab-churn run.
pub const SLAB_FILES: usize = 40_000;
/// The cold-read file's size.
pub const COLD_BYTES: u64 = 1 << 30;
/// The cold read's buffer.
const READ_BUFFER: usize = 1 << 20;

/// Which workload, by its report name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    SlabChurn,
    ColdRead,
}

impl Kind {
    pub const ALL: [Self; 2] = [Self::SlabChurn, Self::ColdRead];

    pub fn name(self) -> &'static str {
        match self {
            Self::SlabChurn => "slab churn",
            Self::ColdRead => "cold read",
        }
    }

    pub fn describe(self) -> String {
        match self {
            Self::SlabChurn => format!("create, then unlink {SLAB_FILES} empty files in a tmpfs"),
            Self::ColdRead => format!(
                "sync, drop the page cache, read a {} GiB file with a {} MiB buffer",
                COLD_BYTES >> 30,
                READ_BUFFER >> 20
            ),
        }
    }
}

/// Both workloads' files: a tmpfs mounted for the bench, and the cold-read file on disk.
pub struct Workloads {
    /// Mounted for as long as this lives.
    _tmpfs: Tmpfs,
    slab_files: Vec<PathBuf>,
    cold_file: ColdFile,
}

impl Workloads {
    /// Mounts the tmpfs in a new directory under the system's temporary directory, and writes
    /// the cold-read file in `disk_dir`, which must not be in memory (tmpfs, ramfs).
    pub fn prepare(disk_dir: &Path, mounts: &[MountInfo]) -> anyhow::Result<Self> {
        let tmpfs = Tmpfs::mount()?;
        let slab_files = (0..SLAB_FILES)
            .map(|i| tmpfs.dir.join(format!("f{i}")))
            .collect();
        let cold_file = ColdFile::write(disk_dir, mounts)?;
        Ok(Self {
            _tmpfs: tmpfs,
            slab_files,
            cold_file,
        })
    }

    /// What comes before a timed run and is not part of it: for the cold read, writing back
    /// dirty pages and dropping the clean ones, so the read comes from the disk.
    pub fn before(kind: Kind) -> anyhow::Result<()> {
        match kind {
            Kind::SlabChurn => Ok(()),
            Kind::ColdRead => drop_page_cache(),
        }
    }

    /// Runs `kind` once; this is what is timed.
    pub fn run(&self, kind: Kind) -> anyhow::Result<()> {
        match kind {
            Kind::SlabChurn => self.churn_slab(),
            Kind::ColdRead => self.cold_file.read(),
        }
    }

    /// Each create allocates a dentry, an inode and their bits from slab caches; each unlink
    /// frees them.
    fn churn_slab(&self) -> anyhow::Result<()> {
        for path in &self.slab_files {
            File::create(path).with_context(|| format!("creating {}", path.display()))?;
        }
        for path in &self.slab_files {
            fs::remove_file(path).with_context(|| format!("removing {}", path.display()))?;
        }
        Ok(())
    }
}

/// `sync; echo 1 > /proc/sys/vm/drop_caches`.
fn drop_page_cache() -> anyhow::Result<()> {
    process::output(&mut Command::new("sync")).context("writing back dirty pages (sync)")?;
    let drop_caches = "/proc/sys/vm/drop_caches";
    fs::write(drop_caches, "1").with_context(|| format!("writing 1 to {drop_caches}"))
}

/// A tmpfs mounted for the bench in a directory of its own, unmounted and removed when dropped.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    fn mount() -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!("memtrace-bench-{}", std::process::id()));
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        // 40 000 empty files need inodes, not blocks; the size only bounds a runaway.
        let mounted = process::output(
            Command::new("mount")
                .args([
                    "-t",
                    "tmpfs",
                    "-o",
                    "size=64m,nr_inodes=100k",
                    "memtrace-bench",
                ])
                .arg(&dir),
        );
        if let Err(error) = mounted {
            let _ = fs::remove_dir(&dir);
            return Err(error.context(format!("mounting a tmpfs on {}", dir.display())));
        }
        Ok(Self { dir })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        if let Err(error) = process::output(Command::new("umount").arg(&self.dir)) {
            eprintln!(
                "bench: {error:#}; unmount it with `umount {}`",
                self.dir.display()
            );
            return;
        }
        if let Err(error) = fs::remove_dir(&self.dir) {
            eprintln!("bench: could not remove {}: {error}", self.dir.display());
        }
    }
}

/// The mount that holds `path` (absolute, without symlinks): the last-mounted of the longest
/// mount points that are its ancestors.
fn mount_of<'a>(mounts: &'a [MountInfo], path: &Path) -> Option<&'a MountInfo> {
    mounts
        .iter()
        .filter(|mount| path.starts_with(&mount.mount_point))
        .fold(None, |best: Option<&MountInfo>, mount| match best {
            Some(best)
                if best.mount_point.components().count()
                    > mount.mount_point.components().count() =>
            {
                Some(best)
            }
            _ => Some(mount),
        })
}

/// The cold-read file, removed when dropped.
struct ColdFile {
    path: PathBuf,
}

impl ColdFile {
    fn write(dir: &Path, mounts: &[MountInfo]) -> anyhow::Result<Self> {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let dir = dir
            .canonicalize()
            .with_context(|| format!("resolving {}", dir.display()))?;
        if let Some(mount) = mount_of(mounts, &dir)
            && ["tmpfs", "ramfs"].contains(&mount.fs_type.as_str())
        {
            bail!(
                "{} is on a {} (mounted at {}), so a cold read of it would not touch a disk; \
                 point CARGO_TARGET_DIR at a disk filesystem",
                dir.display(),
                mount.fs_type,
                mount.mount_point.display()
            );
        }
        let path = dir.join("cold-read.bin");
        let file = Self { path };
        file.fill().with_context(|| {
            format!(
                "writing {} GiB to {}",
                COLD_BYTES >> 30,
                file.path.display()
            )
        })?;
        Ok(file)
    }

    fn fill(&self) -> anyhow::Result<()> {
        let mut out = File::create(&self.path)?;
        // Not zeros: nothing between here and the disk gets to skip or compress the data.
        let chunk: Vec<u8> = (0..READ_BUFFER)
            .map(|i| u8::try_from(i % 251).unwrap_or_default())
            .collect();
        for _ in 0..COLD_BYTES / chunk.len() as u64 {
            out.write_all(&chunk)?;
        }
        out.sync_all()?;
        Ok(())
    }

    fn read(&self) -> anyhow::Result<()> {
        let mut file =
            File::open(&self.path).with_context(|| format!("opening {}", self.path.display()))?;
        let mut buffer = vec![0; READ_BUFFER];
        let mut total = 0;
        loop {
            let n = file
                .read(&mut buffer)
                .with_context(|| format!("reading {}", self.path.display()))?;
            if n == 0 {
                break;
            }
            total += n as u64;
        }
        if total != COLD_BYTES {
            bail!(
                "read {total} bytes from {}, expected {COLD_BYTES}",
                self.path.display()
            );
        }
        Ok(())
    }
}

impl Drop for ColdFile {
    fn drop(&mut self) {
        if let Err(error) = fs::remove_file(&self.path) {
            eprintln!("bench: could not remove {}: {error}", self.path.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use memtrace_common::cgroup::MountInfo;

    use super::mount_of;

    #[test]
    fn finds_the_innermost_mount_holding_a_path() {
        let mounts: Vec<MountInfo> = [
            "23 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw",
            "35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory",
            "50 23 0:40 / /tmp/bench rw - tmpfs memtrace-bench rw,size=524288k",
            "51 23 0:41 / /tmp/bench rw - ramfs ramfs rw",
        ]
        .into_iter()
        .filter_map(|line| MountInfo::from_line(line).ok())
        .collect();
        let fs_type = |path: &str| mount_of(&mounts, Path::new(path)).map(|m| m.fs_type.as_str());
        assert_eq!(fs_type("/work/main/target/bench"), Some("ext4"));
        assert_eq!(fs_type("/sys/fs/cgroup/memory/x"), Some("cgroup"));
        assert_eq!(fs_type("/sys/fs/cgroupfoo"), Some("ext4"));
        assert_eq!(
            fs_type("/tmp/bench/f1"),
            Some("ramfs"),
            "the last mounted wins"
        );
        assert!(mount_of(&[], Path::new("/")).is_none());
    }
}
