//! Whether this kernel can serve memtrace at all, checked before anything is loaded, so that a
//! kernel without BPF, BTF, the BPF ring buffer, or one locked down against reading kernel
//! memory gets one line saying what is missing instead of a verifier log.

use std::{fs, io, path::Path};

use super::{
    bpf_sys::{self, MapSpec},
    btf::VMLINUX_BTF,
};

/// `enum bpf_map_type` (`include/uapi/linux/bpf.h`).
const BPF_MAP_TYPE_RINGBUF: u32 = 27;
/// Where securityfs shows the lockdown mode: `none integrity [confidentiality]`.
const SECURITYFS: &str = "/sys/kernel/security";
const LOCKDOWN: &str = "/sys/kernel/security/lockdown";

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Unsupported {
    #[error(
        "this kernel cannot run memtrace: BPF is disabled (no bpf() system call: the kernel \
         was built without CONFIG_BPF_SYSCALL)"
    )]
    NoBpf,
    #[error(
        "this kernel cannot run memtrace: it has no BTF ({VMLINUX_BTF} is missing; it needs \
         CONFIG_DEBUG_INFO_BTF=y)"
    )]
    NoBtf,
    #[error(
        "this kernel cannot run memtrace: it has no BPF ring buffer (BPF_MAP_TYPE_RINGBUF, \
         Linux 5.8 and later; this is {0})"
    )]
    NoRingBuffer(String),
    #[error(
        "this kernel cannot run memtrace: it is locked down with lockdown=confidentiality, which \
         forbids eBPF programs to read kernel memory (boot with lockdown=integrity or none)"
    )]
    Lockdown,
}

/// Checks, in turn: the `bpf()` system call, kernel BTF, the BPF ring buffer and the lockdown
/// mode. Needs root (creating a map); run it after the root check.
///
/// # Errors
///
/// The first thing missing.
pub fn check() -> Result<(), Unsupported> {
    match create_ring_buffer() {
        Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => return Err(Unsupported::NoBpf),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            if !Path::new(VMLINUX_BTF).exists() {
                return Err(Unsupported::NoBtf);
            }
            let release = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
            return Err(Unsupported::NoRingBuffer(format!(
                "Linux {}",
                release.trim()
            )));
        }
        // Anything else (EPERM from a seccomp profile, say) is for the loader to report.
        Err(e) => log::debug!("creating a test ring buffer: {e}"),
        Ok(()) => {}
    }
    if !Path::new(VMLINUX_BTF).exists() {
        return Err(Unsupported::NoBtf);
    }
    if lockdown_mode().as_deref() == Some("confidentiality") {
        return Err(Unsupported::Lockdown);
    }
    Ok(())
}

/// Creates and closes a one-page BPF ring buffer.
fn create_ring_buffer() -> io::Result<()> {
    bpf_sys::create_map(&MapSpec {
        map_type: BPF_MAP_TYPE_RINGBUF,
        key_size: 0,
        value_size: 0,
        max_entries: 4096,
        map_flags: 0,
        name: String::new(),
    })
    .map(drop)
}

/// The selected lockdown mode (`none`, `integrity`, `confidentiality`), mounting securityfs
/// when nothing is mounted on its usual place; `None` when the kernel does not say.
fn lockdown_mode() -> Option<String> {
    let text = fs::read_to_string(LOCKDOWN).ok().or_else(|| {
        mount_securityfs();
        fs::read_to_string(LOCKDOWN).ok()
    })?;
    selected(&text).map(str::to_owned)
}

/// The bracketed word of `none integrity [confidentiality]`.
fn selected(modes: &str) -> Option<&str> {
    modes
        .split_whitespace()
        .find_map(|mode| mode.strip_prefix('[')?.strip_suffix(']'))
}

/// Mounts securityfs on its usual place when that is an empty directory (a minimal system
/// that never mounted it); failing is only worth a debug line.
fn mount_securityfs() {
    let empty = fs::read_dir(SECURITYFS).is_ok_and(|mut entries| entries.next().is_none());
    if !empty {
        return;
    }
    let source = c"securityfs";
    let target = c"/sys/kernel/security";
    // SAFETY: all pointers are valid NUL-terminated strings; no mount data is passed.
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            source.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        log::debug!(
            "cannot mount securityfs at {SECURITYFS}: {}",
            io::Error::last_os_error()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::{Unsupported, check, selected};

    #[test]
    fn reads_the_selected_lockdown_mode() {
        assert_eq!(selected("[none] integrity confidentiality\n"), Some("none"));
        assert_eq!(
            selected("none integrity [confidentiality]\n"),
            Some("confidentiality")
        );
        assert_eq!(selected(""), None);
    }

    #[test]
    fn each_refusal_is_one_line_naming_what_is_missing() {
        for (error, names) in [
            (Unsupported::NoBpf, "CONFIG_BPF_SYSCALL"),
            (Unsupported::NoBtf, "CONFIG_DEBUG_INFO_BTF"),
            (
                Unsupported::NoRingBuffer("Linux 5.4.0".to_owned()),
                "Linux 5.8",
            ),
            (Unsupported::Lockdown, "lockdown=confidentiality"),
        ] {
            let line = error.to_string();
            assert!(!line.contains('\n'), "{line}");
            assert!(line.contains(names), "{line} does not name {names}");
        }
    }

    #[test]
    fn this_kernel_serves_memtrace() {
        // The host the tests run on has BPF, BTF, ring buffers and no lockdown (the VM tests
        // boot one with lockdown=confidentiality to see the refusal).
        assert_eq!(check(), Ok(()));
    }
}
