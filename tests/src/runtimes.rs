//! Real container runtimes for tests: podman and containerd from Debian's packages, each with
//! its state under a directory of the test's own (memtrace reads it with `--host-root`), and an
//! image built from busybox-static (no registry is reachable).

use std::{
    fs,
    os::unix::fs::symlink,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    thread,
    time::{Duration, Instant},
};

/// The image every test container runs.
pub const IMAGE: &str = "localhost/memtrace-busybox:test";
/// Where Debian's busybox-static installs.
const BUSYBOX: &str = "/bin/busybox";

/// Runs `command`, panicking with its output when it cannot be started.
fn output(command: &mut Command, what: &str) -> Output {
    command.stdin(Stdio::null()).output().unwrap_or_else(|e| {
        panic!("{what}: {e} (is the package installed? `cargo xtask test` installs it)")
    })
}

fn assert_ok(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A root filesystem holding busybox-static and its applets, as a tarball in `dir`.
///
/// # Panics
///
/// When busybox-static is not installed or the tarball cannot be made.
#[must_use]
pub fn busybox_rootfs_tar(dir: &Path) -> PathBuf {
    let rootfs = dir.join("rootfs");
    let bin = rootfs.join("bin");
    fs::create_dir_all(&bin).expect("mkdir rootfs");
    fs::copy(BUSYBOX, bin.join("busybox"))
        .unwrap_or_else(|e| panic!("copy {BUSYBOX} (package busybox-static): {e}"));
    for applet in ["sh", "tail", "sleep", "true", "cat"] {
        symlink("busybox", bin.join(applet)).expect("applet link");
    }
    let tar = dir.join("rootfs.tar");
    let out = output(
        Command::new("tar")
            .arg("-C")
            .arg(&rootfs)
            .arg("-cf")
            .arg(&tar)
            .arg("."),
        "tar",
    );
    assert_ok(&out, "tar of the root filesystem");
    tar
}

/// Rootful podman with its storage under `host_root` (`var/lib/containers/storage`,
/// `run/containers/storage`), as it would be under `/`, or the node's own (`system`): runc (crun
/// refuses hybrid cgroups), cgroupfs, no network.
pub struct Podman {
    /// `None`: the node's own storage, where a `DaemonSet`'s mounts find it.
    host_root: Option<PathBuf>,
    /// Where podman runs: conmon leaves a stray `oom` file in its working directory.
    work_dir: PathBuf,
}

impl Podman {
    /// Podman with its state under `host_root`, and [`IMAGE`] imported from busybox.
    ///
    /// # Panics
    ///
    /// When podman is missing or the image cannot be imported.
    #[must_use]
    pub fn with_image(host_root: &Path) -> Self {
        let podman = Self {
            host_root: Some(host_root.to_owned()),
            work_dir: host_root.to_owned(),
        };
        let tar = busybox_rootfs_tar(host_root);
        let tar = tar.to_str().expect("utf-8 path");
        podman.ok(&["import", tar, IMAGE]);
        podman
    }

    /// The node's own podman (its default storage), run from `work_dir`. Its drop removes
    /// nothing: the test removes the containers it made.
    #[must_use]
    pub fn system(work_dir: &Path) -> Self {
        Self {
            host_root: None,
            work_dir: work_dir.to_owned(),
        }
    }

    /// `podman ARGS` with this instance's state.
    #[must_use]
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("podman");
        if let Some(root) = &self.host_root {
            cmd.arg("--root")
                .arg(root.join("var/lib/containers/storage"))
                .arg("--runroot")
                .arg(root.join("run/containers/storage"))
                .arg("--tmpdir")
                .arg(root.join("run/libpod"));
        }
        cmd.args([
            "--runtime",
            "runc",
            "--cgroup-manager",
            "cgroupfs",
            "--events-backend",
            "file",
        ])
        .args(args)
        .current_dir(&self.work_dir);
        cmd
    }

    /// `podman ARGS`, to completion.
    #[must_use]
    pub fn run(&self, args: &[&str]) -> Output {
        output(&mut self.command(args), "podman")
    }

    /// `podman ARGS`; its standard output.
    ///
    /// # Panics
    ///
    /// When it fails.
    #[expect(
        clippy::must_use_candidate,
        reason = "run for what it does as often as for what it prints"
    )]
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert_ok(&out, &format!("podman {args:?}"));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// The rlimits `podman run` must ask for here: its defaults are above what this host grants.
    #[must_use]
    pub fn rlimits() -> [String; 2] {
        // SAFETY: getrlimit writes into the struct it is given.
        let nofile = unsafe {
            let mut limit = std::mem::zeroed::<libc::rlimit>();
            libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut limit);
            limit.rlim_max
        };
        [
            format!("--ulimit=nofile={nofile}:{nofile}"),
            "--ulimit=nproc=32768:32768".to_owned(),
        ]
    }

    /// `podman run ARGS` with what this host needs: no network, rlimits it can grant.
    #[must_use]
    pub fn run_container(&self, args: &[&str]) -> Output {
        let rlimits = Self::rlimits();
        let mut all = vec!["run", "--network", "none", &rlimits[0], &rlimits[1]];
        all.extend_from_slice(args);
        self.run(&all)
    }

    /// Saves [`IMAGE`] as an OCI archive, for another runtime to import.
    ///
    /// # Panics
    ///
    /// When podman cannot.
    #[must_use]
    pub fn save_oci_archive(&self) -> PathBuf {
        let archive = self.work_dir.join("image-oci.tar");
        self.ok(&[
            "save",
            "--format",
            "oci-archive",
            "-o",
            archive.to_str().expect("utf-8 path"),
            IMAGE,
        ]);
        archive
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        if self.host_root.is_none() {
            return;
        }
        let _ = self.run(&["rm", "--all", "--force"]);
        // Unmounts the store's overlay mounts so the directory can be removed.
        let _ = self.run(&["system", "reset", "--force"]);
    }
}

