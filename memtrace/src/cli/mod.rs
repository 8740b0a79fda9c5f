//! Command line: one module per subcommand.

mod export;
mod floor;
mod live;
mod probes;
mod progress;
mod record;
mod replay;
mod report;
mod run;
pub mod select;
mod stream;
mod top;
mod trace_input;

use std::{io, process::ExitCode, time::Instant};

use clap::{Parser, Subcommand};

const EXAMPLES: &str = "\
Examples:
  memtrace run                              stream OOM kills live until Ctrl-C
  memtrace run --format json --duration 10m JSON Lines for 10 minutes
  memtrace top                              full screen: containers, limits, reclaim, OOM kills
  memtrace top --replay node1.mtrace        a recording played through the same screen
  memtrace record -o node1.mtrace           record to a trace file until Ctrl-C
  memtrace record -o n1.mtrace --max-size 100M --rotate 5
                                            at most 5 files of at most 100 MiB each
  memtrace record --flight 2m --out DIR     flight recorder: a trace file per OOM kill with
                                            the 2 minutes before it
  memtrace run --metrics 9750               also serve Prometheus metrics at
                                            http://127.0.0.1:9750/metrics
  memtrace replay node1.mtrace              print a recorded trace like `run` did
  memtrace replay node1.mtrace --type oom_kill --since 5m
                                            only OOM kills from 5 minutes into the recording
  memtrace report node1.mtrace              per container: OOM kills and why, cache, reclaim
  memtrace report node1.mtrace --html r.html  the same with timeline charts, one HTML file
  memtrace export --perfetto node1.mtrace -o node1.json
                                            a trace to open in ui.perfetto.dev
  memtrace probes                           what this kernel allows and what attaches

memtrace must run as root (it loads eBPF programs). RUST_LOG=debug shows more.";

/// Why a container's memory stays high and why it was OOM-killed, live and afterwards.
#[derive(Debug, Parser)]
#[command(version, about, after_help = EXAMPLES)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    Run(run::Args),
    Record(record::Args),
    Replay(replay::Args),
    Report(report::Args),
    Export(export::Args),
    Top(top::Args),
    Probes(probes::Args),
    /// For `cargo xtask bench` only
    #[command(hide = true)]
    BenchFloor(floor::Args),
}

