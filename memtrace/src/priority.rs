//! Threads' CPU weight. Two kinds of work must be on time on a node whose CPUs are busy:
//!
//! - **The event path** (the ring reader, the consumer that turns records into events, the
//!   kmsg follower, and the threads the consumer starts) runs raised for the whole session
//!   ([`raise_event_path`]). An OOM storm is when a node's CPUs are busiest: every process at
//!   its limit reclaims until it is killed. At the default weight among 20 of them on 2 CPUs, a
//!   kill's record waited up to 0.5 s for the consumer to run, and the consumer as long again
//!   to let it out (`tests/oom_storm.rs`, bound 1 s, failed at 1.16 s in CI); raised, the
//!   record reached the consumer within 60 ms.
//! - **The interval's drain** takes tens of milliseconds of CPU a second on a pooled thread,
//!   raised for that burst only ([`Raised`]): among hundreds of runnable tasks at the default
//!   weight, waiting for a CPU could stretch it past its interval's budget (`cargo xtask bench
//!   node`). The pool's threads otherwise run at the weight memtrace was started with
//!   ([`Pooled`]): walks and scans are not on the event path.
//!
//! Both are one niceness, [`RAISED_NICE`]. Without `CAP_SYS_NICE` memtrace runs at the default
//! weight, said once at debug level.

use std::{
    marker::PhantomData,
    sync::atomic::{AtomicBool, Ordering},
};

/// The niceness raised work runs at: `-5` is about three times the default weight, enough to be
/// run soon after it wakes, not enough to take a CPU from anything for long (the event path
/// sleeps between batches, and the drain's burst is short).
pub const RAISED_NICE: i32 = -5;

/// Said once: a container without `CAP_SYS_NICE` runs everything at the default weight.
static REFUSED: AtomicBool = AtomicBool::new(false);

/// The calling thread's id and niceness.
fn this_thread() -> Option<(libc::id_t, i32)> {
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::gettid() };
    let who = libc::id_t::try_from(tid).ok()?;
    // `getpriority` returns -1 both for an error and for a niceness of -1: errno tells.
    // SAFETY: errno is this thread's; getpriority reads no memory of ours.
    let nice = unsafe {
        *libc::__errno_location() = 0;
        let nice = libc::getpriority(libc::PRIO_PROCESS, who);
        (*libc::__errno_location() == 0).then_some(nice)
    }?;
    Some((who, nice))
}

/// Raises the calling thread for the rest of its life; the threads it starts afterwards inherit
/// it (Linux keeps a niceness per thread). For the event path's threads, at their start.
pub fn raise_event_path() {
    std::mem::forget(Raised::to(RAISED_NICE));
}

/// The niceness memtrace was started with, for a runtime's pooled threads: they are started by
/// the raised consumer, and put back as their first act ([`Pooled::put_back`]).
#[derive(Clone, Copy, Debug)]
pub struct Pooled {
    nice: Option<i32>,
}

impl Pooled {
    /// The calling thread's niceness now: call it before the thread is raised.
    #[must_use]
    pub fn now() -> Self {
        Self {
            nice: this_thread().map(|(_, nice)| nice),
        }
    }

    /// Lowers the calling thread to the niceness taken (lowering needs no privilege).
    pub fn put_back(self) {
        if let (Some(nice), Some((who, now))) = (self.nice, this_thread())
            && now < nice
        {
            // SAFETY: as in `this_thread`.
            unsafe { libc::setpriority(libc::PRIO_PROCESS, who, nice) };
        }
    }
}

/// The calling thread's niceness, raised until dropped, then put back. Not `Send`: it must be
/// dropped on the thread it raised.
pub struct Raised {
    /// The thread raised and the niceness it had.
    previous: Option<(libc::id_t, i32)>,
    _thread: PhantomData<*const ()>,
}

impl Raised {
    /// Raises the calling thread (only it: on Linux a thread id names one thread) to `nice`
    /// when that is higher than it runs at. Without the privilege it stays as it was: said at
    /// debug level once.
    #[must_use]
    pub fn to(nice: i32) -> Self {
        let Some((who, previous)) = this_thread().filter(|&(_, previous)| previous > nice) else {
            return Self::unchanged();
        };
        // SAFETY: as in `this_thread`.
        if unsafe { libc::setpriority(libc::PRIO_PROCESS, who, nice) } != 0 {
            if !REFUSED.swap(true, Ordering::Relaxed) {
                log::debug!(
                    "cannot raise the event path and the drain to nice {nice} ({}): they run \
                     at nice {previous}",
                    std::io::Error::last_os_error()
                );
            }
            return Self::unchanged();
        }
        Self {
            previous: Some((who, previous)),
            _thread: PhantomData,
        }
    }

    const fn unchanged() -> Self {
        Self {
            previous: None,
            _thread: PhantomData,
        }
    }
}

impl Drop for Raised {
    fn drop(&mut self) {
        if let Some((who, previous)) = self.previous {
            // SAFETY: as in `this_thread`; the thread that raised it (`Raised` is not `Send`).
            // Lowering one's own priority back needs no privilege.
            unsafe { libc::setpriority(libc::PRIO_PROCESS, who, previous) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nice() -> i32 {
        // SAFETY: as in `Raised::to`.
        unsafe {
            let who = libc::id_t::try_from(libc::gettid()).expect("a thread id is positive");
            libc::getpriority(libc::PRIO_PROCESS, who)
        }
    }

    #[test]
    fn a_raised_thread_runs_at_the_burst_niceness_until_dropped_and_other_threads_do_not() {
        // A thread of its own, so that the test harness's threads keep their niceness.
        std::thread::spawn(|| {
            let before = nice();
            let other = std::thread::spawn(|| {
                std::thread::sleep(std::time::Duration::from_millis(50));
                nice()
            });
            {
                let _raised = Raised::to(RAISED_NICE);
                // Root (the tests run as root: they load BPF programs) may raise itself.
                assert_eq!(nice(), RAISED_NICE.min(before));
                assert_eq!(
                    other.join().expect("the other thread ran"),
                    before,
                    "only the calling thread is raised"
                );
            }
            assert_eq!(nice(), before);
        })
        .join()
        .expect("the raised thread's assertions held");
    }

    #[test]
    fn the_event_path_s_threads_inherit_its_raise_and_pooled_ones_are_put_back() {
        std::thread::spawn(|| {
            let before = nice();
            let pooled = Pooled::now();
            raise_event_path();
            assert_eq!(nice(), RAISED_NICE.min(before), "raised for good");
            let (inherited, put_back) = std::thread::spawn(move || {
                let inherited = nice();
                pooled.put_back();
                (inherited, nice())
            })
            .join()
            .expect("the started thread ran");
            assert_eq!(
                inherited,
                RAISED_NICE.min(before),
                "a thread started later inherits"
            );
            assert_eq!(put_back, before, "a pooled thread is put back");
        })
        .join()
        .expect("the assertions held");
    }
}