/// A containerd daemon started for one test, with its state under `host_root`
/// (`var/lib/containerd`, `run/containerd`) and only the plugins `ctr` needs; stopped on drop.
pub struct Containerd {
    child: Child,
    address: PathBuf,
}

/// The containerd namespace the tests' containers live in.
pub const CONTAINERD_NAMESPACE: &str = "memtrace-test";

impl Containerd {
    /// # Panics
    ///
    /// When containerd is missing or does not answer within 20 s.
    #[must_use]
    pub fn start(host_root: &Path) -> Self {
        let state = host_root.join("run/containerd");
        fs::create_dir_all(&state).expect("mkdir state");
        let config = host_root.join("containerd.toml");
        // No CRI plugin: there is no kubelet, and it would set up networking.
        fs::write(
            &config,
            "version = 2\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n",
        )
        .expect("write containerd config");
        let address = state.join("containerd.sock");
        let log = fs::File::create(host_root.join("containerd.log")).expect("containerd log");
        let child = Command::new("containerd")
            .arg("--config")
            .arg(&config)
            .arg("--root")
            .arg(host_root.join("var/lib/containerd"))
            .arg("--state")
            .arg(&state)
            .arg("--address")
            .arg(&address)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("containerd: {e} (package containerd)"));
        let mut containerd = Self { child, address };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if containerd.ctr(&["version"]).status.success() {
                return containerd;
            }
            if let Ok(Some(status)) = containerd.child.try_wait() {
                let log = fs::read_to_string(host_root.join("containerd.log")).unwrap_or_default();
                panic!("containerd exited ({status}):\n{log}");
            }
            assert!(
                Instant::now() < deadline,
                "containerd did not answer on {} within 20 s",
                containerd.address.display()
            );
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// `ctr ARGS` against this daemon, in [`CONTAINERD_NAMESPACE`].
    #[must_use]
    pub fn ctr(&self, args: &[&str]) -> Output {
        output(
            Command::new("ctr")
                .arg("--address")
                .arg(&self.address)
                .args(["--namespace", CONTAINERD_NAMESPACE])
                .args(args),
            "ctr",
        )
    }

    /// `ctr ARGS`; panics when it fails.
    #[expect(
        clippy::must_use_candidate,
        reason = "run for what it does as often as for what it prints"
    )]
    pub fn ctr_ok(&self, args: &[&str]) -> String {
        let out = self.ctr(args);
        assert_ok(&out, &format!("ctr {args:?}"));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        for task in self
            .ctr(&["tasks", "list", "--quiet"])
            .stdout
            .split(|&b| b == b'\n')
        {
            let task = String::from_utf8_lossy(task);
            if !task.trim().is_empty() {
                let _ = self.ctr(&["tasks", "kill", "--signal", "SIGKILL", task.trim()]);
                thread::sleep(Duration::from_millis(200));
                let _ = self.ctr(&["tasks", "delete", "--force", task.trim()]);
            }
        }
        let pid = i32::try_from(self.child.id()).expect("pid");
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The cgroups a runtime made in and for a test's cgroup: runc creates the container's path
/// in every v1 controller, podman puts conmon in a `conmon` cgroup beside its containers.
/// Removed on drop, deepest first: below the path in the memory hierarchy (the path itself is
/// the test's [`TestCgroup`](crate::TestCgroup), dropped after this), the whole path elsewhere.
pub struct RuntimeCgroups {
    path: String,
}

impl RuntimeCgroups {
    /// `path` as memtrace prints it (`/memtrace-test-…`).
    #[must_use]
    pub fn new(path: &str) -> Self {
        Self {
            path: path.to_owned(),
        }
    }
}

impl Drop for RuntimeCgroups {
    fn drop(&mut self) {
        let Ok(controllers) = fs::read_dir("/sys/fs/cgroup") else {
            return;
        };
        for controller in controllers.flatten() {
            let dir = controller.path().join(self.path.trim_start_matches('/'));
            if controller.file_name() == "memory" {
                for child in fs::read_dir(&dir).into_iter().flatten().flatten() {
                    if child.file_type().is_ok_and(|t| t.is_dir()) {
                        remove_tree(&child.path());
                    }
                }
            } else {
                remove_tree(&dir);
            }
        }
    }
}

fn remove_tree(dir: &Path) {
    if let Ok(children) = fs::read_dir(dir) {
        for child in children.flatten() {
            if child.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree(&child.path());
            }
        }
    }
    let _ = fs::remove_dir(dir);
}
