//! Reading a memcg's own kernel counters from cgroupfs ([`CounterValues`]): v2 `memory.events`
//! and `memory.pressure`, v1 `memory.failcnt` and `memory.oom_control`, and from `memory.stat`
//! (both) refaults, activations, scans, dirty, writeback, shmem and mapped file pages.
//!
//! What a file or a line does not say is left out, never set to zero: `oom_group_kill` came in
//! 5.17, `memory.pressure` needs `CONFIG_PSI` (and reading it fails with `EOPNOTSUPP` when PSI is
//! off with `psi=0`), v1's `memory.stat` has no `pgscan`/`pgsteal` nor activations on 6.x, and
//! kernels before 5.9 count refaults without splitting anon from file.

use std::{fs, path::Path};

use memtrace_common::cgroup::v1_failcnt;

use super::{CgroupVersion, MemoryHierarchy};
use crate::event::{Counter, CounterValues};

/// Reads every counter the kernel has for `cgroup`; `None` when the cgroup is gone.
#[must_use]
pub fn read(hierarchy: &MemoryHierarchy, cgroup: &str) -> Option<CounterValues> {
    let dir = hierarchy.dir(cgroup);
    let stat = fs::read_to_string(dir.join("memory.stat")).ok()?;
    let mut values = from_stat(hierarchy.version, &stat);
    match hierarchy.version {
        CgroupVersion::V2 => {
            if let Some(events) = read_memory_events(&dir) {
                values.merge(&events);
            }
            if let Ok(pressure) = fs::read_to_string(dir.join("memory.pressure")) {
                values.merge(&from_pressure(&pressure));
            }
        }
        CgroupVersion::V1 => {
            if let Some(failcnt) = v1_failcnt(&dir) {
                values.set(Counter::Failcnt, failcnt);
            }
            if let Ok(oom) = fs::read_to_string(dir.join("memory.oom_control")) {
                values.merge(&from_oom_control(&oom));
            }
        }
    }
    Some(values)
}

/// The counters the kernel notifies changes of ([`super::CounterWatch`]), read now: v2
/// `memory.events`; v1 `memory.oom_control` and `memory.failcnt`. `None` when the cgroup is
/// gone.
#[must_use]
pub fn read_notified(hierarchy: &MemoryHierarchy, cgroup: &str) -> Option<CounterValues> {
    let dir = hierarchy.dir(cgroup);
    match hierarchy.version {
        CgroupVersion::V2 => read_memory_events(&dir),
        CgroupVersion::V1 => {
            let mut values =
                from_oom_control(&fs::read_to_string(dir.join("memory.oom_control")).ok()?);
            if let Some(failcnt) = v1_failcnt(&dir) {
                values.set(Counter::Failcnt, failcnt);
            }
            Some(values)
        }
    }
}

/// v2 `memory.events` of the cgroup directory `dir`; `None` when it cannot be read.
#[must_use]
pub fn read_memory_events(dir: &Path) -> Option<CounterValues> {
    fs::read_to_string(dir.join("memory.events"))
        .ok()
        .map(|text| from_memory_events(&text))
}

/// `KEY VALUE` lines.
fn key_values(text: &str) -> impl Iterator<Item = (&str, u64)> {
    text.lines().filter_map(|l| {
        let (k, v) = l.split_once(' ')?;
        Some((k, v.trim().parse().ok()?))
    })
}

/// v2 `memory.events`: `low 0`, `high 12`, `max 3`, `oom 1`, `oom_kill 1`, `oom_group_kill 0`.
#[must_use]
pub fn from_memory_events(text: &str) -> CounterValues {
    let mut values = CounterValues::default();
    for (key, value) in key_values(text) {
        let counter = match key {
            "low" => Counter::Low,
            "high" => Counter::High,
            "max" => Counter::Max,
            "oom" => Counter::Oom,
            "oom_kill" => Counter::OomKill,
            "oom_group_kill" => Counter::OomGroupKill,
            _ => continue,
        };
        values.set(counter, value);
    }
    values
}

