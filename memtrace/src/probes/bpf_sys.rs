//! The few `bpf(2)` commands memtrace issues itself, where aya has no public call for them: a
//! map created apart from the object (the one-page ring buffer [`super::support`] tries, a
//! deferred map at its full size, [`super::deferred_maps`]), and the smallest fentry program,
//! which asks whether the kernel loads fentry programs at all ([`super::aya_btf`]). The batch
//! map commands are [`super::map_batch`]'s, over [`bpf_command`].
//!
//! Each attribute struct is the head of `union bpf_attr` for its command
//! (`include/uapi/linux/bpf.h`): the kernel reads the size given and takes the fields after
//! it as zero, on every kernel since the fields were added.

use std::{
    io,
    os::fd::{FromRawFd as _, OwnedFd},
};

/// `bpf(2)` commands.
const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_PROG_LOAD: libc::c_long = 5;
/// `enum bpf_prog_type`, `enum bpf_attach_type`.
const BPF_PROG_TYPE_RAW_TRACEPOINT: u32 = 17;
const BPF_PROG_TYPE_TRACING: u32 = 26;
const BPF_TRACE_FENTRY: u32 = 24;

/// `BPF_MAP_CREATE`'s attributes, up to the map's name.
#[repr(C)]
#[derive(Default)]
struct MapCreateAttr {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
    inner_map_fd: u32,
    numa_node: u32,
    map_name: [u8; 16],
}
const _: () = assert!(size_of::<MapCreateAttr>() == 44);

/// `BPF_PROG_LOAD`'s attributes, up to the BTF id a tracing program attaches to.
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
    prog_btf_fd: u32,
    func_info_rec_size: u32,
    func_info: u64,
    func_info_cnt: u32,
    line_info_rec_size: u32,
    line_info: u64,
    line_info_cnt: u32,
    attach_btf_id: u32,
}
const _: () = assert!(size_of::<ProgLoadAttr>() == 112);

/// What a map is: the kernel's own description of it, or the one to create.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapSpec {
    pub map_type: u32,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    pub map_flags: u32,
    /// Up to 15 bytes are kept, as the kernel keeps them.
    pub name: String,
}

/// Creates a map.
///
/// # Errors
///
/// The kernel's refusal.
pub fn create_map(spec: &MapSpec) -> io::Result<OwnedFd> {
    let mut attr = MapCreateAttr {
        map_type: spec.map_type,
        key_size: spec.key_size,
        value_size: spec.value_size,
        max_entries: spec.max_entries,
        map_flags: spec.map_flags,
        ..MapCreateAttr::default()
    };
    // The kernel takes the name's characters up to a NUL, [A-Za-z0-9_.], 15 at most.
    for (to, from) in attr.map_name.iter_mut().zip(spec.name.bytes().take(15)) {
        *to = from;
    }
    // SAFETY: `attr` is a valid, initialised `repr(C)` head of `union bpf_attr` of the size
    // passed, alive for the call; BPF_MAP_CREATE reads it and writes nothing back.
    unsafe { bpf(BPF_MAP_CREATE, (&raw const attr).cast(), size_of_val(&attr)) }
}

/// Loads `r0 = 0; exit` as an fentry program on the kernel function of BTF id `btf_id`, and
/// closes it again: whether this kernel loads fentry programs at all. Nothing is attached.
///
/// # Errors
///
/// The kernel's refusal (`EPERM` where tracing programs are not allowed, `ENOTSUPP` where the
/// architecture has no BPF trampolines, …).
pub fn try_fentry(btf_id: u32) -> io::Result<()> {
    // BPF_ALU64 | BPF_MOV | BPF_K into r0, imm 0; then BPF_JMP | BPF_EXIT.
    try_load(
        &ProgLoadAttr {
            prog_type: BPF_PROG_TYPE_TRACING,
            expected_attach_type: BPF_TRACE_FENTRY,
            attach_btf_id: btf_id,
            ..ProgLoadAttr::default()
        },
        &[0xb7, 0x95],
    )
}

