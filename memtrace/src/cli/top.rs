//! `memtrace top`: the full-screen live view, or a trace file played through it.

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
    sync::mpsc,
    thread,
    time::Instant,
};

use anyhow::Context as _;
use tokio::sync::oneshot;

use super::live::{LiveArgs, Session};
use crate::top::{
    ChannelSink,
    app::{App, Source},
    model::Model,
    player::Player,
    screen::{self, Screen},
};

const AFTER_HELP: &str = "\
One row per container or pod: working set, usage as a share of the limit that applies (its
own, else its nearest ancestor's, e.g. the pod's), anon, active and inactive page cache, shmem,
kernel memory, page-cache growth, limit reclaims and the time stalled in them per second (over
the last 5 s), charge failures, and OOM kills with their verdict (they stay on the row). The
header counts the node's dying memory cgroups.

Keys: q or Ctrl-C quit; Up/Down/PgUp/PgDn select; Enter opens the container (page cache by
file, slab caches, recent events), Esc goes back; / filters by name or cgroup (Enter applies,
Esc clears); a letter sorts by its column, again to reverse: n name, w working set, l %limit,
a anon, f active file, i inactive file, h shmem, k kernel, c cache growth, r reclaims,
t stall, x charge failures, o OOM kills. With --replay: Space pauses, . steps one second,
+ and - double and halve the speed.

top needs a terminal; without one it exits with status 1: use `memtrace run`.

Examples:
  memtrace top
  memtrace top --pod shop/cart-7d9f
  memtrace top --cgroup /kubepods.slice --stats-interval 2s
  memtrace top --replay node1.mtrace";

/// A full-screen view of the node's containers and pods as they are now: memory, limits,
/// reclaim, charge failures, OOM kills and why.
#[derive(Debug, clap::Args)]
#[command(after_help = AFTER_HELP, mut_arg("stats_interval", |a| a.default_value("1s")))]
pub struct Args {
    #[command(flatten)]
    pub live: LiveArgs,
    /// Play this trace file (written by `memtrace record`) through the same screen instead of
    /// watching the node; --cgroup, --container and --pod select from it as in `replay`.
    #[arg(long, value_name = "FILE")]
    pub replay: Option<PathBuf>,
}

pub fn run(args: &Args, started: Instant) -> anyhow::Result<ExitCode> {
    if !screen::is_terminal() {
        anyhow::bail!(screen::NO_TERMINAL);
    }
    match &args.replay {
        Some(file) => replay(file, &args.live),
        None => live(&args.live, started),
    }
}

/// Of the live options, the filters apply (as in `replay`); the others are the recorder's.
fn replay(file: &Path, live: &LiveArgs) -> anyhow::Result<ExitCode> {
    let player = Player::open(file, live.filter.filter())?;
    let mut app = App::new(Model::new(player.clock), Source::Replay(Box::new(player)));
    let mut screen = Screen::take()?;
    app.run(&mut screen)?;
    Ok(ExitCode::SUCCESS)
}

/// The pipeline runs on this thread as under `run`; the screen on its own, fed over a channel.
/// Quitting the screen stops the pipeline; the pipeline stopping (SIGTERM, `--duration`)
/// closes the channel and so the screen.
fn live(args: &LiveArgs, started: Instant) -> anyhow::Result<ExitCode> {
    let session = Session::start(args, started)?;
    let clock = session.clock();
    let hierarchy = session.hierarchy().clone();
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map_or_else(|_| "this node".to_owned(), |h| h.trim().to_owned());
    let (events, received) = mpsc::channel();
    let (stop, stopped) = oneshot::channel::<()>();
    let screen = thread::Builder::new()
        .name("top-screen".into())
        .spawn(move || -> anyhow::Result<()> {
            let source = Source::Live {
                events: received,
                stop: Some(stop),
                hierarchy,
                host,
                ended: false,
            };
            let mut app = App::new(Model::new(clock), source);
            let mut screen = Screen::take()?;
            let result = app.run(&mut screen);
            app.stop();
            result
        })
        .context("starting the screen")?;
    let mut sink = ChannelSink { events };
    // A closed `stop` (the screen's thread ended, by a quit, an error or a panic) stops too.
    let summary = session.stream_until(&mut sink, async move {
        let _ = stopped.await;
    });
    drop(sink);
    let shown = screen.join();
    // The screen is given back by now: what the session says goes where `run` puts it.
    let summary = summary?;
    summary.print();
    match shown {
        Ok(result) => result?,
        Err(_) => anyhow::bail!("the screen stopped on a panic (its message is above)"),
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use crate::cli::{Cli, Command};

    #[test]
    fn top_samples_every_second_and_takes_a_replay_file() {
        let cli = Cli::try_parse_from(["memtrace", "top"]).expect("parses");
        let Command::Top(args) = cli.command else {
            panic!("not top")
        };
        assert_eq!(args.live.stats_interval.as_secs(), 1);
        assert!(args.replay.is_none());
        let cli = Cli::try_parse_from(["memtrace", "run"]).expect("parses");
        let Command::Run(args) = cli.command else {
            panic!("not run")
        };
        assert_eq!(
            args.live.stats_interval.as_secs(),
            10,
            "run keeps its own default"
        );
        let cli = Cli::try_parse_from(["memtrace", "top", "--replay", "f.mtrace", "--pod", "p"])
            .expect("parses");
        let Command::Top(args) = cli.command else {
            panic!("not top")
        };
        assert_eq!(
            args.replay.as_deref(),
            Some(std::path::Path::new("f.mtrace"))
        );
        assert_eq!(args.live.filter.pod.as_deref(), Some("p"));
    }
}
