//! Debian's kernels, resolved from their meta packages on every run (security updates move them),
//! downloaded once per exact version, and reduced to the bootable `vmlinux` ELF and the few
//! modules the guests load.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};
use clap::ValueEnum;

use super::{
    apt::Apt,
    bzimage::{self, Compression},
    elf::Elf,
    modules,
};
use crate::process::{self, Shown};

/// A kernel series the tests boot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Kernel {
    /// Debian 11's kernel (`linux-image-amd64` of bullseye and bullseye-security): the 5.10
    /// line many nodes still run
    #[value(name = "5.10")]
    V5_10,
    /// Debian 12's own kernel (`linux-image-amd64`)
    #[value(name = "6.1")]
    V6_1,
    /// The newer kernel Debian 12 carries (`linux-image-6.12-amd64`)
    #[value(name = "6.12")]
    V6_12,
}

impl Kernel {
    pub const ALL: [Self; 3] = [Self::V5_10, Self::V6_1, Self::V6_12];

    /// How the user names it (`--kernel 6.1`).
    pub fn label(self) -> &'static str {
        match self {
            Self::V5_10 => "5.10",
            Self::V6_1 => "6.1",
            Self::V6_12 => "6.12",
        }
    }

    /// The Debian release whose suites carry it, when it is not the machine's own.
    pub fn other_release(self) -> Option<&'static str> {
        match self {
            Self::V5_10 => Some("bullseye"),
            Self::V6_1 | Self::V6_12 => None,
        }
    }

    /// The meta package that depends on the current image package of the series.
    fn meta_package(self) -> &'static str {
        match self {
            Self::V5_10 | Self::V6_1 => "linux-image-amd64",
            Self::V6_12 => "linux-image-6.12-amd64",
        }
    }

    /// What every image package of the series is named like: `linux-image-6.1.0-56-amd64`,
    /// `linux-image-6.12.117+deb12-amd64`, `linux-image-5.10.0-39-amd64`.
    fn package_prefix(self) -> &'static str {
        match self {
            Self::V5_10 => "linux-image-5.10.",
            Self::V6_1 => "linux-image-6.1.",
            Self::V6_12 => "linux-image-6.12.",
        }
    }
}

/// A kernel ready to boot.
pub struct Image {
    pub kernel: Kernel,
    /// The image package, e.g. `linux-image-6.1.0-56-amd64`.
    pub package: String,
    pub version: String,
    /// The uncompressed ELF kernel, with a PVH entry note.
    pub vmlinux: PathBuf,
    /// `uname -r` in the guest, which names its modules directory.
    pub release: String,
    /// The modules /init loads, by name, in load order.
    pub modules: Vec<(String, PathBuf)>,
    /// Whether its memory controller can be mounted on a cgroup v1 hierarchy (from 6.11 only
    /// with `CONFIG_MEMCG_V1`, which Debian's 6.12 leaves out).
    pub memcg_v1: bool,
    /// Whether it came from the cache rather than a download.
    pub cached: bool,
    /// How long resolving, downloading and extracting took.
    pub took: Duration,
}

/// Resolves `kernel` to its current image package and returns its `vmlinux`, downloading and
/// extracting it unless this exact version is cached under `cache`.
pub fn prepare(kernel: Kernel, apt: &Apt, cache: &Path) -> anyhow::Result<Image> {
    let begun = Instant::now();
    let label = kernel.label();
    let meta = kernel.meta_package();
    apt.refresh_lists()?;
    let package = apt
        .resolve_meta(meta)
        .with_context(|| format!("vm-test step `resolve kernel {label} ({meta})` failed"))?;
    ensure!(
        package.starts_with(kernel.package_prefix()),
        "vm-test step `resolve kernel {label} ({meta})` failed: it depends on {package}, \
         not a {}* package",
        kernel.package_prefix()
    );
    let version = apt
        .candidate_version(&package)
        .with_context(|| format!("vm-test step `resolve kernel {label} ({package})` failed"))?;

    let kernels = cache.join("kernels");
    let dir = kernels.join(format!("{package}_{version}"));
    let cached = is_complete(&dir);
    if cached {
        eprintln!("kernel {label}: {package} {version} (cached)");
    } else {
        eprintln!("kernel {label}: downloading {package} {version} ...");
        download_and_extract(apt, &package, &version, &dir).with_context(|| {
            format!(
                "vm-test step `download and extract kernel {label} ({package} {version})` failed"
            )
        })?;
        forget_older(&kernels, kernel, &dir)
            .with_context(|| format!("vm-test step `remove older kernels {label}` failed"))?;
    }
    let (release, modules) = read_modules(&dir)
        .with_context(|| format!("vm-test step `read the cached kernel {label}` failed"))?;
    let config_path = dir.join(CONFIG);
    let config = fs::read_to_string(&config_path)
        .with_context(|| format!("vm-test step `read {}` failed", config_path.display()))?;
    Ok(Image {
        kernel,
        package,
        version,
        vmlinux: dir.join(VMLINUX),
        release,
        modules,
        memcg_v1: has_memcg_v1(&config),
        cached,
        took: begun.elapsed(),
    })
}

