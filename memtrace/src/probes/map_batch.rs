//! Reading, zeroing and deleting keys of a per-CPU hash map many keys per system call:
//! `BPF_MAP_LOOKUP_BATCH`, `BPF_MAP_LOOKUP_AND_DELETE_BATCH`, `BPF_MAP_UPDATE_BATCH` and
//! `BPF_MAP_DELETE_BATCH` (Linux 5.6 for hash and LRU hash maps, per-CPU or not).
//! aya 0.16 has no call for them. Key by key, a drain costs a `get_next_key`, a lookup and a
//! delete per key: about 11 µs of CPU each, 50–100 ms an interval at a node's 5 000 keys.
//!
//! The kernel walks the map's buckets; each call copies whole buckets, as many keys as fit in
//! the buffers, and hands back the next bucket to start from. A kernel without batch
//! operations for the map's type refuses the first call (`EINVAL` before 5.6, `ENOTSUPP`
//! for types without them), and the caller reads key by key.

use std::{
    io,
    os::fd::{AsRawFd as _, BorrowedFd},
};

use super::bpf_sys::bpf_command;

/// `bpf(2)` commands.
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
const BPF_MAP_LOOKUP_AND_DELETE_BATCH: libc::c_long = 25;
const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;
const BPF_MAP_DELETE_BATCH: libc::c_long = 27;
/// The kernel's own "operation not supported" (`include/linux/errno.h`), which it returns to
/// userspace for map types without batch operations.
const ENOTSUPP: i32 = 524;

/// Values copied per call, in bytes: a quarter MiB of buffers, freed after the read.
const BATCH_BYTES: usize = 256 * 1024;

/// `union bpf_attr`'s `batch` member.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}
const _: () = assert!(size_of::<BatchAttr>() == 56);

/// Whether a batch read leaves the keys in the map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Read {
    Keep,
    Delete,
}

/// Calls `each` with every key of the per-CPU hash map `map` (keys of type `K`, values of
/// type `V`) and its values, one per possible CPU (`cpus`); with [`Read::Delete`] the keys are
/// deleted as they are read. Keys a program adds meanwhile may or may not be seen.
///
/// Returns `false`, having read nothing, when this kernel has no batch operations for the
/// map: the caller reads it key by key.
///
/// # Errors
///
/// The kernel's refusal of a later call, or of the first for another reason.
pub fn read_per_cpu<K: aya::Pod, V: aya::Pod>(
    map: BorrowedFd<'_>,
    cpus: usize,
    read: Read,
    mut each: impl FnMut(K, &[V]),
) -> io::Result<bool> {
    // The kernel lays each CPU's value out on 8 bytes (`round_up(value_size, 8)`).
    let stride = size_of::<V>().next_multiple_of(8);
    let per_key = stride * cpus;
    let mut count = (BATCH_BYTES / per_key).clamp(64, 4096);
    let mut keys = vec![0_u8; count * size_of::<K>()];
    // u64s: the values' alignment.
    let mut values = vec![0_u64; count * per_key / 8];
    let mut per_cpu: Vec<V> = Vec::with_capacity(cpus);
    let (mut token, mut next) = (0_u32, 0_u32);
    let mut first = true;
    loop {
        let mut attr = BatchAttr {
            in_batch: if first { 0 } else { (&raw const token) as u64 },
            out_batch: (&raw mut next) as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: u32::try_from(count).map_err(io::Error::other)?,
            map_fd: u32::try_from(map.as_raw_fd()).map_err(io::Error::other)?,
            ..BatchAttr::default()
        };
        let cmd = match read {
            Read::Keep => BPF_MAP_LOOKUP_BATCH,
            Read::Delete => BPF_MAP_LOOKUP_AND_DELETE_BATCH,
        };
        // SAFETY: `attr` is a valid `union bpf_attr` batch member of the size passed; the
        // buffers it points to hold `count` keys and `count` per-CPU values as the kernel lays
        // them out, `token` and `next` a hash map's bucket cursor (a u32), all alive and not
        // otherwise borrowed for the call; the kernel writes `count`, `next` and the buffers.
        let result = unsafe { bpf_command(cmd, (&raw mut attr).cast(), size_of_val(&attr)) };
        let end = match result {
            Ok(_) => false,
            Err(err) if err.raw_os_error() == Some(libc::ENOENT) => true,
            // A bucket holds more keys than the buffers: larger ones, the same bucket again.
            Err(err) if err.raw_os_error() == Some(libc::ENOSPC) && count < 1 << 20 => {
                count *= 2;
                keys.resize(count * size_of::<K>(), 0);
                values.resize(count * per_key / 8, 0);
                continue;
            }
            Err(err)
                if first
                    && matches!(
                        err.raw_os_error(),
                        Some(libc::EINVAL | libc::EOPNOTSUPP | ENOTSUPP)
                    ) =>
            {
                return Ok(false);
            }
            Err(err) => return Err(err),
        };
        let filled = attr.count as usize;
        let value_bytes = values.as_ptr().cast::<u8>();
        for i in 0..filled.min(count) {
            // SAFETY: the kernel filled `filled` keys of `size_of::<K>()` bytes; `K` is Pod
            // and the read is unaligned.
            let key = unsafe {
                keys.as_ptr()
                    .add(i * size_of::<K>())
                    .cast::<K>()
                    .read_unaligned()
            };
            per_cpu.clear();
            for cpu in 0..cpus {
                // SAFETY: and `filled` per-CPU values of `stride` bytes per CPU, inside the
                // buffer; `V` is Pod and the read is unaligned.
                per_cpu.push(unsafe {
                    value_bytes
                        .add(i * per_key + cpu * stride)
                        .cast::<V>()
                        .read_unaligned()
                });
            }
            each(key, &per_cpu);
        }
        if end {
            return Ok(true);
        }
        first = false;
        token = next;
    }
}

