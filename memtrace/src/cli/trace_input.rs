//! Reading a whole trace file as user-facing events, for `replay`, `report` and `export`.

use std::path::Path;

use super::progress::Progress;
use crate::{
    event::{Event, HostClock},
    report::{FlightInfo, TraceInfo},
    trace::{TraceHeader, TraceItem, TraceReader, cut_short},
};

pub struct TraceInput {
    reader: TraceReader,
    header: TraceHeader,
    clock: HostClock,
    info: TraceInfo,
    progress: Progress,
    verb: &'static str,
}

impl TraceInput {
    /// Opens `file` and reads its header; `verb` (`replay`, `report`, `export`) labels the
    /// progress bar and warnings; `prints_while_reading` keeps the bar off a terminal that
    /// stdout writes to.
    ///
    /// # Errors
    ///
    /// When the file cannot be read, is not a trace, or its header is damaged.
    pub fn open(
        file: &Path,
        verb: &'static str,
        prints_while_reading: bool,
    ) -> anyhow::Result<Self> {
        let reader = TraceReader::open(file)?;
        let header = reader.header().clone();
        let progress = Progress::for_reader(&reader, prints_while_reading);
        Ok(Self {
            reader,
            clock: HostClock {
                boot_time_wall_ns: header.boot_time_wall_ns,
                page_size: header.page_size,
            },
            info: TraceInfo {
                file: file.display().to_string(),
                host: header.host.clone(),
                kernel_release: header.kernel_release.clone(),
                memtrace_version: header.memtrace_version.clone(),
                probes: header.probes.clone(),
                memcgs_at_start: header.memcgs_at_start,
                flight: header.flight.as_ref().map(|w| {
                    FlightInfo::new(
                        w,
                        HostClock {
                            boot_time_wall_ns: header.boot_time_wall_ns,
                            page_size: header.page_size,
                        },
                    )
                }),
                ..TraceInfo::default()
            },
            header,
            progress,
            verb,
        })
    }

    /// Wall time and page size of the recording host.
    #[must_use]
    pub fn clock(&self) -> HostClock {
        self.clock
    }

    /// The file's header.
    #[must_use]
    pub fn header(&self) -> &TraceHeader {
        &self.header
    }

    /// What the header says (the end marker's counts are not known yet).
    #[must_use]
    pub fn info(&self) -> &TraceInfo {
        &self.info
    }

    /// Calls `each` with every event in file order, then returns what the file says about
    /// itself, end marker included.
    ///
    /// A file that ends early (a recorder killed with `kill -9`, a disk that filled) is still
    /// analysed: everything before the cut is complete. The returned info says it was cut, and
    /// a line on stderr says so too. Any other damage is an error.
    ///
    /// # Errors
    ///
    /// When the file is damaged, or `each` fails.
    pub fn for_each(
        self,
        mut each: impl FnMut(&Event) -> anyhow::Result<()>,
    ) -> anyhow::Result<TraceInfo> {
        let Self {
            mut reader,
            mut info,
            progress,
            verb,
            ..
        } = self;
        loop {
            match reader.next_item() {
                Ok(Some(TraceItem::Event(event))) => {
                    each(&event)?;
                    progress.update(&reader);
                }
                Ok(Some(TraceItem::End { events, lost })) => {
                    info.recorded_events = Some(events);
                    // Empty when this file did not count them (all but the last file of a rotated
                    // recording): unknown, not zero.
                    info.lost_events = (!lost.is_empty()).then(|| lost.iter().sum());
                }
                Ok(Some(TraceItem::TailCut {
                    offset,
                    events,
                    dropped_bytes,
                })) => {
                    progress.finish();
                    let cut = cut_short(&info.file, offset, events, dropped_bytes);
                    eprintln!("memtrace: warning: {cut}; the {verb} covers what was recorded");
                    info.cut_short = Some(cut);
                    return Ok(info);
                }
                Ok(None) => break,
                Err(other) => return Err(other.into()),
            }
        }
        progress.finish();
        Ok(info)
    }
}