/// In a cached kernel's directory: the bootable image.
const VMLINUX: &str = "vmlinux";
/// In a cached kernel's directory: the configuration the kernel was built with.
const CONFIG: &str = "config";
/// In a cached kernel's directory: `uname -r`.
const RELEASE: &str = "release";
/// In a cached kernel's directory: the modules, and the file naming them in load order.
const MODULES: &str = "modules";
const LOAD_ORDER: &str = "load-order";

/// Whether `dir` holds everything [`download_and_extract`] puts there (a cache written by an
/// older xtask may lack the modules, or some of those it needs now).
fn is_complete(dir: &Path) -> bool {
    dir.join(VMLINUX).is_file()
        && dir.join(CONFIG).is_file()
        && dir.join(RELEASE).is_file()
        && fs::read_to_string(dir.join(MODULES).join(LOAD_ORDER)).is_ok_and(|order| {
            modules::NEEDED
                .iter()
                .all(|needed| order.split_whitespace().any(|m| m == *needed))
        })
}

/// Whether a kernel built with `config` has the memory controller on cgroup v1: it has memcg,
/// and does not leave out `CONFIG_MEMCG_V1` (an option since 6.11; before, v1 came with memcg).
fn has_memcg_v1(config: &str) -> bool {
    let lines: Vec<&str> = config.lines().map(str::trim).collect();
    lines.contains(&"CONFIG_MEMCG=y") && !lines.contains(&"# CONFIG_MEMCG_V1 is not set")
}

/// The release and the modules, in load order, of a cached kernel.
fn read_modules(dir: &Path) -> anyhow::Result<(String, Vec<(String, PathBuf)>)> {
    let read = |path: PathBuf| {
        fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
    };
    let release = read(dir.join(RELEASE))?.trim().to_owned();
    let modules = dir.join(MODULES);
    let order = read(modules.join(LOAD_ORDER))?;
    let modules = order
        .split_whitespace()
        .map(|name| (name.to_owned(), modules.join(format!("{name}.ko"))))
        .collect();
    Ok((release, modules))
}

