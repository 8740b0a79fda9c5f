//! Two sinks fed the same events: `record --print` writes the file and the terminal stream.

use std::io;

use super::Sink;
use crate::event::Event;

pub struct Tee<'a> {
    pub first: &'a mut dyn Sink,
    pub second: &'a mut dyn Sink,
}

impl Sink for Tee<'_> {
    fn write(&mut self, event: &Event) -> io::Result<()> {
        self.first.write(event)?;
        self.second.write(event)
    }

    fn interval_end(&mut self, end_ns: u64) -> io::Result<()> {
        self.first.interval_end(end_ns)?;
        self.second.interval_end(end_ns)
    }

    fn end(&mut self) -> io::Result<()> {
        self.first.end()?;
        self.second.end()
    }

    fn flush(&mut self) -> io::Result<()> {
        self.first.flush()?;
        self.second.flush()
    }
}