/// Runs a parsed command line; errors become one line on stderr and exit status 1.
#[must_use]
pub fn main(cli: Cli, started: Instant) -> ExitCode {
    let result = match cli.command {
        Command::Run(args) => run::run(&args, started),
        Command::Record(args) => record::run(&args, started),
        Command::Replay(args) => replay::run(&args),
        Command::Report(args) => report::run(&args),
        Command::Export(args) => export::run(&args),
        Command::Top(args) => top::run(&args, started),
        Command::Probes(args) => probes::run(&args),
        Command::BenchFloor(args) => floor::run(&args),
    };
    match result {
        Ok(code) => code,
        // Output piped into `head` and closed: not an error worth a message.
        Err(err) if is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("memtrace: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain()
        .filter_map(|e| e.downcast_ref::<io::Error>())
        .any(|e| e.kind() == io::ErrorKind::BrokenPipe)
}

/// A current-thread runtime: the pipeline is one reader and one consumer, and a single thread
/// keeps memtrace's own footprint on the node small. Its pooled threads (walks, scans, the drain)
/// run at the niceness memtrace was started with, not the raised consumer's that starts them.
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    use anyhow::Context as _;
    let pooled = crate::priority::Pooled::now();
    tokio::runtime::Builder::new_current_thread()
        .on_thread_start(move || pooled.put_back())
        .enable_all()
        .build()
        .context("starting the async runtime")
}

#[cfg(test)]
mod tests {
    #[test]
    fn report_and_export_take_their_options() {
        let cli = Cli::try_parse_from([
            "memtrace", "report", "f", "--format", "json", "--html", "o.html", "--top", "5",
        ])
        .expect("ok");
        assert!(matches!(cli.command, Command::Report(a)
            if a.format == report::ReportFormat::Json && a.html.is_some() && a.top == Some(5)));
        assert!(Cli::try_parse_from(["memtrace", "report", "f", "--top", "-1"]).is_err());
        let cli = Cli::try_parse_from(["memtrace", "export", "--perfetto", "f", "-o", "o.json"])
            .expect("ok");
        assert!(
            matches!(cli.command, Command::Export(a) if a.perfetto && a.output.to_str() == Some("o.json"))
        );
    }

    use clap::CommandFactory as _;

    use super::*;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_run_options() {
        let cli = Cli::try_parse_from([
            "memtrace",
            "run",
            "--format",
            "json",
            "--duration",
            "1m 30s",
        ])
        .expect("parses");
        let Command::Run(args) = cli.command else {
            panic!("not run: {cli:?}")
        };
        assert_eq!(args.format, crate::sinks::Format::Json);
        assert_eq!(args.live.duration.map(|d| d.as_secs()), Some(90));
    }

    #[test]
    fn metrics_options_parse_for_every_live_subcommand() {
        let cli = Cli::try_parse_from(["memtrace", "run", "--metrics", "9750"]).expect("parses");
        let Command::Run(args) = cli.command else {
            panic!("not run")
        };
        let m = &args.live.metrics;
        assert_eq!(m.metrics, Some("127.0.0.1:9750".parse().expect("addr")));
        assert_eq!(m.metrics_grace, crate::metrics::DEFAULT_GRACE);
        let cli = Cli::try_parse_from([
            "memtrace",
            "record",
            "-o",
            "x",
            "--metrics",
            "0.0.0.0:9750",
            "--metrics-grace",
            "5s",
        ])
        .expect("parses");
        let Command::Record(args) = cli.command else {
            panic!("not record")
        };
        let m = &args.live.metrics;
        assert_eq!(m.metrics, Some("0.0.0.0:9750".parse().expect("addr")));
        assert_eq!(m.metrics_grace.as_secs(), 5);
        let none = Cli::try_parse_from(["memtrace", "run"]).expect("parses");
        assert!(matches!(none.command, Command::Run(a) if a.live.metrics.metrics.is_none()));
        assert!(Cli::try_parse_from(["memtrace", "run", "--metrics", "localhost"]).is_err());
    }

    #[test]
    fn rejects_bad_input_with_a_message() {
        for argv in [
            &["memtrace", "run", "--duration", "soon"][..],
            &["memtrace", "run", "--format", "xml"],
            &["memtrace", "record"],
            &["memtrace", "replay"],
            &["memtrace", "report"],
            &["memtrace", "report", "f", "--format", "html"],
            &["memtrace", "export", "f", "-o", "out.json"],
            &["memtrace", "export", "--perfetto", "f"],
            &["memtrace", "frobnicate"],
        ] {
            let err = Cli::try_parse_from(argv).expect_err("must be rejected");
            assert!(!err.to_string().is_empty(), "{argv:?}");
        }
    }

    #[test]
    fn record_bounds_and_replay_filters_parse() {
        let cli = Cli::try_parse_from([
            "memtrace",
            "record",
            "-o",
            "x",
            "--max-size",
            "100M",
            "--rotate",
            "5",
            "--print",
            "json",
        ])
        .expect("parses");
        let Command::Record(a) = cli.command else {
            panic!("not record")
        };
        assert_eq!((a.max_size, a.rotate), (Some(100 << 20), Some(5)));
        assert_eq!(a.print, Some(crate::sinks::Format::Json));
        for argv in [
            &["memtrace", "record", "-o", "x", "--rotate", "5"][..],
            &["memtrace", "record", "-o", "x", "--max-size", "1K"],
            &[
                "memtrace",
                "record",
                "-o",
                "x",
                "--max-size",
                "1M",
                "--rotate",
                "0",
            ],
            &["memtrace", "replay", "f", "--type", "oom"],
            &["memtrace", "replay", "f", "--since", "yesterday"],
        ] {
            assert!(Cli::try_parse_from(argv).is_err(), "{argv:?}");
        }
        let cli = Cli::try_parse_from([
            "memtrace",
            "replay",
            "f",
            "--type",
            "oom_kill,reclaim",
            "--since",
            "5m",
            "--until",
            "2026-11-27T16:00:00Z",
            "--pod",
            "shop/cart",
        ])
        .expect("parses");
        let Command::Replay(a) = cli.command else {
            panic!("not replay")
        };
        assert_eq!(
            a.select.types,
            Some(vec!["oom_kill".to_owned(), "reclaim".to_owned()])
        );
        assert_eq!(a.select.filter.pod.as_deref(), Some("shop/cart"));
        assert!(a.select.since.is_some() && a.select.until.is_some());
    }

    #[test]
    fn record_flight_takes_a_window_and_a_directory() {
        let cli = Cli::try_parse_from(["memtrace", "record", "--flight", "2m", "--out", "/d"])
            .expect("parses");
        let Command::Record(a) = cli.command else {
            panic!("not record")
        };
        assert_eq!(a.flight.map(|d| d.as_secs()), Some(120));
        assert_eq!(a.out.as_deref(), Some(std::path::Path::new("/d")));
        assert_eq!(a.flight_after.as_secs(), 5);
        assert_eq!(a.flight_bytes, crate::flight::DEFAULT_MAX_BYTES);
        assert!(a.output.is_none());
        for argv in [
            &["memtrace", "record", "--flight", "0", "--out", "/d"][..],
            &["memtrace", "record", "--flight", "2m"],
            &["memtrace", "record", "--out", "/d"],
            &[
                "memtrace", "record", "-o", "f", "--flight", "2m", "--out", "/d",
            ],
            &[
                "memtrace",
                "record",
                "--flight",
                "2m",
                "--out",
                "/d",
                "--max-size",
                "1M",
            ],
            &[
                "memtrace",
                "record",
                "--flight",
                "2m",
                "--out",
                "/d",
                "--flight-bytes",
                "1K",
            ],
            &["memtrace", "record", "-o", "f", "--flight-after", "3s"],
        ] {
            assert!(Cli::try_parse_from(argv).is_err(), "{argv:?}");
        }
    }

    #[test]
    fn record_and_replay_take_files() {
        let cli = Cli::try_parse_from(["memtrace", "record", "-o", "/tmp/x.mtrace"]).expect("ok");
        assert!(
            matches!(cli.command, Command::Record(a) if a.output.as_deref() == Some(std::path::Path::new("/tmp/x.mtrace")))
        );
        let cli = Cli::try_parse_from(["memtrace", "replay", "f", "--format", "json"]).expect("ok");
        assert!(
            matches!(cli.command, Command::Replay(a) if a.format == crate::sinks::Format::Json)
        );
    }
}
