//! A thread's CPU weight, raised for a short burst of work that must finish on time on a busy
//! node: the interval's drain takes tens of milliseconds of CPU a second, and among hundreds of
//! runnable tasks at the default weight, waiting for a CPU could stretch it past its interval's
//! budget (`cargo xtask bench node`).

use std::{
    marker::PhantomData,
    sync::atomic::{AtomicBool, Ordering},
};

/// The niceness the burst runs at: `-5` is about three times the default weight, enough to be
/// run soon after it wakes, not enough to take a CPU from anything for long (the burst is short).
pub const BURST_NICE: i32 = -5;

/// Said once: a container without `CAP_SYS_NICE` runs the bursts at the default weight.
static REFUSED: AtomicBool = AtomicBool::new(false);

/// The calling thread's niceness, raised until dropped, then put back. Not `Send`: it must be
/// dropped on the thread it raised.
pub struct Raised {
    previous: Option<i32>,
    _thread: PhantomData<*const ()>,
}

impl Raised {
    /// Raises the calling thread (only it: on Linux a thread id names one thread) to `nice`
    /// when that is higher than it runs at. Without the privilege it stays as it was: said at
    /// debug level once.
    #[must_use]
    pub fn to(nice: i32) -> Self {
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() };
        let Ok(who) = libc::id_t::try_from(tid) else {
            return Self::unchanged();
        };
        // `getpriority` returns -1 both for an error and for a niceness of -1: errno tells.
        // SAFETY: errno is this thread's; getpriority reads no memory of ours.
        let previous = unsafe {
            *libc::__errno_location() = 0;
            let nice = libc::getpriority(libc::PRIO_PROCESS, who);
            (*libc::__errno_location() == 0).then_some(nice)
        };
        let Some(previous) = previous.filter(|&previous| previous > nice) else {
            return Self::unchanged();
        };
        // SAFETY: as above.
        if unsafe { libc::setpriority(libc::PRIO_PROCESS, who, nice) } != 0 {
            if !REFUSED.swap(true, Ordering::Relaxed) {
                log::debug!(
                    "cannot raise the drain's priority to nice {nice} ({}): it runs at nice \
                     {previous}",
                    std::io::Error::last_os_error()
                );
            }
            return Self::unchanged();
        }
        Self {
            previous: Some(previous),
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
        let Some(previous) = self.previous else {
            return;
        };
        // SAFETY: as in `to`; the thread that raised it (`Raised` is not `Send`).
        let tid = unsafe { libc::gettid() };
        if let Ok(who) = libc::id_t::try_from(tid) {
            // SAFETY: as above. Lowering one's own priority back needs no privilege.
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
                let _raised = Raised::to(BURST_NICE);
                // Root (the tests run as root: they load BPF programs) may raise itself.
                assert_eq!(nice(), BURST_NICE.min(before));
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
}
