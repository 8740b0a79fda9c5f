//! Names page-cache files: the kernel sends a file's names up to its filesystem's root once
//! (`FilePath`, when it first counts the file); this keeps them per (device, inode), within a
//! bound, and makes them paths people know: the filesystem's mount point from
//! `/proc/self/mountinfo`, and for a file in a container's overlay layer the path the container
//! sees.

use std::{
    collections::{HashMap, VecDeque},
    fs,
    path::PathBuf,
    time::{Duration, Instant},
};

use memtrace_common::{
    FilePath, InodeId,
    aggregate::{FILE_PATH_DEPTH, FILE_PATH_NAME},
};

use crate::event::{Device, FileName};

/// Files whose names are kept: past this the oldest name goes (and its `INODE_IDS` entries,
/// so that the kernel sends its path again if it counts the file again).
const KEPT: usize = 65_536;
/// How long the name of a deleted file is kept after the kernel last counted its pages. A
/// deleted file's pages go when its last user closes it, and it gets no new ones unless still
/// open and written: a node that writes and deletes files all day (logs rotated, temporary
/// files, builds) would otherwise fill the table with the names of files that are gone, and
/// memtrace's memory with it (a soak with 100 such files a second grew it by 14 MB in ten
/// minutes).
const DELETED_KEPT_NS: u64 = 30_000_000_000;
/// How long the name of any file is kept after the kernel last counted its pages. Most files
/// whose inodes the kernel frees are seen go: another file's pages are counted under their
/// `address_space` pointer. This bounds the table for those whose memory the kernel used for
/// something else, and for live files read once (a build reads and writes thousands a
/// minute). A file counted again after this is named again: its `INODE_IDS` entries are
/// deleted with its name, so the kernel sends its path anew (one walk up its dentries).
const IDLE_KEPT_NS: u64 = 60_000_000_000;
/// How often the table is looked through for names to forget.
const SWEEP_EVERY_NS: u64 = 10_000_000_000;
/// How long a name whose `INODE_IDS` entries were to be deleted waits for the drain that
/// confirms it ([`FileNames::unkeyed`]) before it goes anyway.
const LEAVING_NS: u64 = 60_000_000_000;
const MOUNTINFO: &str = "/proc/self/mountinfo";
/// The block devices by `MAJOR:MINOR`, each with a `uevent` that says its `DEVNAME`.
const SYS_DEV_BLOCK: &str = "/sys/dev/block";
/// How old the mounts may be when a new file comes: containers mount their overlays as they
/// start.
const MOUNTS_FRESH: Duration = Duration::from_secs(5);

/// What the kernel said of a file, as a path in its filesystem.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Known {
    /// From the filesystem's root, `/`-separated; `None` when the file had no dentry.
    in_fs: Option<String>,
    truncated: bool,
    unhashed: bool,
    /// A name may be longer than the kernel side reads ([`FILE_PATH_NAME`] bytes).
    name_cut: bool,
}

/// A mounted filesystem, from one line of mountinfo.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Mount {
    device: Device,
    /// The directory of the filesystem mounted there (`/` unless a bind mount).
    root: String,
    point: String,
}

/// (device, inode): a file.
type File = (u32, u64);

/// A file's name, and when its pages were last counted.
#[derive(Debug)]
struct Entry {
    known: Known,
    /// Of this entry: `order` may still hold the key of an earlier entry for the same file.
    seq: u64,
    /// The kernel said the file was deleted (at a count, or its path was unhashed).
    deleted: bool,
    /// The interval's timestamp when the kernel last counted the file's pages.
    counted_ns: u64,
    /// The kernel's `INODE_IDS` keys (`address_space` pointers) drains found naming this file,
    /// and that no drain found naming another file since: where the kernel may still say it
    /// sent the file's path.
    keys: Vec<u64>,
    /// Forgotten at this time: its `INODE_IDS` entries are deleted before the next drain, and
    /// the name goes once that drain did not count the file (a program may have counted it,
    /// without sending its path, just before the delete).
    leaving_ns: Option<u64>,
}

/// How many names went, and why (for the debug log).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Forgotten {
    /// Another file took the last `INODE_IDS` key that named the file: its inode was freed.
    pub freed: u64,
    /// Of those, files the kernel never said were deleted.
    pub freed_undeleted: u64,
    /// Named, but no drain found the file under a key: the key the kernel sent its path for
    /// named another file by the drain (the file lived less than an interval).
    pub never_keyed: u64,
    /// Deleted, and not counted for 30 s.
    pub deleted: u64,
    /// Not counted for a minute.
    pub idle: u64,
    /// The oldest, past the bound.
    pub overflow: u64,
}

/// A block device found by its number.
struct BlockDevice {
    /// Its name under `/dev` (`vda`, `nvme0n1`).
    name: String,
    device: Device,
}

