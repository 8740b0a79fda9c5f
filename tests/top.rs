//! `memtrace top` on a real terminal (tmux), as an operator uses it: live during a real
//! memory-cgroup OOM kill, and playing a recorded incident; the terminal is given back on `q`
//! and on Ctrl-C. Without a terminal it says to use `run`.

use std::{fs, io::Write as _, os::unix::fs::MetadataExt as _, thread, time::Duration};

use memtrace_tests::{
    CACHE_CONTAINER_ID, OOM_CONTAINER_ID, TestCgroup, assert_oom_killed, memtrace_bin,
    memtrace_output, record_incident, tmux::Tmux,
};

const MEMHOG: &str = env!("CARGO_BIN_EXE_memhog");
const LIMIT: u64 = 64 << 20;
/// How `top` names the two containers (`runtime:short id`).
const OOM_NAME: &str = "docker:0ad1c0ffee5e";
const CACHE_NAME: &str = "docker:ca5cade0fca5";
const WAIT: Duration = Duration::from_secs(30);

/// The table's rows, top to bottom: the lines after the column headings.
fn rows(screen: &str) -> Vec<&str> {
    screen
        .lines()
        .skip_while(|l| !l.starts_with("CONTAINER"))
        .skip(1)
        .filter(|l| l.starts_with("docker:"))
        .collect()
}

fn first_row_is(screen: &str, name: &str) -> bool {
    rows(screen).first().is_some_and(|r| r.starts_with(name))
}

/// The terminal is back as it was: the alternate screen left, the shell in front, the tty's
/// modes those saved before `top` started.
fn assert_terminal_restored(tmux: &Tmux, saved_modes: &str) {
    tmux.wait_for("the shell to be back", WAIT, |_| {
        tmux.pane("#{alternate_on}") == "0" && tmux.pane("#{pane_current_command}") == "bash"
    });
    tmux.type_line(&format!(
        "stty -g | cmp -s - {saved_modes} && echo TTY-MODES-RESTORED"
    ));
    tmux.wait_for("the tty modes check", WAIT, |s| {
        s.lines().any(|l| l.trim() == "TTY-MODES-RESTORED")
    });
}

/// Esc out of a detail view; waits for the table, so that the next key is not read with the
/// Esc as one Alt chord.
fn back_to_the_table(tmux: &Tmux) -> String {
    tmux.press("Escape");
    tmux.wait_for("the table", WAIT, |s| {
        s.lines().any(|l| l.starts_with("CONTAINER")) && !s.contains("recent events")
    })
}

#[test]
fn top_shows_a_live_oom_kill_sorts_opens_it_and_restores_the_terminal() {
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir");
    let file = tmp.path().join("cold-32m");
    {
        let mut out = fs::File::create(&file).expect("create file");
        out.write_all(&vec![0x5au8; 32 << 20]).expect("write file");
        // Clean pages, so that dropping the cache leaves none charged to this test.
        out.sync_all().expect("sync file");
    }
    fs::write("/proc/sys/vm/drop_caches", "1").expect("drop caches");
    let inode = fs::metadata(&file).expect("stat").ino();
    let base = TestCgroup::new("top", 1 << 30);
    let docker = base.child("docker", None);
    let oom = docker.child(OOM_CONTAINER_ID, Some(LIMIT));
    let cache = docker.child(CACHE_CONTAINER_ID, Some(LIMIT));

    let tmux = Tmux::start("top", 200, 50);
    let modes = tmp.path().join("tty-modes");
    tmux.type_line(&format!("stty -g > {}", modes.display()));
    tmux.type_line(&format!(
        "{} top --cgroup {} --stats-interval 300ms --interval 300ms; echo TOP-EXITED-$?",
        memtrace_bin().display(),
        base.path
    ));
    tmux.wait_for("top's screen", WAIT, |s| s.contains("memtrace top — live"));
    assert_eq!(
        tmux.pane("#{alternate_on}"),
        "1",
        "top draws on the alternate screen"
    );
    tmux.wait_for("both containers' rows", WAIT, |s| {
        s.contains(OOM_NAME) && s.contains(CACHE_NAME)
    });

    let input = format!("if={}", file.display());
    let (_, status) = cache.run_inside("dd", &[&input, "of=/dev/null", "bs=1M", "status=none"]);
    assert!(status.success(), "dd failed: {status}");
    let (pid, status) = oom.run_memhog(MEMHOG, 1024);
    assert_oom_killed(pid, status);

    // The kill stays on its container's row, with the report's verdict.
    let screen = tmux.wait_for("the kill on its row", WAIT, |s| {
        rows(s)
            .iter()
            .any(|r| r.starts_with(OOM_NAME) && r.contains("1 anon growth"))
    });
    // Sorting: by name A→Z, Z→A, then by OOM kills (the killed one first).
    tmux.press("n");
    tmux.wait_for("sorted by name", WAIT, |s| {
        s.contains("sort CONTAINER ↑") && first_row_is(s, OOM_NAME)
    });
    tmux.press("n");
    tmux.wait_for("sorted by name, reversed", WAIT, |s| {
        s.contains("sort CONTAINER ↓") && first_row_is(s, CACHE_NAME)
    });
    tmux.press("o");
    let by_kills = tmux.wait_for("sorted by OOM kills", WAIT, |s| {
        s.contains("sort OOM") && first_row_is(s, OOM_NAME)
    });
    assert_ne!(rows(&screen).len(), 0, "{screen}");
    assert_eq!(rows(&by_kills).len(), 2, "{by_kills}");

    // The killed container's detail: the kill with its verdict and victim, its events.
    tmux.press("Home");
    tmux.press("Enter");
    let detail = tmux.wait_for("the killed container's detail", WAIT, |s| {
        s.contains("recent events")
    });
    assert!(detail.contains(&oom.path), "{detail}");
    assert!(
        detail.contains(&format!("pid {pid} memhog — anon growth: anon memory")),
        "{detail}"
    );
    assert!(
        detail.contains("reclaim ") && detail.contains("freed nothing"),
        "the reclaims around the kill: {detail}"
    );

    // The reader's detail: the file it read, added to its page cache (other tests on the
    // machine may drop caches, so what is still there is not checked).
    back_to_the_table(&tmux);
    tmux.press("/");
    tmux.type_line("ca5cade");
    tmux.press("Enter");
    let detail = tmux.wait_for("the reader's file", WAIT, |s| {
        s.contains(&cache.path)
            && s.lines().any(|l| {
                let named =
                    l.contains(&format!("inode {inode}")) || l.contains(&*file.to_string_lossy());
                named && l.contains(" 32.0MiB ")
            })
    });
    assert!(detail.contains("page cache by file"), "{detail}");

    // The filter typed above leaves only the reader in the table.
    let filtered = back_to_the_table(&tmux);
    assert!(filtered.contains("filter: ca5cade"), "{filtered}");
    assert_eq!(rows(&filtered).len(), 1, "{filtered}");
    assert!(first_row_is(&filtered, CACHE_NAME), "{filtered}");

    tmux.press("q");
    assert_terminal_restored(&tmux, &modes.to_string_lossy());
    let after = tmux.wait_for("top's exit status", WAIT, |s| s.contains("TOP-EXITED-"));
    assert!(after.contains("TOP-EXITED-0"), "{after}");
    assert!(after.contains("memtrace: detached after"), "{after}");
}