/// v1 `memory.oom_control`: `oom_kill_disable 0`, `under_oom 0`, `oom_kill 1` (4.13+).
#[must_use]
pub fn from_oom_control(text: &str) -> CounterValues {
    let mut values = CounterValues::default();
    for (key, value) in key_values(text) {
        match key {
            "under_oom" => values.set(Counter::UnderOom, value),
            "oom_kill" => values.set(Counter::OomKill, value),
            _ => {}
        }
    }
    values
}

/// PSI's `memory.pressure`: `some avg10=0.00 avg60=0.00 avg300=0.00 total=1234` and a `full`
/// line; `total` is in microseconds, stored in nanoseconds.
#[must_use]
pub fn from_pressure(text: &str) -> CounterValues {
    let mut values = CounterValues::default();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        let counter = match words.next() {
            Some("some") => Counter::PressureSomeNs,
            Some("full") => Counter::PressureFullNs,
            _ => continue,
        };
        if let Some(us) = words.find_map(|w| w.strip_prefix("total=")?.parse::<u64>().ok()) {
            values.set(counter, us.saturating_mul(1000));
        }
    }
    values
}

/// The counters in `memory.stat`: v2's own keys (hierarchical), v1's `total_*` ones (the
/// hierarchical totals, as `stats` samples read them).
#[must_use]
pub fn from_stat(version: CgroupVersion, stat: &str) -> CounterValues {
    let mut values = CounterValues::default();
    for (key, value) in key_values(stat) {
        let key = match version {
            CgroupVersion::V1 => match key.strip_prefix("total_") {
                Some(key) => key,
                None => continue,
            },
            CgroupVersion::V2 => key,
        };
        let counter = match (version, key) {
            (_, "workingset_refault_anon") => Counter::WorkingsetRefaultAnon,
            (_, "workingset_refault_file") => Counter::WorkingsetRefaultFile,
            (_, "workingset_refault") => Counter::WorkingsetRefault,
            (_, "workingset_activate_anon") => Counter::WorkingsetActivateAnon,
            (_, "workingset_activate_file") => Counter::WorkingsetActivateFile,
            (_, "workingset_activate") => Counter::WorkingsetActivate,
            (_, "pgscan") => Counter::Pgscan,
            (_, "pgsteal") => Counter::Pgsteal,
            (CgroupVersion::V2, "file_dirty") | (CgroupVersion::V1, "dirty") => Counter::DirtyBytes,
            (CgroupVersion::V2, "file_writeback") | (CgroupVersion::V1, "writeback") => {
                Counter::WritebackBytes
            }
            (_, "shmem") => Counter::ShmemBytes,
            (CgroupVersion::V2, "file_mapped") | (CgroupVersion::V1, "mapped_file") => {
                Counter::FileMappedBytes
            }
            _ => continue,
        };
        values.set(counter, value);
    }
    values
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `memory.stat` of a v1 memcg on this project's 6.18 host (hybrid hierarchy).
    const V1_STAT_6_18: &str = "cache 9990144\nrss 4796416\nrss_huge 0\nshmem 9170944\n\
        mapped_file 7331840\ndirty 53248\nwriteback 0\nworkingset_refault_anon 0\n\
        workingset_refault_file 1553\nswap 0\nswapcached 0\npgpgin 106822\npgpgout 103212\n\
        pgfault 100894\npgmajfault 0\ninactive_anon 1146880\nactive_anon 385024\n\
        inactive_file 0\nactive_file 819200\nunevictable 12435456\n\
        hierarchical_memory_limit 9223372036854771712\n\
        hierarchical_memsw_limit 9223372036854771712\ntotal_cache 4675985408\n\
        total_rss 196325376\ntotal_rss_huge 0\ntotal_shmem 9256960\n\
        total_mapped_file 186773504\ntotal_dirty 765546496\ntotal_writeback 4096\n\
        total_workingset_refault_anon 0\ntotal_workingset_refault_file 1740461\n\
        total_swap 0\ntotal_swapcached 0\ntotal_pgpgin 731414678\ntotal_pgpgout 730559593\n\
        total_pgfault 753706876\ntotal_pgmajfault 221306\ntotal_inactive_anon 192577536\n\
        total_active_anon 466944\ntotal_inactive_file 2813001728\n\
        total_active_file 1853726720\ntotal_unevictable 12435456\n";

    /// `memory.stat` of a v2 memcg on Debian's 6.1 (trimmed to the lines around the counters).
    const V2_STAT_6_1: &str = "anon 1994752\nfile 70254592\nkernel 1445888\n\
        kernel_stack 16384\npagetables 49152\nsec_pagetables 0\npercpu 0\nsock 0\nvmalloc 0\n\
        shmem 1048576\nzswap 0\nzswapped 0\nfile_mapped 4464640\nfile_dirty 135168\n\
        file_writeback 8192\nswapcached 0\nanon_thp 0\nfile_thp 0\nshmem_thp 0\n\
        inactive_anon 3043328\nactive_anon 0\ninactive_file 51732480\nactive_file 17473536\n\
        unevictable 0\nslab_reclaimable 1127272\nslab_unreclaimable 198568\nslab 1325840\n\
        workingset_refault_anon 2\nworkingset_refault_file 3150\nworkingset_activate_anon 1\n\
        workingset_activate_file 812\nworkingset_restore_anon 0\nworkingset_restore_file 97\n\
        workingset_nodereclaim 0\npgscan 25602\npgsteal 25180\npgscan_kswapd 0\n\
        pgscan_direct 25602\npgsteal_kswapd 0\npgsteal_direct 25180\npgfault 30925\n\
        pgmajfault 4\npgrefill 1021\npgactivate 4511\npgdeactivate 1021\npglazyfree 0\n\
        pglazyfreed 0\nthp_fault_alloc 0\nthp_collapse_alloc 0\n";

    /// `memory.stat` of a v2 memcg on 5.8 (before refaults were split by anon and file).
    const V2_STAT_5_8: &str = "anon 4096\nfile 8192\nfile_mapped 0\nfile_dirty 0\n\
        file_writeback 0\nshmem 0\nworkingset_refault 17\nworkingset_activate 5\n\
        workingset_nodereclaim 0\npgscan 40\npgsteal 38\n";

    #[test]
    fn v1_reads_the_hierarchical_totals_and_has_no_scans() {
        let v = from_stat(CgroupVersion::V1, V1_STAT_6_18);
        assert_eq!(v.get(Counter::WorkingsetRefaultFile), Some(1_740_461));
        assert_eq!(v.get(Counter::WorkingsetRefaultAnon), Some(0));
        assert_eq!(v.get(Counter::DirtyBytes), Some(765_546_496));
        assert_eq!(v.get(Counter::WritebackBytes), Some(4096));
        assert_eq!(v.get(Counter::ShmemBytes), Some(9_256_960));
        assert_eq!(v.get(Counter::FileMappedBytes), Some(186_773_504));
        for absent in [
            Counter::Pgscan,
            Counter::Pgsteal,
            Counter::WorkingsetActivateFile,
            Counter::WorkingsetRefault,
            Counter::High,
        ] {
            assert_eq!(v.get(absent), None, "{absent}: absent, not zero");
        }
    }

    #[test]
    fn v2_reads_its_own_keys() {
        let v = from_stat(CgroupVersion::V2, V2_STAT_6_1);
        assert_eq!(v.get(Counter::WorkingsetRefaultFile), Some(3150));
        assert_eq!(v.get(Counter::WorkingsetActivateFile), Some(812));
        assert_eq!(v.get(Counter::WorkingsetActivateAnon), Some(1));
        assert_eq!(v.get(Counter::Pgscan), Some(25_602));
        assert_eq!(v.get(Counter::Pgsteal), Some(25_180));
        assert_eq!(v.get(Counter::DirtyBytes), Some(135_168));
        assert_eq!(v.get(Counter::WritebackBytes), Some(8192));
        assert_eq!(v.get(Counter::FileMappedBytes), Some(4_464_640));
        assert_eq!(v.get(Counter::ShmemBytes), Some(1_048_576));
        assert_eq!(v.get(Counter::WorkingsetRefault), None);
        // `pgscan_direct` and the like are not `pgscan`.
        assert_eq!(v.0.len(), 10, "{v:?}");
    }

    #[test]
    fn kernels_before_5_9_count_refaults_together() {
        let v = from_stat(CgroupVersion::V2, V2_STAT_5_8);
        assert_eq!(v.get(Counter::WorkingsetRefault), Some(17));
        assert_eq!(v.get(Counter::WorkingsetActivate), Some(5));
        assert_eq!(v.get(Counter::WorkingsetRefaultFile), None);
    }

    #[test]
    fn memory_events_without_oom_group_kill_before_5_17() {
        // 5.10
        let v = from_memory_events("low 0\nhigh 12\nmax 3\noom 1\noom_kill 1\n");
        assert_eq!(v.get(Counter::High), Some(12));
        assert_eq!(v.get(Counter::Max), Some(3));
        assert_eq!(v.get(Counter::OomKill), Some(1));
        assert_eq!(v.get(Counter::OomGroupKill), None, "absent, not zero");
        // 6.1
        let v = from_memory_events("low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\noom_group_kill 0\n");
        assert_eq!(v.get(Counter::OomGroupKill), Some(0));
        assert_eq!(v.get(Counter::Low), Some(0));
    }

    #[test]
    fn oom_control_gives_the_kill_count_and_whether_under_oom() {
        let v = from_oom_control("oom_kill_disable 0\nunder_oom 0\noom_kill 3\n");
        assert_eq!(v.get(Counter::OomKill), Some(3));
        assert_eq!(v.get(Counter::UnderOom), Some(0));
        // Before 4.13 there was no kill count.
        let v = from_oom_control("oom_kill_disable 0\nunder_oom 1\n");
        assert_eq!(v.get(Counter::OomKill), None);
        assert_eq!(v.get(Counter::UnderOom), Some(1));
    }

    #[test]
    fn pressure_totals_are_nanoseconds_and_absent_without_psi() {
        let v = from_pressure(
            "some avg10=0.00 avg60=0.12 avg300=0.03 total=112233\n\
             full avg10=0.00 avg60=0.10 avg300=0.02 total=99887\n",
        );
        assert_eq!(v.get(Counter::PressureSomeNs), Some(112_233_000));
        assert_eq!(v.get(Counter::PressureFullNs), Some(99_887_000));
        // Before 5.2 only `some`… and with PSI off, nothing can be read at all.
        let v = from_pressure("some avg10=0.00 avg60=0.00 avg300=0.00 total=5\n");
        assert_eq!(v.get(Counter::PressureFullNs), None);
        assert!(from_pressure("").is_empty());
    }

    #[test]
    fn reads_a_v1_and_a_v2_directory() {
        let root = tempfile::tempdir().expect("tempdir");
        let dir = root.path().join("c");
        fs::create_dir(&dir).expect("mkdir");
        fs::write(dir.join("memory.stat"), V1_STAT_6_18).expect("write");
        fs::write(dir.join("memory.failcnt"), "42\n").expect("write");
        fs::write(
            dir.join("memory.oom_control"),
            "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
        )
        .expect("write");
        let v1 = MemoryHierarchy {
            root: root.path().to_owned(),
            version: CgroupVersion::V1,
        };
        let v = read(&v1, "/c").expect("read");
        assert_eq!(v.get(Counter::Failcnt), Some(42));
        assert_eq!(v.get(Counter::OomKill), Some(2));
        assert_eq!(v.get(Counter::PressureSomeNs), None);
        assert!(read(&v1, "/gone").is_none());

        fs::write(dir.join("memory.stat"), V2_STAT_6_1).expect("write");
        fs::write(
            dir.join("memory.events"),
            "low 0\nhigh 1\nmax 2\noom 0\noom_kill 0\n",
        )
        .expect("write");
        let v2 = MemoryHierarchy {
            version: CgroupVersion::V2,
            ..v1
        };
        let v = read(&v2, "/c").expect("read");
        assert_eq!(v.get(Counter::Max), Some(2));
        assert_eq!(v.get(Counter::Failcnt), None, "v1 only");
        assert_eq!(
            v.get(Counter::PressureSomeNs),
            None,
            "no memory.pressure: no PSI"
        );
    }
}