/// Loads the smallest raw tracepoint program that reads kernel memory in place as the programs
/// do ([`super::direct`]): it casts its argument with the kfunc whose BTF id is `kfunc_id`
/// (`bpf_rdonly_cast`) to the struct whose BTF id is `struct_id`, loads the number at its start
/// and tests its low bits.
///
/// # Errors
///
/// The kernel's refusal (`EINVAL` where it has no such kfunc for raw tracepoints, `EACCES`
/// where the verifier refuses the load, …).
pub fn try_rdonly_cast(kfunc_id: u32, struct_id: u32) -> io::Result<()> {
    let insns: [u64; 7] = [
        // r1 = *(u64 *)(r1 + 0): the tracepoint's first argument.
        0x79 | 0x11 << 8,
        // r2 = struct_id; call kfunc_id (BPF_PSEUDO_KFUNC_CALL): r0 = the cast pointer.
        0xb7 | 0x02 << 8 | u64::from(struct_id) << 32,
        0x85 | 0x20 << 8 | u64::from(kfunc_id) << 32,
        // r3 = *(u64 *)(r0 + 0), in place; r3 &= 3.
        0x79 | 0x03 << 8,
        0x57 | 0x03 << 8 | 3 << 32,
        // r0 = 0; exit.
        0xb7,
        0x95,
    ];
    try_load(
        &ProgLoadAttr {
            prog_type: BPF_PROG_TYPE_RAW_TRACEPOINT,
            ..ProgLoadAttr::default()
        },
        &insns,
    )
}

/// Loads `insns` as a GPL program of the kind `attr` says, and closes it again.
fn try_load(attr: &ProgLoadAttr, insns: &[u64]) -> io::Result<()> {
    let license = c"GPL";
    let attr = ProgLoadAttr {
        insn_cnt: u32::try_from(insns.len()).map_err(io::Error::other)?,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        ..*attr
    };
    // SAFETY: `attr` is a valid, initialised `repr(C)` head of `union bpf_attr` of the size
    // passed; the instructions and the license it points to outlive the call, and no log
    // buffer is given for the kernel to write.
    let program = unsafe { bpf(BPF_PROG_LOAD, (&raw const attr).cast(), size_of_val(&attr)) }?;
    drop(program);
    Ok(())
}

/// `bpf(cmd, attr, size)`, returning the descriptor the kernel made.
///
/// # Safety
///
/// `attr` must point to `size` initialised bytes that are valid attributes for `cmd`, and to
/// whatever those attributes point to, for the duration of the call.
unsafe fn bpf(cmd: libc::c_long, attr: *const libc::c_void, size: usize) -> io::Result<OwnedFd> {
    // SAFETY: the caller vouches for `attr` and `size`.
    let fd = unsafe { bpf_command(cmd, attr.cast_mut(), size) }?;
    let fd = i32::try_from(fd).map_err(io::Error::other)?;
    // SAFETY: the kernel just returned this descriptor to us; nothing else holds it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `bpf(cmd, attr, size)`, returning what the kernel returned.
///
/// # Safety
///
/// `attr` must point to `size` initialised bytes that are valid attributes for `cmd`, and to
/// whatever those attributes point to, for the duration of the call; commands that write
/// back into their attributes (the batch commands' `count`) write there.
pub unsafe fn bpf_command(
    cmd: libc::c_long,
    attr: *mut libc::c_void,
    size: usize,
) -> io::Result<libc::c_long> {
    // SAFETY: the caller vouches for `attr` and `size`.
    let ret = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr, size) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(ret)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `BPF_MAP_TYPE_HASH`.
    const HASH: u32 = 1;

    #[test]
    fn creates_a_map_of_the_size_asked() {
        let spec = MapSpec {
            map_type: HASH,
            key_size: 8,
            value_size: 24,
            max_entries: 1024,
            map_flags: 1, // BPF_F_NO_PREALLOC
            name: "memtrace_test_map_with_a_long_name".into(),
        };
        let fd = create_map(&spec).expect("root can create a hash map");
        let map = aya::maps::MapData::from_fd(fd).expect("a map");
        let info = map.info().expect("the kernel describes it");
        assert_eq!(
            (info.key_size(), info.value_size(), info.max_entries()),
            (8, 24, 1024)
        );
        assert_eq!(info.map_flags(), 1);
        assert_eq!(info.name(), b"memtrace_test_m");
    }

    #[test]
    fn a_refused_map_is_the_kernels_error() {
        let spec = MapSpec {
            map_type: HASH,
            key_size: 0,
            value_size: 8,
            max_entries: 1,
            map_flags: 0,
            name: String::new(),
        };
        let err = create_map(&spec).expect_err("a hash map needs a key");
        assert_eq!(err.raw_os_error(), Some(libc::EINVAL), "{err}");
    }
}
