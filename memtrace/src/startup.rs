//! Where start-up time goes, phase by phase, on the debug log: `RUST_LOG=debug`, or these lines
//! alone with `RUST_LOG=memtrace::startup=debug`. From exec to "attached" memtrace has a budget
//! of 150 ms, spent by a few phases (kernel BTF, loading the programs, the verifier, measuring
//! the memory map, walking cgroupfs) whose cost depends on the kernel and on what else the
//! machine is doing; a regression shows here before anyone has to guess. `cargo xtask bench
//! startup` reads these lines.
//!
//! Each line is `start-up: NAME N.N ms`, one per phase in the order they ran; a phase that ran
//! on a thread of its own beside the others says `(beside)`, a part of the phase that contains
//! it says `(within PHASE)`. The last line is `start-up: total N.N ms to attached (…)`, from
//! `main` to the moment the "attached" line is printed.

use std::time::{Duration, Instant};

/// The log target of these lines.
pub const LOG_TARGET: &str = "memtrace::startup";

/// Phases of one start-up, timed as they end.
#[derive(Debug)]
pub struct Timeline {
    started: Instant,
    mark: Instant,
    /// (phase, how long), in the order they ended; those beside or within others are not here.
    phases: Vec<(String, Duration)>,
}

impl Timeline {
    /// A timeline that began at `started`, the first instant of `main`.
    #[must_use]
    pub fn new(started: Instant) -> Self {
        Self {
            started,
            mark: started,
            phases: Vec::new(),
        }
    }

    /// Ends the phase that began when the previous one ended (or at the start), and logs it.
    pub fn phase(&mut self, name: &str) {
        let now = Instant::now();
        let took = now - self.mark;
        self.mark = now;
        log::debug!(target: LOG_TARGET, "start-up: {name} {} ms", millis(took));
        log_memory(name);
        self.phases.push((name.to_owned(), took));
    }

    /// From `main` until now.
    #[must_use]
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Logs the total and the phases it was spent on, largest first.
    pub fn summary(&self) {
        let mut phases: Vec<&(String, Duration)> = self.phases.iter().collect();
        phases.sort_by_key(|(_, took)| std::cmp::Reverse(*took));
        let listed: Vec<String> = phases
            .iter()
            .map(|(name, took)| format!("{name} {}", millis(*took)))
            .collect();
        log::debug!(
            target: LOG_TARGET,
            "start-up: total {} ms to attached ({})",
            millis(self.elapsed()),
            listed.join(", ")
        );
        log_memory("attached");
    }
}

/// A phase that ran on a thread of its own beside the others: logged, not counted in the sum
/// (the total covers it).
pub fn beside(name: &str, took: Duration) {
    log::debug!(target: LOG_TARGET, "start-up: {name} {} ms (beside)", millis(took));
}

/// A part of the phase now running (the kernel BTF aya parses to load fentry programs, within
/// attaching a probe point): logged, counted in that phase.
pub fn within(name: &str, took: Duration, phase: &str) {
    log::debug!(
        target: LOG_TARGET,
        "start-up: {name} {} ms (within {phase})",
        millis(took)
    );
}

/// Resident memory after a phase, on the debug log (`start-up memory: after NAME: VmRSS …,
/// VmHWM …`): where the peak comes from differs with what the kernel allows (aya parses the
/// kernel's BTF only where fentry programs load). Read only when the line is logged.
fn log_memory(phase: &str) {
    if !log::log_enabled!(target: LOG_TARGET, log::Level::Debug) {
        return;
    }
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return;
    };
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map_or("?", str::trim)
            .to_owned()
    };
    log::debug!(
        target: LOG_TARGET,
        "start-up memory: after {phase}: VmRSS {}, VmHWM {}",
        field("VmRSS:"),
        field("VmHWM:")
    );
}

/// Milliseconds with one decimal: phases of well under a millisecond are common.
fn millis(took: Duration) -> String {
    format!("{:.1}", took.as_secs_f64() * 1e3)
}

/// Runs `f` and returns its result with how long it took.
pub fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let begun = Instant::now();
    let value = f();
    (value, begun.elapsed())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_follow_each_other_from_the_start() {
        let started = Instant::now();
        let mut timeline = Timeline::new(started);
        std::thread::sleep(Duration::from_millis(2));
        timeline.phase("first");
        timeline.phase("second");
        let [(first, a), (second, b)] = &timeline.phases[..] else {
            panic!("two phases: {timeline:?}");
        };
        assert_eq!((first.as_str(), second.as_str()), ("first", "second"));
        assert!(*a >= Duration::from_millis(2), "{a:?}");
        assert!(*a + *b <= timeline.elapsed(), "{timeline:?}");
    }

    #[test]
    fn milliseconds_keep_one_decimal() {
        assert_eq!(millis(Duration::from_micros(12_345)), "12.3");
        assert_eq!(millis(Duration::from_micros(40)), "0.0");
    }
}
