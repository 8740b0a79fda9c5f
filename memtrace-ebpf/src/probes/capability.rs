//! The smallest program of each type. `memtrace probes` loads and attaches each one to learn
//! what the running kernel allows, instead of guessing from its version.

use aya_ebpf::{
    macros::{fentry, kprobe, raw_tracepoint, tracepoint},
    programs::{FEntryContext, ProbeContext, RawTracePointContext, TracePointContext},
};

#[tracepoint(category = "oom", name = "mark_victim")]
pub fn cap_tracepoint(_ctx: TracePointContext) -> u32 {
    0
}

#[raw_tracepoint(tracepoint = "mark_victim")]
pub fn cap_raw_tracepoint(_ctx: RawTracePointContext) -> i32 {
    0
}

#[kprobe]
pub fn cap_kprobe(_ctx: ProbeContext) -> u32 {
    0
}

#[fentry(function = "oom_kill_process")]
pub fn cap_fentry(_ctx: FEntryContext) -> u32 {
    0
}
