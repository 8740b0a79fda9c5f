//! `memtrace record`: write events to a trace file.

use std::{
    fs, io,
    os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _},
    path::{Path, PathBuf},
    process::ExitCode,
    time::{Duration, Instant},
};

use anyhow::Context as _;

use super::{
    live::{LiveArgs, Session},
    stream::TextArgs,
};
use crate::{
    attribution::{MemcgCensus, MemcgResolver, count_dying},
    clock,
    flight::{self, CensusHistory, FlightRecorder},
    sinks::{self, Sink, Tee},
    trace::{FileFull, Limits, Recording, TraceHeader},
    units::{human_bytes, parse_size},
};

/// Record events to a trace file until Ctrl-C (or --duration), to analyse later anywhere.
///
/// Events are written in compressed blocks at least every second, so a recorder that is
/// killed (even with `kill -9`) loses at most the last second; `memtrace replay` reads such a
/// file up to its last whole block and says that its tail was cut.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    memtrace record -o node1.mtrace\n  \
    memtrace record -o oom.mtrace --duration 1h\n  \
    memtrace record -o oom.mtrace --print json   also stream JSON Lines on stdout\n  \
    memtrace record -o oom.mtrace --print text   also the text stream, summarised as `run` prints it\n  \
    memtrace record -o node1.mtrace --max-size 100M              stop at 100 MiB\n  \
    memtrace record -o node1.mtrace --max-size 100M --rotate 5   node1.mtrace.000001, …\n    \
                 (each file at most 100 MiB; the newest 5 are kept)\n  \
    memtrace record --flight 2m --out /var/lib/memtrace/oom\n    \
                 flight recorder: the last 2 minutes in memory (at most 64 MiB); for each OOM\n    \
                 kill, oom-<container>-<UTC time>.mtrace with those 2 minutes and 5 s after\n  \
    memtrace record --flight 10m --flight-after 30s --flight-bytes 256M --out DIR\n  \
    memtrace report /var/lib/memtrace/oom/oom-hog-20261129T080604Z.mtrace")]
pub struct Args {
    /// Trace file to write (created with mode 0600; replaced if it exists).
    #[arg(
        short,
        long,
        required_unless_present = "flight",
        conflicts_with = "flight"
    )]
    pub output: Option<PathBuf>,
    /// Never let a file grow past SIZE (e.g. 100M, 2G; at least 64K): without --rotate, the
    /// recording ends there (exit status 0).
    #[arg(long, value_name = "SIZE", value_parser = parse_max_size, conflicts_with = "flight")]
    pub max_size: Option<u64>,
    /// With --max-size: when a file is full, go on in the next one, keeping at most N files.
    /// They are named OUTPUT.000001, OUTPUT.000002, … (each a complete trace; the last one's
    /// end marker has the session's lost-event counts). Earlier OUTPUT.NNNNNN files are
    /// removed at the start.
    #[arg(long, value_name = "N", requires = "max_size",
          value_parser = clap::value_parser!(u32).range(1..))]
    pub rotate: Option<u32>,
    /// Flight recorder: write nothing continuously; keep the last DURATION of events in memory
    /// (e.g. 2m, 10m) and, for each OOM kill, write a trace file to --out with the DURATION
    /// before the kill and --flight-after after it. No kill, no file.
    #[arg(long, value_name = "DURATION", value_parser = parse_flight, requires = "out")]
    pub flight: Option<Duration>,
    /// With --flight: the directory the files go to (created if missing), each named
    /// oom-<container>-<UTC time of the kill>.mtrace, mode 0600. Kills less than
    /// --flight-after apart share a file, named for each container in it.
    #[arg(long, value_name = "DIR", requires = "flight")]
    pub out: Option<PathBuf>,
    /// With --flight: how long after a kill its file goes on (what the node did next: the
    /// container restarting, the memory freed).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration,
          default_value = "5s", requires = "flight")]
    pub flight_after: Duration,
    /// With --flight: the most memory the events kept may take (compressed, e.g. 64M, 1G; at
    /// least 1M). When the DURATION of events does not fit, the oldest go first, stderr says
    /// so, and a file whose window was cut says so in its header and in `memtrace report`.
    #[arg(long, value_name = "SIZE", value_parser = parse_flight_bytes,
          default_value = "64M", requires = "flight")]
    pub flight_bytes: u64,
    /// Also print the events on stdout, as `memtrace run --format FORMAT` would.
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub print: Option<sinks::Format>,
    #[command(flatten)]
    pub live: LiveArgs,
    #[command(flatten)]
    pub text: TextArgs,
}

fn parse_max_size(value: &str) -> Result<u64, String> {
    let size = parse_size(value)?;
    // Room for the header and some blocks; smaller would be a file per handful of events.
    let min = 64 << 10;
    if size < min {
        return Err(format!(
            "{value} is below the minimum of {}",
            human_bytes(min)
        ));
    }
    Ok(size)
}

fn parse_flight(value: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(value).map_err(|e| e.to_string())?;
    if d.is_zero() {
        return Err("the flight window must be longer than 0 (e.g. 2m)".into());
    }
    Ok(d)
}

fn parse_flight_bytes(value: &str) -> Result<u64, String> {
    let size = parse_size(value)?;
    if size < flight::MIN_BYTES {
        return Err(format!(
            "{value} is below the minimum of {}",
            human_bytes(flight::MIN_BYTES)
        ));
    }
    Ok(size)
}

pub fn run(args: &Args, started: Instant) -> anyhow::Result<ExitCode> {
    match (&args.output, args.flight, &args.out) {
        (_, Some(before), Some(dir)) => run_flight(args, started, before, dir),
        (Some(output), _, _) => run_continuous(args, started, output),
        // clap requires one or the other.
        _ => anyhow::bail!("give -o FILE, or --flight DURATION --out DIR"),
    }
}

