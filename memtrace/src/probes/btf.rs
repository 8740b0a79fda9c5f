//! Struct member offsets from the running kernel's BTF.
//!
//! aya cannot emit CO-RE relocations, so every offset the programs need is resolved here by name
//! and handed to them as the `OFFSETS` global. Nothing is hard-coded: a kernel that renamed or
//! dropped a member is a start-up error naming it.

use std::{
    os::fd::{AsRawFd as _, FromRawFd as _},
    path::{Path, PathBuf},
};

use btf_rs::{Backend, Btf, BtfType, Struct, Type};
use fallible_iterator::FallibleIterator as _;
use memtrace_common::{
    KernelOffsets, names,
    offsets::{MARK_VICTIM_ARG_PID, MARK_VICTIM_ARG_TASK},
};

use super::btf_index::NameIndex;

/// `SLAB_ACCOUNT` before it became a config-dependent enum bit (6.9), from `include/linux/slab.h`:
/// the fallback for kernels whose BTF has no `_SLAB_ACCOUNT`.
const SLAB_ACCOUNT_BEFORE_6_9: u32 = 0x0400_0000;
/// `__GFP_ACCOUNT` before 6.10, when `___GFP_ACCOUNT_BIT` was still a `#define` that BTF does not
/// carry (`include/linux/gfp_types.h`; bit 22 from 5.x to 6.9 on every config).
const GFP_ACCOUNT_BEFORE_6_10: u32 = 0x40_0000;

/// Before 5.11, the tag on `page.obj_cgroups` (bit 0) that tells a slab page's vector of
/// per-object charges from `page.mem_cgroup` (`mm/memcontrol.c`; a literal, absent from BTF).
const OBJ_CGROUPS_TAG: u32 = 0x1;

/// Where the kernel exposes its own BTF.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

/// Every type name [`KernelBtf::kernel_offsets`] and [`KernelBtf::enum_names`] look up, found in
/// one pass when BTF is opened ([`NameIndex`]); a name missing here still resolves, by a scan
/// of every type, which the debug log reports (and a test forbids for the offsets).
const TYPE_NAMES: &[&str] = &[
    "_slab_flag_bits",
    "address_space",
    "btf_trace_kmem_cache_alloc",
    "btf_trace_kmem_cache_free",
    "btf_trace_mark_victim",
    "btf_trace_mm_vmscan_memcg_reclaim_begin",
    "cgroup",
    "cgroup_root",
    "cgroup_subsys_id",
    "cgroup_subsys_state",
    "css_set",
    "dentry",
    "folio",
    "hlist_bl_node",
    "inode",
    "kernfs_node",
    "kmem_cache",
    "mem_cgroup",
    "mm_struct",
    "node_stat_item",
    "obj_cgroup",
    "objext_flags",
    "oom_constraint",
    "oom_control",
    "page",
    "page_counter",
    "qstr",
    "slab",
    "slabobj_ext",
    "super_block",
    "task_struct",
    // The functions fentry and fexit strategies load against (`KernelBtf::has_function`).
    names::OOM_KILL_FUNCTION,
    names::CHARGE_FUNCTION,
    names::CHARGE_PAGE_FUNCTION,
    names::TRY_CHARGE_FUNCTION,
    names::TRY_CHARGE_OLD_FUNCTION,
    names::KMEM_CACHE_ALLOC_FUNCTION,
    names::KMEM_CACHE_ALLOC_NODE_FUNCTION,
    names::KMEM_CACHE_FREE_FUNCTION,
    names::REFAULT_FUNCTION,
    // The kfunc the programs read in place with (`super::direct`).
    names::RDONLY_CAST_KFUNC,
];

/// The enum members [`KernelBtf::kernel_offsets`] finds by name in any enum, named or not.
const ENUM_MEMBERS: &[&str] = &[
    "MM_FILEPAGES",
    "MM_ANONPAGES",
    "MM_SHMEMPAGES",
    "__NR_MEMCG_DATA_FLAGS",
    "PG_head",
    "PG_swapbacked",
    "MEMCG_DATA_OBJEXTS",
    "MEMCG_DATA_OBJCGS",
    "MEMCG_DATA_KMEM",
    "___GFP_ACCOUNT_BIT",
];

#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error(
        "kernel BTF not found at {0}: memtrace needs a kernel built with CONFIG_DEBUG_INFO_BTF=y"
    )]
    Missing(PathBuf),
    #[error("cannot parse kernel BTF at {path}: {source}")]
    Parse {
        path: PathBuf,
        source: btf_rs::Error,
    },
    #[error("kernel BTF has no {0}: this kernel is not supported yet (please report it)")]
    NotFound(String),
    #[error("kernel BTF: {what} has an unexpected shape: {why}")]
    Unexpected { what: String, why: String },
}

/// The kernel's BTF, with the lookups memtrace needs.
pub struct KernelBtf {
    btf: Btf,
    /// The names memtrace looks up, found in one pass; `None` when that pass failed (btf-rs
    /// then scans for each name).
    index: Option<NameIndex>,
    /// Lookups that scanned every type (names not in the index).
    scans: std::cell::Cell<usize>,
}

/// Where a struct member lives: byte offset from the start of the outer struct, and its type.
struct MemberAt {
    offset: u32,
    ty: Type,
}

impl KernelBtf {
    /// Opens `/sys/kernel/btf/vmlinux`.
    ///
    /// # Errors
    ///
    /// When the file is missing (kernel without BTF) or cannot be parsed.
    pub fn from_sys() -> Result<Self, BtfError> {
        Self::from_path(Path::new(VMLINUX_BTF))
    }

