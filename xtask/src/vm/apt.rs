//! Debian packages: QEMU and busybox installed (once), and kernel packages resolved and
//! downloaded, all without changing `/etc/apt`.

use std::{
    fs, io,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, SystemTime},
};

use anyhow::{Context as _, bail};

use crate::process;

/// Where Debian 12 keeps the mirror list this module copies.
const SYSTEM_SOURCES: &str = "/etc/apt/sources.list.d/debian.sources";
/// apt's own package lists, refreshed by a plain `apt-get update`.
const SYSTEM_LISTS: &str = "/var/lib/apt/lists";
/// Package lists older than this are refreshed before they are used.
const LISTS_MAX_AGE: Duration = Duration::from_hours(24);

/// Packages installed from the release's own suites.
const FROM_RELEASE: &[&str] = &[
    // Static, so it runs in an initramfs with nothing else; it has every applet /init and the
    // tests use (mount, poweroff, dmesg, unshare, umount, sh).
    "busybox-static",
    // The kernels' images are xz- (6.1) or zstd-compressed (6.12).
    "xz-utils",
    "zstd",
];

/// Packages installed from `<release>-backports`. The machine ships `qemu-utils` from
/// backports; bookworm's own `qemu-system-x86` (7.2) would remove it.
const FROM_BACKPORTS: &[&str] = &["qemu-system-x86", "qemu-utils"];

/// apt's configuration for this task: the system's by default, or a private sources list and
/// list directory for backports.
pub struct Apt {
    /// Extra `-o` options for every apt command.
    options: Vec<String>,
    lists: PathBuf,
    /// Touched after each successful `apt-get update`: apt gives its list files the mirror's
    /// modification times, so their own ages say nothing about when they were fetched.
    stamp: PathBuf,
    label: &'static str,
    /// The xtask command these apt steps serve, named in their errors (`vm-test`, `bench`).
    task: &'static str,
}

impl Apt {
    /// The machine's own sources and lists.
    pub fn system(cache: &Path) -> Self {
        Self {
            options: Vec::new(),
            lists: PathBuf::from(SYSTEM_LISTS),
            stamp: cache.join("apt/system-lists-updated"),
            label: "apt-get update",
            task: "vm-test",
        }
    }

    /// The same apt, its errors saying that they failed a step of `task` (e.g. `bench`).
    pub fn for_task(self, task: &'static str) -> Self {
        Self { task, ..self }
    }

    /// The machine's sources plus `<codename>-backports`, with lists of their own under `cache`,
    /// so `/etc/apt` and the system's lists stay as they are.
    fn backports(cache: &Path, codename: &str) -> anyhow::Result<Self> {
        let dir = cache.join("apt");
        let lists = dir.join("lists");
        let partial = lists.join("partial");
        fs::create_dir_all(&partial).with_context(|| format!("creating {}", partial.display()))?;

        let system = fs::read_to_string(SYSTEM_SOURCES)
            .with_context(|| format!("reading {SYSTEM_SOURCES}"))?;
        let sources = with_backports(&system, codename)
            .with_context(|| format!("adding {codename}-backports to {SYSTEM_SOURCES}"))?;
        // apt reads the deb822 format from files named `*.sources`.
        let list = dir.join("backports.sources");
        fs::write(&list, sources).with_context(|| format!("writing {}", list.display()))?;

        Ok(Self {
            options: vec![
                format!("Dir::Etc::sourcelist={}", list.display()),
                "Dir::Etc::sourceparts=-".to_owned(),
                format!("Dir::State::lists={}", lists.display()),
            ],
            stamp: dir.join("backports-lists-updated"),
            lists,
            label: "apt-get update (with backports)",
            task: "vm-test",
        })
    }