/// Sets every CPU's value of each of `keys` to `value`, in place: an update of a key that
/// exists allocates nothing (`pcpu_copy_value`), where a delete and the program's next insert
/// would. Keys deleted meanwhile are created again.
///
/// Returns `false`, having written nothing, when this kernel has no batch operations for the
/// map.
///
/// # Errors
///
/// The kernel's refusal.
pub fn set_per_cpu<K: aya::Pod, V: aya::Pod>(
    map: BorrowedFd<'_>,
    cpus: usize,
    keys: &[K],
    value: &V,
) -> io::Result<bool> {
    let stride = size_of::<V>().next_multiple_of(8);
    let per_key = stride * cpus;
    let chunk = (BATCH_BYTES / per_key).clamp(64, 4096);
    let mut values = vec![0_u64; chunk.min(keys.len()) * per_key / 8];
    let value_bytes = values.as_mut_ptr().cast::<u8>();
    for slot in 0..chunk.min(keys.len()) * cpus {
        // SAFETY: `slot * stride + size_of::<V>()` is inside the buffer of `chunk * cpus`
        // slots; `V` is Pod and the write is unaligned.
        unsafe {
            value_bytes
                .add(slot * stride)
                .cast::<V>()
                .write_unaligned(*value);
        }
    }
    for (n, part) in keys.chunks(chunk).enumerate() {
        // SAFETY: `part` holds `part.len()` keys and `values` as many per-CPU values, as the
        // kernel reads them; neither is written.
        let done = unsafe { batch_on_keys(BPF_MAP_UPDATE_BATCH, map, part, values.as_mut_ptr()) };
        match done {
            Ok(()) => {}
            Err(err) if n == 0 && unsupported(&err) => return Ok(false),
            Err(err) => return Err(err.into()),
        }
    }
    Ok(true)
}