/// Fills `dir` with `vmlinux`, `config`, `release` and `modules/` from the package. Works in
/// `<dir>.partial` and renames it at the end, so an interrupted run never leaves a directory that
/// looks complete.
fn download_and_extract(apt: &Apt, package: &str, version: &str, dir: &Path) -> anyhow::Result<()> {
    let mut partial = dir.as_os_str().to_owned();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    if partial.exists() {
        fs::remove_dir_all(&partial)
            .with_context(|| format!("removing the leftover {}", partial.display()))?;
    }
    fs::create_dir_all(&partial).with_context(|| format!("creating {}", partial.display()))?;

    let deb = apt.download(package, version, &partial)?;
    // The image and its config first; of the modules, most of the package, a few are kept below.
    extract(&deb, &partial, &["./boot/vmlinuz-*", "./boot/config-*"])?;
    let boot = partial.join("boot");
    let bzimage_path = only_file_starting_with(&boot, "vmlinuz-")?;
    let config_path = only_file_starting_with(&boot, "config-")?;

    let config = fs::read_to_string(&config_path)
        .with_context(|| format!("reading {}", config_path.display()))?;
    let compression = Compression::from_config(&config)
        .with_context(|| format!("reading {}", config_path.display()))?;
    let bzimage =
        fs::read(&bzimage_path).with_context(|| format!("reading {}", bzimage_path.display()))?;
    let payload = bzimage::payload(&bzimage, compression).with_context(|| {
        format!(
            "finding the compressed kernel in {}",
            bzimage_path.display()
        )
    })?;

    let stream = partial.join(format!("vmlinux.{compression}"));
    fs::write(&stream, payload.stream).with_context(|| format!("writing {}", stream.display()))?;
    let vmlinux = partial.join(VMLINUX);
    decompress(compression, &stream, &vmlinux)?;
    check_vmlinux(&vmlinux, payload.uncompressed_size)?;

    extract(&deb, &partial, &["./lib/modules/*/kernel/*"])?;
    keep_needed_modules(&partial)?;

    fs::rename(&config_path, partial.join(CONFIG))
        .with_context(|| format!("moving {}", config_path.display()))?;
    for leftover in [stream, deb] {
        fs::remove_file(&leftover).with_context(|| format!("removing {}", leftover.display()))?;
    }
    fs::remove_dir_all(&boot).with_context(|| format!("removing {}", boot.display()))?;
    if dir.exists() {
        fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    fs::rename(&partial, dir)
        .with_context(|| format!("renaming {} to {}", partial.display(), dir.display()))
}

/// `dpkg-deb --fsys-tarfile DEB | tar -x MEMBERS...`: only the members matching `members`
/// (shell patterns, which also match everything under a matching directory).
fn extract(deb: &Path, dir: &Path, members: &[&str]) -> anyhow::Result<()> {
    let mut dpkg = Command::new("dpkg-deb");
    dpkg.arg("--fsys-tarfile").arg(deb).stdout(Stdio::piped());
    let mut tar = Command::new("tar");
    tar.arg("-x")
        .arg("-C")
        .arg(dir)
        .arg("--wildcards")
        .args(members);
    eprintln!("$ {} | {}", Shown(&dpkg), Shown(&tar));

    let mut dpkg_child = dpkg
        .spawn()
        .map_err(|error| process::spawn_error(&dpkg, error))?;
    let tarfile = dpkg_child.stdout.take().context("dpkg-deb's stdout")?;
    let tar_status = tar
        .stdin(tarfile)
        .status()
        .map_err(|error| process::spawn_error(&tar, error));
    let dpkg_status = dpkg_child.wait().context("waiting for dpkg-deb")?;
    let tar_status = tar_status?;
    if !tar_status.success() {
        bail!("`{}` failed with {tar_status}", Shown(&tar));
    }
    if !dpkg_status.success() {
        bail!("`{}` failed with {dpkg_status}", Shown(&dpkg));
    }
    Ok(())
}

/// Keeps the modules /init needs from the extracted `lib/modules/<release>/kernel` tree in `dir`
/// in `dir/modules`, uncompressed, with their load order and the release; then removes the tree.
fn keep_needed_modules(dir: &Path) -> anyhow::Result<()> {
    let lib_modules = dir.join("lib/modules");
    let release_dir = only_file_starting_with(&lib_modules, "")?;
    let release = release_dir
        .file_name()
        .with_context(|| format!("{} has no file name", release_dir.display()))?
        .to_string_lossy()
        .into_owned();
    let index = modules::index(&release_dir.join("kernel"))?;
    let needed = modules::needed(&index)?;

    let kept = dir.join(MODULES);
    fs::create_dir_all(&kept).with_context(|| format!("creating {}", kept.display()))?;
    let mut order = String::new();
    for (name, data) in &needed {
        let to = kept.join(format!("{name}.ko"));
        fs::write(&to, data).with_context(|| format!("writing {}", to.display()))?;
        order.push_str(name);
        order.push('\n');
    }
    let load_order = kept.join(LOAD_ORDER);
    fs::write(&load_order, order).with_context(|| format!("writing {}", load_order.display()))?;
    let release_file = dir.join(RELEASE);
    fs::write(&release_file, &release)
        .with_context(|| format!("writing {}", release_file.display()))?;
    fs::remove_dir_all(dir.join("lib"))
        .with_context(|| format!("removing {}", dir.join("lib").display()))
}

/// The one file in `dir` whose name starts with `prefix`.
fn only_file_starting_with(dir: &Path, prefix: &str) -> anyhow::Result<PathBuf> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
        if entry.file_name().to_string_lossy().starts_with(prefix) {
            found.push(entry.path());
        }
    }
    match <[PathBuf; 1]>::try_from(found) {
        Ok([file]) => Ok(file),
        Err(found) => bail!(
            "expected one {prefix}* in {}, found {found:?}",
            dir.display()
        ),
    }
}

