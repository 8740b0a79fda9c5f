//! The kernel's own notification that a memcg's counters moved, on either hierarchy: v2
//! `memory.events` through inotify ([`MemoryEventsWatch`]), v1 `memory.oom_control` through
//! eventfds ([`OomControlWatch`]). The pipeline waits on one descriptor either way.

use std::{
    io,
    os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd},
    time::Duration,
};

use super::oom_control::{OomControlWatch, RECHECKS};
use super::{CgroupVersion, MemoryHierarchy, memory_events::MemoryEventsWatch};

pub enum CounterWatch {
    MemoryEvents(MemoryEventsWatch),
    OomControl(OomControlWatch),
}

impl CounterWatch {
    /// The watch this hierarchy offers.
    ///
    /// # Errors
    ///
    /// When inotify or epoll cannot be set up.
    pub fn new(hierarchy: MemoryHierarchy) -> io::Result<Self> {
        Ok(match hierarchy.version {
            CgroupVersion::V2 => Self::MemoryEvents(MemoryEventsWatch::new(hierarchy)?),
            CgroupVersion::V1 => Self::OomControl(OomControlWatch::new(hierarchy)?),
        })
    }

    /// What is watched, for messages.
    #[must_use]
    pub const fn what(&self) -> &'static str {
        match self {
            Self::MemoryEvents(_) => "memory.events",
            Self::OomControl(_) => "memory.oom_control",
        }
    }

    /// Follows these cgroups and no others; returns how many could not be followed.
    pub fn follow<'a>(&mut self, cgroups: impl IntoIterator<Item = &'a str>) -> usize {
        match self {
            Self::MemoryEvents(w) => w.follow(cgroups),
            Self::OomControl(w) => w.follow(cgroups),
        }
    }

    /// The cgroups the kernel notified since last asked; never blocks.
    ///
    /// # Errors
    ///
    /// When the descriptor cannot be read.
    pub fn changed(&mut self) -> io::Result<Vec<String>> {
        match self {
            Self::MemoryEvents(w) => w.changed(),
            Self::OomControl(w) => w.changed(),
        }
    }

    /// How long after a notification the cgroup's counters are read again: v1 notifies when
    /// the OOM starts, before the kill is counted; v2 notifies each change itself.
    #[must_use]
    pub const fn rechecks(&self) -> &'static [Duration] {
        match self {
            Self::MemoryEvents(_) => &[],
            Self::OomControl(_) => &RECHECKS,
        }
    }
}

impl AsRawFd for CounterWatch {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            Self::MemoryEvents(w) => w.as_raw_fd(),
            Self::OomControl(w) => w.as_raw_fd(),
        }
    }
}

impl AsFd for CounterWatch {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Self::MemoryEvents(w) => w.as_fd(),
            Self::OomControl(w) => w.as_fd(),
        }
    }
}
