//! A real Prometheus server, started on loopback to scrape memtrace's `--metrics` endpoint
//! every second, and the tools around the exposition format (`promtool`). Both come from the
//! Debian package `prometheus` (`cargo xtask test` installs it).

use std::{
    fmt::Write as _,
    fs,
    net::TcpListener,
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use crate::Memtrace;

/// The address memtrace serves metrics on, from its start-up line
/// (`memtrace: serving Prometheus metrics at http://ADDR/metrics …`).
///
/// # Panics
///
/// When memtrace did not say.
#[must_use]
pub fn metrics_address(memtrace: &Memtrace) -> String {
    memtrace
        .stderr_at_start()
        .iter()
        .find_map(|l| {
            let rest = l.strip_prefix("memtrace: serving Prometheus metrics at http://")?;
            Some(rest.split_once("/metrics")?.0.to_owned())
        })
        .unwrap_or_else(|| {
            panic!(
                "memtrace did not say where it serves metrics:\n{}",
                memtrace.stderr_at_start().join("\n")
            )
        })
}

/// `GET http://ADDR/metrics`: the exposition as memtrace serves it.
///
/// # Panics
///
/// When the request fails or is not answered with 200.
#[must_use]
pub fn fetch_metrics(addr: &str) -> String {
    get(&format!("http://{addr}/metrics"))
}

fn get(url: &str) -> String {
    ureq::get(url)
        .call()
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
        .body_mut()
        .read_to_string()
        .unwrap_or_else(|e| panic!("GET {url}: reading the body: {e}"))
}

/// The sample lines of an exposition (not `# HELP`/`# TYPE`): one per series.
#[must_use]
pub fn series(exposition: &str) -> Vec<&str> {
    exposition
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect()
}

/// Runs `promtool check metrics` on an exposition; returns what it printed, which is empty
/// when the exposition is well-formed and follows Prometheus' naming conventions.
///
/// # Panics
///
/// When promtool cannot be run, or finds a problem.
pub fn promtool_check_metrics(exposition: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool (Debian package prometheus; `cargo xtask test` installs it)");
    {
        let mut stdin = child.stdin.take().expect("stdin");
        std::io::Write::write_all(&mut stdin, exposition.as_bytes()).expect("write to promtool");
    }
    let out = child.wait_with_output().expect("wait for promtool");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool check metrics: {} {said}\non:\n{exposition}",
        out.status
    );
}

/// A Prometheus server scraping one target every second, with its configuration and storage
/// in a temporary directory; stopped (and both removed) on drop.
pub struct Prometheus {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    dir: tempfile::TempDir,
}

/// The scrape job's name, as `up{job="…"}` shows it.
pub const JOB: &str = "memtrace";

impl Prometheus {
    /// Starts Prometheus scraping `target` (`HOST:PORT`, path `/metrics`) every second and
    /// waits until it has scraped it once.
    ///
    /// # Panics
    ///
    /// When Prometheus cannot be started, is not ready within 60 s, or cannot scrape the
    /// target.
    #[must_use]
    pub fn scrape(target: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("prometheus.yml");
        fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: {JOB}\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .expect("write prometheus.yml");
        let log = fs::File::create(dir.path().join("prometheus.log")).expect("log file");
        let port = free_port();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("run prometheus (Debian package prometheus; `cargo xtask test` installs it)");
        let prometheus = Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
            dir,
        };
        let ready = format!("{}/-/ready", prometheus.url);
        prometheus.wait("Prometheus to be ready", Duration::from_secs(60), || {
            ureq::get(&ready).call().is_ok().then_some(())
        });
        let up = format!("up{{job=\"{JOB}\"}}");
        prometheus.wait(
            "a successful scrape of memtrace",
            Duration::from_secs(30),
            || (prometheus.value(&up) == Some(1.0)).then_some(()),
        );
        prometheus
    }

    /// An instant query through the HTTP API (`/api/v1/query`): each series' labels and value.
    ///
    /// # Panics
    ///
    /// When the query fails.
    #[must_use]
    pub fn query(&self, promql: &str) -> Vec<(serde_json::Value, f64)> {
        let url = format!("{}/api/v1/query", self.url);
        let body = ureq::get(&url)
            .query("query", promql)
            .call()
            .unwrap_or_else(|e| panic!("query {promql}: {e}\n{}", self.log()))
            .body_mut()
            .read_to_string()
            .expect("read the query's answer");
        let answer: serde_json::Value =
            serde_json::from_str(&body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"));
        assert_eq!(answer["status"], "success", "query {promql}: {answer}");
        answer["data"]["result"]
            .as_array()
            .unwrap_or_else(|| panic!("query {promql}: no result vector: {answer}"))
            .iter()
            .map(|r| {
                let value = r["value"][1]
                    .as_str()
                    .and_then(|v| v.parse::<f64>().ok())
                    .unwrap_or_else(|| panic!("query {promql}: no value in {r}"));
                (r["metric"].clone(), value)
            })
            .collect()
    }

    /// The value of a query that gives at most one series (`None`: no series).
    ///
    /// # Panics
    ///
    /// When it gives several.
    #[must_use]
    pub fn value(&self, promql: &str) -> Option<f64> {
        let result = self.query(promql);
        assert!(
            result.len() <= 1,
            "{promql} gives several series: {result:?}"
        );
        result.first().map(|(_, v)| *v)
    }

    /// Polls `check` every 200 ms until it gives something, up to `timeout`.
    ///
    /// # Panics
    ///
    /// When it does not, with Prometheus' log.
    pub fn wait<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut check: impl FnMut() -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(found) = check() {
                return found;
            }
            assert!(
                Instant::now() < deadline,
                "waited {timeout:?} for {what}\nPrometheus' log:\n{}",
                self.log()
            );
            thread::sleep(Duration::from_millis(200));
        }
    }

    /// The last lines of Prometheus' own log, for failure messages.
    #[must_use]
    pub fn log(&self) -> String {
        let log = fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        let mut tail = String::new();
        for line in &lines[lines.len().saturating_sub(20)..] {
            let _ = writeln!(tail, "{line}");
        }
        tail
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port nothing listens on now (the kernel's pick for port 0).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}
