//! How a file in the page cache is named, in every output: [`FileName`] and its `Display`.
//!
//! The kernel reads a file's names up to its filesystem's root once, when it first counts the
//! file; userspace maps the filesystem to where it is mounted (`attribution::files`). A file in
//! a container's overlay is on the host's disk under a layer directory: the path the container
//! sees is shown beside the host's. tmpfs/shmem files are memory, not reclaimable cache, and
//! say so; unlinked files say `(deleted)`; a file without a name says why.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::Device;

/// A file as outputs name it; also the "other files" row that sums what a per-file list cut.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FileName {
    /// The path on the host: the mount point joined with the path in the filesystem.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The path a container sees, for a file in an overlay layer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_path: Option<String>,
    /// In tmpfs/shmem (`/dev/shm`, a memory-backed `emptyDir`, memfd, System V shared memory): memory that
    /// reclaim can only swap, not drop.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub shmem: bool,
    /// Unlinked (`i_nlink == 0`): its pages stay while it is open or mapped.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deleted: bool,
    /// Why there is no path, or why the one shown is partial.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// This row sums what a list left out (`dev 0:0 inode 0`): that many files, plus the pages
    /// the kernel could not count per file (0 files: only those).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub other_files: Option<u64>,
}

impl FileName {
    /// The row that sums `files` files a list left out.
    #[must_use]
    pub fn other(files: u64) -> Self {
        Self {
            other_files: Some(files),
            ..Self::default()
        }
    }

    /// Nothing is known (a file from a trace recorded before names).
    #[must_use]
    pub fn is_unknown(&self) -> bool {
        *self == Self::default()
    }

    #[must_use]
    pub fn is_other(&self) -> bool {
        self.other_files.is_some()
    }

    /// The name with its device and inode, for files without a path.
    #[must_use]
    pub fn display(&self, device: Device, inode: u64) -> Named<'_> {
        Named {
            name: self,
            device,
            inode,
        }
    }
}

/// A [`FileName`] with what identifies the file when it has no path: what every output shows,
/// e.g. `/var/log/app.log`, `/usr/lib/libc.so.6 (host /var/lib/docker/overlay2/…/diff/usr/lib/libc.so.6)`,
/// `/dev/shm/cache (shmem, deleted)`, `dev 254:0 inode 12 (no dentry: …)`, `other files (37)`.
pub struct Named<'a> {
    name: &'a FileName,
    device: Device,
    inode: u64,
}

impl fmt::Display for Named<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.name;
        match (n.other_files, &n.note) {
            (Some(_), Some(note)) => return write!(f, "other files ({note})"),
            (Some(0), None) => return f.write_str("other files (pages not counted per file)"),
            (Some(1), None) => return f.write_str("other files (1 file)"),
            (Some(files), None) => return write!(f, "other files ({files} files)"),
            (None, _) => {}
        }
        match (&n.container_path, &n.path) {
            (Some(inside), Some(host)) => write!(f, "{inside} (host {host})")?,
            (None, Some(path)) => f.write_str(path)?,
            (Some(inside), None) => f.write_str(inside)?,
            (None, None) => write!(f, "dev {} inode {}", self.device, self.inode)?,
        }
        let mut marks: Vec<&str> = Vec::new();
        if n.shmem {
            marks.push("shmem");
        }
        if n.deleted {
            marks.push("deleted");
        }
        let note = match (&n.note, &n.path) {
            (Some(note), _) => Some(note.as_str()),
            (None, None) if n.container_path.is_none() => Some("name unknown"),
            _ => None,
        };
        if let Some(note) = note {
            marks.push(note);
        }
        if !marks.is_empty() {
            write!(f, " ({})", marks.join(", "))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEV: Device = Device::from_kernel(254 << 20);

    fn shown(name: &FileName) -> String {
        name.display(DEV, 12).to_string()
    }

    #[test]
    fn every_kind_of_name_reads_as_people_expect() {
        let path = |p: &str| FileName {
            path: Some(p.into()),
            ..FileName::default()
        };
        assert_eq!(shown(&path("/var/log/app.log")), "/var/log/app.log");
        let mut shm = path("/dev/shm/cache");
        shm.shmem = true;
        shm.deleted = true;
        assert_eq!(shown(&shm), "/dev/shm/cache (shmem, deleted)");
        let mut overlay = path("/var/lib/docker/overlay2/ab/diff/usr/lib/x.so");
        overlay.container_path = Some("/usr/lib/x.so".into());
        assert_eq!(
            shown(&overlay),
            "/usr/lib/x.so (host /var/lib/docker/overlay2/ab/diff/usr/lib/x.so)"
        );
        let unnamed = FileName {
            note: Some("no dentry: the kernel dropped its names".into()),
            ..FileName::default()
        };
        assert_eq!(
            shown(&unnamed),
            "dev 254:0 inode 12 (no dentry: the kernel dropped its names)"
        );
        assert_eq!(
            shown(&FileName::default()),
            "dev 254:0 inode 12 (name unknown)"
        );
        assert_eq!(shown(&FileName::other(37)), "other files (37 files)");
        assert_eq!(shown(&FileName::other(1)), "other files (1 file)");
        assert_eq!(
            shown(&FileName::other(0)),
            "other files (pages not counted per file)"
        );
    }

    #[test]
    fn json_leaves_out_what_is_not_so() {
        let name = FileName {
            path: Some("/a".into()),
            ..FileName::default()
        };
        assert_eq!(
            serde_json::to_string(&name).expect("json"),
            r#"{"path":"/a"}"#
        );
    }
}
