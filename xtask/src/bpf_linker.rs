//! bpf-linker, built against the eBPF nightly's own LLVM: the linker must read the bitcode that
//! nightly's rustc writes, and no matching LLVM package exists for Debian 12.

use std::{
    fs,
    os::unix::fs::symlink,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use crate::{process, workspace::Workspace};

/// The bpf-linker release that is installed.
pub const VERSION: &str = "0.13.0";

/// Records which nightly's LLVM the installed bpf-linker links, so that moving the nightly pin
/// rebuilds it instead of keeping a linker for the old LLVM.
const STAMP: &str = "llvm-of-toolchain";

/// Where `setup` installs bpf-linker under `tools`.
fn install_root(tools: &Path) -> PathBuf {
    tools.join("bpf-linker")
}

/// The directory holding the `bpf-linker` executable, for `PATH`.
pub fn bin_dir(tools: &Path) -> PathBuf {
    install_root(tools).join("bin")
}

/// Builds and installs bpf-linker unless the right one is there, printing one line that says
/// which.
pub fn ensure_installed(workspace: &Workspace) -> anyhow::Result<()> {
    let tools = workspace.tools_dir();
    let root = install_root(&tools);
    let nightly = &workspace.ebpf.channel;
    let label = format!("bpf-linker {VERSION}");
    if is_installed(
        &bin_dir(&tools).join("bpf-linker"),
        &root.join(STAMP),
        nightly,
    ) {
        eprintln!("{label}: ok (already installed)");
        return Ok(());
    }
    eprintln!("{label}: installing (against the LLVM of {nightly}, about a minute) ...");

    let prefix = llvm_prefix(&tools, nightly)?;
    process::run(
        workspace
            .cargo()
            .env("LLVM_PREFIX", &prefix)
            .args(["install", "bpf-linker", "--version", VERSION, "--locked"])
            // Reinstalls over a build for another LLVM, which cargo would otherwise keep.
            .arg("--force")
            .arg("--root")
            .arg(&root),
    )?;
    let stamp = root.join(STAMP);
    fs::write(&stamp, nightly).with_context(|| format!("writing {}", stamp.display()))
}

/// Whether `binary` runs and is [`VERSION`], built for `nightly`'s LLVM.
fn is_installed(binary: &Path, stamp: &Path, nightly: &str) -> bool {
    let version = Command::new(binary).arg("--version").output();
    let runs = version.is_ok_and(|out| {
        out.status.success()
            && String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .any(|word| word == VERSION)
    });
    runs && fs::read_to_string(stamp).is_ok_and(|built_for| built_for == nightly)
}

/// Makes `<tools>/llvm-<nightly>`, an LLVM prefix whose `lib/` links to the nightly's shared
/// LLVM under both the name the linker asks for (`libLLVM.so`) and the library's own name.
/// bpf-linker's rpath points here, so the prefix must stay.
fn llvm_prefix(tools: &Path, nightly: &str) -> anyhow::Result<PathBuf> {
    let sysroot = process::output(Command::new("rustc").args([
        &format!("+{nightly}"),
        "--print",
        "sysroot",
    ]))?;
    let sysroot_lib = Path::new(sysroot.trim()).join("lib");
    let library = shared_llvm(&sysroot_lib)?;
    let name = library
        .file_name()
        .with_context(|| format!("{} has no file name", library.display()))?;

    let prefix = tools.join(format!("llvm-{nightly}"));
    let lib = prefix.join("lib");
    fs::create_dir_all(&lib).with_context(|| format!("creating {}", lib.display()))?;
    for link in [lib.join("libLLVM.so"), lib.join(name)] {
        if link.symlink_metadata().is_ok() {
            fs::remove_file(&link).with_context(|| format!("removing {}", link.display()))?;
        }
        symlink(&library, &link)
            .with_context(|| format!("linking {} to {}", link.display(), library.display()))?;
    }
    Ok(prefix)
}

/// The one `libLLVM.so.*` in a toolchain's `lib/` directory.
fn shared_llvm(dir: &Path) -> anyhow::Result<PathBuf> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
        if entry
            .file_name()
            .to_string_lossy()
            .starts_with("libLLVM.so.")
        {
            found.push(entry.path());
        }
    }
    match found.as_slice() {
        [library] => Ok(library.clone()),
        [] => bail!("no libLLVM.so.* in {}", dir.display()),
        _ => bail!("more than one libLLVM.so.* in {}: {found:?}", dir.display()),
    }
}
