//! Cgroup v1 `memory.oom_control` notifications: v1 has no `memory.events` to watch, but it
//! signals an eventfd registered through `cgroup.event_control` ("`<eventfd> <fd of
//! memory.oom_control>`") each time the memcg, or an ancestor whose limit it is under, enters
//! OOM (`mem_cgroup_oom_notify`, for the memcg in OOM and every memcg below it), and once more
//! when the cgroup is removed. See the kernel's
//! [cgroup-v1/memory.rst](https://docs.kernel.org/admin-guide/cgroup-v1/memory.html#oom-control)
//! §10. So a v1 OOM is read the moment it starts, not at the next counters interval.
//!
//! The notification comes before the victim is chosen: `oom_kill` in `memory.oom_control` rises
//! a little later, so whoever reads it on a notification reads it again shortly after
//! ([`RECHECKS`]).
//!
//! One eventfd per followed memcg, gathered in one epoll set so that the runtime waits on a
//! single descriptor. Closing an eventfd unregisters it (the kernel sees `EPOLLHUP` on it).

use std::{
    collections::HashMap,
    fs, io,
    os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd as _, OwnedFd, RawFd},
    time::Duration,
};

use super::MemoryHierarchy;

/// After a notification, the memcg's counters are read again this long after it: the kill
/// (and its `oom_kill` count) follows the notification by the victim selection and the kill.
pub const RECHECKS: [Duration; 3] = [
    Duration::from_millis(100),
    Duration::from_millis(500),
    Duration::from_secs(2),
];

/// Eventfds registered on the `memory.oom_control` of the memcgs whose counters are followed.
pub struct OomControlWatch {
    epoll: OwnedFd,
    hierarchy: MemoryHierarchy,
    by_path: HashMap<String, (u64, OwnedFd)>,
    by_token: HashMap<u64, String>,
    next_token: u64,
}