#[test]
fn top_replays_a_recorded_incident_with_pause_step_and_speed() {
    let incident = record_incident("top-replay", MEMHOG, env!("CARGO_TARGET_TMPDIR"));
    let modes = incident.dir.path().join("tty-modes");
    let tmux = Tmux::start("top-replay", 200, 50);
    tmux.type_line(&format!("stty -g > {}", modes.display()));
    tmux.type_line(&format!(
        "{} top --replay {}; echo TOP-EXITED-$?",
        memtrace_bin().display(),
        incident.trace.display()
    ));
    tmux.wait_for("the replay's screen", WAIT, |s| {
        s.contains("memtrace top — replay of")
    });
    tmux.press("Space");
    let paused = tmux.wait_for("paused", WAIT, |s| s.contains("PAUSED"));
    let events = |s: &str| -> u64 {
        s.lines()
            .next()
            .and_then(|l| {
                l.split("  ")
                    .find_map(|p| p.strip_suffix(" events")?.parse().ok())
            })
            .unwrap_or_else(|| panic!("no event count in the header:\n{s}"))
    };
    thread::sleep(Duration::from_millis(600));
    assert_eq!(
        events(&tmux.screen()),
        events(&paused),
        "nothing plays while paused"
    );
    let before = events(&tmux.screen());
    for _ in 0..3 {
        tmux.press(".");
    }
    tmux.wait_for("three steps of a second", WAIT, |s| events(s) > before);
    tmux.press("Space");
    for _ in 0..5 {
        tmux.press("+");
    }
    let ended = tmux.wait_for("the end of the recording", Duration::from_secs(60), |s| {
        s.contains("×32") && s.contains("end of the recording")
    });
    let killed = rows(&ended)
        .into_iter()
        .find(|r| r.starts_with(OOM_NAME))
        .unwrap_or_else(|| panic!("no row for the killed container:\n{ended}"));
    assert!(killed.contains("1 anon growth"), "{ended}");
    tmux.press("o");
    tmux.press("Home");
    tmux.press("Enter");
    let detail = tmux.wait_for("the detail", WAIT, |s| s.contains("recent events"));
    assert!(
        detail.contains(&format!("pid {} memhog", incident.victim_pid)),
        "{detail}"
    );
    assert!(detail.contains(&incident.oom_cgroup), "{detail}");

    tmux.press("C-c");
    assert_terminal_restored(&tmux, &modes.to_string_lossy());
    let after = tmux.wait_for("top's exit status", WAIT, |s| s.contains("TOP-EXITED-"));
    assert!(after.contains("TOP-EXITED-0"), "{after}");
}

#[test]
fn top_without_a_terminal_says_to_use_run() {
    let out = memtrace_output(&["top"]);
    assert!(!out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("memtrace run"), "{stderr}");
    assert!(out.stdout.is_empty(), "nothing drawn: {out:?}");
}
