//! The guests' root file system: a `newc` cpio archive holding a static busybox, `/init`, the
//! payload, and each kernel's few modules. It is written with the `cpio` crate rather than by
//! `cpio -o` from a staging directory, which would need a real `/dev/console` device node on the
//! host (`mknod`) and a copy of every binary.

use std::{
    collections::BTreeSet,
    fmt::Write as _,
    fs::{self, File},
    io::{self, BufWriter, Write as _},
    path::{Component, Path, PathBuf},
};

use anyhow::{Context as _, bail, ensure};
use cpio::newc::Builder;

use super::{
    elf::Elf,
    payload::{GLOBAL_OOM_TEST, Payload},
};
use crate::process::quote;

/// Where Debian's `busybox-static` installs busybox.
const BUSYBOX: &str = "/bin/busybox";
/// Where the guest finds memtrace (`MEMTRACE_BIN`).
const GUEST_MEMTRACE: &str = "bin/memtrace";
/// Where the archive holds the workloads (`bin/memhog`); /init links the paths the tests know
/// them by to these.
const GUEST_WORKLOADS: &str = "bin";
/// In each `/lib/modules/<release>`: the modules to load, in order.
const LOAD_ORDER: &str = "load-order";
/// The file backing the disk /init makes for `CARGO_TARGET_TMPDIR`, sparse, and its size.
const DISK_IMAGE: &str = "/run/target-tmpdir.img";
const DISK_SIZE: &str = "1536M";
/// Where the guest keeps the test binaries, by target name.
const GUEST_TESTS: &str = "tests";

/// The first word of every line /init writes for the host to read.
pub const MARKER: &str = "memtrace-vm-test:";
/// After [`MARKER`], before each line of `memtrace probes` (kept verbatim for the probe
/// matrix).
pub const PROBES_PREFIX: &str = " probes|";

/// The modules one kernel's guest loads.
pub struct KernelModules<'a> {
    /// `uname -r`, which names the directory /init looks in.
    pub release: &'a str,
    /// By name, in load order.
    pub modules: &'a [(String, PathBuf)],
}

/// How /init runs the test binaries.
pub struct Run<'a> {
    /// Arguments for every test binary after the harness's own (`--test-threads=1`).
    pub test_args: &'a [String],
    /// Run the remaining test binaries after one fails.
    pub keep_going: bool,
    /// How many boots share each kernel and hierarchy's test binaries (`--parts`): the list is
    /// ordered for them to take about as long each ([`super::parts::balanced`]).
    pub parts: u8,
}