/// Files' names, resolved once per file.
pub struct FileNames {
    known: HashMap<File, Entry>,
    /// Oldest first, for the [`KEPT`] bound: (file, the entry's `seq`).
    order: VecDeque<(File, u64)>,
    /// The named file each `INODE_IDS` key named at the last drain that counted under it.
    by_key: HashMap<u64, File>,
    /// `INODE_IDS` entries the next drain deletes: (key, the file it must still name).
    unkeyed: Vec<(u64, InodeId)>,
    /// Files named since the last drain, and those named the drain before and found under no
    /// key by it: (file, the entry's `seq`). A path can come a drain before its key's counts
    /// (a program sends it after the switch of halves, before the paths are read).
    named: Vec<(File, u64)>,
    named_before: Vec<(File, u64)>,
    next_seq: u64,
    /// The timestamp of the latest interval counted.
    now_ns: u64,
    /// When the table was last looked through for names to forget.
    swept_ns: u64,
    forgotten: Forgotten,
    mounts: Vec<Mount>,
    /// Overlay layer directories (`lowerdir`, `upperdir`) of the mounted overlays: below one, a
    /// file is at the path a container sees.
    layers: Vec<String>,
    /// Devices mountinfo did not list when last read: it is read again for a new one.
    unmounted: Vec<Device>,
    mountinfo: String,
    read_at: Instant,
    /// Where block devices are listed ([`SYS_DEV_BLOCK`]), for a block device's own page cache.
    block_devices: PathBuf,
}

impl Default for FileNames {
    fn default() -> Self {
        Self::new(MOUNTINFO)
    }
}

impl FileNames {
    /// Files named so far (at most 65 536 are kept).
    #[must_use]
    pub fn count(&self) -> usize {
        self.known.len()
    }

    /// Names forgotten so far, by why.
    #[must_use]
    pub fn forgotten(&self) -> Forgotten {
        self.forgotten
    }

    #[must_use]
    pub fn new(mountinfo: &str) -> Self {
        let mut names = Self {
            known: HashMap::new(),
            order: VecDeque::new(),
            by_key: HashMap::new(),
            unkeyed: Vec::new(),
            named: Vec::new(),
            named_before: Vec::new(),
            next_seq: 0,
            now_ns: 0,
            swept_ns: 0,
            forgotten: Forgotten::default(),
            mounts: Vec::new(),
            layers: Vec::new(),
            unmounted: Vec::new(),
            mountinfo: mountinfo.to_owned(),
            read_at: Instant::now(),
            block_devices: PathBuf::from(SYS_DEV_BLOCK),
        };
        names.read_mounts();
        names
    }

    /// Keeps what the kernel sent of a file.
    pub fn learn(&mut self, path: &FilePath) {
        if self.read_at.elapsed() >= MOUNTS_FRESH {
            self.read_mounts();
        }
        let file = (path.id.dev, path.id.ino);
        let depth = (path.depth as usize).min(FILE_PATH_DEPTH);
        let in_fs = (path.flags & FilePath::NO_DENTRY == 0).then(|| {
            let mut s = String::new();
            for level in (0..depth).rev() {
                s.push('/');
                s.push_str(&String::from_utf8_lossy(path.name(level)));
            }
            if s.is_empty() {
                s.push('/');
            }
            s
        });
        let known = Known {
            in_fs,
            truncated: path.flags & FilePath::TRUNCATED != 0,
            unhashed: path.flags & FilePath::UNHASHED != 0,
            name_cut: path.flags & FilePath::NAME_CUT != 0,
        };
        let seq = self.next_seq;
        self.next_seq += 1;
        // The same file again (its entries deleted, or a new file where a deleted one was):
        // the keys that name it stay its own; the old entry's place in `order` no longer
        // matches its `seq`.
        let keys = self
            .known
            .get_mut(&file)
            .map(|e| std::mem::take(&mut e.keys))
            .unwrap_or_default();
        let entry = Entry {
            known,
            seq,
            deleted: known_deleted(path),
            counted_ns: self.now_ns,
            keys,
            leaving_ns: None,
        };
        self.known.insert(file, entry);
        self.order.push_back((file, seq));
        self.named.push((file, seq));
        while self.known.len() > KEPT {
            let Some((old, seq)) = self.order.pop_front() else {
                break;
            };
            if self.known.get(&old).is_some_and(|e| e.seq == seq) {
                self.forgotten.overflow += 1;
                self.unkey(old);
                self.remove(old);
            }
        }
    }