/// Decompresses `stream` into `out` with the system's decompressor for `compression`.
fn decompress(compression: Compression, stream: &Path, out: &Path) -> anyhow::Result<()> {
    let [program, args] = compression.decompressor()?;
    let input = fs::File::open(stream).with_context(|| format!("opening {}", stream.display()))?;
    let output = fs::File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let mut cmd = Command::new(program);
    cmd.arg(args).stdin(input).stdout(output);
    eprintln!(
        "$ {} < {} > {}",
        Shown(&cmd),
        stream.display(),
        out.display()
    );
    let status = cmd
        .status()
        .map_err(|error| process::spawn_error(&cmd, error))?;
    if !status.success() {
        bail!("`{}` failed with {status}", Shown(&cmd));
    }
    Ok(())
}

/// Checks that the decompressed kernel has the size the bzImage promised and is an ELF file QEMU
/// can boot directly.
fn check_vmlinux(vmlinux: &Path, expected_size: u32) -> anyhow::Result<()> {
    let data = fs::read(vmlinux).with_context(|| format!("reading {}", vmlinux.display()))?;
    // The size is stored modulo 2³² by the kernel's `size_append`.
    let size = u32::try_from(data.len() % (1 << 32))?;
    ensure!(
        size == expected_size,
        "{} is {} bytes, but the bzImage says {expected_size}",
        vmlinux.display(),
        data.len()
    );
    let elf = Elf::parse(&data)
        .with_context(|| format!("{} is not the kernel's ELF image", vmlinux.display()))?;
    ensure!(
        elf.has_pvh_entry()
            .with_context(|| format!("reading the notes of {}", vmlinux.display()))?,
        "{} has no PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY): QEMU cannot boot it directly",
        vmlinux.display()
    );
    Ok(())
}

/// Removes the cached images of `kernel`'s series other than `keep`: each security update
/// brings a new one, and the old ones are tens of megabytes each.
fn forget_older(kernels: &Path, kernel: Kernel, keep: &Path) -> anyhow::Result<()> {
    for entry in fs::read_dir(kernels).with_context(|| format!("listing {}", kernels.display()))? {
        let path = entry
            .with_context(|| format!("listing {}", kernels.display()))?
            .path();
        let same_series = path
            .file_name()
            .is_some_and(|name| name.to_string_lossy().starts_with(kernel.package_prefix()));
        if same_series && path != keep {
            eprintln!(
                "kernel {}: removing the older {}",
                kernel.label(),
                path.display()
            );
            fs::remove_dir_all(&path).with_context(|| format!("removing {}", path.display()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::has_memcg_v1;

    #[test]
    fn reads_whether_memcg_can_be_on_cgroup_v1() {
        // 5.10 and 6.1: no option, v1 comes with memcg.
        assert!(has_memcg_v1("CONFIG_MEMCG=y\nCONFIG_MEMCG_SWAP=y\n"));
        // 6.12 as Debian builds it.
        assert!(!has_memcg_v1(
            "CONFIG_MEMCG=y\n# CONFIG_MEMCG_V1 is not set\n"
        ));
        assert!(has_memcg_v1("CONFIG_MEMCG=y\nCONFIG_MEMCG_V1=y\n"));
        assert!(!has_memcg_v1("# CONFIG_MEMCG is not set\n"));
    }
}
