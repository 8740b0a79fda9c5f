//! Records the programs write to the ring buffer.
//!
//! Every record starts with an [`EventHeader`] whose `kind` says which record follows. Kinds are
//! numbered in ranges (1.. rare ring-buffer events, 100.. periodic aggregates); a retired kind's
//! number is never reused.
//!
//! Records derive [`bytemuck::Pod`]: a record with implicit padding does not compile, and
//! decoding is a length check plus an unaligned copy, with no `unsafe` here.

use bytemuck::{Pod, Zeroable};

/// Common prefix of every ring-buffer record.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct EventHeader {
    /// An [`EventKind`] as `u32`.
    pub kind: u32,
    pub pad: u32,
    /// `bpf_ktime_get_boot_ns()`: nanoseconds since boot, suspend included (`CLOCK_BOOTTIME`).
    pub timestamp_ns: u64,
}

const _: () = assert!(size_of::<EventHeader>() == 16);

#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    OomKill = 1,
    Cgroup = 2,
    Reclaim = 3,
    ChargeFail = 4,
}

impl TryFrom<u32> for EventKind {
    type Error = u32;

    fn try_from(value: u32) -> Result<Self, Self::Error> {
        match value {
            1 => Ok(Self::OomKill),
            2 => Ok(Self::Cgroup),
            3 => Ok(Self::Reclaim),
            4 => Ok(Self::ChargeFail),
            other => Err(other),
        }
    }
}

/// `flags` bit: the memcg id was read in the kernel from the victim task.
pub const OOM_FLAG_MEMCG: u32 = 1 << 0;
/// `flags` bit: the rss counters were read from the victim's `mm`.
pub const OOM_FLAG_RSS: u32 = 1 << 1;
/// `flags` bit: tgid and comm were read from the victim task (not only its pid).
pub const OOM_FLAG_TASK: u32 = 1 << 2;
/// `flags` bit: the `oom_control` fields (limit memcg, its usage and max, constraint,
/// totalpages) were read.
pub const OOM_FLAG_CONTROL: u32 = 1 << 3;

/// `OomKillRecord::strategy`: which program reported the kill.
pub const OOM_STRATEGY_RAW_TP: u32 = 1;
pub const OOM_STRATEGY_KPROBE: u32 = 2;
pub const OOM_STRATEGY_FENTRY: u32 = 3;

/// A task chosen as OOM victim (`oom:mark_victim`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct OomKillRecord {
    pub header: EventHeader,
    /// Inode number of the victim's memory-controller cgroup directory (`kernfs_node.id`).
    pub memcg_id: u64,
    pub pid: u32,
    pub tgid: u32,
    /// Pages, as the kernel's own `get_mm_counter()` reads them.
    pub anon_rss_pages: u64,
    pub file_rss_pages: u64,
    pub shmem_rss_pages: u64,
    /// `OOM_FLAG_*` bits saying which fields are valid.
    pub flags: u32,
    /// `OOM_STRATEGY_*`
    pub strategy: u32,
    pub comm: [u8; 16],
    /// With `OOM_FLAG_CONTROL`: the memcg whose limit fired (`oc->memcg`), 0 for a global OOM.
    pub limit_memcg_id: u64,
    /// That memcg's `memory` page counter at the kill: usage and max, in pages.
    pub limit_usage_pages: u64,
    pub limit_max_pages: u64,
    /// `oc->totalpages`: the memory the OOM killer judged against, in pages.
    pub totalpages: u64,
    /// `oc->constraint` (`enum oom_constraint`; its names come from BTF).
    pub constraint: u32,
    pub pad: u32,
}

const _: () = assert!(size_of::<OomKillRecord>() == 120);

/// `CgroupRecord::action`: the cgroup directory was created.
pub const CGROUP_MKDIR: u32 = 1;
/// The directory was removed: the memcg goes offline and is *dying* until it is freed.
pub const CGROUP_RMDIR: u32 = 2;
/// The cgroup was freed: nothing pins it any more.
pub const CGROUP_RELEASE: u32 = 3;

/// `CgroupRecord::flags` bit: `charged_pages` was read (at removal).
pub const CGROUP_FLAG_CHARGED: u32 = 1 << 0;

/// Longest cgroup path carried, NUL included; longer paths are cut (flagged by userspace when
/// the last byte is not NUL).
pub const CGROUP_PATH_LEN: usize = 256;

/// A memory cgroup's lifecycle (`cgroup:cgroup_mkdir`, `cgroup_rmdir`, `cgroup_release`), for
/// the memory hierarchy only.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct CgroupRecord {
    pub header: EventHeader,
    /// `kernfs_node.id`: the directory's inode number, the same id other records carry.
    pub memcg_id: u64,
    /// One of `CGROUP_MKDIR`, `CGROUP_RMDIR`, `CGROUP_RELEASE`.
    pub action: u32,
    /// `CGROUP_FLAG_*` bits.
    pub flags: u32,
    /// Pages still charged to the memcg when it was removed (`mem_cgroup.memory.usage`): what
    /// keeps a removed memcg alive (page cache, slab).
    pub charged_pages: u64,
    /// NUL-terminated path relative to the hierarchy root, as the kernel's tracepoint gives it.
    pub path: [u8; CGROUP_PATH_LEN],
}