/// Deletes `keys`; keys already gone are skipped.
///
/// Returns `false`, having deleted nothing, when this kernel has no batch operations for the
/// map.
///
/// # Errors
///
/// The kernel's refusal.
pub fn delete<K: aya::Pod>(map: BorrowedFd<'_>, keys: &[K]) -> io::Result<bool> {
    let mut rest = keys;
    let mut first = true;
    while !rest.is_empty() {
        // SAFETY: `rest` holds `rest.len()` keys as the kernel reads them; no values.
        let done = unsafe { batch_on_keys(BPF_MAP_DELETE_BATCH, map, rest, std::ptr::null_mut()) };
        match done {
            Ok(()) => return Ok(true),
            Err(err) if first && unsupported(&err) => return Ok(false),
            // The kernel stops at a key that is gone, having deleted those before it (its
            // count): on after it.
            Err(BatchError { deleted, err }) if err.raw_os_error() == Some(libc::ENOENT) => {
                rest = rest.get(deleted + 1..).unwrap_or_default();
            }
            Err(BatchError { err, .. }) => return Err(err),
        }
        first = false;
    }
    Ok(true)
}

/// A batch command on given keys that failed after `deleted` of them.
struct BatchError {
    deleted: usize,
    err: io::Error,
}

impl From<BatchError> for io::Error {
    fn from(e: BatchError) -> Self {
        e.err
    }
}

fn unsupported(err: &BatchError) -> bool {
    matches!(
        err.err.raw_os_error(),
        Some(libc::EINVAL | libc::EOPNOTSUPP | ENOTSUPP)
    )
}

/// `BPF_MAP_UPDATE_BATCH` or `BPF_MAP_DELETE_BATCH` of `keys` (and `values`, one per key).
///
/// # Safety
///
/// `values` must be null for a delete, or point to `keys.len()` values of the map's (per-CPU)
/// value size for an update.
unsafe fn batch_on_keys<K: aya::Pod>(
    cmd: libc::c_long,
    map: BorrowedFd<'_>,
    keys: &[K],
    values: *mut u64,
) -> Result<(), BatchError> {
    let mut attr = BatchAttr {
        keys: keys.as_ptr() as u64,
        values: values as u64,
        count: u32::try_from(keys.len()).map_err(|e| BatchError {
            deleted: 0,
            err: io::Error::other(e),
        })?,
        map_fd: u32::try_from(map.as_raw_fd()).map_err(|e| BatchError {
            deleted: 0,
            err: io::Error::other(e),
        })?,
        ..BatchAttr::default()
    };
    // SAFETY: `attr` is a valid `union bpf_attr` batch member of the size passed; the keys it
    // points to, and the values as the caller vouches, are alive for the call; the kernel
    // writes only `count` (how many it did).
    let result = unsafe { bpf_command(cmd, (&raw mut attr).cast(), size_of_val(&attr)) };
    result.map(|_| ()).map_err(|err| BatchError {
        deleted: attr.count as usize,
        err,
    })
}

#[cfg(test)]
mod tests {
    use std::{collections::HashMap, os::fd::AsFd as _};

    use aya::maps::{IterableMap as _, MapData, PerCpuHashMap, PerCpuValues};

    use super::{super::bpf_sys, *};

    /// `enum bpf_map_type`.
    const PERCPU_HASH: u32 = 5;
    const LRU_PERCPU_HASH: u32 = 10;
    const NO_PREALLOC: u32 = 1;

    /// A value of the shape of the aggregates' (three u64 counters, like `CacheDelta`).
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    #[repr(C)]
    struct Counts([u64; 3]);
    // SAFETY: plain integers, no padding.
    unsafe impl aya::Pod for Counts {}

    fn filled_map(map_type: u32, flags: u32, keys: u64) -> PerCpuHashMap<MapData, u64, Counts> {
        let spec = bpf_sys::MapSpec {
            map_type,
            key_size: 8,
            value_size: 24,
            max_entries: 16_384,
            map_flags: flags,
            name: "memtrace_batch".into(),
        };
        let fd = bpf_sys::create_map(&spec).expect("root can create a per-CPU hash map");
        let data = MapData::from_fd(fd).expect("a map");
        let map = aya::maps::Map::from_map_data(data).expect("a map aya knows");
        let mut map = PerCpuHashMap::try_from(map).expect("a per-CPU hash map");
        let cpus = aya::util::nr_cpus().expect("possible CPUs").get() as usize;
        for key in 0..keys {
            let values: Vec<Counts> = (0..cpus as u64)
                .map(|cpu| Counts([key, cpu, key * 1000 + cpu]))
                .collect();
            let values = PerCpuValues::try_from(values).expect("one per CPU");
            map.insert(&key, values, 0).expect("room in the map");
        }
        map
    }