    /// The kernel counted these files' pages in the interval that ended at `timestamp_ns`,
    /// each under its `INODE_IDS` key: their names stay (see [`FileNames::forget`]). A key
    /// that named another file before says that file's inode was freed: its name goes with
    /// its last key.
    pub fn counted(&mut self, timestamp_ns: u64, files: impl IntoIterator<Item = (u64, InodeId)>) {
        self.now_ns = self.now_ns.max(timestamp_ns);
        let mut taken = Vec::new();
        for (key, id) in files {
            let file = (id.dev, id.ino);
            let Some(entry) = self.known.get_mut(&file) else {
                if let Some(old) = self.by_key.remove(&key) {
                    taken.push((key, old));
                }
                continue;
            };
            entry.counted_ns = self.now_ns;
            entry.leaving_ns = None;
            entry.deleted |= id.flags & InodeId::UNLINKED != 0;
            if !entry.keys.contains(&key) {
                entry.keys.push(key);
            }
            if let Some(old) = self.by_key.insert(key, file)
                && old != file
            {
                taken.push((key, old));
            }
        }
        let unkeyed = |names: &Self, (file, seq): &(File, u64)| {
            names
                .known
                .get(file)
                .is_some_and(|e| e.seq == *seq && e.keys.is_empty())
        };
        let named_before = std::mem::take(&mut self.named_before);
        for named in named_before {
            if unkeyed(self, &named) {
                self.forgotten.never_keyed += 1;
                self.remove(named.0);
            }
        }
        let mut named = std::mem::take(&mut self.named);
        named.retain(|n| unkeyed(self, n));
        self.named_before = named;
        for (key, old) in taken {
            let Some(entry) = self.known.get_mut(&old) else {
                continue;
            };
            entry.keys.retain(|&k| k != key);
            if entry.keys.is_empty() {
                self.forgotten.freed += 1;
                if !entry.deleted {
                    self.forgotten.freed_undeleted += 1;
                }
                self.remove(old);
            }
        }
    }

    /// The drain that just came deleted these `INODE_IDS` entries first (what
    /// [`FileNames::unkeyed`] gave): the names still leaving, not counted by it, go.
    pub fn unkeyed_by_drain(&mut self, entries: &[(u64, InodeId)]) {
        for (_, id) in entries {
            let file = (id.dev, id.ino);
            if self
                .known
                .get(&file)
                .is_some_and(|e| e.leaving_ns.is_some())
            {
                self.remove(file);
            }
        }
    }

    /// The `INODE_IDS` entries of names forgotten since the last call, for the next drain to
    /// delete: (key, the file the entry must still name).
    pub fn unkeyed(&mut self) -> Vec<(u64, InodeId)> {
        std::mem::take(&mut self.unkeyed)
    }

    /// Forgets the names of deleted files the kernel has not counted for 30 s and of any file
    /// not counted for a minute, and gives the memory of a table that shrank back to the
    /// allocator.
    pub fn forget(&mut self) {
        if self.now_ns.saturating_sub(self.swept_ns) < SWEEP_EVERY_NS {
            return;
        }
        self.swept_ns = self.now_ns;
        let now = self.now_ns;
        let mut gone = Vec::new();
        for (&file, entry) in &mut self.known {
            if let Some(since) = entry.leaving_ns {
                // The drain that deletes its entries never came back (or not through
                // `unkeyed_by_drain`).
                if now.saturating_sub(since) >= LEAVING_NS {
                    gone.push(file);
                }
                continue;
            }
            let idle = now.saturating_sub(entry.counted_ns);
            if entry.deleted && idle >= DELETED_KEPT_NS {
                self.forgotten.deleted += 1;
            } else if idle >= IDLE_KEPT_NS {
                self.forgotten.idle += 1;
            } else {
                continue;
            }
            if entry.keys.is_empty() {
                gone.push(file);
            } else {
                entry.leaving_ns = Some(now);
                self.unkeyed.extend(entry.keys.iter().map(|&key| {
                    let (dev, ino) = file;
                    (key, InodeId { ino, dev, flags: 0 })
                }));
            }
        }
        for file in gone {
            self.remove(file);
        }
        // `order` keeps the keys of forgotten entries until they reach its front: drop them
        // when they are most of it.
        if self.order.len() > 2 * self.known.len() + 1024 {
            let known = &self.known;
            self.order
                .retain(|(file, seq)| known.get(file).is_some_and(|e| e.seq == *seq));
        }
        if self.known.capacity() > 4 * self.known.len() + 1024 {
            self.known.shrink_to_fit();
            self.order.shrink_to_fit();
            self.by_key.shrink_to_fit();
            // glibc keeps freed memory below the top of its heaps: without this, memtrace's
            // RSS stays at the table's largest (a burst of files, such as a build, named).
            #[cfg(target_env = "gnu")]
            // SAFETY: malloc_trim only gives free pages of the allocator back to the kernel.
            unsafe {
                libc::malloc_trim(0);
            }
        }
    }

    /// The file's `INODE_IDS` entries go with the next drain.
    fn unkey(&mut self, file: File) {
        if let Some(entry) = self.known.get(&file) {
            let (dev, ino) = file;
            self.unkeyed.extend(
                entry
                    .keys
                    .iter()
                    .map(|&key| (key, InodeId { ino, dev, flags: 0 })),
            );
        }
    }

    /// Forgets a file's name, and the keys that named it.
    fn remove(&mut self, file: File) {
        let Some(entry) = self.known.remove(&file) else {
            return;
        };
        for key in entry.keys {
            if self.by_key.get(&key) == Some(&file) {
                self.by_key.remove(&key);
            }
        }
    }

