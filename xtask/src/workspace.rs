//! Where things are in the repository, and the `cargo` command every task runs the workspace with.

use std::{
    env,
    ffi::OsString,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::Context as _;

use crate::{bpf_linker, toolchain::Toolchain};

/// The user-space package.
pub const MEMTRACE: &str = "memtrace";
/// The integration-test package; its binaries are driven by `cargo test`.
pub const TESTS: &str = "memtrace-tests";
/// The eBPF package: built for the BPF target by memtrace's build.rs, never for the host.
pub const EBPF: &str = "memtrace-ebpf";

/// The repository this xtask belongs to, with its pinned toolchains.
pub struct Workspace {
    root: PathBuf,
    /// The toolchain for everything but the eBPF crate (`rust-toolchain.toml`).
    pub userspace: Toolchain,
    /// The nightly the eBPF crate is built with (`memtrace-ebpf/rust-toolchain.toml`).
    pub ebpf: Toolchain,
    /// `CARGO_TARGET_DIR` as the user set it, made absolute, if they did.
    target_dir_override: Option<PathBuf>,
    /// `PATH` with bpf-linker's directory in front.
    path: OsString,
}

impl Workspace {
    /// Finds the repository (the parent of this crate's directory) and reads its toolchain pins.
    pub fn locate() -> anyhow::Result<Self> {
        let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
        let root = manifest_dir
            .parent()
            .with_context(|| format!("{} has no parent directory", manifest_dir.display()))?
            .to_path_buf();
        let userspace = Toolchain::load(&root.join("rust-toolchain.toml"))?;
        let ebpf = Toolchain::load(&root.join("memtrace-ebpf/rust-toolchain.toml"))?;

        let target_dir_override = match env::var_os("CARGO_TARGET_DIR") {
            Some(dir) if !dir.is_empty() => {
                // cargo reads a relative CARGO_TARGET_DIR against the directory it runs in; the
                // commands below run in the repository root, so pin it to where the user meant.
                let cwd = env::current_dir().context("reading the current directory")?;
                Some(cwd.join(dir))
            }
            _ => None,
        };

        let linker_dir = bpf_linker::bin_dir(&root.join(".tools"));
        let path = env::var_os("PATH").unwrap_or_default();
        let path = env::join_paths(std::iter::once(linker_dir).chain(env::split_paths(&path)))
            .context("adding bpf-linker's directory to PATH")?;

        Ok(Self {
            root,
            userspace,
            ebpf,
            target_dir_override,
            path,
        })
    }

    /// The repository's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `PATH` with bpf-linker's directory in front.
    pub fn path_env(&self) -> &OsString {
        &self.path
    }

    /// Where tools built by `setup` live (gitignored).
    pub fn tools_dir(&self) -> PathBuf {
        self.root.join(".tools")
    }

    /// cargo's target directory: `CARGO_TARGET_DIR` if set, else `<repo>/target`.
    pub fn target_dir(&self) -> PathBuf {
        self.target_dir_override
            .clone()
            .unwrap_or_else(|| self.root.join("target"))
    }

    /// `cargo` on the user-space toolchain, run in the repository root with bpf-linker on `PATH`
    /// (memtrace's build script builds the eBPF crate, which links with it).
    pub fn cargo(&self) -> Command {
        let mut cmd = Command::new("cargo");
        cmd.arg(format!("+{}", self.userspace.channel))
            .current_dir(&self.root)
            .env("PATH", &self.path);
        if let Some(dir) = &self.target_dir_override {
            cmd.env("CARGO_TARGET_DIR", dir);
        }
        cmd
    }

    /// `cargo` on the eBPF nightly in the eBPF crate's directory, for checks that build it for
    /// the BPF target directly (clippy); its own target directory keeps it apart from aya-build's.
    pub fn ebpf_cargo(&self) -> Command {
        let mut cmd = Command::new("cargo");
        cmd.arg(format!("+{}", self.ebpf.channel))
            .current_dir(self.root.join(EBPF))
            .env("PATH", &self.path)
            .env("CARGO_TARGET_DIR", self.target_dir().join("ebpf-check"));
        cmd
    }
}