const _: () = assert!(size_of::<CgroupRecord>() == 296);

impl Default for CgroupRecord {
    fn default() -> Self {
        Zeroable::zeroed()
    }
}

/// One memcg limit reclaim episode (`vmscan:mm_vmscan_memcg_reclaim_begin` → `_end`, paired per
/// task).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct ReclaimRecord {
    pub header: EventHeader,
    /// The reclaiming task's memcg: the one whose charge pushed it over a limit (its own or an
    /// ancestor's).
    pub memcg_id: u64,
    pub duration_ns: u64,
    pub nr_reclaimed: u64,
    pub gfp_flags: u64,
    pub order: u32,
    pub pid: u32,
}

const _: () = assert!(size_of::<ReclaimRecord>() == 56);

/// `ChargeFailRecord::strategy`: which program saw the failure. (1 was userspace's derived
/// failure in trace format v2; it is never written by the kernel.)
pub const CHARGE_STRATEGY_KPROBE: u32 = 2;
pub const CHARGE_STRATEGY_FEXIT: u32 = 3;

/// `try_charge_memcg()` could not charge a memcg: it returned an error (`-ENOMEM`) after its
/// reclaim and OOM attempts, read at its return by fexit or kretprobe.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct ChargeFailRecord {
    pub header: EventHeader,
    /// The memcg the charge was for (`try_charge_memcg`'s `memcg` argument).
    pub memcg_id: u64,
    pub gfp_flags: u64,
    pub nr_pages: u32,
    /// The return value (a negative errno).
    pub ret: i32,
    pub pid: u32,
    pub tgid: u32,
    /// [`CHARGE_STRATEGY_FEXIT`] or [`CHARGE_STRATEGY_KPROBE`].
    pub strategy: u32,
    pub pad: u32,
    pub comm: [u8; 16],
}

const _: () = assert!(size_of::<ChargeFailRecord>() == 72);

/// Why events were dropped; the index into the per-CPU lost counters.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LostKind {
    /// The ring buffer was full when an OOM kill was to be reported.
    OomKill = 0,
    /// The ring buffer was full when a cgroup lifecycle event was to be reported.
    Cgroup = 1,
    /// A reclaim episode could not be paired (begin map full) or reported (ring buffer full).
    Reclaim = 2,
    /// A page-cache add/remove could not be counted: an aggregation map was full.
    PageCache = 3,
    /// A charge could not be counted (aggregation map full, or a kprobe entry not paired).
    Charge = 4,
    /// A charge failure could not be reported (ring buffer full, or its entry not paired).
    ChargeFail = 5,
    /// A slab allocation or free could not be counted (aggregation or object map full).
    Slab = 6,
}

impl LostKind {
    /// Number of lost counters (the `LOST` map's size).
    pub const COUNT: u32 = 7;
    pub const ALL: [Self; Self::COUNT as usize] = [
        Self::OomKill,
        Self::Cgroup,
        Self::Reclaim,
        Self::PageCache,
        Self::Charge,
        Self::ChargeFail,
        Self::Slab,
    ];

    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::OomKill => "oom_kill",
            Self::Cgroup => "cgroup",
            Self::Reclaim => "reclaim",
            Self::PageCache => "cache",
            Self::Charge => "charge",
            Self::ChargeFail => "charge_fail",
            Self::Slab => "slab",
        }
    }
}

/// Why a record could not be decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// Fewer bytes than the record needs.
    Short { kind: u32, need: usize, got: usize },
    /// A kind this build does not know.
    UnknownKind(u32),
}

/// A decoded ring-buffer record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Record {
    OomKill(OomKillRecord),
    Cgroup(CgroupRecord),
    Reclaim(ReclaimRecord),
    ChargeFail(ChargeFailRecord),
}

impl Record {
    /// Decodes one ring-buffer record, checking its length; never trusts alignment.
    ///
    /// # Errors
    ///
    /// When the bytes are too short for the header or for the record their kind names, or the
    /// kind is unknown.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let header: EventHeader = read(bytes, 0)?;
        match EventKind::try_from(header.kind) {
            Ok(EventKind::OomKill) => Ok(Self::OomKill(read(bytes, header.kind)?)),
            Ok(EventKind::Cgroup) => Ok(Self::Cgroup(read(bytes, header.kind)?)),
            Ok(EventKind::Reclaim) => Ok(Self::Reclaim(read(bytes, header.kind)?)),
            Ok(EventKind::ChargeFail) => Ok(Self::ChargeFail(read(bytes, header.kind)?)),
            Err(kind) => Err(DecodeError::UnknownKind(kind)),
        }
    }
}