    /// Opens a vmlinux BTF file.
    ///
    /// # Errors
    ///
    /// When the file is missing or cannot be parsed.
    pub fn from_path(path: &Path) -> Result<Self, BtfError> {
        if !path.exists() {
            return Err(BtfError::Missing(path.to_owned()));
        }
        // Mmap parses lazily, so start-up does not pay for the ~100k types we never look at;
        // sysfs supports mmap of the BTF only since 6.16 (ENODEV before): then read it whole.
        let parse_error = |source| BtfError::Parse {
            path: path.to_owned(),
            source,
        };
        let (btf, index) = match Btf::from_file_with_backend(path, Backend::Mmap) {
            Ok(btf) => (btf, index_mapped(path)),
            Err(e) => {
                log::debug!("cannot mmap {}: {e}; copying it to memory", path.display());
                // Read whole, btf-rs would parse every type and string into maps of its own
                // (tens of MB on 6.12, most of memtrace's peak RSS in the VM guests): a copy
                // in a memfd is mapped and parsed lazily like the file itself.
                match copy_to_memfd(path) {
                    Ok(memfd) => {
                        let copy = PathBuf::from(format!("/proc/self/fd/{}", memfd.as_raw_fd()));
                        let btf = Btf::from_file_with_backend(&copy, Backend::Mmap)
                            .map_err(parse_error)?;
                        let index = index_mapped(&copy);
                        // The maps keep the copy.
                        drop(memfd);
                        (btf, index)
                    }
                    Err(e) => {
                        log::debug!("cannot copy {} to a memfd: {e}; reading it", path.display());
                        let bytes = std::fs::read(path)
                            .map_err(|source| parse_error(btf_rs::Error::IO(source)))?;
                        let index = index_of(&bytes);
                        (Btf::from_bytes(&bytes).map_err(parse_error)?, index)
                    }
                }
            }
        };
        Ok(Self {
            btf,
            index,
            scans: std::cell::Cell::new(0),
        })
    }

    /// Resolves every offset the programs need.
    ///
    /// # Errors
    ///
    /// Names the first struct, member or enum value this kernel's BTF lacks.
    pub fn kernel_offsets(&self) -> Result<KernelOffsets, BtfError> {
        let memory_cgrp_id = self.enum_value("cgroup_subsys_id", "memory_cgrp_id")?;
        let subsys = self.member("css_set", "subsys")?;
        let subsys_elem = self.array_element_size("css_set.subsys", &subsys.ty)?;

        let cgroup_subsys = self.member("cgroup", "subsys")?;
        let cgroup_subsys_elem = self.array_element_size("cgroup.subsys", &cgroup_subsys.ty)?;
        let memcg_usage = self.member("mem_cgroup", "memory")?.offset
            + self.member("page_counter", "usage")?.offset;

        let FolioShape {
            folio,
            folio_nr_pages,
            folio_order,
            folio_memcg_data,
        } = self.folio_shape()?;
        let c = self.constants()?;
        let nr_anon_mapped = self.enum_value("node_stat_item", "NR_ANON_MAPPED");
        let nr_file_pages = self.enum_value("node_stat_item", "NR_FILE_PAGES");
        // BTF prototypes of raw tracepoints have no argument names: find them by type.
        let [reclaim_order, reclaim_gfp] =
            self.tracepoint_args("mm_vmscan_memcg_reclaim_begin", ["int", "gfp_t"])?;

        let rss_stat = self.member("mm_struct", "rss_stat")?;
        let rss = self.rss_counters(&rss_stat)?;

        Ok(KernelOffsets {
            task_pid: self.member("task_struct", "pid")?.offset,
            task_tgid: self.member("task_struct", "tgid")?.offset,
            task_comm: self.member("task_struct", "comm")?.offset,
            task_cgroups: self.member("task_struct", "cgroups")?.offset,
            task_mm: self.member("task_struct", "mm")?.offset,
            css_set_memory_css: subsys.offset + memory_cgrp_id * subsys_elem,
            css_cgroup: self.member("cgroup_subsys_state", "cgroup")?.offset,
            cgroup_kn: self.member("cgroup", "kn")?.offset,
            kernfs_node_id: self.member("kernfs_node", "id")?.offset,
            kernfs_node_parent: self
                .member("kernfs_node", "__parent")
                .or_else(|_| self.member("kernfs_node", "parent"))?
                .offset,
            mm_file_rss: rss.at(c.mm_filepages),
            mm_anon_rss: rss.at(c.mm_anonpages),
            mm_shmem_rss: rss.at(c.mm_shmempages),
            mark_victim_arg: self.mark_victim_arg()?,
            cgroup_root: self.member("cgroup", "root")?.offset,
            cgroup_root_subsys_mask: self.member("cgroup_root", "subsys_mask")?.offset,
            memory_subsys_bit: 1 << memory_cgrp_id,
            cgroup_memory_css: cgroup_subsys.offset + memory_cgrp_id * cgroup_subsys_elem,
            memcg_usage,
            folio_memcg_data,
            memcg_data_flags: c.memcg_data_flags,
            folio_flags: self.member(folio, "flags")?.offset,
            pg_head_mask: c.pg_head_mask,
            folio_nr_pages,
            folio_order,
            folio_mapping: self.member(folio, "mapping")?.offset,
            mapping_host: self.member("address_space", "host")?.offset,
            inode_ino: self.member("inode", "i_ino")?.offset,
            inode_sb: self.member("inode", "i_sb")?.offset,
            sb_dev: self.member("super_block", "s_dev")?.offset,
            reclaim_begin_order_arg: reclaim_order,
            reclaim_begin_gfp_arg: reclaim_gfp,
            memcg_max: self.member("mem_cgroup", "memory")?.offset
                + self.member("page_counter", "max")?.offset,
            oom_control_memcg: self.member("oom_control", "memcg")?.offset,
            oom_control_chosen: self.member("oom_control", "chosen")?.offset,
            oom_control_totalpages: self.member("oom_control", "totalpages")?.offset,
            oom_control_constraint: self.member("oom_control", "constraint")?.offset,
            task_active_memcg: self.member("task_struct", "active_memcg")?.offset,
            kmem_cache_flags: self.member("kmem_cache", "flags")?.offset,
            kmem_cache_size: self.member("kmem_cache", "size")?.offset,
            kmem_cache_name: self.member("kmem_cache", "name")?.offset,
            slab_account_flag: c.slab_account_flag,
            gfp_account_flag: c.gfp_account_flag,
            nr_anon_mapped: nr_anon_mapped?,
            nr_file_pages: nr_file_pages?,
            // Absent before 5.9 (one WORKINGSET_REFAULT for both): no refault stat to count.
            workingset_refault_file: self
                .enum_value("node_stat_item", "WORKINGSET_REFAULT_FILE")
                .unwrap_or(u32::MAX),
            memcg_data_objexts: c.memcg_data_objexts,
            memcg_data_kmem: c.memcg_data_kmem,
            obj_exts_flags: c.obj_exts_flags,
            // kmem_cache_alloc and kmem_cache_free name the cache (6.0+; 5.10's pass sizes, or
            // a name string, where the programs would read it).
            kmem_tracepoints_pass_cache: u32::from(
                ["kmem_cache_alloc", "kmem_cache_free"]
                    .iter()
                    .all(|tp| self.tracepoint_arg_points_to(tp, 2, "kmem_cache")),
            ),
            inode_nlink: self.member("inode", "i_nlink")?.offset,
            inode_dentry: self.member("inode", "i_dentry")?.offset,
            sb_magic: self.member("super_block", "s_magic")?.offset,
            // `d_alias` is the first member of the `d_u` union on every kernel.
            dentry_alias: self.member("dentry", "d_u")?.offset,
            dentry_parent: self.member("dentry", "d_parent")?.offset,
            dentry_name: self.member("dentry", "d_name")?.offset
                + self.member("qstr", "name")?.offset,
            dentry_hash_pprev: self.member("dentry", "d_hash")?.offset
                + self.member("hlist_bl_node", "pprev")?.offset,
            pg_swapbacked_mask: c.pg_swapbacked_mask,
            ..self.slab_charge_offsets().unwrap_or_else(|e| {
                // The `charged` slab strategy checks for them and says why it cannot run.
                log::debug!("slab charge records: {e}");
                KernelOffsets::ZERO
            })
        })
    }

