//! What the kernel requires before programs can be loaded, with errors that say what to do.

use std::{ffi::CStr, io, path::Path};

#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    #[error(
        "memtrace must run as root to load eBPF programs (effective uid is {0}): \
         run it with sudo, or as root on the node"
    )]
    NotRoot(u32),
    #[error(
        "tracefs is not mounted and mounting it at /sys/kernel/tracing failed ({0}): \
         run `mount -t tracefs tracefs /sys/kernel/tracing` and try again"
    )]
    Tracefs(io::Error),
}

/// # Errors
///
/// [`PrivilegeError::NotRoot`] when the effective uid is not 0.
pub fn require_root() -> Result<(), PrivilegeError> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if euid == 0 {
        Ok(())
    } else {
        Err(PrivilegeError::NotRoot(euid))
    }
}

/// Raises `RLIMIT_MEMLOCK` for kernels before 5.11, which charge BPF maps to it. Newer kernels
/// charge the memcg instead, and containers often cannot raise the limit, so failing here is
/// only worth a debug line.
pub fn raise_memlock() {
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: `unlimited` is a valid rlimit that outlives the call.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &raw const unlimited) } != 0 {
        log::debug!(
            "cannot raise RLIMIT_MEMLOCK ({}); fine on kernels >= 5.11",
            io::Error::last_os_error()
        );
    }
}

const TRACEFS: &str = "/sys/kernel/tracing";
const DEBUGFS_TRACING: &str = "/sys/kernel/debug/tracing";

/// Tracepoint attachment reads event ids from tracefs; mount it when neither of its usual
/// places has it.
///
/// # Errors
///
/// [`PrivilegeError::Tracefs`] when it is missing and cannot be mounted.
pub fn ensure_tracefs() -> Result<(), PrivilegeError> {
    if [TRACEFS, DEBUGFS_TRACING]
        .iter()
        .any(|dir| Path::new(dir).join("events").is_dir())
    {
        return Ok(());
    }
    let source: &CStr = c"tracefs";
    let target: &CStr = c"/sys/kernel/tracing";
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
    if rc == 0 {
        log::info!("mounted tracefs at {TRACEFS}");
        Ok(())
    } else {
        Err(PrivilegeError::Tracefs(io::Error::last_os_error()))
    }
}
