//! Any bytes given to the trace reader end in events, an end marker, a cut tail or an error:
//! never a panic, a hang or an allocation the input's lengths could make unbounded. With
//! `cfg(fuzzing)` the reader skips checksum comparisons, so mutations reach the decoders behind
//! them instead of stopping at the first CRC. Every format the reader takes is fuzzed: the
//! seeds (`fuzz/seeds/trace_reader/`) hold version 4 and 3 files (the event model, postcard;
//! identities inside events as JSON in 4, as fixed fields in 3) and version 2 files (per-kind
//! records).
#![no_main]

use std::{io::Cursor, path::Path};

use libfuzzer_sys::fuzz_target;
use memtrace::{
    event::HostClock,
    sinks::{Sink as _, TextSink},
    trace::{TraceItem, TraceReader},
};

fuzz_target!(|data: &[u8]| {
    let total = Some(data.len() as u64);
    let Ok(mut reader) = TraceReader::from_reader(
        Path::new("fuzz-input"),
        Box::new(Cursor::new(data.to_vec())),
        total,
    ) else {
        return;
    };
    let clock = HostClock {
        boot_time_wall_ns: reader.header().boot_time_wall_ns,
        page_size: reader.header().page_size,
    };
    // What replay does with each event, so rendering whatever a file holds is fuzzed too.
    let mut text = TextSink::new(std::io::sink(), clock);
    let mut json = memtrace::sinks::JsonSink::new(std::io::sink(), clock);
    while let Ok(Some(item)) = reader.next_item() {
        if let TraceItem::Event(event) = item {
            let _ = text.write(&event);
            let _ = json.write(&event);
        }
    }
});