    /// The kernel constants the programs need (enum values, flag bits), from BTF.
    fn constants(&self) -> Result<Constants, BtfError> {
        // Enum values by member name, in one pass over the types: the MM_* counters and the gfp
        // bits are in anonymous enums, and so are the `memcg_data` flags in some kernels' BTF;
        // named enums are looked up by name.
        let [
            file,
            anon,
            shmem,
            nr_memcg_data_flags,
            pg_head,
            pg_swapbacked,
            memcg_data_objexts,
            memcg_data_kmem,
            gfp_account_bit,
        ] = self.enum_values_by_member([
            &["MM_FILEPAGES"],
            &["MM_ANONPAGES"],
            &["MM_SHMEMPAGES"],
            &["__NR_MEMCG_DATA_FLAGS"],
            &["PG_head"],
            &["PG_swapbacked"],
            // Renamed in 6.10, when slabs' per-object records became `slabobj_ext`.
            &["MEMCG_DATA_OBJEXTS", "MEMCG_DATA_OBJCGS"],
            &["MEMCG_DATA_KMEM"],
            // An enum member since 6.10 (a `#define` before, absent from BTF).
            &["___GFP_ACCOUNT_BIT"],
        ]);
        let found = |value: Option<u32>, name: &str| {
            value.ok_or_else(|| BtfError::NotFound(format!("enum value {name}")))
        };
        // Before 5.11 (no `memcg_data`, no `memcg_data_flags` enum): `page.mem_cgroup` shares
        // its word with `page.obj_cgroups`, a slab page's vector tagged with bit 0
        // (`memcg_alloc_page_obj_cgroups()`), and kmem pages point at their memcg untagged.
        let before_memcg_data = nr_memcg_data_flags.is_none()
            && memcg_data_objexts.is_none()
            && memcg_data_kmem.is_none();
        let (memcg_data_flags, memcg_data_objexts, memcg_data_kmem) = if before_memcg_data {
            (OBJ_CGROUPS_TAG, OBJ_CGROUPS_TAG, 0)
        } else {
            (
                found(nr_memcg_data_flags, "__NR_MEMCG_DATA_FLAGS")?.saturating_sub(1),
                found(memcg_data_objexts, "MEMCG_DATA_OBJEXTS")?,
                found(memcg_data_kmem, "MEMCG_DATA_KMEM")?,
            )
        };
        Ok(Constants {
            mm_filepages: found(file, "MM_FILEPAGES")?,
            mm_anonpages: found(anon, "MM_ANONPAGES")?,
            mm_shmempages: found(shmem, "MM_SHMEMPAGES")?,
            pg_head_mask: 1 << found(pg_head, "PG_head")?,
            pg_swapbacked_mask: 1 << found(pg_swapbacked, "PG_swapbacked")?,
            memcg_data_flags,
            memcg_data_objexts,
            memcg_data_kmem,
            // A slab's `obj_exts` carries flags of its own since 6.10 (`OBJEXTS_ALLOC_FAIL`, …):
            // `OBJEXTS_FLAGS_MASK`; before, `slab.memcg_data` has the folio's.
            obj_exts_flags: self
                .enum_value("objext_flags", "__NR_OBJEXTS_FLAGS")
                .map_or(memcg_data_flags, |nr| nr.saturating_sub(1)),
            gfp_account_flag: gfp_account_bit.map_or(GFP_ACCOUNT_BEFORE_6_10, |bit| 1 << bit),
            // Enum members only since 6.9, whose values depend on the kernel's config; a
            // constant before.
            slab_account_flag: self
                .enum_value("_slab_flag_bits", "_SLAB_ACCOUNT")
                .map_or(SLAB_ACCOUNT_BEFORE_6_9, |bit| 1 << bit),
        })
    }

