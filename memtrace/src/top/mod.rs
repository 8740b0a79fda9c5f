//! `memtrace top`: the node as it is now, one row per container or pod, in a full-screen view.
//!
//! `top` is one more consumer of the pipeline's events: live, a [`ChannelSink`] hands them from
//! the pipeline's thread to the screen's; with `--replay`, a [`player::Player`] reads them from
//! a trace file. Either way they go into a [`model::Model`] (unit-tested on events, no
//! terminal), which [`view`] draws.

pub mod app;
pub mod model;
pub mod player;
pub mod screen;
pub mod view;

use std::{io, sync::mpsc::Sender};

use crate::{event::Event, sinks::Sink};

/// The pipeline's sink in `top`: every event goes to the screen's thread. Once the screen is
/// gone (the user quit) events are dropped: the pipeline is being stopped.
pub struct ChannelSink {
    pub events: Sender<Event>,
}

impl Sink for ChannelSink {
    fn write(&mut self, event: &Event) -> io::Result<()> {
        let _ = self.events.send(event.clone());
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
