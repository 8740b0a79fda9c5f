//! Cgroup v2 `memory.events` changes as the kernel notifies them: it calls `cgroup_file_notify()`
//! on a memcg's `memory.events` (and on its ancestors', whose counts are hierarchical) each time
//! one of its counters moves, which inotify reports as `IN_MODIFY`. So an OOM kill or a
//! `memory.high` breach is read the moment it happens, without polling every memcg's file.

use std::{
    collections::HashMap,
    io,
    os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd},
};

use inotify::{Inotify, WatchDescriptor, WatchMask};

use super::MemoryHierarchy;

/// Watches on the `memory.events` files of the memcgs whose counters are followed.
pub struct MemoryEventsWatch {
    inotify: Inotify,
    hierarchy: MemoryHierarchy,
    by_path: HashMap<String, WatchDescriptor>,
    by_watch: HashMap<WatchDescriptor, String>,
    buffer: Vec<u8>,
}

impl MemoryEventsWatch {
    /// # Errors
    ///
    /// When inotify cannot be set up (`fs.inotify.max_user_instances`).
    pub fn new(hierarchy: MemoryHierarchy) -> io::Result<Self> {
        Ok(Self {
            inotify: Inotify::init()?,
            hierarchy,
            by_path: HashMap::new(),
            by_watch: HashMap::new(),
            buffer: vec![0; 16 << 10],
        })
    }

    /// Watches these cgroups' `memory.events`, and no longer those not among them. Returns how
    /// many could not be watched (gone already, or `fs.inotify.max_user_watches` reached): their
    /// changes are still read on the counters interval.
    pub fn follow<'a>(&mut self, cgroups: impl IntoIterator<Item = &'a str>) -> usize {
        let wanted: std::collections::HashSet<&str> = cgroups.into_iter().collect();
        let gone: Vec<String> = self
            .by_path
            .keys()
            .filter(|p| !wanted.contains(p.as_str()))
            .cloned()
            .collect();
        for path in gone {
            if let Some(wd) = self.by_path.remove(&path) {
                self.by_watch.remove(&wd);
                // Fails when the kernel dropped the watch with the file (IN_IGNORED): fine.
                let _ = self.inotify.watches().remove(wd);
            }
        }
        let mut failed = 0;
        for path in wanted {
            if self.by_path.contains_key(path) {
                continue;
            }
            let file = self.hierarchy.dir(path).join("memory.events");
            match self.inotify.watches().add(&file, WatchMask::MODIFY) {
                Ok(wd) => {
                    self.by_watch.insert(wd.clone(), path.to_owned());
                    self.by_path.insert(path.to_owned(), wd);
                }
                Err(_) => failed += 1,
            }
        }
        failed
    }

    /// The cgroups whose `memory.events` changed since last asked, each once; never blocks.
    ///
    /// # Errors
    ///
    /// When the inotify descriptor cannot be read.
    pub fn changed(&mut self) -> io::Result<Vec<String>> {
        let mut changed = Vec::new();
        loop {
            let events = match self.inotify.read_events(&mut self.buffer) {
                Ok(events) => events,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            };
            let mut any = false;
            for event in events {
                any = true;
                if let Some(path) = self.by_watch.get(&event.wd)
                    && !changed.contains(path)
                {
                    changed.push(path.clone());
                }
            }
            if !any {
                break;
            }
        }
        Ok(changed)
    }

    /// Files watched.
    #[must_use]
    pub fn len(&self) -> usize {
        self.by_path.len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.by_path.is_empty()
    }
}

impl AsRawFd for MemoryEventsWatch {
    fn as_raw_fd(&self) -> RawFd {
        self.inotify.as_raw_fd()
    }
}

impl AsFd for MemoryEventsWatch {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.inotify.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;
    use crate::attribution::CgroupVersion;

    #[test]
    fn a_write_to_a_watched_file_names_its_cgroup_once() {
        let root = tempfile::tempdir().expect("tempdir");
        for c in ["a", "b"] {
            fs::create_dir(root.path().join(c)).expect("mkdir");
            fs::write(root.path().join(c).join("memory.events"), "max 0\n").expect("write");
        }
        let mut watch = MemoryEventsWatch::new(MemoryHierarchy {
            root: root.path().to_owned(),
            version: CgroupVersion::V2,
        })
        .expect("inotify");
        assert_eq!(watch.follow(["/a", "/b", "/gone"]), 1);
        assert_eq!(watch.changed().expect("read"), Vec::<String>::new());
        fs::write(root.path().join("a/memory.events"), "max 1\n").expect("write");
        fs::write(root.path().join("a/memory.events"), "max 2\n").expect("write");
        assert_eq!(watch.changed().expect("read"), vec!["/a".to_owned()]);
        watch.follow(["/b"]);
        assert_eq!(watch.len(), 1);
        fs::write(root.path().join("a/memory.events"), "max 3\n").expect("write");
        assert!(
            watch.changed().expect("read").is_empty(),
            "/a no longer followed"
        );
    }
}