    /// Where the kernel keeps each slab object's charge (`struct slab`'s `obj_exts`, or
    /// `memcg_data` before 6.10), for the `charged` slab strategy. Only these six fields are set.
    /// 5.10 has no `struct folio`: its filemap tracepoints and charge function pass the
    /// `struct page *` a folio would overlay, and the same members are the page's.
    fn folio_shape(&self) -> Result<FolioShape, BtfError> {
        let page_shape = !self.has_type("folio");
        let folio = if page_shape { "page" } else { "folio" };
        let (folio_nr_pages, folio_order) = if page_shape {
            let order = self.member("page", "compound_order")?.offset;
            (0, self.struct_size("page")? + order)
        } else {
            let nr_pages = self
                .member("folio", "_nr_pages")
                .or_else(|_| self.member("folio", "_folio_nr_pages"))?;
            (nr_pages.offset, 0)
        };
        let folio_memcg_data = self
            .member(folio, "memcg_data")
            // Before 5.11: the union of `mem_cgroup` and `obj_cgroups`.
            .or_else(|_| self.member("page", "mem_cgroup"))?
            .offset;
        Ok(FolioShape {
            folio,
            folio_nr_pages,
            folio_order,
            folio_memcg_data,
        })
    }

    fn slab_charge_offsets(&self) -> Result<KernelOffsets, BtfError> {
        let obj_exts = self.member("slab", "obj_exts");
        let (slab_obj_exts, slab_obj_ext_size) = match obj_exts {
            Ok(member) => (member.offset, self.struct_size("slabobj_ext")?),
            // Before 6.10: an array of `struct obj_cgroup *`, in `slab.memcg_data`; before
            // `struct slab` (5.17), in the slab's head page: `page.memcg_data` (5.11+), or
            // `page.obj_cgroups` (5.9, 5.10).
            Err(_) => (
                self.member("slab", "memcg_data")
                    .or_else(|_| self.member("page", "memcg_data"))
                    .or_else(|_| self.member("page", "obj_cgroups"))?
                    .offset,
                8,
            ),
        };
        Ok(KernelOffsets {
            page_size: self.struct_size("page")?,
            page_compound_head: self.member("page", "compound_head")?.offset,
            slab_cache: self
                .member("slab", "slab_cache")
                .or_else(|_| self.member("page", "slab_cache"))?
                .offset,
            slab_obj_exts,
            slab_obj_ext_size,
            obj_cgroup_memcg: self.member("obj_cgroup", "memcg")?.offset,
            ..KernelOffsets::ZERO
        })
    }

    fn struct_size(&self, strukt: &str) -> Result<u32, BtfError> {
        let what = format!("struct {strukt}");
        let ty = self.named(
            &what,
            strukt,
            |t| matches!(t, Type::Struct(s) if !s.members.is_empty()),
        )?;
        self.size_of(&what, &ty)
    }

    /// Whether `oom:mark_victim` passes the victim task or only its pid, from the prototype of
    /// its raw tracepoint (`btf_trace_mark_victim`: `void (*)(void *, <args…>)`).
    fn mark_victim_arg(&self) -> Result<u32, BtfError> {
        const WHAT: &str = "typedef btf_trace_mark_victim";
        let unexpected = |why: &str| BtfError::Unexpected {
            what: WHAT.to_owned(),
            why: why.to_owned(),
        };
        let typedef = self.named(WHAT, "btf_trace_mark_victim", |t| {
            matches!(t, Type::Typedef(_))
        })?;
        let Type::Ptr(ptr) = self.skip_modifiers(typedef)? else {
            return Err(unexpected("not a function pointer"));
        };
        let Type::FuncProto(proto) = self.chained(WHAT, &ptr)? else {
            return Err(unexpected("not a function pointer"));
        };
        // parameters[0] is the tracepoint's `void *__data`.
        let first = proto
            .parameters
            .get(1)
            .ok_or_else(|| unexpected("no arguments"))?;
        match self.skip_modifiers(self.chained(WHAT, first)?)? {
            Type::Ptr(ptr) => match self.skip_modifiers(self.chained(WHAT, &ptr)?)? {
                Type::Struct(s) if self.name_of(&s) == "task_struct" => Ok(MARK_VICTIM_ARG_TASK),
                _ => Err(unexpected(
                    "first argument is a pointer, but not to task_struct",
                )),
            },
            Type::Int(_) => Ok(MARK_VICTIM_ARG_PID),
            _ => Err(unexpected("first argument is neither a task nor a pid")),
        }
    }

    /// Whether argument `index` of a tracepoint (counting from 0 after `__data`) is a pointer to
    /// `struct strukt`, from its raw tracepoint's prototype.
    fn tracepoint_arg_points_to(&self, tracepoint: &str, index: usize, strukt: &str) -> bool {
        let Ok(proto) = self.tracepoint_proto(tracepoint) else {
            return false;
        };
        let what = format!("argument {index} of {tracepoint}");
        proto
            .parameters
            .get(index + 1)
            .and_then(|p| self.btf.resolve_chained_type(p).ok())
            .and_then(|t| match t {
                Type::Ptr(ptr) => self.chained(&what, &ptr).ok(),
                _ => None,
            })
            .and_then(|t| self.skip_modifiers(t).ok())
            .is_some_and(|t| matches!(&t, Type::Struct(s) if self.name_of(s) == strukt))
    }