    /// The machine's mirrors with another Debian release's suites (`bullseye`,
    /// `bullseye-security`, …) in place of its own, with lists of their own under `cache`: how
    /// the older kernels' packages are found without touching `/etc/apt`.
    pub fn other_release(cache: &Path, codename: &str) -> anyhow::Result<Self> {
        let dir = cache.join("apt").join(codename);
        let lists = dir.join("lists");
        let partial = lists.join("partial");
        fs::create_dir_all(&partial).with_context(|| format!("creating {}", partial.display()))?;

        let system = fs::read_to_string(SYSTEM_SOURCES)
            .with_context(|| format!("reading {SYSTEM_SOURCES}"))?;
        let own = self::codename().context("reading the Debian release")?;
        let sources = with_release(&system, &own, codename)
            .with_context(|| format!("putting {codename} in {SYSTEM_SOURCES}'s place"))?;
        let list = dir.join(format!("{codename}.sources"));
        fs::write(&list, sources).with_context(|| format!("writing {}", list.display()))?;

        Ok(Self {
            options: vec![
                format!("Dir::Etc::sourcelist={}", list.display()),
                "Dir::Etc::sourceparts=-".to_owned(),
                format!("Dir::State::lists={}", lists.display()),
            ],
            stamp: dir.join("lists-updated"),
            lists,
            label: "apt-get update (older release)",
            task: "vm-test",
        })
    }

    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        for option in &self.options {
            cmd.arg("-o").arg(option);
        }
        cmd
    }

    /// An apt command whose progress goes to stderr with the rest of xtask's, leaving stdout to
    /// the tests' output and the summary.
    fn noisy_command(&self, program: &str) -> Command {
        let mut cmd = self.command(program);
        cmd.stdout(io::stderr());
        cmd
    }

    /// `apt-get update`, unless these lists were fetched less than a day ago.
    pub fn refresh_lists(&self) -> anyhow::Result<()> {
        if self.lists_are_fresh() {
            return Ok(());
        }
        process::run(self.noisy_command("apt-get").args(["update", "-q"]))
            .with_context(|| format!("{} step `{}` failed", self.task, self.label))?;
        if let Some(dir) = self.stamp.parent() {
            fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        fs::write(&self.stamp, "").with_context(|| format!("writing {}", self.stamp.display()))
    }

    fn lists_are_fresh(&self) -> bool {
        let has_lists = fs::read_dir(&self.lists).is_ok_and(|entries| {
            entries
                .filter_map(Result::ok)
                .any(|entry| entry.file_name().to_string_lossy().contains("_Packages"))
        });
        let age = fs::metadata(&self.stamp)
            .and_then(|meta| meta.modified())
            .ok()
            .and_then(|modified| SystemTime::now().duration_since(modified).ok());
        has_lists && age.is_some_and(|age| age < LISTS_MAX_AGE)
    }

    /// Installs `packages`, from `release` when given; refuses to remove anything to do so.
    fn install(&self, packages: &[&str], release: Option<&str>) -> anyhow::Result<()> {
        self.refresh_lists()?;
        let mut install = self.noisy_command("apt-get");
        install.env("DEBIAN_FRONTEND", "noninteractive").args([
            "install",
            "-q",
            "-y",
            "--no-install-recommends",
            "--no-remove",
        ]);
        if let Some(release) = release {
            install.args(["-t", release]);
        }
        process::run(install.args(packages)).with_context(|| {
            format!(
                "{} step `apt-get install {}` failed",
                self.task,
                packages.join(" ")
            )
        })
    }

    /// Installs whichever of `packages` dpkg does not have, from the release's own suites;
    /// fast when all are there.
    pub fn ensure_installed(&self, packages: &[&'static str]) -> anyhow::Result<()> {
        let wanted = missing(packages);
        if wanted.is_empty() {
            eprintln!(
                "apt packages: ok ({} already installed)",
                packages.join(", ")
            );
            return Ok(());
        }
        eprintln!("apt packages: installing {} ...", wanted.join(", "));
        self.install(&wanted, None)?;
        let still = missing(&wanted);
        if !still.is_empty() {
            bail!(
                "{} step `apt-get install` failed: {} still not installed",
                self.task,
                still.join(", ")
            );
        }
        Ok(())
    }

    /// The package a meta package (`linux-image-amd64`) currently depends on.
    pub fn resolve_meta(&self, meta: &str) -> anyhow::Result<String> {
        let depends = process::output(self.command("apt-cache").args(["depends", meta]))?;
        first_dependency(&depends, "linux-image-")
            .with_context(|| format!("`apt-cache depends {meta}` names no linux-image package"))
    }

    /// The version `apt-get download` would fetch for `package`.
    pub fn candidate_version(&self, package: &str) -> anyhow::Result<String> {
        let show = process::output(self.command("apt-cache").args([
            "show",
            "--no-all-versions",
            package,
        ]))?;
        show.lines()
            .find_map(|line| line.strip_prefix("Version:"))
            .map(|version| version.trim().to_owned())
            .with_context(|| format!("`apt-cache show {package}` has no Version"))
    }

    /// Downloads `package` at `version` into `dir` and returns the `.deb`'s path.
    pub fn download(&self, package: &str, version: &str, dir: &Path) -> anyhow::Result<PathBuf> {
        process::run(
            self.noisy_command("apt-get")
                .current_dir(dir)
                // apt's `_apt` user may not write into the cache directory; root downloads
                // instead of warning that it does.
                .args(["-o", "APT::Sandbox::User=root", "download", "-q"])
                .arg(format!("{package}={version}")),
        )?;
        let mut debs = Vec::new();
        for entry in fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
            let path = entry
                .with_context(|| format!("listing {}", dir.display()))?
                .path();
            if path.extension().is_some_and(|ext| ext == "deb") {
                debs.push(path);
            }
        }
        match <[PathBuf; 1]>::try_from(debs) {
            Ok([deb]) => Ok(deb),
            Err(debs) => bail!(
                "expected one .deb in {} after apt-get download, found {debs:?}",
                dir.display()
            ),
        }
    }
}

