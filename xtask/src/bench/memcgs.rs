//! Memory cgroups shaped like a node's containers, a process in each, under one base cgroup of
//! the bench's own (`/memtrace-bench-<what>-<pid>`): created for the `counters`, `node` and
//! `soak` benches, and removed — processes killed, directories removed — when dropped, also on
//! failure. And what those benches read of memtrace itself: its CPU time and memory.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use memtrace_common::cgroup::{CgroupVersion, MemoryHierarchy};

/// How the containers' cgroups are laid out, as the runtimes lay them out.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// Docker's cgroupfs driver: `docker/<64 hex>`.
    Docker,
    /// A node's mix: a kubelet's systemd driver with containerd
    /// (`kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid>.slice/
    /// cri-containerd-<64 hex>.scope`, two containers per pod) for even containers, podman's
    /// `machine.slice/libpod-<64 hex>.scope` for odd ones.
    Node,
}

/// One container: its memcg directory and its process.
pub struct Container {
    pub dir: PathBuf,
    process: Child,
}

impl Container {
    #[must_use]
    pub fn pid(&self) -> u32 {
        self.process.id()
    }

    /// Kills the process and waits for it.
    fn process_kill(&mut self) -> std::io::Result<()> {
        self.process.kill()?;
        self.process.wait().map(drop)
    }

    /// Kills the process and removes the memcg (and nothing else).
    fn stop(mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
        remove_dir(&self.dir);
    }
}

/// The bench's containers; everything is removed on drop.
pub struct Containers {
    hierarchy: MemoryHierarchy,
    shape: Shape,
    base: PathBuf,
    /// Parents created (base, slices, pods), in creation order.
    parents: Vec<PathBuf>,
    slots: Vec<Option<Container>>,
    /// Containers started so far: each gets a new id.
    started: usize,
}

impl Containers {
    /// The (empty) base cgroup `/memtrace-bench-<label>-<pid>`.
    pub fn new(hierarchy: &MemoryHierarchy, label: &str, shape: Shape) -> anyhow::Result<Self> {
        let base = hierarchy
            .root
            .join(format!("memtrace-bench-{label}-{}", std::process::id()));
        let mut containers = Self {
            hierarchy: hierarchy.clone(),
            shape,
            base: base.clone(),
            parents: Vec::new(),
            slots: Vec::new(),
            started: 0,
        };
        containers.parent(&base)?;
        Ok(containers)
    }

    /// `count` containers, each running what `command` gives for its index.
    pub fn create(
        hierarchy: &MemoryHierarchy,
        label: &str,
        shape: Shape,
        count: usize,
        mut command: impl FnMut(usize) -> Command,
    ) -> anyhow::Result<Self> {
        let mut containers = Self::new(hierarchy, label, shape)?;
        for i in 0..count {
            containers.start(command(i), None)?;
        }
        Ok(containers)
    }

    /// The path memtrace names the base by (`/memtrace-bench-node-1234`).
    #[must_use]
    pub fn path(&self) -> String {
        format!(
            "/{}",
            self.base
                .strip_prefix(&self.hierarchy.root)
                .unwrap_or(&self.base)
                .display()
        )
    }

    /// Starts a container running `command` (with `limit` bytes of memory at most); returns
    /// its slot.
    pub fn start(&mut self, mut command: Command, limit: Option<u64>) -> anyhow::Result<usize> {
        let n = self.started;
        self.started += 1;
        let id = format!("{:016x}{:048x}", std::process::id(), n);
        let dir = match self.shape {
            Shape::Docker => self.base.join("docker").join(&id),
            Shape::Node if n % 2 == 1 => self
                .base
                .join("machine.slice")
                .join(format!("libpod-{id}.scope")),
            Shape::Node => {
                let uid = format!(
                    "{:08x}_{:04x}_4000_8000_{:012x}",
                    std::process::id(),
                    n / 4 % 0xffff,
                    n / 4
                );
                self.base
                    .join("kubepods.slice")
                    .join("kubepods-burstable.slice")
                    .join(format!("kubepods-burstable-pod{uid}.slice"))
                    .join(format!("cri-containerd-{id}.scope"))
            }
        };
        let parent = dir
            .parent()
            .context("a container's cgroup has a parent")?
            .to_owned();
        let mut missing = Vec::new();
        let mut up = parent.as_path();
        while !up.is_dir() {
            missing.push(up.to_owned());
            up = up.parent().context("the hierarchy's root exists")?;
        }
        for p in missing.into_iter().rev() {
            self.parent(&p)?;
        }
        fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
        if let Some(limit) = limit {
            let file = match self.hierarchy.version {
                CgroupVersion::V1 => "memory.limit_in_bytes",
                CgroupVersion::V2 => "memory.max",
            };
            fs::write(dir.join(file), limit.to_string())
                .with_context(|| format!("limiting {}", dir.display()))?;
        }
        let process = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", command.get_program().display()))?;
        let container = Container { dir, process };
        if let Err(e) = fs::write(
            container.dir.join("cgroup.procs"),
            container.pid().to_string(),
        ) {
            let dir = container.dir.display().to_string();
            container.stop();
            bail!("moving a process into {dir}: {e}");
        }
        self.slots.push(Some(container));
        Ok(self.slots.len() - 1)
    }