    /// A raw tracepoint's prototype (`btf_trace_NAME`: `void (*)(void *__data, args…)`).
    fn tracepoint_proto(&self, tracepoint: &str) -> Result<btf_rs::FuncProto, BtfError> {
        let what = format!("typedef btf_trace_{tracepoint}");
        let typedef = self.named(&what, &format!("btf_trace_{tracepoint}"), |t| {
            matches!(t, Type::Typedef(_))
        })?;
        let Type::Ptr(ptr) = self.skip_modifiers(typedef)? else {
            return Err(BtfError::Unexpected {
                what,
                why: "not a function pointer".into(),
            });
        };
        let Type::FuncProto(proto) = self.chained(&what, &ptr)? else {
            return Err(BtfError::Unexpected {
                what,
                why: "not a function pointer".into(),
            });
        };
        Ok(proto)
    }

    /// Positions of a tracepoint's arguments of the given type names (first match each), from
    /// its raw tracepoint's prototype (`btf_trace_NAME`: `void (*)(void *__data, args…)`).
    fn tracepoint_args<const N: usize>(
        &self,
        tracepoint: &str,
        names: [&str; N],
    ) -> Result<[u32; N], BtfError> {
        let proto = self.tracepoint_proto(tracepoint)?;
        let mut positions = [0; N];
        for (i, type_name) in names.iter().enumerate() {
            let at = proto
                .parameters
                .iter()
                .skip(1)
                .position(|p| {
                    self.btf
                        .resolve_chained_type(p)
                        .ok()
                        .and_then(|t| t.as_btf_type().map(|t| self.name_of(t)))
                        .is_some_and(|n| n == *type_name)
                })
                .ok_or_else(|| {
                    BtfError::NotFound(format!("argument of type {type_name} of {tracepoint}"))
                })?;
            positions[i] = u32::try_from(at).unwrap_or(u32::MAX);
        }
        Ok(positions)
    }

    /// The rss counters of `mm_struct`: an array of `percpu_counter` (6.2+) whose `count` is
    /// what `get_mm_counter()` reads, or `struct mm_rss_stat { atomic_long_t count[]; }` before.
    fn rss_counters(&self, rss_stat: &MemberAt) -> Result<Counters, BtfError> {
        const WHAT: &str = "mm_struct.rss_stat";
        match &rss_stat.ty {
            Type::Array(array) => {
                let stride = self.array_element_size(WHAT, &rss_stat.ty)?;
                let elem = self.skip_modifiers(self.chained(WHAT, array)?)?;
                let Type::Struct(counter) = elem else {
                    return Err(BtfError::Unexpected {
                        what: WHAT.to_owned(),
                        why: "array elements are not structs".to_owned(),
                    });
                };
                let count = self
                    .find_member(&counter, "count", 0)
                    .ok_or_else(|| BtfError::NotFound(format!("member count of {WHAT}[]")))?;
                Ok(Counters {
                    base: rss_stat.offset + count.offset,
                    stride,
                })
            }
            Type::Struct(s) => {
                let count = self
                    .find_member(s, "count", 0)
                    .ok_or_else(|| BtfError::NotFound(format!("member {WHAT}.count")))?;
                let stride = self.array_element_size(WHAT, &count.ty)?;
                Ok(Counters {
                    base: rss_stat.offset + count.offset,
                    stride,
                })
            }
            _ => Err(BtfError::Unexpected {
                what: WHAT.to_owned(),
                why: "neither an array nor a struct".to_owned(),
            }),
        }
    }

    /// Byte offset of `member` in `struct name`, looking through anonymous structs and unions
    /// (`mm_struct` keeps most of its members in one).
    fn member(&self, strukt: &str, member: &str) -> Result<MemberAt, BtfError> {
        let what = format!("struct {strukt}");
        let Type::Struct(s) = self.named(
            &what,
            strukt,
            |t| matches!(t, Type::Struct(s) if !s.members.is_empty()),
        )?
        else {
            unreachable!("named() returned a type its filter rejected")
        };
        self.find_member(&s, member, 0)
            .ok_or_else(|| BtfError::NotFound(format!("member {strukt}.{member}")))
    }

    fn find_member(&self, s: &Struct, name: &str, base_bits: u32) -> Option<MemberAt> {
        for m in &s.members {
            let bits = base_bits + m.bit_offset();
            let member_name = self.name_of(m);
            if member_name == name {
                let ty = self.btf.resolve_chained_type(m).ok()?;
                return Some(MemberAt {
                    offset: bits / 8,
                    ty,
                });
            }
            if member_name.is_empty()
                && let Ok(Type::Struct(inner) | Type::Union(inner)) =
                    self.btf.resolve_chained_type(m).and_then(|t| {
                        self.skip_modifiers(t).map_err(|_| {
                            btf_rs::Error::OpNotSupp("unresolvable anonymous member".into())
                        })
                    })
                && let Some(found) = self.find_member(&inner, name, bits)
            {
                return Some(found);
            }
        }
        None
    }

    /// Every member of a named enum, as (value, name): e.g. `oom_constraint`, whose values the
    /// programs report raw.
    ///
    /// # Errors
    ///
    /// When the enum is not in this kernel's BTF.
    pub fn enum_names(&self, enum_name: &str) -> Result<Vec<(u32, String)>, BtfError> {
        let what = format!("enum {enum_name}");
        let Type::Enum(e) = self.named(&what, enum_name, |t| matches!(t, Type::Enum(_)))? else {
            unreachable!("named() returned a type its filter rejected")
        };
        Ok(e.members
            .iter()
            .map(|m| (m.val(), self.name_of(m)))
            .collect())
    }

