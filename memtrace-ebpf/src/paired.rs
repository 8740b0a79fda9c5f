//! Pairing a function's entry with its return (a kprobe with its kretprobe), or a begin
//! tracepoint with its end: the entry keeps what only it sees (the arguments, the start time)
//! per task, keyed by `pid_tgid` (a task runs one call at a time: the return that follows on
//! the same thread is its own), and the return takes it back.

use aya_ebpf::{helpers::bpf_get_current_pid_tgid, maps::HashMap};
use memtrace_common::LostKind;

use crate::maps::count_lost;

/// At entry: keeps `args` for the running task's return. A full map is counted lost as `lost`
/// (its return then finds nothing).
#[inline(always)]
pub fn enter<T>(map: &HashMap<u64, T>, args: &T, lost: LostKind) {
    if map.insert(&bpf_get_current_pid_tgid(), args, 0).is_err() {
        count_lost(lost);
    }
}

/// At return: what the running task's entry kept, taken out of the map. `None` when the call
/// began before memtrace attached, or its entry could not be kept.
#[inline(always)]
pub fn take<T: Copy>(map: &HashMap<u64, T>) -> Option<T> {
    let task = bpf_get_current_pid_tgid();
    // SAFETY: the value is copied out before the entry is removed.
    let args = unsafe { map.get(&task) }.copied()?;
    let _ = map.remove(&task);
    Some(args)
}
