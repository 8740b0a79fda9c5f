//! What the guests run: memtrace, the test workloads and the integration-test binaries, linked statically so
//! that an initramfs with busybox and nothing else can run them.

use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, bail, ensure};
use cargo_metadata::{Artifact, Message, TargetKind};

use super::elf::Elf;
use crate::{
    process,
    workspace::{MEMTRACE, TESTS, Workspace},
};

/// Integration tests that run on the host only: they need programs the guests' initramfs does
/// not carry (Chromium for `report_html`; Prometheus for `metrics`; tmux for `top`; podman,
/// containerd and runc for `runtimes` and `deploy`), or they check what userspace makes of the
/// events (`readable_stream`: the text stream's summaries, a few hundred MiB of page cache and
/// 30 000 tmpfs files per round, minutes under emulation), and what they add does not depend on
/// the kernel: the recording under `report_html` and `top --replay` is exercised in the guests
/// by `report`; the OOM kills, reclaim, page cache and cgroup lifecycles under the others by
/// `oom_kill`, `probe_points`, `file_names` and `containers`.
const HOST_ONLY_TESTS: &[&str] = &[
    "report_html",
    "runtimes",
    "deploy",
    "metrics",
    "top",
    "readable_stream",
];

/// The integration test that exhausts the node's memory (a global OOM, `tests/global_oom.rs`):
/// its test is `#[ignore]`d, so the host's `cargo test` lists it as ignored and never runs it,
/// and the guests run it only in a boot of their own with little RAM ([`super::Mode::GlobalOom`],
/// with `--ignored`), never in the others.
pub const GLOBAL_OOM_TEST: &str = "global_oom";

/// The host's target, named explicitly: with `--target`, cargo applies the target's `RUSTFLAGS`
/// to the target's code only, so build scripts and proc macros stay dynamically linked and
/// shared with the normal build's configuration.
const TARGET: &str = "x86_64-unknown-linux-gnu";
/// Without debug info: the guests unpack every test binary into RAM from the initramfs, and with
/// it the payload passed 1.4 GB, more than a guest could unpack (`Initramfs unpacking failed:
/// write error`). Symbols stay, so a panic's backtrace still names its functions.
const STATIC_RUSTFLAGS: (&str, &str) = (
    "CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS",
    "-C target-feature=+crt-static -C strip=debuginfo",
);
/// The workloads the tests run in their cgroups (OOM kills, tmpfs files, memory held by a
/// container, a reclaim storm, a node's tenants); `[[bin]]`s of the tests package.
pub const WORKLOADS: [&str; 5] = ["memhog", "mkfiles", "memhold", "readloop", "tenant"];

/// The static executables for the guests.
pub struct Payload {
    pub memtrace: PathBuf,
    /// [`WORKLOADS`], at the paths the tests have compiled in (`env!("CARGO_BIN_EXE_memhog")`),
    /// which the guest must reproduce.
    pub workloads: Vec<Executable>,
    /// `CARGO_TARGET_TMPDIR`, which the tests have compiled in too.
    pub target_tmpdir: PathBuf,
    pub tests: Vec<Executable>,
}

/// A target's executable.
pub struct Executable {
    /// The target's name (`oom_kill`), without cargo's hash.
    pub name: String,
    pub path: PathBuf,
}

/// `<target-dir>/vm`, apart from the normal build so neither rebuilds the other.
pub fn target_dir(workspace: &Workspace) -> PathBuf {
    workspace.target_dir().join("vm")
}