    /// Stops the container in `slot` (killing its process, removing its memcg).
    pub fn stop(&mut self, slot: usize) {
        if let Some(mut container) = self.slots.get_mut(slot).and_then(Option::take) {
            let parent = container.dir.parent().map(Path::to_owned);
            let _ = container.process_kill();
            // What stays charged (page cache) would keep the memcg dying after its removal,
            // not freed; a kubelet's node reclaims it later, this one at once.
            let _ = match self.hierarchy.version {
                CgroupVersion::V1 => fs::write(container.dir.join("memory.force_empty"), "0"),
                CgroupVersion::V2 => fs::write(container.dir.join("memory.reclaim"), "1G"),
            };
            container.stop();
            // A pod goes with its last container, as the kubelet removes it.
            if let Some(pod) = parent
                && pod
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().contains("-pod"))
                && fs::remove_dir(&pod).is_ok()
            {
                self.parents.retain(|p| *p != pod);
            }
        }
    }

    #[must_use]
    pub fn get(&self, slot: usize) -> Option<&Container> {
        self.slots.get(slot)?.as_ref()
    }

    /// Whether the process of the container in `slot` has ended (an OOM kill, say).
    pub fn exited(&mut self, slot: usize) -> bool {
        self.slots
            .get_mut(slot)
            .and_then(Option::as_mut)
            .is_some_and(|c| c.process.try_wait().is_ok_and(|s| s.is_some()))
    }

    /// OOM kills the kernel counted in the container in `slot` (`oom_kill` of
    /// `memory.oom_control` on v1, of `memory.events` on v2).
    #[must_use]
    pub fn oom_kills(&self, slot: usize) -> u64 {
        let Some(container) = self.get(slot) else {
            return 0;
        };
        let file = match self.hierarchy.version {
            CgroupVersion::V1 => "memory.oom_control",
            CgroupVersion::V2 => "memory.events",
        };
        fs::read_to_string(container.dir.join(file))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("oom_kill "))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Memory cgroups under the base now, the base excluded.
    #[must_use]
    pub fn memcgs(&self) -> usize {
        self.parents
            .iter()
            .filter(|p| p.is_dir())
            .count()
            .saturating_sub(1)
            + self.slots.iter().flatten().count()
    }

    /// Stops every container and removes every cgroup.
    pub fn remove(&mut self) {
        for slot in 0..self.slots.len() {
            self.stop(slot);
        }
        for dir in self.parents.drain(..).rev() {
            remove_dir(&dir);
        }
    }

    fn parent(&mut self, dir: &Path) -> anyhow::Result<()> {
        fs::create_dir(dir).with_context(|| format!("creating {}", dir.display()))?;
        self.parents.push(dir.to_owned());
        if self.hierarchy.version == CgroupVersion::V2 {
            fs::write(dir.join("cgroup.subtree_control"), "+memory")
                .with_context(|| format!("enabling memory below {}", dir.display()))?;
        }
        Ok(())
    }
}

impl Drop for Containers {
    fn drop(&mut self) {
        self.remove();
    }
}

/// Removes a cgroup directory, waiting a little for its last process to be gone.
fn remove_dir(dir: &Path) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while fs::remove_dir(dir).is_err() && dir.exists() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
    if dir.exists() {
        eprintln!("bench: could not remove {}: rmdir it", dir.display());
    }
}

/// User + system CPU time of a process, in clock ticks (`/proc/PID/stat` fields 14 and 15).
pub fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).context("reading /proc/PID/stat")?;
    // The command name may hold spaces: count fields after its closing parenthesis.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let field = |i: usize| -> anyhow::Result<u64> {
        fields
            .get(i)
            .and_then(|f| f.parse().ok())
            .context("malformed /proc/PID/stat")
    };
    // After `)`: state is field 3, utime 14, stime 15.
    Ok(field(11)? + field(12)?)
}

/// Clock ticks per second (`getconf CLK_TCK`).
pub fn clock_ticks() -> anyhow::Result<f64> {
    crate::process::output(Command::new("getconf").arg("CLK_TCK"))
        .context("getconf CLK_TCK")?
        .trim()
        .parse()
        .context("CLK_TCK")
}

/// A process's resident memory now and at its peak, in bytes (`VmRSS`, `VmHWM` of
/// `/proc/PID/status`).
pub fn memory(pid: u32) -> anyhow::Result<(u64, u64)> {
    let status =
        fs::read_to_string(format!("/proc/{pid}/status")).context("reading /proc/PID/status")?;
    let field = |name: &str| -> anyhow::Result<u64> {
        let line = status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .with_context(|| format!("/proc/PID/status has no {name}"))?;
        let kib: u64 = line
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .with_context(|| format!("malformed {name}"))?;
        Ok(kib * 1024)
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}