    fn enum_value(&self, enum_name: &str, member: &str) -> Result<u32, BtfError> {
        let what = format!("enum {enum_name}");
        let Type::Enum(e) = self.named(&what, enum_name, |t| matches!(t, Type::Enum(_)))? else {
            unreachable!("named() returned a type its filter rejected")
        };
        e.members
            .iter()
            .find(|m| self.name_of(*m) == member)
            .map(btf_rs::EnumMember::val)
            .ok_or_else(|| BtfError::NotFound(format!("{member} in {what}")))
    }

    /// Values of enum members found by name in any enum, named or anonymous (`MM_FILEPAGES`,
    /// …): one scan over all types, stopped as soon as every slot has a value. A slot lists a
    /// member's names across kernels (first found wins); a slot none of whose names exists is
    /// `None` (and costs a scan of every type).
    fn enum_values_by_member<const N: usize>(&self, slots: [&[&str]; N]) -> [Option<u32>; N] {
        if let Some(index) = &self.index
            && slots
                .iter()
                .flat_map(|names| names.iter())
                .all(|n| ENUM_MEMBERS.contains(n))
        {
            return slots.map(|names| index.first_enum_value(names));
        }
        self.scans.set(self.scans.get() + 1);
        let mut found = [None; N];
        let mut types = self.btf.type_iter();
        while let Ok(Some(t)) = types.next() {
            if let Type::Enum(e) = t {
                for m in &e.members {
                    let name = self.name_of(m);
                    for (slot, names) in found.iter_mut().zip(&slots) {
                        if slot.is_none() && names.contains(&name.as_str()) {
                            *slot = Some(m.val());
                        }
                    }
                }
                if found.iter().all(Option::is_some) {
                    break;
                }
            }
        }
        found
    }

    fn array_element_size(&self, what: &str, ty: &Type) -> Result<u32, BtfError> {
        let Type::Array(array) = ty else {
            return Err(BtfError::Unexpected {
                what: what.to_owned(),
                why: "not an array".to_owned(),
            });
        };
        let elem = self.chained(what, array)?;
        self.size_of(what, &elem)
    }

    fn size_of(&self, what: &str, ty: &Type) -> Result<u32, BtfError> {
        let size = match ty {
            Type::Int(i) => i.size(),
            Type::Ptr(_) => size_of::<u64>(),
            Type::Struct(s) | Type::Union(s) => s.size(),
            Type::Enum(e) => e.size(),
            Type::Enum64(e) => e.size(),
            Type::Float(f) => f.size(),
            Type::Array(a) => {
                let elem = self.size_of(what, &self.chained(what, a)?)?;
                return Ok(elem * u32::try_from(a.len()).unwrap_or(u32::MAX));
            }
            other => return self.size_of(what, &self.skip_modifiers(other.clone())?),
        };
        u32::try_from(size).map_err(|_| BtfError::Unexpected {
            what: what.to_owned(),
            why: format!("size {size} does not fit in 32 bits"),
        })
    }

    /// Follows typedefs and qualifiers down to the type they name.
    fn skip_modifiers(&self, mut ty: Type) -> Result<Type, BtfError> {
        loop {
            ty = match &ty {
                Type::Typedef(t) => self.chained("typedef", t)?,
                Type::Const(t) => self.chained("const", t)?,
                Type::Volatile(t) => self.chained("volatile", t)?,
                Type::Restrict(t) => self.chained("restrict", t)?,
                Type::TypeTag(t) => self.chained("type tag", t)?,
                _ => return Ok(ty),
            };
        }
    }

    fn chained<T: BtfType + ?Sized>(&self, what: &str, t: &T) -> Result<Type, BtfError> {
        self.btf
            .resolve_chained_type(t)
            .map_err(|e| BtfError::Unexpected {
                what: what.to_owned(),
                why: e.to_string(),
            })
    }

    /// Whether BTF has a type of that name (`btf_trace_kfree`: the kernel has the tracepoint).
    #[must_use]
    pub fn has_type(&self, name: &str) -> bool {
        !self.types_named(name).is_empty()
    }

    /// Whether the kernel has a function of that name (a `FUNC` in its BTF).
    #[must_use]
    pub fn has_function(&self, name: &str) -> bool {
        self.types_named(name)
            .iter()
            .any(|t| matches!(t, Type::Func(_)))
    }

    /// The BTF id of the kernel's function of that name (its `FUNC`), which an fentry
    /// program names to attach to.
    #[must_use]
    pub fn function_id(&self, name: &str) -> Option<u32> {
        self.id_of(name, |t| matches!(t, Type::Func(_)))
    }

    /// The BTF id of the kernel's struct of that name, which `bpf_rdonly_cast()` casts to.
    #[must_use]
    pub fn struct_id(&self, name: &str) -> Option<u32> {
        self.id_of(name, |t| matches!(t, Type::Struct(_)))
    }

    /// The id of the first type called `name` that is what `want` says.
    fn id_of(&self, name: &str, want: impl Fn(&Type) -> bool) -> Option<u32> {
        let ids = if let Some(ids) = self.index.as_ref().and_then(|index| index.ids(name)) {
            ids.to_vec()
        } else {
            self.scans.set(self.scans.get() + 1);
            self.btf.resolve_ids_by_name(name).unwrap_or_default()
        };
        ids.into_iter()
            .find(|&id| self.btf.resolve_type_by_id(id).is_ok_and(|t| want(&t)))
    }