fn read<T: Pod>(bytes: &[u8], kind: u32) -> Result<T, DecodeError> {
    let need = size_of::<T>();
    let bytes = bytes.get(..need).ok_or(DecodeError::Short {
        kind,
        need,
        got: bytes.len(),
    })?;
    Ok(bytemuck::pod_read_unaligned(bytes))
}

impl Record {
    /// When the kernel wrote it (`CLOCK_BOOTTIME` ns).
    #[must_use]
    pub const fn timestamp_ns(&self) -> u64 {
        self.header().timestamp_ns
    }

    #[must_use]
    pub const fn header(&self) -> &EventHeader {
        match self {
            Self::OomKill(r) => &r.header,
            Self::Cgroup(r) => &r.header,
            Self::Reclaim(r) => &r.header,
            Self::ChargeFail(r) => &r.header,
        }
    }

    /// The memcg the record is about (0: the kernel could not tell).
    #[must_use]
    pub const fn memcg_id(&self) -> u64 {
        match self {
            Self::OomKill(r) => r.memcg_id,
            Self::Cgroup(r) => r.memcg_id,
            Self::Reclaim(r) => r.memcg_id,
            Self::ChargeFail(r) => r.memcg_id,
        }
    }

    /// The record's bytes, as the kernel wrote them (tests write records as the kernel would).
    #[must_use]
    pub fn bytes(&self) -> &[u8] {
        match self {
            Self::OomKill(r) => bytemuck::bytes_of(r),
            Self::Cgroup(r) => bytemuck::bytes_of(r),
            Self::Reclaim(r) => bytemuck::bytes_of(r),
            Self::ChargeFail(r) => bytemuck::bytes_of(r),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_matches_the_kernel_side() {
        assert_eq!(core::mem::offset_of!(OomKillRecord, memcg_id), 16);
        assert_eq!(core::mem::offset_of!(OomKillRecord, pid), 24);
        assert_eq!(core::mem::offset_of!(OomKillRecord, anon_rss_pages), 32);
        assert_eq!(core::mem::offset_of!(OomKillRecord, flags), 56);
        assert_eq!(core::mem::offset_of!(OomKillRecord, comm), 64);
        assert_eq!(core::mem::offset_of!(OomKillRecord, limit_memcg_id), 80);
        assert_eq!(core::mem::offset_of!(OomKillRecord, constraint), 112);
    }

    #[test]
    fn decodes_a_good_record_at_any_alignment() {
        let mut rec = OomKillRecord {
            header: EventHeader {
                kind: EventKind::OomKill as u32,
                pad: 0,
                timestamp_ns: 42,
            },
            memcg_id: 7,
            pid: 100,
            tgid: 99,
            anon_rss_pages: 1,
            file_rss_pages: 2,
            shmem_rss_pages: 3,
            flags: OOM_FLAG_MEMCG | OOM_FLAG_RSS | OOM_FLAG_CONTROL,
            strategy: OOM_STRATEGY_KPROBE,
            limit_memcg_id: 6,
            limit_usage_pages: 16_384,
            limit_max_pages: 16_384,
            totalpages: 16_384,
            constraint: 3,
            ..OomKillRecord::default()
        };
        rec.comm[..6].copy_from_slice(b"memhog");
        let mut buf = [0u8; 121];
        buf[1..].copy_from_slice(bytemuck::bytes_of(&rec));
        assert_eq!(Record::decode(&buf[1..]), Ok(Record::OomKill(rec)));
    }

    #[test]
    fn cgroup_records_round_trip() {
        let mut rec = CgroupRecord {
            header: EventHeader {
                kind: EventKind::Cgroup as u32,
                pad: 0,
                timestamp_ns: 5,
            },
            memcg_id: 77,
            action: CGROUP_RMDIR,
            flags: CGROUP_FLAG_CHARGED,
            charged_pages: 12,
            ..CgroupRecord::default()
        };
        rec.path[..4].copy_from_slice(b"/a/b");
        let record = Record::Cgroup(rec);
        assert_eq!(Record::decode(record.bytes()), Ok(record));
        assert_eq!(core::mem::offset_of!(CgroupRecord, path), 40);
    }

    #[test]
    fn rejects_short_and_unknown_records() {
        assert_eq!(
            Record::decode(&[0; 3]),
            Err(DecodeError::Short {
                kind: 0,
                need: 16,
                got: 3
            })
        );
        let header = EventHeader {
            kind: EventKind::OomKill as u32,
            ..EventHeader::default()
        };
        assert_eq!(
            Record::decode(bytemuck::bytes_of(&header)),
            Err(DecodeError::Short {
                kind: 1,
                need: 120,
                got: 16
            })
        );
        let header = EventHeader {
            kind: 9999,
            ..EventHeader::default()
        };
        assert_eq!(
            Record::decode(bytemuck::bytes_of(&header)),
            Err(DecodeError::UnknownKind(9999))
        );
    }
}