/// Installs whatever of QEMU, busybox and the decompressors is missing; fast when all are there.
pub fn ensure_packages(cache: &Path) -> anyhow::Result<()> {
    let all = [FROM_RELEASE, FROM_BACKPORTS].concat();
    let from_release = missing(FROM_RELEASE);
    let from_backports = missing(FROM_BACKPORTS);
    if from_release.is_empty() && from_backports.is_empty() {
        eprintln!("apt packages: ok ({} already installed)", all.join(", "));
        return Ok(());
    }

    if !from_release.is_empty() {
        eprintln!("apt packages: installing {} ...", from_release.join(", "));
        Apt::system(cache).install(&from_release, None)?;
    }
    if !from_backports.is_empty() {
        let codename = codename().context("vm-test step `read the Debian release` failed")?;
        let backports = format!("{codename}-backports");
        eprintln!(
            "apt packages: installing {} from {backports} ...",
            from_backports.join(", ")
        );
        Apt::backports(cache, &codename)
            .with_context(|| format!("vm-test step `sources list with {backports}` failed"))?
            .install(&from_backports, Some(&backports))?;
    }
    let still = missing(&all);
    if !still.is_empty() {
        bail!(
            "vm-test step `apt-get install` failed: {} still not installed",
            still.join(", ")
        );
    }
    Ok(())
}

