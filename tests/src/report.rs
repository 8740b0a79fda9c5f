//! Reading `memtrace report`'s output in tests: the text of a successful run, a container of
//! its JSON, and the name a report gives a Docker container.

use serde_json::Value;

use crate::{Memtrace, memtrace_output};

/// The name a report gives the Docker container with this id.
#[must_use]
pub fn docker_name(id: &str) -> String {
    format!("docker:{}", &id[..12])
}

/// `memtrace record -o TRACE --cgroup CGROUP` sampling every 200 ms (`--stats-interval`,
/// `--interval`), with `extra` arguments: an incident's recording for `report` to explain.
#[must_use]
pub fn record(trace: &str, cgroup: &str, extra: &[&str]) -> Memtrace {
    let mut args = vec![
        "record",
        "-o",
        trace,
        "--cgroup",
        cgroup,
        "--stats-interval",
        "200ms",
        "--interval",
        "200ms",
    ];
    args.extend_from_slice(extra);
    Memtrace::start(&args)
}

/// The stdout of `memtrace ARGS`, which must succeed.
///
/// # Panics
///
/// When memtrace fails or prints something that is not UTF-8.
#[must_use]
pub fn run_ok(args: &[&str]) -> String {
    let out = memtrace_output(args);
    assert!(
        out.status.success(),
        "memtrace {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

/// The container named `name` in a JSON report.
///
/// # Panics
///
/// When the report has no such container.
#[must_use]
pub fn container<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["containers"]
        .as_array()
        .expect("containers")
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no container {name} in {report:#}"))
}
