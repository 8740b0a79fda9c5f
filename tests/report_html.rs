//! The HTML report opened the way a person opens it: in a browser (headless Chromium, Debian's
//! `chromium`, installed by `cargo xtask test`), with no error and its charts drawn.

use std::{
    path::Path,
    process::{Command, Output, Stdio},
};

use memtrace_tests::{CACHE_CONTAINER_ID, OOM_CONTAINER_ID, memtrace_output, record_incident};

const MEMHOG: &str = env!("CARGO_BIN_EXE_memhog");

/// Runs headless Chromium on `page` with `args`; panics (the test fails) when it is missing.
fn chromium(page: &Path, profile: &Path, args: &[&str]) -> Output {
    let url = format!("file://{}", page.display());
    Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(&url)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run chromium ({e}): install it with `cargo xtask test` (its first step \
                 installs Debian's chromium package) or `apt-get install chromium`"
            )
        })
}

/// Lines of Chromium's log that are the page's doing: console messages (script errors, blocked
/// or failed loads) and network errors. Chromium's own start-up chatter (D-Bus, GPU) is not.
fn page_errors(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| l.contains("CONSOLE") || l.contains("Uncaught") || l.contains("net::ERR_"))
        .collect()
}

#[test]
fn html_report_opens_in_chromium_without_errors_and_shows_the_charts() {
    let incident = record_incident("report-html", MEMHOG, env!("CARGO_TARGET_TMPDIR"));
    let html = incident.dir.path().join("report.html");
    let out = memtrace_output(&[
        "report",
        incident.trace.to_str().expect("utf-8 path"),
        "--html",
        html.to_str().expect("utf-8 path"),
    ]);
    assert!(out.status.success(), "report --html failed: {out:?}");
    let source = std::fs::read_to_string(&html).expect("read the HTML report");
    let without_namespace = source.replace("xmlns=\"http://www.w3.org/2000/svg\"", "");
    assert!(
        !without_namespace.contains("http://") && !without_namespace.contains("https://"),
        "the report must not load anything from elsewhere"
    );

    let profile = tempfile::tempdir().expect("profile dir");
    let dom = chromium(&html, profile.path(), &["--dump-dom"]);
    let stderr = String::from_utf8_lossy(&dom.stderr);
    assert!(dom.status.success(), "chromium failed: {stderr}");
    assert!(
        page_errors(&stderr).is_empty(),
        "the page logged errors: {:#?}",
        page_errors(&stderr)
    );
    let dom = String::from_utf8_lossy(&dom.stdout);
    // A timeline per container seen (the two, and their docker parent or the base named with
    // --cgroup) and the dying-memcg chart, each an inline SVG with lines drawn.
    let memory_charts = dom.matches("class=\"chart memory-chart\"").count();
    assert!(
        memory_charts >= 2,
        "{memory_charts} memory charts in:\n{dom}"
    );
    assert_eq!(dom.matches("class=\"chart dying-chart\"").count(), 1);
    assert!(dom.matches("<svg").count() > memory_charts, "{dom}");
    assert!(dom.contains("<polyline"), "lines are drawn");
    for needle in [
        format!("docker:{}", &OOM_CONTAINER_ID[..12]),
        format!("docker:{}", &CACHE_CONTAINER_ID[..12]),
        "OOM kill".to_owned(),
        "charge failure".to_owned(),
        "page cache".to_owned(),
        "kernel (slab)".to_owned(),
        ">anon growth</span>".to_owned(),
    ] {
        assert!(dom.contains(&needle), "no {needle:?} in the page");
    }

    // And it renders: a screenshot of the page is a real PNG.
    let png = incident.dir.path().join("report.png");
    let shot = chromium(
        &html,
        profile.path(),
        &[
            &format!("--screenshot={}", png.display()),
            "--window-size=1200,1600",
            "--hide-scrollbars",
        ],
    );
    let stderr = String::from_utf8_lossy(&shot.stderr);
    assert!(
        shot.status.success(),
        "chromium screenshot failed: {stderr}"
    );
    assert!(page_errors(&stderr).is_empty(), "{stderr}");
    let bytes = std::fs::read(&png).expect("screenshot written");
    assert!(
        bytes.starts_with(b"\x89PNG") && bytes.len() > 20_000,
        "a PNG with something drawn ({} bytes)",
        bytes.len()
    );
    // To look at what the test saw: MEMTRACE_TEST_KEEP_REPORT=/tmp/x keeps x.html, x.png and
    // x.mtrace.
    if let Some(keep) = std::env::var_os("MEMTRACE_TEST_KEEP_REPORT") {
        std::fs::copy(&html, Path::new(&keep).with_extension("html")).expect("keep html");
        std::fs::copy(&png, Path::new(&keep).with_extension("png")).expect("keep png");
        std::fs::copy(&incident.trace, Path::new(&keep).with_extension("mtrace"))
            .expect("keep the trace");
    }
}