impl OomControlWatch {
    /// # Errors
    ///
    /// When the epoll set cannot be created (out of descriptors).
    pub fn new(hierarchy: MemoryHierarchy) -> io::Result<Self> {
        // SAFETY: no pointers; the result is checked before it is owned.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Self {
            // SAFETY: a descriptor epoll_create1 just returned, owned by nothing else.
            epoll: unsafe { OwnedFd::from_raw_fd(fd) },
            hierarchy,
            by_path: HashMap::new(),
            by_token: HashMap::new(),
            next_token: 0,
        })
    }

    /// Registers an eventfd on these cgroups' `memory.oom_control`, and drops those of cgroups
    /// not among them. Returns how many could not be registered (gone already, or out of
    /// descriptors): their OOMs are still read on the counters interval.
    pub fn follow<'a>(&mut self, cgroups: impl IntoIterator<Item = &'a str>) -> usize {
        let wanted: std::collections::HashSet<&str> = cgroups.into_iter().collect();
        let gone: Vec<String> = self
            .by_path
            .keys()
            .filter(|p| !wanted.contains(p.as_str()))
            .cloned()
            .collect();
        for path in gone {
            if let Some((token, fd)) = self.by_path.remove(&path) {
                self.by_token.remove(&token);
                self.unwatch(&fd);
            }
        }
        let mut failed = 0;
        for path in wanted {
            if self.by_path.contains_key(path) {
                continue;
            }
            match self.register(path) {
                Ok(()) => {}
                Err(e) => {
                    log::debug!("memory.oom_control of {path}: no notification: {e}");
                    failed += 1;
                }
            }
        }
        failed
    }

    fn register(&mut self, path: &str) -> io::Result<()> {
        let dir = self.hierarchy.dir(path);
        // SAFETY: no pointers; the result is checked before it is owned.
        let raw = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a descriptor eventfd just returned, owned by nothing else.
        let eventfd = unsafe { OwnedFd::from_raw_fd(raw) };
        // The kernel takes its own reference to the file while it registers: the file need not
        // stay open afterwards.
        let control = fs::File::open(dir.join("memory.oom_control"))?;
        fs::write(
            dir.join("cgroup.event_control"),
            format!("{} {}", eventfd.as_raw_fd(), control.as_raw_fd()),
        )?;
        let token = self.next_token;
        self.next_token += 1;
        let mut event = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: token,
        };
        // SAFETY: both descriptors are open; `event` outlives the call.
        let rc = unsafe {
            libc::epoll_ctl(
                self.epoll.as_raw_fd(),
                libc::EPOLL_CTL_ADD,
                eventfd.as_raw_fd(),
                &raw mut event,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        self.by_token.insert(token, path.to_owned());
        self.by_path.insert(path.to_owned(), (token, eventfd));
        Ok(())
    }

    fn unwatch(&self, eventfd: &OwnedFd) {
        // SAFETY: both descriptors are open; a null event is allowed for EPOLL_CTL_DEL. A
        // failure leaves nothing to undo: closing the eventfd (the caller drops it) removes it
        // from the set anyway.
        let _ = unsafe {
            libc::epoll_ctl(
                self.epoll.as_raw_fd(),
                libc::EPOLL_CTL_DEL,
                eventfd.as_raw_fd(),
                std::ptr::null_mut(),
            )
        };
    }

    /// The cgroups whose eventfd was signalled since last asked, each once; never blocks.
    ///
    /// # Errors
    ///
    /// When the epoll set cannot be read.
    pub fn changed(&mut self) -> io::Result<Vec<String>> {
        let mut changed = Vec::new();
        let mut ready = [libc::epoll_event { events: 0, u64: 0 }; 64];
        loop {
            // SAFETY: `ready` holds `ready.len()` events for the kernel to fill; timeout 0.
            let n = unsafe {
                libc::epoll_wait(
                    self.epoll.as_raw_fd(),
                    ready.as_mut_ptr(),
                    i32::try_from(ready.len()).unwrap_or(i32::MAX),
                    0,
                )
            };
            let Ok(n) = usize::try_from(n) else {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            };
            for event in &ready[..n] {
                let token = event.u64;
                let Some(path) = self.by_token.get(&token) else {
                    continue;
                };
                if let Some((_, fd)) = self.by_path.get(path) {
                    drain(fd);
                }
                if !changed.contains(path) {
                    changed.push(path.clone());
                }
            }
            if n < ready.len() {
                break;
            }
        }
        Ok(changed)
    }

    /// Memcgs with a registered eventfd.
    #[must_use]
    pub fn len(&self) -> usize {
        self.by_path.len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.by_path.is_empty()
    }
}

/// Reads an eventfd's count back to zero, so it is not ready again until the next signal.
fn drain(eventfd: &OwnedFd) {
    let mut count = [0u8; 8];
    // SAFETY: `count` is 8 writable bytes, what an eventfd read takes; non-blocking.
    let _ = unsafe { libc::read(eventfd.as_raw_fd(), count.as_mut_ptr().cast(), count.len()) };
}

impl AsRawFd for OomControlWatch {
    fn as_raw_fd(&self) -> RawFd {
        self.epoll.as_raw_fd()
    }
}

impl AsFd for OomControlWatch {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.epoll.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attribution::CgroupVersion;

    /// Outside cgroupfs there is no `cgroup.event_control` to register with: counted as not
    /// watched, not an error, and nothing is ever reported for it.
    #[test]
    fn a_cgroup_that_cannot_be_registered_is_counted_and_stays_silent() {
        let root = tempfile::tempdir().expect("tempdir");
        fs::create_dir(root.path().join("a")).expect("mkdir");
        let mut watch = OomControlWatch::new(MemoryHierarchy {
            root: root.path().to_owned(),
            version: CgroupVersion::V1,
        })
        .expect("epoll");
        assert_eq!(watch.follow(["/a", "/gone"]), 2);
        assert!(watch.is_empty());
        assert_eq!(watch.changed().expect("read"), Vec::<String>::new());
    }
}