    /// What aya's iterator reads, key by key: the drain's fallback.
    fn key_by_key(map: &PerCpuHashMap<MapData, u64, Counts>) -> HashMap<u64, Vec<Counts>> {
        map.iter()
            .map(|entry| {
                let (key, values) = entry.expect("a readable entry");
                (key, values.iter().copied().collect())
            })
            .collect()
    }

    fn batched(map: &PerCpuHashMap<MapData, u64, Counts>, read: Read) -> HashMap<u64, Vec<Counts>> {
        let cpus = aya::util::nr_cpus().expect("possible CPUs").get() as usize;
        let mut seen = HashMap::new();
        let supported = read_per_cpu(
            map.map().fd().as_fd(),
            cpus,
            read,
            |key, values: &[Counts]| {
                assert!(
                    seen.insert(key, values.to_vec()).is_none(),
                    "key {key} read twice"
                );
            },
        )
        .expect("the batch read");
        assert!(
            supported,
            "this kernel has batch operations for per-CPU hash maps (5.6+)"
        );
        seen
    }

    #[test]
    fn a_batch_read_equals_the_key_by_key_read_and_a_batch_drain_empties_the_map() {
        for (map_type, flags) in [
            (PERCPU_HASH, NO_PREALLOC),
            (PERCPU_HASH, 0),
            (LRU_PERCPU_HASH, 0),
        ] {
            // More keys than one call's buffers hold (4 096 at most), to cross calls.
            let map = filled_map(map_type, flags, 10_000);
            let expected = key_by_key(&map);
            // An LRU map may evict before it is full.
            if map_type != LRU_PERCPU_HASH {
                assert_eq!(expected.len(), 10_000, "map type {map_type}");
            }
            assert_eq!(batched(&map, Read::Keep), expected, "map type {map_type}");
            assert_eq!(key_by_key(&map), expected, "a lookup batch deletes nothing");
            assert_eq!(batched(&map, Read::Delete), expected, "map type {map_type}");
            assert!(
                key_by_key(&map).is_empty(),
                "the drain emptied map type {map_type}"
            );
            assert!(
                batched(&map, Read::Delete).is_empty(),
                "an empty map reads empty"
            );
        }
    }

    #[test]
    fn a_batch_update_zeroes_keys_in_place_and_a_batch_delete_skips_keys_already_gone() {
        let map = filled_map(PERCPU_HASH, NO_PREALLOC, 10_000);
        let cpus = aya::util::nr_cpus().expect("possible CPUs").get() as usize;
        let fd = map.map().fd().as_fd();
        let before = key_by_key(&map);
        let evens: Vec<u64> = (0..10_000).step_by(2).collect();
        assert!(set_per_cpu(fd, cpus, &evens, &Counts::default()).expect("the batch update"));
        // Every tenth key twice, and keys that never were: the delete goes on past them.
        let mut doomed: Vec<u64> = (0..10_000).step_by(10).collect();
        doomed.extend((0..10_000).step_by(10));
        doomed.extend(20_000..20_010);
        assert!(delete(fd, &doomed).expect("the batch delete"));
        let after = key_by_key(&map);
        assert_eq!(after.len(), 9_000, "every tenth key deleted");
        for (key, values) in &after {
            assert_eq!(values.len(), cpus);
            if key % 2 == 0 {
                assert!(
                    values.iter().all(|v| *v == Counts::default()),
                    "key {key} zeroed"
                );
            } else {
                assert_eq!(values, &before[key], "key {key} untouched");
            }
        }
    }
}
