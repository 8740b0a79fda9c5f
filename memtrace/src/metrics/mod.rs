//! `--metrics ADDR`: the live session's events as Prometheus metrics, served at
//! `http://ADDR/metrics` in the text exposition format.
//!
//! - [`Exporter`]: a consumer of the one event stream (a [`Sink`](crate::sinks::Sink)) that
//!   keeps counters and gauges per container and forgets a removed container's series after a
//!   grace period; `families` declares every metric, `labels` the label set (cAdvisor's),
//!   `verdict` why a kill happened (as `memtrace report` judges it), `memcg` the memcgs' own
//!   kernel counters (`counters`), `node` the node's memcg counts read at each scrape.
//! - [`Endpoint`]: the bound address and its HTTP server (`server`), started by the live
//!   session (`cli::live`), which taps the exporter into its output (`tap`).

mod address;
mod exporter;
mod families;
mod labels;
mod memcg;
mod node;
mod server;
mod tap;
mod verdict;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context as _;

pub use address::parse_listen_address;
pub use exporter::{DEFAULT_GRACE, Exporter};
pub use labels::{
    ContainerLabels, EventLabels, LostLabels, OomLabels, PageTypeLabels, PressureLabels,
};
pub use tap::Tap;

use crate::{attribution::MemoryHierarchy, event::HostClock};

/// With `--metrics`, containers' memory is sampled at least this often (gauges fresh for a
/// scrape every second); `--stats-interval` still says how often the stream gets samples.
pub const STATS_INTERVAL: Duration = Duration::from_secs(1);

/// The metrics of a session and the socket they are served on.
pub struct Endpoint {
    pub exporter: Arc<Exporter>,
    pub addr: SocketAddr,
    listener: std::net::TcpListener,
}

impl Endpoint {
    /// Binds `addr` (port 0: any free port) and says where on stderr.
    ///
    /// # Errors
    ///
    /// When the address cannot be bound (in use, not local).
    pub fn bind(
        addr: SocketAddr,
        grace: Duration,
        hierarchy: MemoryHierarchy,
        clock: HostClock,
    ) -> anyhow::Result<Self> {
        let listener =
            server::bind(addr).with_context(|| format!("serving metrics on {addr} (--metrics)"))?;
        let addr = listener
            .local_addr()
            .context("reading the metrics address")?;
        eprintln!(
            "memtrace: serving Prometheus metrics at http://{addr}/metrics (series of removed \
             containers stay {})",
            humantime::format_duration(grace)
        );
        Ok(Self {
            exporter: Arc::new(Exporter::new(hierarchy, grace, clock)),
            addr,
            listener,
        })
    }

    /// Serves until the returned task is aborted. Must be called inside a tokio runtime.
    #[must_use]
    pub fn spawn(self) -> tokio::task::JoinHandle<()> {
        let Self {
            exporter,
            listener,
            addr,
        } = self;
        tokio::spawn(async move {
            if let Err(e) = server::serve(listener, exporter).await {
                eprintln!("memtrace: metrics at {addr} stopped: {e}");
            }
        })
    }
}