/// What every file of a recording starts with.
fn header(session: &Session, started_wall_ns: u64) -> TraceHeader {
    TraceHeader {
        memtrace_version: env!("CARGO_PKG_VERSION").to_owned(),
        host: read_proc("/proc/sys/kernel/hostname"),
        kernel_release: read_proc("/proc/sys/kernel/osrelease"),
        boot_time_wall_ns: session.clock().boot_time_wall_ns,
        clock: clock::EVENT_CLOCK.to_owned(),
        page_size: session.clock().page_size,
        started_wall_ns,
        probes: session.attached().iter().map(ToString::to_string).collect(),
        cgroup_version: format!("{:?}", session.hierarchy().version).to_lowercase(),
        memcgs_at_start: session.memcgs_at_start(),
        flight: None,
    }
}

fn run_continuous(args: &Args, started: Instant, output: &Path) -> anyhow::Result<ExitCode> {
    // Before attaching: every event the recording holds comes after it, so `replay --since 0s`
    // is the whole recording.
    let started_wall_ns = clock::now_wall_ns();
    let session = Session::start(&args.live, started)?;
    let header = header(&session, started_wall_ns);
    let limits = Limits {
        max_size: args.max_size,
        rotate: args.rotate,
    };
    let mut recording = Recording::create(output, &header, limits)
        .with_context(|| format!("creating {}", output.display()))?;
    eprintln!("memtrace: recording to {}", recording.current().display());
    let streamed = stream(args, session, &mut recording);
    match streamed {
        Ok(summary) => {
            recording
                .finish(&summary.lost)
                .with_context(|| format!("finishing {}", output.display()))?;
            summary.print();
        }
        Err(err) if file_full(&err).is_some() => {
            // The programs are detached already; the file was finished when it filled.
            let full = file_full(&err).map(ToString::to_string).unwrap_or_default();
            let events = recording
                .finish(&[])
                .with_context(|| format!("finishing {}", output.display()))?;
            eprintln!("memtrace: {full}: recording ended after {events} events");
        }
        Err(err) => return Err(err),
    }
    Ok(ExitCode::SUCCESS)
}

/// Streams `session` into `sink`, and with `--print` to stdout too.
fn stream(
    args: &Args,
    session: Session,
    sink: &mut dyn Sink,
) -> anyhow::Result<super::live::Summary> {
    match args.print {
        Some(format) => {
            let text = args.text.options();
            let mut terminal = sinks::terminal(format, io::stdout(), session.clock(), &text);
            session.stream(&mut Tee {
                first: sink,
                second: terminal.as_mut(),
            })
        }
        None => session.stream(sink),
    }
}

/// `--flight`: events kept in memory, a file per OOM kill.
fn run_flight(
    args: &Args,
    started: Instant,
    before: Duration,
    dir: &Path,
) -> anyhow::Result<ExitCode> {
    // Before attaching: a directory that cannot take the files is an error now, not at the
    // first kill, weeks later.
    writable_dir(dir)?;
    let started_wall_ns = clock::now_wall_ns();
    let mut session = Session::start(&args.live, started)?;
    let header = header(&session, started_wall_ns);
    let lost = session.watch_lost();
    let hierarchy = session.hierarchy().clone();
    let census = CensusHistory::start(
        session.memcgs_at_start(),
        before + Duration::from_secs(60),
        move || {
            let live = MemcgResolver::new(hierarchy.clone()).count_live();
            count_dying(&hierarchy, live)
                .ok()
                .map(|dying| MemcgCensus { live, dying })
        },
    );
    let settings = flight::Settings {
        dir: dir.to_owned(),
        before,
        after: args.flight_after,
        max_bytes: args.flight_bytes,
    };
    let mut recorder = FlightRecorder::new(
        settings,
        header,
        session.clock(),
        census,
        Box::new(move || lost.totals()),
    )
    .context("starting the flight recorder")?;
    eprintln!(
        "memtrace: flight recorder: keeping the last {} of events in memory (at most {}); \
         a trace file per OOM kill in {}, with {} after the kill",
        humantime::format_duration(before),
        human_bytes(args.flight_bytes),
        dir.display(),
        humantime::format_duration(args.flight_after),
    );
    let summary = stream(args, session, &mut recorder)?;
    summary.print();
    match recorder.written() {
        [] => eprintln!("memtrace: flight recorder: no OOM kill, no file written"),
        files => eprintln!(
            "memtrace: flight recorder: {} file{} written to {}",
            files.len(),
            if files.len() == 1 { "" } else { "s" },
            dir.display()
        ),
    }
    Ok(ExitCode::SUCCESS)
}

/// Creates `dir` if missing (mode 0700: the files name every container on the node) and
/// checks that a file can be created in it.
fn writable_dir(dir: &Path) -> anyhow::Result<()> {
    let hint = || {
        format!(
            "--out {}: give a directory memtrace can write to",
            dir.display()
        )
    };
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(hint)?;
    let probe = dir.join(format!(".memtrace-write-test-{}", std::process::id()));
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&probe)
        .with_context(hint)?;
    fs::remove_file(&probe).with_context(hint)?;
    Ok(())
}

fn file_full(err: &anyhow::Error) -> Option<&FileFull> {
    err.chain()
        .filter_map(|e| e.downcast_ref::<io::Error>())
        .find_map(|e| {
            e.get_ref()
                .and_then(|inner| inner.downcast_ref::<FileFull>())
        })
}

fn read_proc(path: &str) -> String {
    fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}
