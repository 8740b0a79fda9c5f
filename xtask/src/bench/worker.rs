//! The process in each container of the `node` and `soak` benches (`cargo xtask bench worker`,
//! hidden): idle, or, while a flag file exists, what a busy container does to the kernel's
//! memory — writes, reads and deletes a file (page cache added and removed) and creates and
//! deletes small files (accounted slab: dentries, inodes) — or, as a hog, allocates until its
//! memcg's limit gets it OOM-killed. It ends itself when the bench is gone.

use std::{
    fs,
    path::{Path, PathBuf},
    thread,
    time::Duration,
};

use anyhow::Context as _;
use clap::Args;

/// Bytes of the file each busy round writes, reads and deletes.
const FILE_BYTES: usize = 64 * 1024;
/// Small files created and deleted each busy round.
const SLAB_FILES: usize = 8;

#[derive(Args)]
pub struct Options {
    /// Directory for its files
    #[arg(long, value_name = "DIR")]
    dir: PathBuf,
    /// Busy while this file exists, a round every --round-ms
    #[arg(long, value_name = "FILE")]
    busy_when: Option<PathBuf>,
    /// Milliseconds between two busy rounds
    #[arg(long, value_name = "MS", default_value_t = 500)]
    round_ms: u64,
    /// Allocate and touch this many MiB (its memcg's limit is meant to OOM-kill it first)
    #[arg(long, value_name = "MIB")]
    hog_mib: Option<usize>,
}

pub fn run(options: &Options) -> anyhow::Result<()> {
    if let Some(mib) = options.hog_mib {
        hog(mib);
    }
    fs::create_dir_all(&options.dir)
        .with_context(|| format!("creating {}", options.dir.display()))?;
    let mut round = 0_usize;
    // Reparented to init: the bench is gone.
    while std::os::unix::process::parent_id() != 1 {
        if options.busy_when.as_deref().is_some_and(Path::exists) {
            churn(&options.dir, round)?;
            round += 1;
            thread::sleep(Duration::from_millis(options.round_ms));
        } else {
            thread::sleep(Duration::from_millis(500));
        }
    }
    let _ = fs::remove_dir_all(&options.dir);
    Ok(())
}

fn churn(dir: &Path, round: usize) -> anyhow::Result<()> {
    let file = dir.join(format!("cache-{}", round % 4));
    fs::write(&file, vec![0x5a; FILE_BYTES])
        .with_context(|| format!("writing {}", file.display()))?;
    let read = fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
    std::hint::black_box(read);
    fs::remove_file(&file).with_context(|| format!("removing {}", file.display()))?;
    for i in 0..SLAB_FILES {
        let small = dir.join(format!("slab-{i}"));
        fs::File::create(&small).with_context(|| format!("creating {}", small.display()))?;
        fs::remove_file(&small).with_context(|| format!("removing {}", small.display()))?;
    }
    Ok(())
}

/// Touches `mib` MiB a page at a time, then waits to be killed.
fn hog(mib: usize) -> ! {
    let mut held = Vec::new();
    for _ in 0..mib {
        let mut chunk = vec![0_u8; 1 << 20];
        for page in chunk.chunks_mut(4096) {
            page[0] = 1;
        }
        held.push(std::hint::black_box(chunk));
    }
    loop {
        thread::sleep(Duration::from_secs(1));
        if std::os::unix::process::parent_id() == 1 {
            std::process::exit(0);
        }
    }
}
