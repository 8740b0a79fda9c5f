//! Files for page-cache scenarios: written to disk and evicted (cold, so the next read charges
//! them to the reader), and a tmpfs of the test's own.

use std::{
    fs,
    io::Write as _,
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
    process::Command,
};

/// A file of `mib` MiB in `dir` (on a disk filesystem, not tmpfs: its cache must be
/// droppable), written, synced and evicted, so the next read charges it to whoever reads it.
///
/// # Panics
///
/// When it cannot be written or evicted.
#[must_use]
pub fn cold_file(dir: &Path, name: &str, mib: usize) -> PathBuf {
    let file = dir.join(name);
    let chunk = vec![0x5au8; 1 << 20];
    let mut out = fs::File::create(&file).expect("create file");
    for _ in 0..mib {
        out.write_all(&chunk).expect("write file");
    }
    out.sync_all().expect("sync file");
    drop(out);
    drop_file_cache(&file);
    file
}

/// `posix_fadvise(POSIX_FADV_DONTNEED)` over the whole file: its clean pages leave the cache.
///
/// # Panics
///
/// When the file cannot be opened or the kernel refuses.
pub fn drop_file_cache(file: &Path) {
    let f = fs::File::open(file).expect("open");
    // SAFETY: a valid descriptor for the call; the call only advises the kernel.
    let rc = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    assert_eq!(rc, 0, "posix_fadvise(DONTNEED) on {}", file.display());
}

/// A tmpfs of its own (`size` as mount takes it, e.g. `512m`), unmounted when dropped.
pub struct Tmpfs(pub tempfile::TempDir);

impl Tmpfs {
    /// # Panics
    ///
    /// When it cannot be mounted.
    #[must_use]
    pub fn new(size: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let status = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size}"),
                "memtrace-test",
            ])
            .arg(dir.path())
            .status()
            .expect("run mount");
        assert!(status.success(), "cannot mount a tmpfs: {status}");
        Self(dir)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0.path()).status();
    }
}
