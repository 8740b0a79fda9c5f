//! The host's memcg count (live and dying) over time, for a flight file's header: a file that
//! starts two minutes before a kill wants the count of then, not of when memtrace started weeks
//! ago. Counted on a thread of its own (it walks the memory hierarchy), never on the event path.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex, PoisonError, mpsc},
    thread,
    time::Duration,
};

use crate::{attribution::MemcgCensus, clock};

/// How often the host's memcgs are counted.
pub const EVERY: Duration = Duration::from_secs(10);

/// Counts taken every [`EVERY`], as (`CLOCK_BOOTTIME` ns, count), oldest first.
pub struct CensusHistory {
    samples: Arc<Mutex<VecDeque<(u64, MemcgCensus)>>>,
    /// Dropping it stops the counting thread.
    _stop: Option<mpsc::Sender<()>>,
}

impl CensusHistory {
    /// Starts counting with `count` every [`EVERY`], keeping the counts of the last `keep`
    /// (and the first one, taken now, until a later one is older than `keep`). `first` is a
    /// count already taken (at start-up).
    pub fn start(
        first: Option<MemcgCensus>,
        keep: Duration,
        count: impl FnMut() -> Option<MemcgCensus> + Send + 'static,
    ) -> Self {
        let samples = Arc::new(Mutex::new(VecDeque::new()));
        if let Some(first) = first {
            lock(&samples).push_back((clock::boot_ns(), first));
        }
        let (stop, stopped) = mpsc::channel::<()>();
        let shared = Arc::clone(&samples);
        let mut count = count;
        let started = thread::Builder::new()
            .name("memcg-census".into())
            .spawn(move || {
                let keep_ns = u64::try_from(keep.as_nanos()).unwrap_or(u64::MAX);
                while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(EVERY) {
                    let Some(census) = count() else { continue };
                    let now = clock::boot_ns();
                    let mut samples = lock(&shared);
                    samples.push_back((now, census));
                    // Keep the newest count older than `keep`: it is the one for a window
                    // starting `keep` ago.
                    while samples
                        .get(1)
                        .is_some_and(|&(t, _)| t < now.saturating_sub(keep_ns))
                    {
                        samples.pop_front();
                    }
                }
            });
        if let Err(e) = &started {
            eprintln!("memtrace: cannot count memory cgroups while recording: {e}");
        }
        Self {
            samples,
            _stop: started.ok().map(|_| stop),
        }
    }

    /// The newest count taken at or before `at_ns`, else the oldest one.
    #[must_use]
    pub fn at(&self, at_ns: u64) -> Option<MemcgCensus> {
        let samples = lock(&self.samples);
        samples
            .iter()
            .rev()
            .find(|&&(t, _)| t <= at_ns)
            .or_else(|| samples.front())
            .map(|&(_, census)| census)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