/// Builds memtrace, the workloads and the integration tests statically and checks that they are.
pub fn build(workspace: &Workspace) -> anyhow::Result<Payload> {
    let target_dir = target_dir(workspace);
    let cargo = |args: &[&str]| {
        let mut cmd = workspace.cargo();
        cmd.args(args)
            .args(["--target", TARGET, "--target-dir"])
            .arg(&target_dir)
            // Diagnostics rendered on stderr as usual; only the artifacts come as JSON.
            .arg("--message-format=json-render-diagnostics")
            .env(STATIC_RUSTFLAGS.0, STATIC_RUSTFLAGS.1);
        cmd
    };

    let bins = process::run_for_stdout(&mut cargo(&[
        "build", "-p", MEMTRACE, "-p", TESTS, "--bins",
    ]))
    .context("vm-test step `build memtrace and the workloads` failed")?;
    let bins = executables(&bins, &TargetKind::Bin).context("reading `cargo build`'s artifacts")?;
    let bin = |name: &str| {
        bins.iter()
            .find(|binary| binary.name == name)
            .map(|binary| binary.path.clone())
            .with_context(|| format!("`cargo build` built no `{name}` executable"))
    };
    let memtrace = bin(MEMTRACE)?;
    let workloads = WORKLOADS
        .iter()
        .map(|name| {
            Ok(Executable {
                name: (*name).to_owned(),
                path: bin(name)?,
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;

    let tests = process::run_for_stdout(&mut cargo(&[
        "test", "-p", TESTS, "--test", "*", "--no-run",
    ]))
    .context("vm-test step `build the integration tests` failed")?;
    let mut tests =
        executables(&tests, &TargetKind::Test).context("reading `cargo test`'s artifacts")?;
    tests.retain(|test| !HOST_ONLY_TESTS.contains(&test.name.as_str()));
    // The same order on every run and kernel, whichever cargo happened to finish first.
    tests.sort_by(|a, b| a.name.cmp(&b.name));
    ensure!(
        !tests.is_empty(),
        "vm-test step `build the integration tests` failed: {TESTS} has no [[test]] target"
    );

    for path in std::iter::once(&memtrace)
        .chain(workloads.iter().map(|w| &w.path))
        .chain(tests.iter().map(|test| &test.path))
    {
        ensure_static(path).context("vm-test step `check the payload is static` failed")?;
    }
    Ok(Payload {
        memtrace,
        workloads,
        // Where cargo puts it when building for an explicit --target.
        target_tmpdir: target_dir.join(TARGET).join("tmp"),
        tests,
    })
}

/// The executables of the targets of `kind` (`bin`, `test`) in cargo's JSON output, in the order
/// cargo finished them.
fn executables(json_lines: &str, kind: &TargetKind) -> anyhow::Result<Vec<Executable>> {
    let mut found = Vec::new();
    for message in Message::parse_stream(json_lines.as_bytes()) {
        if let Message::CompilerArtifact(Artifact {
            target,
            executable: Some(path),
            ..
        }) = message.context("reading cargo's JSON messages")?
            && target.kind.contains(kind)
        {
            found.push(Executable {
                name: target.name,
                path: path.into(),
            });
        }
    }
    Ok(found)
}

/// Fails unless `path` is an ELF executable without a dynamic loader (`static-pie linked` is
/// what `file` calls Rust's `crt-static` output).
fn ensure_static(path: &Path) -> anyhow::Result<()> {
    let data = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let elf = Elf::parse(&data).with_context(|| format!("reading {}", path.display()))?;
    if elf.has_interpreter() {
        bail!(
            "{} is dynamically linked (it has PT_INTERP) despite {}={:?}",
            path.display(),
            STATIC_RUSTFLAGS.0,
            STATIC_RUSTFLAGS.1
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use cargo_metadata::TargetKind;

    use super::executables;

    #[test]
    fn picks_executables_of_one_kind_from_cargo_s_json() -> anyhow::Result<()> {
        // Trimmed from `cargo test --no-run --message-format=json-render-diagnostics`.
        let json = r#"{"reason":"compiler-artifact","package_id":"path+file:///r/tests#0.1.0","manifest_path":"/r/tests/Cargo.toml","target":{"kind":["lib"],"crate_types":["lib"],"name":"memtrace_tests","src_path":"/r/tests/src/lib.rs","edition":"2024","doc":true,"doctest":true,"test":true},"profile":{"opt_level":"0","debuginfo":2,"debug_assertions":true,"overflow_checks":true,"test":false},"features":[],"filenames":["/t/libmemtrace_tests.rlib"],"executable":null,"fresh":true}
{"reason":"build-script-executed","package_id":"path+file:///r/memtrace#0.1.0","linked_libs":[],"linked_paths":[],"cfgs":[],"env":[],"out_dir":"/t/build/out"}
{"reason":"compiler-artifact","package_id":"path+file:///r/tests#0.1.0","manifest_path":"/r/tests/Cargo.toml","target":{"kind":["bin"],"crate_types":["bin"],"name":"memhog","src_path":"/r/tests/src/bin/memhog.rs","edition":"2024","doc":true,"doctest":false,"test":true},"profile":{"opt_level":"0","debuginfo":2,"debug_assertions":true,"overflow_checks":true,"test":false},"features":[],"filenames":["/t/debug/memhog"],"executable":"/t/debug/memhog","fresh":false}
{"reason":"compiler-artifact","package_id":"path+file:///r/tests#0.1.0","manifest_path":"/r/tests/Cargo.toml","target":{"kind":["test"],"crate_types":["bin"],"name":"oom_kill","src_path":"/r/tests/oom_kill.rs","edition":"2024","doc":false,"doctest":false,"test":true},"profile":{"opt_level":"0","debuginfo":2,"debug_assertions":true,"overflow_checks":true,"test":true},"features":[],"filenames":["/t/debug/deps/oom_kill-0123abcd"],"executable":"/t/debug/deps/oom_kill-0123abcd","fresh":false}
{"reason":"build-finished","success":true}
"#;
        let tests = executables(json, &TargetKind::Test)?;
        assert_eq!(tests.len(), 1);
        assert_eq!(tests[0].name, "oom_kill");
        assert_eq!(tests[0].path, Path::new("/t/debug/deps/oom_kill-0123abcd"));
        let bins = executables(json, &TargetKind::Bin)?;
        assert_eq!(bins.len(), 1);
        assert_eq!(bins[0].name, "memhog");
        Ok(())
    }
}
