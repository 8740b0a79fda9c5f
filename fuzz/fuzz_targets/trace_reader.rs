//! Any bytes given to the trace reader end in events, an end marker, a cut tail or an error:
//! never a panic, a hang or an allocation the input's lengths could make unbounded. With
//! `cfg(fuzzing)` the reader skips checksum comparisons, so mutations reach the decoders behind
//! them instead of stopping at the first CRC.
#![no_main]

use std::{io::Cursor, path::Path};

use libfuzzer_sys::fuzz_target;
use memtrace::{
    event::{Event, HostClock},
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
    // What replay does with each event, so the conversions are fuzzed too.
    while let Ok(Some(item)) = reader.next_item() {
        if let TraceItem::Event(observed) = item {
            let event = Event::new(&observed, clock);
            let _ = serde_json::to_vec(&event);
        }
    }
});