/// Writes the initramfs for `payload` and the kernels whose modules are `kernels`, run as `run`
/// says, to `out`.
pub fn write(
    out: &Path,
    payload: &Payload,
    kernels: &[KernelModules<'_>],
    run: &Run<'_>,
) -> anyhow::Result<()> {
    let busybox = Path::new(BUSYBOX);
    let data = fs::read(busybox).with_context(|| format!("reading {BUSYBOX}"))?;
    ensure!(
        !Elf::parse(&data)
            .with_context(|| format!("reading {BUSYBOX}"))?
            .has_interpreter(),
        "{BUSYBOX} is dynamically linked: install busybox-static, not busybox"
    );
    let mut tests: Vec<&str> = payload
        .tests
        .iter()
        .map(|test| test.name.as_str())
        .collect();
    // Without the global OOM test, which /init leaves out of the list (it has a guest of its
    // own): the positions the parts are counted by are those of the list /init keeps.
    tests.retain(|test| *test != GLOBAL_OOM_TEST);
    let tests = super::parts::balanced(&tests, run.parts);
    let tests: Vec<&str> = tests.iter().map(String::as_str).collect();
    let host_paths = HostPaths::of(payload)?;
    let init = init_script(&tests, &host_paths, run);
    let entries = layout(payload, kernels, busybox, &init)?;

    let file = File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let mut archive = BufWriter::new(file);
    for (inode, entry) in (1..).zip(&entries) {
        archive = add(archive, inode, entry)
            .with_context(|| format!("adding /{} to {}", entry.path, out.display()))?;
    }
    cpio::newc::trailer(archive)
        .and_then(|mut archive| archive.flush())
        .with_context(|| format!("writing {}", out.display()))?;
    Ok(())
}

/// One file in the archive.
#[derive(Debug, PartialEq, Eq)]
pub struct Entry {
    /// Relative to the root, without a leading `/`.
    pub path: String,
    pub kind: Kind,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Kind {
    Directory,
    /// An executable copied from the host.
    Executable(PathBuf),
    /// A file copied from the host.
    File(PathBuf),
    /// An executable made here.
    Script(String),
    /// A file made here.
    Text(String),
    Symlink(&'static str),
    /// The kernel opens `/dev/console` for /init's stdio before anything is mounted.
    Console,
}

/// Every entry of the archive, each directory before what it holds.
fn layout(
    payload: &Payload,
    kernels: &[KernelModules<'_>],
    busybox: &Path,
    init: &str,
) -> anyhow::Result<Vec<Entry>> {
    let mut files = vec![
        Entry {
            path: "init".to_owned(),
            kind: Kind::Script(init.to_owned()),
        },
        Entry {
            path: "bin/busybox".to_owned(),
            kind: Kind::Executable(busybox.to_owned()),
        },
        // For /init's `#!`, before busybox has installed its other links.
        Entry {
            path: "bin/sh".to_owned(),
            kind: Kind::Symlink("busybox"),
        },
        Entry {
            path: "dev/console".to_owned(),
            kind: Kind::Console,
        },
        Entry {
            path: GUEST_MEMTRACE.to_owned(),
            kind: Kind::Executable(payload.memtrace.clone()),
        },
    ];
    for workload in &payload.workloads {
        files.push(Entry {
            path: format!("{GUEST_WORKLOADS}/{}", workload.name),
            kind: Kind::Executable(workload.path.clone()),
        });
    }
    for test in &payload.tests {
        files.push(Entry {
            path: format!("{GUEST_TESTS}/{}", test.name),
            kind: Kind::Executable(test.path.clone()),
        });
    }
    for kernel in kernels {
        let dir = guest_path(&Path::new("lib/modules").join(kernel.release))?;
        let mut order = String::new();
        for (name, path) in kernel.modules {
            files.push(Entry {
                path: format!("{dir}/{name}.ko"),
                kind: Kind::File(path.clone()),
            });
            order.push_str(name);
            order.push('\n');
        }
        files.push(Entry {
            path: format!("{dir}/{LOAD_ORDER}"),
            kind: Kind::Text(order),
        });
    }

    let mut paths = BTreeSet::new();
    for file in &files {
        if !paths.insert(file.path.as_str()) {
            bail!("two files for /{} in the initramfs", file.path);
        }
    }
    // Mount points, busybox's applet directories (`--install -s`) and what the tests expect.
    let mut directories: BTreeSet<String> = [
        "dev", "proc", "sys", "tmp", "run", "root", "etc", "sbin", "usr/bin", "usr/sbin",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    let leaves: Vec<String> = paths
        .into_iter()
        .map(str::to_owned)
        .chain(directories.iter().cloned())
        .collect();
    for path in &leaves {
        let mut ancestor = Path::new(path).parent();
        while let Some(dir) = ancestor.filter(|dir| !dir.as_os_str().is_empty()) {
            directories.insert(guest_path(dir)?);
            ancestor = dir.parent();
        }
    }
    for file in &files {
        if directories.contains(&file.path) {
            bail!("/{} would be both a directory and a file", file.path);
        }
    }

    // In sorted order a directory comes before everything under it.
    let mut entries: Vec<Entry> = directories
        .into_iter()
        .map(|path| Entry {
            path,
            kind: Kind::Directory,
        })
        .collect();
    entries.extend(files);
    Ok(entries)
}

/// `path` as an archive member name: relative, plain components, UTF-8.
fn guest_path(path: &Path) -> anyhow::Result<String> {
    ensure!(
        path.components().all(|c| matches!(c, Component::Normal(_))),
        "{} is not a plain relative path",
        path.display()
    );
    path.to_str()
        .map(str::to_owned)
        .with_context(|| format!("{} is not UTF-8", path.display()))
}

/// Paths on the host that cargo compiles into the tests, which the guest must reproduce.
/// /init makes them after mounting its file systems, so that they exist even under a directory
/// the guest mounts a tmpfs on (a clone in /tmp).
struct HostPaths {
    /// (name, `env!("CARGO_BIN_EXE_<name>")`) of each workload: linked to the archive's.
    workloads: Vec<(String, String)>,
    /// `env!("CARGO_TARGET_TMPDIR")`: an empty disk file system.
    target_tmpdir: String,
}

impl HostPaths {
    fn of(payload: &Payload) -> anyhow::Result<Self> {
        Ok(Self {
            workloads: payload
                .workloads
                .iter()
                .map(|w| {
                    let path = host_path(&w.path).with_context(|| format!("{}'s path", w.name))?;
                    Ok((w.name.clone(), path))
                })
                .collect::<anyhow::Result<_>>()?,
            target_tmpdir: host_path(&payload.target_tmpdir).context("CARGO_TARGET_TMPDIR")?,
        })
    }

    /// /init's commands that make them.
    fn script(&self) -> String {
        let mut script = String::new();
        for (name, host) in &self.workloads {
            let guest = format!("/{GUEST_WORKLOADS}/{name}");
            if *host == guest {
                continue;
            }
            let dir = Path::new(host)
                .parent()
                .map_or("/".into(), Path::to_string_lossy);
            let _ = write!(
                script,
                "step mkdir -p {}\nstep ln -s {guest} {}\n",
                quote(dir.as_ref().as_ref()),
                quote(host.as_ref())
            );
        }
        let tmpdir = quote(self.target_tmpdir.as_ref());
        let _ = write!(
            script,
            r#"# CARGO_TARGET_TMPDIR is on a disk on the host, and tests rely on that (page cache there
# can be dropped, unlike tmpfs's): an ext2 file system on a loop device, mounted by ext4.
modules=/lib/modules/$(uname -r)
step test -f "$modules/{LOAD_ORDER}"
for module in $(cat "$modules/{LOAD_ORDER}"); do
    step insmod "$modules/$module.ko"
done
step truncate -s {DISK_SIZE} {DISK_IMAGE}
step losetup /dev/loop0 {DISK_IMAGE}
step sh -c 'mke2fs -F /dev/loop0 >/dev/null'
step mkdir -p {tmpdir}
step mount -t ext4 /dev/loop0 {tmpdir}
"#
        );
        script
    }
}

/// `path` as the guest can have it: absolute, plain, UTF-8, and not under the kernel's own
/// /proc and /sys.
fn host_path(path: &Path) -> anyhow::Result<String> {
    let relative = path
        .strip_prefix("/")
        .with_context(|| format!("{} is not absolute", path.display()))?;
    let relative = guest_path(relative)?;
    ensure!(
        !["proc/", "sys/"]
            .iter()
            .any(|dir| relative.starts_with(dir)),
        "{} is under a kernel file system in the guest; build elsewhere (CARGO_TARGET_DIR)",
        path.display()
    );
    Ok(format!("/{relative}"))
}

/// /init's cgroup mounts: the memory controller on cgroup v2, or on a v1 hierarchy when the
/// kernel command line says `MEMTRACE_VM_CGROUP=v1`.
/// Keeps in `$tests` the binaries of this boot's part: a kernel's boots on one hierarchy share
/// its test binaries, part i of n (`MEMTRACE_VM_PART`, `MEMTRACE_VM_PARTS`, the host's
/// `--parts`) running every nth from the ith.
const PART_FILTER: &str = r#"if [ "${MEMTRACE_VM_PARTS:-1}" -gt 1 ]; then
    place=0 mine=
    for name in $tests; do
        [ $((place % MEMTRACE_VM_PARTS + 1)) -eq "$MEMTRACE_VM_PART" ] && mine="$mine $name"
        place=$((place + 1))
    done
    tests=$mine
fi
"#;

const CGROUP_MOUNTS: &str = r#"if [ "$MEMTRACE_VM_CGROUP" = v1 ]; then
    # Hybrid, as on many older nodes (and this project's own host): memory and pids on v1
    # hierarchies, cgroup2 with no controller at unified/. 5.10 still has v1's
    # non-hierarchical mode; systemd turns hierarchy on at the root, and so does this.
    step mount -t tmpfs cgroup /sys/fs/cgroup
    step mkdir /sys/fs/cgroup/memory /sys/fs/cgroup/pids /sys/fs/cgroup/unified
    step mount -t cgroup -o memory memory /sys/fs/cgroup/memory
    step sh -c 'echo 1 > /sys/fs/cgroup/memory/memory.use_hierarchy'
    step mount -t cgroup -o pids pids /sys/fs/cgroup/pids
    step mount -t cgroup2 cgroup2 /sys/fs/cgroup/unified
else
    step mount -t cgroup2 cgroup2 /sys/fs/cgroup
    step sh -c 'echo "+memory +pids" > /sys/fs/cgroup/cgroup.subtree_control'
fi
"#;

/// /init's check, on a guest booted with `lockdown=confidentiality`
/// (`MEMTRACE_VM_EXPECT=lockdown`), that memtrace refuses to start in one line naming it.
fn lockdown_check() -> String {
    format!(
        r#"if [ "$MEMTRACE_VM_EXPECT" = lockdown ]; then
    # Booted with lockdown=confidentiality: memtrace must refuse at start-up, in one line
    # naming it, before loading anything. securityfs is left unmounted: memtrace mounts it to
    # read the lockdown mode, as on a minimal node.
    for command in "run --duration 2s" probes; do
        /{GUEST_MEMTRACE} $command >/tmp/out 2>/tmp/err
        code=$?
        echo "memtrace $command exited $code; stderr:"
        cat /tmp/err
        if [ "$code" -eq 0 ] || [ "$(wc -l </tmp/err)" -ne 1 ] ||
            ! grep -q 'lockdown=confidentiality' /tmp/err; then
            echo "{MARKER} expected memtrace $command to fail with one line naming lockdown=confidentiality"
            finish 1
        fi
    done
    echo "{MARKER} lockdown: $(cat /sys/kernel/security/lockdown)"
    echo "test result: ok. 2 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s"
    finish 0
fi
"#
    )
}

/// The guest's PID 1. The kernel log stays on the first serial port; from the moment devtmpfs is
/// mounted, everything /init and the tests print goes to the second, which the host reads.
fn init_script(tests: &[&str], host_paths: &HostPaths, run: &Run<'_>) -> String {
    let words = |words: &mut dyn Iterator<Item = &str>| {
        words
            .map(|word| quote(word.as_ref()).into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    };
    let tests = words(&mut tests.iter().copied().filter(|t| *t != GLOBAL_OOM_TEST));
    let test_args = words(
        &mut ["--test-threads=1", "--color=never"]
            .into_iter()
            .chain(run.test_args.iter().map(String::as_str)),
    );
    let keep_going = if run.keep_going { "yes" } else { "no" };
    let host_paths = host_paths.script();
    let lockdown = lockdown_check();

    let mut script = String::new();
    // Writing to a String cannot fail.
    let _ = write!(
        script,
        r#"#!/bin/sh
# PID 1 of a `cargo xtask vm-test` guest (generated by xtask/src/vm/initramfs.rs).
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
export HOME=/root TMPDIR=/tmp CI=true RUST_BACKTRACE=1 MEMTRACE_BIN=/{GUEST_MEMTRACE}
# Debian's kernels allow every OOM, charge and try_charge strategy but the 6.16+ memcg
# tracepoint and the derived one: the tests must see each work.
export MEMTRACE_TEST_OOM_STRATEGIES=fentry,kprobe,raw_tp
export MEMTRACE_TEST_CHARGE_STRATEGIES=fexit,kprobe
export MEMTRACE_TEST_TRY_CHARGE_STRATEGIES=fexit,kprobe,derived
# Refaults from workingset_refault(); the raw_tp one needs the 6.16+ memcg tracepoint too.
export MEMTRACE_TEST_PAGE_CACHE_STRATEGIES=fentry,kprobe

# Stops the guest, telling the host how it went (the marker it waits for).
finish() {{
    echo "{MARKER} exit=$1"
    # Closing the serial port's last descriptor waits until the port has sent everything.
    exec >/dev/null 2>&1
    poweroff -f
}}
step() {{
    "$@" || {{ echo "{MARKER} setup failed: $*"; finish 125; }}
}}

step mount -t proc proc /proc
step mount -t sysfs sysfs /sys
step mount -t devtmpfs devtmpfs /dev
stty -F /dev/ttyS1 raw -echo 115200 && exec </dev/null >/dev/ttyS1 2>&1 || {{
    echo "{MARKER} cannot write to /dev/ttyS1"
    poweroff -f
}}
echo "{MARKER} init started"
step mount -t tmpfs tmpfs /tmp
step mount -t tmpfs tmpfs /run
# POSIX shared memory, as on every node (tests fill it from inside a memcg).
step mkdir -p /dev/shm
step mount -t tmpfs tmpfs /dev/shm
{CGROUP_MOUNTS}step mount -t tracefs tracefs /sys/kernel/tracing
# The kmem_cache_* tracepoints pass the struct kmem_cache * since 6.1, whose same series folded
# kmem_cache_alloc_node into kmem_cache_alloc; where the _node event is still apart, the slab
# strategies take the cache from fexit/fentry on the kmem_cache_* functions instead.
if [ -d /sys/kernel/tracing/events/kmem/kmem_cache_alloc_node ]; then
    export MEMTRACE_TEST_SLAB_STRATEGIES=fexit,tracked MEMTRACE_TEST_SLAB_CHARGED_STRATEGIES=fexit
else
    export MEMTRACE_TEST_SLAB_STRATEGIES=raw_tp,tracked MEMTRACE_TEST_SLAB_CHARGED_STRATEGIES=raw_tp
fi
step mount -t debugfs debugfs /sys/kernel/debug
step mount -t bpf bpf /sys/fs/bpf
# Host paths cargo compiled into the tests.
{host_paths}echo "{MARKER} ready: $(uname -r), $(nproc) CPUs, $(free -m | awk '/^Mem:/ {{ print $2 }}') MiB"

{lockdown}
# What this kernel allows and what attaches, for the README's probe matrix.
/{GUEST_MEMTRACE} probes >/tmp/probes 2>&1
sed 's/^/{MARKER}{PROBES_PREFIX}/' /tmp/probes

tests="{tests}"
{PART_FILTER}if [ "${{MEMTRACE_VM_PARTS:-1}}" -gt 1 ]; then
    echo "{MARKER} part $MEMTRACE_VM_PART of $MEMTRACE_VM_PARTS:$tests"
fi
ignored=
if [ "$MEMTRACE_VM_EXPECT" = global_oom ]; then
    # The global OOM guest (little RAM) runs that test alone: it is #[ignore]d everywhere
    # else, as it exhausts the node's memory. The other test binaries are deleted from the
    # root file system, which is RAM.
    tests={GLOBAL_OOM_TEST} ignored=--ignored
    for file in /{GUEST_TESTS}/*; do
        [ "$file" = /{GUEST_TESTS}/{GLOBAL_OOM_TEST} ] || rm -f "$file"
    done
    echo "{MARKER} global OOM guest: $(awk '/^MemAvailable:/ {{ print $2 }}' /proc/meminfo) KiB available"
fi
status=0
for name in $tests; do
    echo "{MARKER} running /{GUEST_TESTS}/$name"
    /{GUEST_TESTS}/"$name" {test_args} $ignored
    code=$?
    echo "{MARKER} binary $name exit=$code"
    if [ "$code" -ne 0 ]; then
        status=$code
        [ {keep_going} = yes ] || break
    fi
done
finish "$status"
"#
    );
    script
}

/// Appends `entry` to a `newc` ("070701") archive, the format the kernel unpacks.
/// <https://docs.kernel.org/driver-api/early-userspace/buffer-format.html>
fn add<W: io::Write>(out: W, inode: u32, entry: &Entry) -> anyhow::Result<W> {
    const DIR: u32 = 0o040_000;
    const REGULAR: u32 = 0o100_000;
    const SYMLINK: u32 = 0o120_000;
    const CHAR_DEVICE: u32 = 0o020_000;
    // Owned by root, mtime 0: reproducible archives.
    let member = |mode: u32| Builder::new(&entry.path).ino(inode).mode(mode);
    let with_contents = |out: W, mode: u32, contents: &[u8]| -> anyhow::Result<W> {
        let mut writer = member(mode).write(out, u32::try_from(contents.len())?);
        writer.write_all(contents)?;
        Ok(writer.finish()?)
    };
    match &entry.kind {
        Kind::Directory => Ok(member(DIR | 0o755).nlink(2).write(out, 0).finish()?),
        Kind::Console => Ok(member(CHAR_DEVICE | 0o600)
            .rdev_major(5)
            .rdev_minor(1)
            .write(out, 0)
            .finish()?),
        Kind::Symlink(target) => with_contents(out, SYMLINK | 0o777, target.as_bytes()),
        Kind::Script(text) => with_contents(out, REGULAR | 0o755, text.as_bytes()),
        Kind::Text(text) => with_contents(out, REGULAR | 0o644, text.as_bytes()),
        Kind::Executable(source) | Kind::File(source) => {
            let mode = if matches!(entry.kind, Kind::Executable(_)) {
                0o755
            } else {
                0o644
            };
            let mut file =
                File::open(source).with_context(|| format!("opening {}", source.display()))?;
            let size = file
                .metadata()
                .with_context(|| format!("reading {}", source.display()))?
                .len();
            let size =
                u32::try_from(size).context("a file of 4 GiB or more does not fit in newc")?;
            let mut writer = member(REGULAR | mode).write(out, size);
            let copied = io::copy(&mut file, &mut writer)
                .with_context(|| format!("copying {}", source.display()))?;
            ensure!(
                copied == u64::from(size),
                "{} changed size while being copied",
                source.display()
            );
            Ok(writer.finish()?)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::{
        Entry, HostPaths, KernelModules, Kind, PART_FILTER, Run, add, host_path, init_script,
        layout,
    };
    use crate::vm::payload::{Executable, Payload};

    /// The filter, run by a real shell: the parts of a list are disjoint and cover it.
    #[test]
    fn the_parts_of_the_test_binaries_share_them_out() {
        let part = |part: &str, parts: &str| {
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(format!("{PART_FILTER}echo $tests"))
                .env("tests", "a b c d e")
                .env("MEMTRACE_VM_PART", part)
                .env("MEMTRACE_VM_PARTS", parts)
                .output()
                .expect("sh runs");
            assert!(out.status.success(), "{out:?}");
            String::from_utf8(out.stdout)
                .expect("utf-8")
                .trim()
                .to_owned()
        };
        assert_eq!(part("1", "2"), "a c e");
        assert_eq!(part("2", "2"), "b d");
        assert_eq!(part("3", "3"), "c");
        assert_eq!(part("1", "1"), "a b c d e");
    }

    fn payload(test_names: &[&str]) -> Payload {
        let debug = PathBuf::from("/r/target/vm/x86_64-unknown-linux-gnu/debug");
        Payload {
            memtrace: debug.join("memtrace"),
            workloads: ["memhog", "mkfiles"]
                .iter()
                .map(|name| Executable {
                    name: (*name).to_owned(),
                    path: debug.join(name),
                })
                .collect(),
            target_tmpdir: debug.with_file_name("tmp"),
            tests: test_names
                .iter()
                .map(|name| Executable {
                    name: (*name).to_owned(),
                    path: debug.join(format!("deps/{name}-0123abcd")),
                })
                .collect(),
        }
    }

    #[test]
    fn puts_every_directory_before_its_contents() -> anyhow::Result<()> {
        let modules = [
            ("crc16".to_owned(), PathBuf::from("/c/modules/crc16.ko")),
            ("ext4".to_owned(), PathBuf::from("/c/modules/ext4.ko")),
        ];
        let entries = layout(
            &payload(&["oom_kill", "session"]),
            &[KernelModules {
                release: "6.1.0-56-amd64",
                modules: &modules,
            }],
            Path::new("/bin/busybox"),
            "#!/bin/sh\n",
        )?;
        for (i, entry) in entries.iter().enumerate() {
            let parent = Path::new(&entry.path)
                .parent()
                .filter(|p| *p != Path::new(""));
            if let Some(parent) = parent {
                let at = entries
                    .iter()
                    .position(|e| Path::new(&e.path) == parent && e.kind == Kind::Directory);
                assert!(
                    at.is_some_and(|at| at < i),
                    "{} comes before its parent",
                    entry.path
                );
            }
        }
        let kind = |path: &str| entries.iter().find(|e| e.path == path).map(|e| &e.kind);
        assert_eq!(
            kind("tests/session"),
            Some(&Kind::Executable(PathBuf::from(
                "/r/target/vm/x86_64-unknown-linux-gnu/debug/deps/session-0123abcd"
            )))
        );
        assert_eq!(kind("bin/sh"), Some(&Kind::Symlink("busybox")));
        assert_eq!(kind("dev/console"), Some(&Kind::Console));
        assert_eq!(
            kind("lib/modules/6.1.0-56-amd64/ext4.ko"),
            Some(&Kind::File(PathBuf::from("/c/modules/ext4.ko")))
        );
        assert_eq!(
            kind("lib/modules/6.1.0-56-amd64/load-order"),
            Some(&Kind::Text("crc16\next4\n".to_owned()))
        );
        for needed in [
            "init",
            "bin/memtrace",
            "bin/memhog",
            "bin/mkfiles",
            "tmp",
            "usr/sbin",
        ] {
            assert!(kind(needed).is_some(), "no /{needed}");
        }
        Ok(())
    }

    #[test]
    fn refuses_two_files_at_one_path() {
        let error = layout(
            &payload(&["session", "session"]),
            &[],
            Path::new("/bin/busybox"),
            "",
        )
        .map(|_| ())
        .expect_err("two files at one path");
        assert_eq!(
            error.to_string(),
            "two files for /tests/session in the initramfs"
        );
    }

    #[test]
    fn makes_the_host_paths_the_tests_know_after_mounting_tmp() -> anyhow::Result<()> {
        let target = "/tmp/clone/target/vm/x86_64-unknown-linux-gnu";
        let host_paths = HostPaths {
            workloads: vec![(
                "memhog".to_owned(),
                host_path(Path::new(&format!("{target}/debug/memhog")))?,
            )],
            target_tmpdir: host_path(Path::new(&format!("{target}/tmp")))?,
        };
        let script = init_script(
            &["oom_kill"],
            &host_paths,
            &Run {
                test_args: &[],
                keep_going: false,
                parts: 1,
            },
        );
        let linked = format!(
            "step mkdir -p {target}/debug\n\
             step ln -s /bin/memhog {target}/debug/memhog\n"
        );
        let mounted = format!(
            "step mkdir -p {target}/tmp\n\
             step mount -t ext4 /dev/loop0 {target}/tmp\n"
        );
        let at = script.find(&linked).expect("memhog's link");
        assert!(
            script.find(&mounted).is_some_and(|disk| disk > at),
            "CARGO_TARGET_TMPDIR on a disk:\n{script}"
        );
        // After the tmpfs on /tmp, which would hide them, and before the tests.
        assert!(
            script
                .find("mount -t tmpfs tmpfs /tmp")
                .is_some_and(|mounted| mounted < at)
        );
        assert!(script.find("for name in").is_some_and(|tests| tests > at));

        assert!(host_path(Path::new("relative/memhog")).is_err());
        assert!(host_path(Path::new("/proc/self/memhog")).is_err());
        assert!(host_path(Path::new("/r/../memhog")).is_err());
        Ok(())
    }

    #[derive(Debug, PartialEq, Eq)]
    struct Member {
        name: String,
        mode: u32,
        rdev: (u32, u32),
        data: Vec<u8>,
    }

    /// The members of a newc archive, checking the alignment as it goes.
    fn members(archive: &[u8]) -> Vec<Member> {
        let mut members = Vec::new();
        let mut at = 0;
        while at < archive.len() {
            assert_eq!(at % 4, 0, "member at {at} is not aligned");
            assert_eq!(&archive[at..at + 6], b"070701");
            let field = |i: usize| {
                let hex = std::str::from_utf8(&archive[at + 6 + i * 8..at + 14 + i * 8])
                    .expect("ASCII header");
                u32::from_str_radix(hex, 16).expect("hex field")
            };
            let size = usize::try_from(field(6)).expect("size");
            let name_end = at + 110 + usize::try_from(field(11)).expect("name size");
            assert_eq!(archive[name_end - 1], 0, "name not NUL-terminated");
            let data = name_end.next_multiple_of(4);
            members.push(Member {
                name: String::from_utf8_lossy(&archive[at + 110..name_end - 1]).into_owned(),
                mode: field(1),
                rdev: (field(9), field(10)),
                data: archive[data..data + size].to_vec(),
            });
            at = (data + size).next_multiple_of(4);
        }
        assert_eq!(at, archive.len());
        members
    }

    #[test]
    fn writes_newc_members_aligned_to_four_bytes() -> anyhow::Result<()> {
        let mut archive = Vec::new();
        for (inode, (path, kind)) in (1..).zip([
            ("bin", Kind::Directory),
            ("bin/sh", Kind::Symlink("busybox")),
            ("dev/console", Kind::Console),
            ("init", Kind::Script("#!/bin/sh\n".to_owned())),
            ("order", Kind::Text("loop\n".to_owned())),
        ]) {
            let entry = Entry {
                path: path.to_owned(),
                kind,
            };
            archive = add(archive, inode, &entry)?;
        }
        let bytes = cpio::newc::trailer(archive)?;
        let member = |name: &str, mode, rdev, data: &[u8]| Member {
            name: name.to_owned(),
            mode,
            rdev,
            data: data.to_vec(),
        };
        assert_eq!(
            members(&bytes),
            [
                member("bin", 0o040_755, (0, 0), b""),
                member("bin/sh", 0o120_777, (0, 0), b"busybox"),
                member("dev/console", 0o020_600, (5, 1), b""),
                member("init", 0o100_755, (0, 0), b"#!/bin/sh\n"),
                member("order", 0o100_644, (0, 0), b"loop\n"),
                member("TRAILER!!!", 0, (0, 0), b""),
            ]
        );
        Ok(())
    }

    #[test]
    fn init_runs_each_test_binary_with_the_arguments_quoted() {
        let args = [
            "oom_kill_is".to_owned(),
            "--exact".to_owned(),
            "it's".to_owned(),
        ];
        let script = init_script(
            &["global_oom", "oom_kill", "session"],
            &HostPaths {
                workloads: vec![("memhog".to_owned(), "/bin/memhog".to_owned())],
                target_tmpdir: "/r/tmp".to_owned(),
            },
            &Run {
                test_args: &args,
                keep_going: true,
                parts: 2,
            },
        );
        assert!(script.starts_with("#!/bin/sh\n"));
        // The global OOM test runs alone, in its own guest.
        assert!(script.contains("tests=\"oom_kill session\"\n"), "{script}");
        assert!(script.contains("tests=global_oom ignored=--ignored"));
        assert!(script.contains("for name in $tests; do"));
        assert!(script.contains(
            r#"/tests/"$name" '--test-threads=1' '--color=never' oom_kill_is --exact "it's" $ignored"#
        ));
        assert!(script.contains("[ yes = yes ] || break"));
        assert!(script.contains("MEMTRACE_BIN=/bin/memtrace"));
        assert!(script.contains("mount -t cgroup2 cgroup2 /sys/fs/cgroup"));
        assert!(
            !script.contains("ln -s"),
            "memhog is already where it is wanted"
        );
    }
}
