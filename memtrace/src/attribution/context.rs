//! The context userspace adds to a kernel record as it arrives.

use memtrace_common::event::{OOM_FLAG_MEMCG, Record};

use super::{MemcgResolver, memcg_path_of_pid};
use crate::event::{Context, Observed};

/// Resolves a record's memcg to its cgroup path and reads the memcg's usage and limit now,
/// while the cgroup still exists.
pub struct LiveContext {
    resolver: MemcgResolver,
}

impl LiveContext {
    #[must_use]
    pub fn new(resolver: MemcgResolver) -> Self {
        Self { resolver }
    }

    pub fn observe(&mut self, record: Record) -> Observed {
        let cgroup = match &record {
            Record::OomKill(r) if r.flags & OOM_FLAG_MEMCG != 0 => {
                self.resolver.path(r.memcg_id).map(str::to_owned)
            }
            // The kernel gave only a pid (older `mark_victim`): the victim is still exiting.
            Record::OomKill(r) => memcg_path_of_pid(r.pid, self.resolver.hierarchy().version),
        };
        let hierarchy = self.resolver.hierarchy();
        let context = Context {
            memcg_limit_bytes: cgroup.as_deref().and_then(|c| hierarchy.limit_bytes(c)),
            memcg_usage_bytes: cgroup.as_deref().and_then(|c| hierarchy.usage_bytes(c)),
            cgroup,
        };
        Observed { record, context }
    }
}
