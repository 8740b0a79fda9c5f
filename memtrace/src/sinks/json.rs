//! JSON Lines.

use std::io::{self, Write};

use super::Sink;
use crate::event::{Event, Observed};

pub struct JsonSink<W: Write> {
    out: io::BufWriter<W>,
}

impl<W: Write> JsonSink<W> {
    pub fn new(out: W) -> Self {
        Self {
            out: io::BufWriter::new(out),
        }
    }
}

impl<W: Write> Sink for JsonSink<W> {
    fn write(&mut self, _observed: &Observed, event: &Event) -> io::Result<()> {
        serde_json::to_writer(&mut self.out, event)?;
        self.out.write_all(b"\n")
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}