    fn named(
        &self,
        what: &str,
        name: &str,
        want: impl Fn(&Type) -> bool,
    ) -> Result<Type, BtfError> {
        self.types_named(name)
            .into_iter()
            .find(want)
            .ok_or_else(|| BtfError::NotFound(what.to_owned()))
    }

    /// Every type called `name`, in id order: from the index when it has the name, else by a
    /// scan of every type.
    fn types_named(&self, name: &str) -> Vec<Type> {
        if let Some(ids) = self.index.as_ref().and_then(|index| index.ids(name)) {
            return ids
                .iter()
                .filter_map(|&id| self.btf.resolve_type_by_id(id).ok())
                .collect();
        }
        if self.index.is_some() {
            log::debug!("BTF: {name} is not among the names indexed at start-up: a scan");
        }
        self.scans.set(self.scans.get() + 1);
        self.btf.resolve_types_by_name(name).unwrap_or_default()
    }

    fn name_of(&self, t: &dyn BtfType) -> String {
        self.btf.resolve_name(t).unwrap_or_default()
    }
}

/// Which struct the folio programs read, and where its page count and memcg are.
struct FolioShape {
    /// `folio`, or `page` before folios (5.10).
    folio: &'static str,
    folio_nr_pages: u32,
    folio_order: u32,
    folio_memcg_data: u32,
}

/// Indexes the names memtrace looks up, reading the file through a memory map (sysfs maps the
/// kernel's BTF since 6.16; before, the caller reads it whole).
fn index_mapped(path: &Path) -> Option<NameIndex> {
    let map = map_file(path)
        .inspect_err(|e| log::debug!("BTF index: mapping {}: {e}", path.display()))
        .ok()?;
    index_of(&map)
}

/// The kernel's BTF as memory (sysfs allows it since 6.16).
///
/// # Errors
///
/// When the file cannot be opened or mapped (ENODEV before 6.16).
pub fn map_vmlinux() -> std::io::Result<memmap2::Mmap> {
    map_file(Path::new(VMLINUX_BTF))
}

fn map_file(path: &Path) -> std::io::Result<memmap2::Mmap> {
    let file = std::fs::File::open(path)?;
    // Private and read-only, as btf-rs maps it: sysfs refuses a shared mapping of it.
    // SAFETY: the kernel's BTF is read-only and does not change while the kernel runs, and
    // the map is only read.
    unsafe { memmap2::MmapOptions::new().map_copy_read_only(&file) }
}