    /// The name of a file the kernel counted, with its state this interval.
    pub fn name(&mut self, id: Option<InodeId>) -> FileName {
        let Some(id) = id else {
            return FileName {
                note: Some("the kernel could not read its inode".into()),
                ..FileName::default()
            };
        };
        let mut name = FileName {
            shmem: id.flags & InodeId::SHMEM != 0,
            deleted: id.flags & InodeId::UNLINKED != 0,
            ..FileName::default()
        };
        let Some(known) = self.known.get(&(id.dev, id.ino)).map(|e| e.known.clone()) else {
            name.note = Some(
                if id.flags & InodeId::PATH_SENT == 0 {
                    "path not read yet: the kernel's path buffer was full"
                } else if name.deleted {
                    "path forgotten: a deleted file whose pages were not counted for 30 s"
                } else {
                    "path forgotten: more files than memtrace keeps names of"
                }
                .into(),
            );
            return name;
        };
        name.deleted |= known.unhashed;
        let Some(in_fs) = known.in_fs else {
            name.note = Some(
                if name.shmem {
                    "no name: System V shared memory or an unlinked file whose names the kernel dropped"
                } else {
                    "no dentry: the kernel dropped the file's names"
                }
                .into(),
            );
            return name;
        };
        let device = Device::from_kernel(id.dev);
        let prefix = if known.truncated { "…" } else { "" };
        if known.truncated {
            name.note = Some(format!(
                "more than {FILE_PATH_DEPTH} directories deep: the start of the path is cut"
            ));
        }
        match self.host_path(device, &in_fs) {
            Some(host) if !known.truncated => {
                name.container_path = self.container_path(&host);
                name.path = Some(host);
            }
            _ if in_fs == "/"
                && let Some(block) = self.block_device(id.ino) =>
            {
                // Not deleted: the device's inode was never linked.
                name.deleted = false;
                name.path = Some(format!("/dev/{}", block.name));
                name.note = Some(format!(
                    "block device {}: filesystem metadata (directories, inodes, journal) cached \
                     through the device",
                    block.device
                ));
            }
            _ => {
                name.container_path = container_part(&in_fs);
                name.path = Some(format!("{prefix}{in_fs}"));
                if !known.truncated {
                    name.note = Some(format!(
                        "path in filesystem {device}, which is not mounted where memtrace runs"
                    ));
                }
            }
        }
        if known.name_cut && name.note.is_none() {
            name.note = Some(format!(
                "a name in the path fills the {} bytes read of each: it may be longer, cut there",
                FILE_PATH_NAME - 1
            ));
        }
        name
    }

    /// The block device whose own page cache a file of the kernel's block-device pseudo
    /// filesystem is: its inode number is the device's number as the kernel encodes it
    /// (`major << 20 | minor`), and the device must exist. Filesystems read their metadata
    /// (ext4's directories, inode tables and journal) through it, charged to whoever reads.
    fn block_device(&self, ino: u64) -> Option<BlockDevice> {
        let device = Device::from_kernel(u32::try_from(ino).ok()?);
        let uevent =
            fs::read_to_string(self.block_devices.join(device.to_string()).join("uevent")).ok()?;
        let name = uevent
            .lines()
            .find_map(|line| line.strip_prefix("DEVNAME="))?
            .to_owned();
        Some(BlockDevice { name, device })
    }

    /// As [`Self::new`], with the block devices listed under `dir` instead of [`SYS_DEV_BLOCK`].
    #[cfg(test)]
    fn with_block_devices(mut self, dir: &std::path::Path) -> Self {
        self.block_devices = dir.to_owned();
        self
    }

    /// The path on the host of a path in `device`'s filesystem, from the mount that shows it.
    fn host_path(&mut self, device: Device, in_fs: &str) -> Option<String> {
        if !self.mounts.iter().any(|m| m.device == device) && !self.unmounted.contains(&device) {
            // Mounted since start-up, or never: read mountinfo once more for this device.
            self.read_mounts();
            if !self.mounts.iter().any(|m| m.device == device) {
                self.unmounted.push(device);
            }
        }
        self.mounts
            .iter()
            .filter(|m| m.device == device)
            .filter_map(|m| {
                let rest = below(in_fs, &m.root)?;
                Some((m.root.len(), join(&m.point, rest)))
            })
            .max_by_key(|(root_len, _)| *root_len)
            .map(|(_, path)| path)
    }

    /// The path a container sees of a host path under an overlay layer.
    fn container_path(&self, host: &str) -> Option<String> {
        self.layers
            .iter()
            .find_map(|layer| below(host, layer).map(|rest| join("/", rest)))
            .or_else(|| container_part(host))
    }

    fn read_mounts(&mut self) {
        self.read_at = Instant::now();
        let Ok(text) = fs::read_to_string(&self.mountinfo) else {
            return;
        };
        self.mounts.clear();
        self.layers.clear();
        for line in text.lines() {
            if let Some((mount, layers)) = parse_mountinfo_line(line) {
                self.mounts.push(mount);
                self.layers.extend(layers);
            }
        }
        self.layers.sort();
        self.layers.dedup();
        self.unmounted.clear();
    }
}

