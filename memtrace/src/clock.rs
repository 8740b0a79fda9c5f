//! Kernel timestamps (`CLOCK_BOOTTIME`, what `bpf_ktime_get_boot_ns()` returns) to wall time.

use time::{OffsetDateTime, format_description::BorrowedFormatItem, macros::format_description};

/// The clock the programs stamp events with, as recorded in trace files.
pub const EVENT_CLOCK: &str = "CLOCK_BOOTTIME";

fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; these clocks exist on every Linux ≥ 2.6.39.
    let rc = unsafe { libc::clock_gettime(clock, &raw mut ts) };
    debug_assert_eq!(rc, 0);
    u64::try_from(ts.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(ts.tv_nsec).unwrap_or(0)
}

/// Now on the events' clock (`CLOCK_BOOTTIME`), for events userspace makes itself.
#[must_use]
pub fn boot_ns() -> u64 {
    clock_ns(libc::CLOCK_BOOTTIME)
}

/// CPU time the calling thread has used, ns: what a step cost, apart from the time it waited
/// for a CPU on a busy machine.
#[must_use]
pub fn thread_cpu_ns() -> u64 {
    clock_ns(libc::CLOCK_THREAD_CPUTIME_ID)
}

/// Wall-clock time now, ns since the Unix epoch.
#[must_use]
pub fn now_wall_ns() -> u64 {
    clock_ns(libc::CLOCK_REALTIME)
}

/// Wall-clock time of boot in ns since the Unix epoch: `realtime − boottime`, read now.
#[must_use]
pub fn boot_time_wall_ns() -> u64 {
    clock_ns(libc::CLOCK_REALTIME).saturating_sub(clock_ns(libc::CLOCK_BOOTTIME))
}

/// RFC 3339 in UTC with microseconds, always six digits so that lines align, e.g.
/// `2026-11-27T15:47:01.123450Z`.
#[must_use]
pub fn format_wall(wall_ns: u64) -> String {
    const FORMAT: &[BorrowedFormatItem<'_>] =
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z");
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(wall_ns))
        .ok()
        .and_then(|t| t.format(FORMAT).ok())
        .unwrap_or_else(|| format!("@{wall_ns}ns"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_trailing_zeros() {
        assert_eq!(
            format_wall(1_795_794_421_120_000_000),
            "2026-11-27T15:47:01.120000Z"
        );
    }

    #[test]
    fn formats_utc_with_microseconds() {
        assert_eq!(
            format_wall(1_795_794_421_123_456_789),
            "2026-11-27T15:47:01.123456Z"
        );
    }

    #[test]
    fn boot_time_is_in_the_past() {
        let now = clock_ns(libc::CLOCK_REALTIME);
        let boot = boot_time_wall_ns();
        assert!(boot > 1_600_000_000_000_000_000 && boot < now);
    }
}