/// A copy of `path` in memory, as a file that can be mapped (a memfd; closed with the
/// returned `File`, its pages freed once no map of it is left).
fn copy_to_memfd(path: &Path) -> std::io::Result<std::fs::File> {
    // SAFETY: a NUL-terminated name and flags; the descriptor returned is checked.
    let fd = unsafe { libc::memfd_create(c"memtrace-btf".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a descriptor just created and owned by nothing else.
    let mut copy = unsafe { std::fs::File::from_raw_fd(fd) };
    std::io::copy(&mut std::fs::File::open(path)?, &mut copy)?;
    Ok(copy)
}

fn index_of(data: &[u8]) -> Option<NameIndex> {
    NameIndex::build(data, TYPE_NAMES, ENUM_MEMBERS)
        .inspect_err(|e| log::debug!("BTF index: {e}; looking each name up by a scan"))
        .ok()
}

/// Kernel constants from BTF (see [`KernelOffsets`] for each).
struct Constants {
    /// `MM_FILEPAGES`, `MM_ANONPAGES`, `MM_SHMEMPAGES`: indices into `mm_struct.rss_stat`.
    mm_filepages: u32,
    mm_anonpages: u32,
    mm_shmempages: u32,
    pg_head_mask: u32,
    pg_swapbacked_mask: u32,
    memcg_data_flags: u32,
    memcg_data_objexts: u32,
    memcg_data_kmem: u32,
    obj_exts_flags: u32,
    gfp_account_flag: u32,
    slab_account_flag: u32,
}

/// An array of counters inside `mm_struct`.
struct Counters {
    base: u32,
    stride: u32,
}

impl Counters {
    fn at(&self, index: u32) -> u32 {
        self.base + index * self.stride
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads the BTF of the kernel the tests run on: the offsets must be plausible and
    /// consistent with the layout rules they encode.
    #[test]
    fn resolves_every_offset_on_the_running_kernel() {
        let btf = KernelBtf::from_sys().expect("this test needs /sys/kernel/btf/vmlinux");
        let o = btf.kernel_offsets().expect("offsets");
        assert!(o.task_pid > 0 && o.task_tgid == o.task_pid + 4, "{o:?}");
        assert!(o.task_comm > o.task_pid, "{o:?}");
        assert!(o.css_set_memory_css > 0, "{o:?}");
        assert_eq!(o.css_set_memory_css % 8, 0, "{o:?}");
        assert!(
            o.mm_anon_rss != o.mm_file_rss && o.mm_shmem_rss != o.mm_file_rss,
            "{o:?}"
        ); // `struct slab` overlays `struct page`: its charge records sit where a folio keeps its
        // `memcg_data` (the kernel asserts it with SLAB_MATCH).
        assert_eq!(o.slab_obj_exts, o.folio_memcg_data, "{o:?}");
        assert!(o.page_size >= 64 && o.page_compound_head == 8, "{o:?}");
        assert!(o.slab_obj_ext_size >= 8 && o.slab_cache > 0, "{o:?}");
        assert!(
            o.inode_nlink > 0 && o.inode_dentry > 0 && o.sb_magic > 0,
            "{o:?}"
        );
        assert!(
            o.dentry_parent > 0 && o.dentry_name > o.dentry_parent,
            "{o:?}"
        );
        assert!(o.dentry_alias > o.dentry_name, "{o:?}");
        assert!(
            o.dentry_hash_pprev >= 16 && o.dentry_hash_pprev < o.dentry_parent,
            "{o:?}"
        );
        assert!(
            o.pg_swapbacked_mask.is_power_of_two() && o.pg_swapbacked_mask > 1,
            "{o:?}"
        );
        // The kernel constants, as `include/linux/memcontrol.h` and `gfp_types.h` have had them
        // on every kernel so far.
        assert_eq!((o.memcg_data_objexts, o.memcg_data_kmem), (1, 2), "{o:?}");
        assert_eq!(o.memcg_data_flags, 3, "{o:?}");
        assert!(o.obj_exts_flags >= o.memcg_data_flags, "{o:?}");
        assert_eq!(o.gfp_account_flag, 0x40_0000, "{o:?}");
    }

    /// The index answers as btf-rs's own scans do, and the offsets need no scan at all.
    #[test]
    fn the_index_finds_what_scans_find_and_leaves_none_to_scan() {
        let btf = KernelBtf::from_sys().expect("this test needs /sys/kernel/btf/vmlinux");
        assert!(btf.index.is_some(), "the index could not be built");
        btf.kernel_offsets().expect("offsets");
        btf.enum_names("oom_constraint").expect("oom_constraint");
        assert!(btf.has_function(names::OOM_KILL_FUNCTION));
        // What start-up asks of every function an fentry or fexit strategy loads against.
        for function in super::super::plan::btf_traced_functions() {
            let _ = btf.has_function(function);
            let _ = btf.function_id(function);
        }
        assert_eq!(
            btf.scans.get(),
            0,
            "a name outside TYPE_NAMES or ENUM_MEMBERS"
        );
        assert!(!btf.has_function("no_such_function"), "a scan");
        assert_eq!(btf.scans.get(), 1);

        let scanned = KernelBtf {
            index: None,
            ..KernelBtf::from_sys().expect("BTF")
        };
        assert_eq!(
            format!("{:?}", btf.kernel_offsets().expect("offsets")),
            format!("{:?}", scanned.kernel_offsets().expect("offsets"))
        );
        assert!(scanned.scans.get() > 0);
        for name in TYPE_NAMES {
            assert_eq!(btf.types_named(name), scanned.types_named(name), "{name}");
        }
    }

    /// Where sysfs refuses to map the BTF (before 6.16), a copy in a memfd is mapped, and
    /// btf-rs reads it lazily (its `Mmap` backend) instead of parsing it whole into maps (its
    /// `Cache` backend, `Btf::from_bytes`): both must resolve the same offsets, enum names and
    /// function ids. (In the 6.12 guest they did, `kernel offsets` on the debug log; the
    /// `node` failure that had this change reverted was its tenants' memcgs going unused.)
    #[test]
    fn a_memfd_copy_reads_as_the_whole_parse() {
        let memfd = copy_to_memfd(Path::new(VMLINUX_BTF)).expect("memfd copy");
        let copy = PathBuf::from(format!("/proc/self/fd/{}", memfd.as_raw_fd()));
        let btf = Btf::from_file_with_backend(&copy, Backend::Mmap).expect("btf-rs maps it");
        let index = index_mapped(&copy);
        drop(memfd);
        assert!(index.is_some(), "the start-up index of the copy");
        let mapped = KernelBtf {
            btf,
            index,
            scans: std::cell::Cell::new(0),
        };
        let bytes = std::fs::read(VMLINUX_BTF).expect("this test needs /sys/kernel/btf/vmlinux");
        let parsed = KernelBtf {
            btf: Btf::from_bytes(&bytes).expect("btf-rs parses it"),
            index: index_of(&bytes),
            scans: std::cell::Cell::new(0),
        };
        assert_eq!(
            mapped.kernel_offsets().expect("offsets"),
            parsed.kernel_offsets().expect("offsets")
        );
        assert_eq!(
            mapped.enum_names("oom_constraint").expect("oom_constraint"),
            parsed.enum_names("oom_constraint").expect("oom_constraint")
        );
        for function in super::super::plan::btf_traced_functions() {
            assert_eq!(
                mapped.function_id(function),
                parsed.function_id(function),
                "{function}"
            );
        }
        assert!(mapped.function_id(names::OOM_KILL_FUNCTION).is_some());
    }

    #[test]
    fn a_function_id_is_its_func() {
        let btf = KernelBtf::from_sys().expect("this test needs /sys/kernel/btf/vmlinux");
        let id = btf
            .function_id(names::OOM_KILL_FUNCTION)
            .expect("every kernel has oom_kill_process");
        let Ok(Type::Func(func)) = btf.btf.resolve_type_by_id(id) else {
            panic!("{id} is not a FUNC");
        };
        assert_eq!(btf.name_of(&func), names::OOM_KILL_FUNCTION);
        assert_eq!(btf.function_id("no_such_function"), None);
        // A struct of that name is not a function.
        assert_eq!(btf.function_id("task_struct"), None);
    }

    #[test]
    fn missing_btf_is_a_clear_error() {
        let Err(err) = KernelBtf::from_path(Path::new("/nonexistent/vmlinux")) else {
            panic!("must fail");
        };
        assert!(err.to_string().contains("CONFIG_DEBUG_INFO_BTF"), "{err}");
    }

    #[test]
    fn missing_member_names_it() {
        let btf = KernelBtf::from_sys().expect("this test needs /sys/kernel/btf/vmlinux");
        let Err(err) = btf.member("task_struct", "no_such_member") else {
            panic!("must fail");
        };
        assert_eq!(
            err.to_string(),
            "kernel BTF has no member task_struct.no_such_member: this kernel is not supported yet (please report it)"
        );
    }
}