/// `path` relative to `dir` (`""` when equal), when it is `dir` or below it.
fn below<'a>(path: &'a str, dir: &str) -> Option<&'a str> {
    if dir == "/" {
        return Some(path.trim_start_matches('/'));
    }
    let rest = path.strip_prefix(dir.trim_end_matches('/'))?;
    if rest.is_empty() {
        Some("")
    } else {
        rest.strip_prefix('/')
    }
}

fn join(dir: &str, rest: &str) -> String {
    match (dir.trim_end_matches('/'), rest) {
        ("", "") => "/".to_owned(),
        (dir, "") => dir.to_owned(),
        (dir, rest) => format!("{dir}/{rest}"),
    }
}

/// The path inside a container image layer on the host's disk, by the runtimes' layouts:
/// Docker's `…/overlay2/<id>/diff/…`, containerd's `…/snapshots/<n>/fs/…`, and podman's and
/// CRI-O's (containers/storage) `…/overlay/<64 hex digits>/diff/…`. A layer is still named so
/// once its container is gone and the overlay mount that listed it with it.
fn container_part(host: &str) -> Option<String> {
    let layer_id = |id: &str| id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit());
    let parts: Vec<&str> = host.split('/').collect();
    for (i, window) in parts.windows(3).enumerate() {
        let inside = match window {
            ["overlay2", _, "diff"] | ["snapshots", _, "fs"] => &parts[i + 3..],
            ["overlay", id, "diff"] if layer_id(id) => &parts[i + 3..],
            _ => continue,
        };
        return Some(format!("/{}", inside.join("/")));
    }
    None
}

/// A mount, and the layer directories of an overlay: fields are `id parent major:minor root
/// mount_point options [optional…] - fstype source super_options`, with `\NNN` octal escapes.
fn parse_mountinfo_line(line: &str) -> Option<(Mount, Vec<String>)> {
    let fields: Vec<&str> = line.split(' ').collect();
    let (major, minor) = fields.get(2)?.split_once(':')?;
    let device = Device {
        major: major.parse().ok()?,
        minor: minor.parse().ok()?,
    };
    let root = unescape(fields.get(3)?);
    let point = unescape(fields.get(4)?);
    let dash = fields.iter().position(|f| *f == "-")?;
    let fstype = *fields.get(dash + 1)?;
    let mut layers = Vec::new();
    if fstype == "overlay"
        && let Some(options) = fields.get(dash + 3)
    {
        for option in options.split(',') {
            if let Some(dirs) = option
                .strip_prefix("lowerdir=")
                .or_else(|| option.strip_prefix("upperdir="))
                .or_else(|| option.strip_prefix("lowerdir+="))
            {
                layers.extend(dirs.split(':').filter(|d| !d.is_empty()).map(unescape));
            }
        }
    }
    Some((
        Mount {
            device,
            root,
            point,
        },
        layers,
    ))
}

/// The kernel said the file was deleted when it sent its path.
fn known_deleted(path: &FilePath) -> bool {
    path.flags & FilePath::UNHASHED != 0 || path.id.flags & InodeId::UNLINKED != 0
}