/// Those of `packages` that dpkg does not have installed.
fn missing(packages: &[&'static str]) -> Vec<&'static str> {
    packages
        .iter()
        .copied()
        .filter(|package| !is_installed(package))
        .collect()
}

/// Whether dpkg has `package` installed.
fn is_installed(package: &str) -> bool {
    process::output(Command::new("dpkg-query").args(["-W", "-f=${Status}", package]))
        .is_ok_and(|status| is_installed_status(&status))
}

/// Whether a `dpkg-query -f='${Status}'` value (`install ok installed`) means installed.
fn is_installed_status(status: &str) -> bool {
    let mut words = status.split_whitespace();
    let (_want, error, state) = (words.next(), words.next(), words.next());
    error == Some("ok") && state == Some("installed")
}

/// The release's code name (`bookworm`), from `/etc/os-release`.
fn codename() -> anyhow::Result<String> {
    let os_release = fs::read_to_string("/etc/os-release").context("reading /etc/os-release")?;
    os_release
        .lines()
        .find_map(|line| line.strip_prefix("VERSION_CODENAME="))
        .map(|name| name.trim_matches('"').to_owned())
        .filter(|name| !name.is_empty())
        .context("/etc/os-release has no VERSION_CODENAME")
}

/// `sources` (deb822) with `<codename>-backports` added to the entry that has the release's own
/// suite, so that backports comes from the same mirror, components and key.
fn with_backports(sources: &str, codename: &str) -> anyhow::Result<String> {
    let backports = format!("{codename}-backports");
    let mut added = false;
    let mut out = String::with_capacity(sources.len() + backports.len() + 1);
    for line in sources.lines() {
        out.push_str(line);
        if let Some(suites) = line.strip_prefix("Suites:") {
            let suites: Vec<&str> = suites.split_whitespace().collect();
            if suites.contains(&codename) && !suites.contains(&backports.as_str()) {
                out.push(' ');
                out.push_str(&backports);
                added = true;
            } else if suites.contains(&backports.as_str()) {
                added = true;
            }
        }
        out.push('\n');
    }
    if !added {
        bail!("no entry has the suite {codename}");
    }
    Ok(out)
}

/// `sources` (deb822) with every suite of release `own` (`bookworm`, `bookworm-security`) renamed
/// to release `other`'s (`bullseye`, `bullseye-security`), mirrors, components and keys kept.
fn with_release(sources: &str, own: &str, other: &str) -> anyhow::Result<String> {
    let mut renamed = false;
    let mut out = String::with_capacity(sources.len());
    for line in sources.lines() {
        if let Some(suites) = line.strip_prefix("Suites:") {
            let suites: Vec<String> = suites
                .split_whitespace()
                .map(|suite| match suite.strip_prefix(own) {
                    Some(rest) if rest.is_empty() || rest.starts_with('-') => {
                        renamed = true;
                        format!("{other}{rest}")
                    }
                    _ => suite.to_owned(),
                })
                .collect();
            out.push_str("Suites: ");
            out.push_str(&suites.join(" "));
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    if !renamed {
        bail!("no entry has a suite of {own}");
    }
    Ok(out)
}

/// The first package named `prefix…` in `apt-cache depends` output.
fn first_dependency(depends: &str, prefix: &str) -> Option<String> {
    depends.lines().find_map(|line| {
        let package = line
            .trim()
            .trim_start_matches('|')
            .strip_prefix("Depends:")?;
        let package = package.trim();
        package.starts_with(prefix).then(|| package.to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::{first_dependency, is_installed_status, with_backports, with_release};

    const DEBIAN_SOURCES: &str = "\
Types: deb
# http://snapshot.debian.org/archive/debian/20250520T000000Z
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
";

    #[test]
    fn adds_backports_to_the_release_s_own_mirror_entry() -> anyhow::Result<()> {
        let sources = with_backports(DEBIAN_SOURCES, "bookworm")?;
        assert_eq!(
            sources,
            DEBIAN_SOURCES.replace(
                "Suites: bookworm bookworm-updates\n",
                "Suites: bookworm bookworm-updates bookworm-backports\n"
            )
        );
        // Already there: left alone.
        assert_eq!(with_backports(&sources, "bookworm")?, sources);
        assert!(with_backports(DEBIAN_SOURCES, "trixie").is_err());
        Ok(())
    }

    #[test]
    fn renames_the_release_s_suites_to_another_release_s() -> anyhow::Result<()> {
        let sources = with_release(DEBIAN_SOURCES, "bookworm", "bullseye")?;
        assert_eq!(
            sources,
            DEBIAN_SOURCES
                .replace(
                    "Suites: bookworm bookworm-updates\n",
                    "Suites: bullseye bullseye-updates\n"
                )
                .replace("Suites: bookworm-security\n", "Suites: bullseye-security\n")
        );
        assert!(with_release(DEBIAN_SOURCES, "trixie", "bullseye").is_err());
        Ok(())
    }

    #[test]
    fn reads_dpkg_status() {
        assert!(is_installed_status("install ok installed"));
        assert!(is_installed_status("hold ok installed"));
        assert!(!is_installed_status("unknown ok not-installed"));
        assert!(!is_installed_status("deinstall ok config-files"));
        assert!(!is_installed_status(""));
    }

    #[test]
    fn finds_the_image_a_meta_package_depends_on() {
        let depends = "linux-image-6.12-amd64\n  Depends: linux-image-6.12.117+deb12-amd64\n";
        assert_eq!(
            first_dependency(depends, "linux-image-").as_deref(),
            Some("linux-image-6.12.117+deb12-amd64")
        );
        let with_others = "linux-image-amd64\n  Depends: <linux-base>\n \
                           |Depends: linux-image-6.1.0-56-amd64\n  Recommends: firmware\n";
        assert_eq!(
            first_dependency(with_others, "linux-image-").as_deref(),
            Some("linux-image-6.1.0-56-amd64")
        );
        assert_eq!(
            first_dependency("linux-image-amd64\n", "linux-image-"),
            None
        );
    }
}