/// mountinfo's `\040`-style escapes (space, tab, newline, backslash).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && let Some(code) = field
                .get(i + 1..i + 4)
                .and_then(|o| u8::from_str_radix(o, 8).ok())
        {
            out.push(code);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO_TEXT: &str = "\
22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda1 rw
30 22 0:25 / /dev/shm rw,nosuid,nodev shared:5 - tmpfs tmpfs rw
31 22 254:0 /srv/data /mnt/my\\040data rw shared:1 - ext4 /dev/vda1 rw
40 22 0:50 / /var/lib/docker/overlay2/abc/merged rw - overlay overlay rw,lowerdir=/var/lib/docker/overlay2/l/X:/var/lib/docker/overlay2/l/Y,upperdir=/var/lib/docker/overlay2/abc/diff,workdir=/var/lib/docker/overlay2/abc/work
";

    fn names() -> FileNames {
        // One file per test: tests run in parallel, and a file being written reads short.
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!("memtrace-files-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("dir");
        let nth = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let file = dir.join(format!("mountinfo-{nth}"));
        fs::write(&file, MOUNTINFO_TEXT).expect("write");
        FileNames::new(file.to_str().expect("utf-8"))
    }

    fn path(dev: u32, ino: u64, leaf_first: &[&str], flags: u32) -> FilePath {
        let mut p = FilePath {
            id: InodeId {
                ino,
                dev,
                flags: InodeId::PATH_SENT,
            },
            depth: u32::try_from(leaf_first.len()).expect("small"),
            flags,
            names: [0; FILE_PATH_DEPTH * FILE_PATH_NAME],
        };
        for (level, name) in leaf_first.iter().enumerate() {
            p.names[level * FILE_PATH_NAME..][..name.len()].copy_from_slice(name.as_bytes());
        }
        p
    }

    const DISK: u32 = 254 << 20;
    const SHM: u32 = 25;

    #[test]
    fn a_file_on_the_root_filesystem_is_its_path() {
        let mut n = names();
        n.learn(&path(DISK, 7, &["app.log", "log", "var"], 0));
        let name = n.name(Some(path(DISK, 7, &[], 0).id));
        assert_eq!(name.path.as_deref(), Some("/var/log/app.log"));
        assert_eq!(name.container_path, None);
        assert_eq!(name.note, None);
    }

    #[test]
    fn tmpfs_files_are_shmem_and_deleted_ones_say_so() {
        let mut n = names();
        n.learn(&path(SHM, 3, &["cache"], 0));
        let mut id = path(SHM, 3, &[], 0).id;
        id.flags |= InodeId::SHMEM | InodeId::UNLINKED;
        let name = n.name(Some(id));
        assert_eq!(name.path.as_deref(), Some("/dev/shm/cache"));
        assert!(name.shmem && name.deleted, "{name:?}");
    }

    const S: u64 = 1_000_000_000;

    fn id(ino: u64, flags: u32) -> InodeId {
        InodeId {
            ino,
            dev: DISK,
            flags: InodeId::PATH_SENT | flags,
        }
    }

    /// What [`FileNames::unkeyed`] gives for the file: flags are not compared.
    fn entry(key: u64, ino: u64) -> (u64, InodeId) {
        (
            key,
            InodeId {
                ino,
                dev: DISK,
                flags: 0,
            },
        )
    }

    #[test]
    fn deleted_files_are_forgotten_once_not_counted_for_a_while() {
        let mut n = names();
        n.counted(100 * S, []);
        n.learn(&path(DISK, 1, &["kept"], 0));
        n.learn(&path(DISK, 2, &["gone"], 0));
        n.learn(&path(DISK, 3, &["still-open"], 0));
        n.learn(&path(DISK, 4, &["unhashed"], FilePath::UNHASHED));
        n.counted(
            101 * S,
            [
                (0x10, id(1, 0)),
                (0x20, id(2, InodeId::UNLINKED)),
                (0x30, id(3, InodeId::UNLINKED)),
            ],
        );
        n.forget();
        assert_eq!(n.count(), 4);
        assert_eq!(n.unkeyed(), []);
        // Still open and written: counted again before its 30 s are up.
        n.counted(120 * S, [(0x30, id(3, InodeId::UNLINKED))]);
        n.counted(131 * S, [(0x10, id(1, 0))]);
        n.forget();
        // The unhashed file was never counted under a key: no kernel entry names it.
        assert_eq!(n.count(), 3, "the unhashed file is gone");
        assert_eq!(n.unkeyed(), [entry(0x20, 2)]);
        // Kept until the drain that deleted its kernel entry says it did not count the file.
        assert_eq!(n.name(Some(id(2, 0))).path.as_deref(), Some("/gone"));
        n.counted(132 * S, []);
        n.unkeyed_by_drain(&[entry(0x20, 2)]);
        assert_eq!(n.count(), 2);
        let gone = n.name(Some(id(2, InodeId::UNLINKED)));
        assert_eq!(gone.path, None);
        assert!(
            gone.note.as_deref().is_some_and(|t| t.contains("deleted")),
            "{gone:?}"
        );
        n.counted(161 * S, [(0x10, id(1, 0))]);
        n.forget();
        assert_eq!(n.unkeyed(), [entry(0x30, 3)]);
        // A program counted it, without sending its path, just before the delete: it stays.
        n.counted(162 * S, [(0x30, id(3, InodeId::UNLINKED))]);
        n.unkeyed_by_drain(&[entry(0x30, 3)]);
        assert_eq!(
            n.name(Some(id(3, InodeId::UNLINKED))).path.as_deref(),
            Some("/still-open")
        );
        assert_eq!(n.name(Some(id(1, 0))).path.as_deref(), Some("/kept"));
        // A new file where a forgotten one was is named again.
        n.learn(&path(DISK, 2, &["new"], 0));
        n.counted(170 * S, [(0x20, id(2, 0))]);
        n.forget();
        assert_eq!(n.name(Some(id(2, 0))).path.as_deref(), Some("/new"));
        assert_eq!(n.count(), 3);
        let forgotten = n.forgotten();
        assert_eq!(
            (forgotten.deleted, forgotten.never_keyed, forgotten.idle),
            (2, 1, 0),
            "{forgotten:?}"
        );
    }

    #[test]
    fn a_file_whose_key_another_file_took_is_forgotten() {
        let mut n = names();
        n.learn(&path(DISK, 1, &["a"], 0));
        n.learn(&path(DISK, 2, &["b"], 0));
        n.counted(S, [(0xA, id(1, 0)), (0xB, id(2, 0))]);
        // File 2's inode was freed and read again at another address.
        n.counted(2 * S, [(0xC, id(2, 0))]);
        // The kernel reused both of file 1's and one of file 2's: new files there.
        n.learn(&path(DISK, 3, &["c"], 0));
        n.learn(&path(DISK, 4, &["d"], 0));
        n.counted(3 * S, [(0xA, id(3, 0)), (0xB, id(4, 0))]);
        assert_eq!(n.name(Some(id(1, 0))).path, None, "file 1 is forgotten");
        assert_eq!(
            n.name(Some(id(2, 0))).path.as_deref(),
            Some("/b"),
            "file 2 is still at 0xC"
        );
        // A file whose path the kernel did not send (yet) takes 0xC.
        n.counted(4 * S, [(0xC, id(5, 0))]);
        assert_eq!(n.name(Some(id(2, 0))).path, None);
        assert_eq!(n.count(), 2);
        assert_eq!(n.by_key.len(), 2, "{:?}", n.by_key);
        let forgotten = n.forgotten();
        assert_eq!(
            (forgotten.freed, forgotten.freed_undeleted),
            (2, 2),
            "{forgotten:?}"
        );
        // Nothing for the kernel to delete: its entries name the new files.
        n.forget();
        assert_eq!(n.unkeyed(), []);
    }

    #[test]
    fn a_file_no_drain_found_under_a_key_is_forgotten_at_the_second() {
        let mut n = names();
        // Both paths came with the first drain; one file's counts with the second, the
        // other's key named another file by then (it lived less than an interval).
        n.learn(&path(DISK, 1, &["late"], 0));
        n.learn(&path(DISK, 2, &["brief"], 0));
        n.counted(S, []);
        assert_eq!(n.count(), 2);
        n.counted(2 * S, [(0xA, id(1, 0))]);
        assert_eq!(n.name(Some(id(1, 0))).path.as_deref(), Some("/late"));
        assert_eq!(n.name(Some(id(2, 0))).path, None);
        n.counted(3 * S, []);
        assert_eq!(n.count(), 1);
        assert_eq!(n.forgotten().never_keyed, 1);
        n.forget();
        assert_eq!(n.unkeyed(), []);
    }

    #[test]
    fn files_not_counted_for_a_minute_are_forgotten_with_their_kernel_entries() {
        let mut n = names();
        n.learn(&path(DISK, 1, &["idle"], 0));
        n.learn(&path(DISK, 2, &["busy"], 0));
        n.counted(10 * S, [(0xA, id(1, 0)), (0xB, id(2, 0))]);
        for t in (20..=60).step_by(10) {
            n.counted(t * S, [(0xB, id(2, 0))]);
            n.forget();
            assert_eq!(n.unkeyed(), [], "at {t} s");
        }
        n.counted(70 * S, [(0xB, id(2, 0))]);
        n.forget();
        assert_eq!(n.unkeyed(), [entry(0xA, 1)]);
        n.counted(71 * S, [(0xB, id(2, 0))]);
        n.unkeyed_by_drain(&[entry(0xA, 1)]);
        assert_eq!(n.count(), 1);
        assert!(
            n.name(Some(id(1, 0)))
                .note
                .as_deref()
                .is_some_and(|t| t.contains("forgotten")),
        );
        // Counted again, with its kernel entry gone: the kernel sends the path anew.
        n.learn(&path(DISK, 1, &["idle"], 0));
        n.counted(80 * S, [(0xA, id(1, 0)), (0xB, id(2, 0))]);
        assert_eq!(n.name(Some(id(1, 0))).path.as_deref(), Some("/idle"));
        assert_eq!(n.name(Some(id(2, 0))).path.as_deref(), Some("/busy"));
        assert_eq!(n.forgotten().idle, 1);
    }

    #[test]
    fn a_bind_mount_maps_its_root_and_escapes_are_undone() {
        let mut n = names();
        n.learn(&path(DISK, 9, &["x", "data", "srv"], 0));
        let name = n.name(Some(path(DISK, 9, &[], 0).id));
        // Two mounts show the file; the one whose root is deeper names it.
        assert_eq!(name.path.as_deref(), Some("/mnt/my data/x"));
    }

    #[test]
    fn overlay_layers_give_the_path_the_container_sees() {
        let mut n = names();
        n.learn(&path(
            DISK,
            11,
            &[
                "libc.so.6",
                "lib",
                "usr",
                "diff",
                "abc",
                "overlay2",
                "docker",
                "lib",
                "var",
            ],
            0,
        ));
        let name = n.name(Some(path(DISK, 11, &[], 0).id));
        assert_eq!(
            name.path.as_deref(),
            Some("/var/lib/docker/overlay2/abc/diff/usr/lib/libc.so.6")
        );
        assert_eq!(name.container_path.as_deref(), Some("/usr/lib/libc.so.6"));
        assert_eq!(
            container_part("/var/lib/containerd/io.containerd.snapshotter.v1.overlayfs/snapshots/12/fs/etc/hosts")
                .as_deref(),
            Some("/etc/hosts")
        );
        let layer = "5cc0a2b8d4e1f7a93b6c0d2e4f6a8b0c1d3e5f7a9b1c3d5e7f9a1b3c5d7e9f1a";
        assert_eq!(
            container_part(&format!(
                "/var/lib/containers/storage/overlay/{layer}/diff/bin/busybox"
            ))
            .as_deref(),
            Some("/bin/busybox"),
            "podman, CRI-O"
        );
        assert_eq!(
            container_part("/srv/backup/overlay/old/diff/notes.txt"),
            None,
            "not a layer id: an ordinary directory"
        );
    }

    #[test]
    fn files_without_a_name_say_why() {
        let mut n = names();
        n.learn(&path(SHM, 4, &[], FilePath::NO_DENTRY));
        let mut id = path(SHM, 4, &[], 0).id;
        id.flags |= InodeId::SHMEM;
        let name = n.name(Some(id));
        assert_eq!(name.path, None);
        assert!(
            name.note.as_deref().is_some_and(|r| r.contains("no name")),
            "{name:?}"
        );
        let unseen = n.name(Some(path(DISK, 99, &[], 0).id));
        assert!(
            unseen
                .note
                .as_deref()
                .is_some_and(|r| r.contains("forgotten")),
            "{unseen:?}"
        );
        let unmounted = FilePath {
            id: InodeId {
                ino: 5,
                dev: 7 << 20,
                flags: 0,
            },
            ..path(7 << 20, 5, &["f"], 0)
        };
        n.learn(&unmounted);
        let name = n.name(Some(unmounted.id));
        assert_eq!(name.path.as_deref(), Some("/f"));
        assert!(
            name.note
                .as_deref()
                .is_some_and(|r| r.contains("not mounted")),
            "{name:?}"
        );
    }

    #[test]
    fn a_block_device_s_own_page_cache_is_named_as_the_device() {
        let sys = tempfile::tempdir().expect("tempdir");
        let vda = sys.path().join("254:0");
        fs::create_dir(&vda).expect("mkdir");
        fs::write(
            vda.join("uevent"),
            "MAJOR=254\nMINOR=0\nDEVNAME=vda\nDEVTYPE=disk\n",
        )
        .expect("write");
        let mut n = names().with_block_devices(sys.path());
        // The kernel's block-device pseudo filesystem (0:3 here): the device's inode is its
        // number, its only dentry a root one (the path "/"), unhashed.
        let bdev = 3;
        let vda_ino = 254 << 20;
        n.learn(&path(bdev, vda_ino, &[], FilePath::UNHASHED));
        let name = n.name(Some(path(bdev, vda_ino, &[], 0).id));
        assert_eq!(name.path.as_deref(), Some("/dev/vda"));
        assert!(!name.deleted, "{name:?}");
        assert!(
            name.note
                .as_deref()
                .is_some_and(|n| n.contains("block device 254:0")),
            "{name:?}"
        );
        // A root on a filesystem not mounted here, whose inode is no device: as before.
        n.learn(&path(bdev, 77, &[], 0));
        let other = n.name(Some(path(bdev, 77, &[], 0).id));
        assert_eq!(other.path.as_deref(), Some("/"));
        assert!(
            other
                .note
                .as_deref()
                .is_some_and(|n| n.contains("not mounted")),
            "{other:?}"
        );
    }

    #[test]
    fn a_layer_id_is_read_whole_and_a_name_that_fills_its_slot_says_it_may_be_cut() {
        let layer = "fc89a6e53d96536ccd3967fca31cf781c8c9cdde7478e71821d26b59706b4780";
        let mut n = names();
        n.learn(&path(DISK, 21, &["big", "diff", layer, "overlay"], 0));
        let name = n.name(Some(path(DISK, 21, &[], 0).id));
        assert_eq!(
            name.path.as_deref(),
            Some(format!("/overlay/{layer}/diff/big").as_str())
        );
        assert_eq!(name.container_path.as_deref(), Some("/big"));
        assert_eq!(name.note, None);
        let long = "x".repeat(FILE_PATH_NAME - 1);
        n.learn(&path(DISK, 22, &[&long], FilePath::NAME_CUT));
        let name = n.name(Some(path(DISK, 22, &[], 0).id));
        assert_eq!(name.path.as_deref(), Some(format!("/{long}").as_str()));
        assert!(
            name.note
                .as_deref()
                .is_some_and(|n| n.contains("fills the 79 bytes")),
            "{name:?}"
        );
    }

    #[test]
    fn deep_paths_are_cut_at_the_start() {
        let mut n = names();
        n.learn(&path(DISK, 12, &["leaf", "d"], FilePath::TRUNCATED));
        let name = n.name(Some(path(DISK, 12, &[], 0).id));
        assert_eq!(name.path.as_deref(), Some("…/d/leaf"));
        assert!(name.note.is_some());
    }
}
