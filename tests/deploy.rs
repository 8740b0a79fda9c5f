//! The container image and the `DaemonSet`, tried for real: the image is built with podman from
//! `deploy/Containerfile` (staged by `deploy/build-image.sh` from the memtrace binary under
//! test, nothing pulled), run with exactly the privileges and mounts `deploy/daemonset.yaml`
//! gives its container (translated mechanically into `podman run` options), and must report an
//! OOM kill in another podman container on the host, by its name, and serve metrics.

use std::{
    fs,
    io::{Read as _, Write as _},
    net::TcpStream,
    path::{Path, PathBuf},
    process::Command,
    thread,
    time::{Duration, Instant},
};

use memtrace_tests::{
    json_lines, memtrace_bin,
    runtimes::{self, Podman, busybox_rootfs_tar},
};
use yaml_rust2::{Yaml, YamlLoader};

const IMAGE: &str = "localhost/memtrace:deploy-test";
const DAEMON: &str = "memtrace-deploy-test";
const HOG: &str = "hog";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The `DaemonSet`'s pod spec, from the manifest's `DaemonSet` document.
fn pod_spec(manifest: &str) -> Yaml {
    let docs = YamlLoader::load_from_str(manifest).expect("deploy/daemonset.yaml is YAML");
    let daemonset = docs
        .into_iter()
        .find(|d| d["kind"].as_str() == Some("DaemonSet"))
        .expect("deploy/daemonset.yaml has a DaemonSet");
    daemonset["spec"]["template"]["spec"].clone()
}

/// Each hostPath volume at its mount (a `CharDevice` as a device, as the kubelet passes it);
/// a `DirectoryOrCreate` path is created as the kubelet would.
fn host_path_options(pod: &Yaml, container: &Yaml) -> Vec<String> {
    let mut options = Vec::new();
    let volumes = pod["volumes"].as_vec().expect("volumes");
    for mount in container["volumeMounts"].as_vec().into_iter().flatten() {
        let name = mount["name"].as_str().expect("mount name");
        let at = mount["mountPath"].as_str().expect("mountPath");
        let volume = volumes
            .iter()
            .find(|v| v["name"].as_str() == Some(name))
            .unwrap_or_else(|| panic!("volume {name} is mounted but not declared"));
        let host = volume["hostPath"]["path"]
            .as_str()
            .unwrap_or_else(|| panic!("volume {name}: only hostPath volumes are translated"));
        let read_only = mount["readOnly"].as_bool() == Some(true);
        match volume["hostPath"]["type"].as_str() {
            Some("CharDevice") => {
                options.push(format!(
                    "--device={host}:{at}:{}",
                    if read_only { "r" } else { "rw" }
                ));
            }
            kind => {
                if kind == Some("DirectoryOrCreate") {
                    fs::create_dir_all(host).expect("create a DirectoryOrCreate hostPath");
                }
                assert!(
                    Path::new(host).exists(),
                    "hostPath {host} ({kind:?}) does not exist on this node"
                );
                options.push(format!(
                    "--volume={host}:{at}{}",
                    if read_only { ":ro" } else { "" }
                ));
            }
        }
    }
    options
}

/// `podman run` options for the pod's first container, as Kubernetes would run it on this node:
/// host namespaces, capabilities, seccomp, read-only root, memory limit, environment (the
/// downward API's `status.hostIP` is `node_ip`), and each hostPath volume at its mount (a
/// `CharDevice` as a device, as the kubelet passes it). Returns the options and the container's
/// arguments with `$(VAR)` expanded as Kubernetes expands them.
fn podman_run_options(pod: &Yaml, node_ip: &str) -> (Vec<String>, Vec<String>) {
    let container = &pod["containers"][0];
    let mut options = Vec::new();
    if pod["hostPID"].as_bool() == Some(true) {
        options.push("--pid=host".to_owned());
    }
    if pod["hostNetwork"].as_bool() == Some(true) {
        options.push("--network=host".to_owned());
    } else {
        options.push("--network=none".to_owned());
    }
    let security = &container["securityContext"];
    if security["privileged"].as_bool() == Some(true) {
        options.push("--privileged".to_owned());
    }
    if security["readOnlyRootFilesystem"].as_bool() == Some(true) {
        options.push("--read-only".to_owned());
    }
    for cap in security["capabilities"]["drop"]
        .as_vec()
        .into_iter()
        .flatten()
    {
        options.push(format!(
            "--cap-drop={}",
            cap.as_str().expect("a capability")
        ));
    }
    for cap in security["capabilities"]["add"]
        .as_vec()
        .into_iter()
        .flatten()
    {
        options.push(format!("--cap-add={}", cap.as_str().expect("a capability")));
    }
    if security["seccompProfile"]["type"].as_str() == Some("Unconfined") {
        options.push("--security-opt=seccomp=unconfined".to_owned());
    }
    if let Some(memory) = container["resources"]["limits"]["memory"].as_str() {
        // Kubernetes' Mi is podman's m (MiB).
        options.push(format!("--memory={}", memory.replace("Mi", "m")));
    }
    let mut env = Vec::new();
    for var in container["env"].as_vec().into_iter().flatten() {
        let name = var["name"].as_str().expect("env name").to_owned();
        let value = match (
            var["value"].as_str(),
            var["valueFrom"]["fieldRef"]["fieldPath"].as_str(),
        ) {
            (Some(value), _) => value.to_owned(),
            (None, Some("status.hostIP")) => node_ip.to_owned(),
            other => panic!("env {name}: no translation for {other:?}"),
        };
        options.push(format!("--env={name}={value}"));
        env.push((name, value));
    }
    options.extend(host_path_options(pod, container));
    let args = container["args"]
        .as_vec()
        .expect("args")
        .iter()
        .map(|a| {
            let mut arg = a.as_str().expect("an argument").to_owned();
            for (name, value) in &env {
                arg = arg.replace(&format!("$({name})"), value);
            }
            arg
        })
        .collect();
    (options, args)
}

/// Removes the test's containers and images from the node's podman, also when the test fails:
/// each run builds the image anew, and the last run's, untagged, would stay (150 MB a run).
struct Containers<'a>(&'a Podman);

impl Drop for Containers<'_> {
    fn drop(&mut self) {
        let _ = self.0.run(&["rm", "--force", "--time=2", DAEMON, HOG]);
        let _ = self.0.run(&["rmi", "--force", IMAGE, runtimes::IMAGE]);
    }
}

fn metrics(addr: &str) -> String {
    let mut stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("send request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read response");
    assert!(
        response.starts_with("HTTP/1.1 200"),
        "GET /metrics: {}",
        response.lines().next().unwrap_or_default()
    );
    response
}

/// Waits for memtrace's "attached" line (stderr) in its container.
fn wait_attached(podman: &Podman) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let logs = podman.run(&["logs", DAEMON]);
        let stderr = String::from_utf8_lossy(&logs.stderr);
        if stderr.contains("memtrace: attached") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "memtrace in its container did not attach within 60 s:\n{stderr}"
        );
        let state = podman.ok(&["inspect", "--format", "{{.State.Status}}", DAEMON]);
        assert_eq!(
            state.trim(),
            "running",
            "memtrace's container stopped before attaching:\n{stderr}"
        );
        thread::sleep(Duration::from_millis(200));
    }
}

/// `memtrace_oom_kills_total` has a series for hog, at least 1, on the node's address.
fn assert_hog_counted_in_metrics(metrics_addr: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let exposition = metrics(metrics_addr);
        let kills: Vec<&str> = exposition
            .lines()
            .filter(|l| {
                l.starts_with("memtrace_oom_kills_total{") && l.contains("container=\"hog\"")
            })
            .collect();
        if let Some(line) = kills.first() {
            let value: f64 = line
                .rsplit(' ')
                .next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("no value in {line}"));
            assert!(value >= 1.0, "{line}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no memtrace_oom_kills_total for hog in the metrics within 15 s:\n{}",
            exposition
                .lines()
                .filter(|l| l.starts_with("memtrace_oom"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn the_daemonset_image_reports_an_oom_kill_in_another_container_by_name_and_serves_metrics() {
    let work = tempfile::tempdir().expect("tempdir");
    // The node's own podman: the DaemonSet's mounts find its state where a node keeps it.
    let podman = Podman::system(work.path());
    let _ = podman.run(&["rm", "--force", "--time=2", DAEMON, HOG]);
    let _cleanup = Containers(&podman);
    let build = Command::new(repo().join("deploy/build-image.sh"))
        .arg(memtrace_bin())
        .arg(IMAGE)
        .output()
        .expect("run deploy/build-image.sh");
    assert!(
        build.status.success(),
        "deploy/build-image.sh failed:\n{}",
        String::from_utf8_lossy(&build.stderr)
    );

    let manifest =
        fs::read_to_string(repo().join("deploy/daemonset.yaml")).expect("read the manifest");
    let (options, args) = podman_run_options(&pod_spec(&manifest), "127.0.0.1");
    let metrics_addr = args
        .iter()
        .find_map(|a| a.strip_prefix("--metrics="))
        .expect("the DaemonSet serves metrics")
        .to_owned();
    let rlimits = Podman::rlimits();
    let mut run = vec!["run", "--detach", "--name", DAEMON];
    run.extend(rlimits.iter().map(String::as_str));
    run.extend(options.iter().map(String::as_str));
    run.push(IMAGE);
    run.extend(args.iter().map(String::as_str));
    podman.ok(&run);

    wait_attached(&podman);

    // Another container on the host, named hog, with a 64 MiB limit: `tail` buffers a line
    // that never ends until the limit's OOM killer takes it.
    let tar = busybox_rootfs_tar(work.path());
    podman.ok(&["import", tar.to_str().expect("utf-8 path"), runtimes::IMAGE]);
    let out = podman.run_container(&[
        "--name",
        HOG,
        "--memory=64m",
        "--memory-swap=64m",
        runtimes::IMAGE,
        "tail",
        "/dev/zero",
    ]);
    assert_eq!(
        out.status.code(),
        Some(137),
        "hog was not OOM-killed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );

    // The kill, named, in memtrace's JSON Lines on the container's stdout.
    let deadline = Instant::now() + Duration::from_secs(30);
    let kill = loop {
        let logs = podman.run(&["logs", DAEMON]);
        let stdout = String::from_utf8_lossy(&logs.stdout).into_owned();
        let found = json_lines(&stdout)
            .into_iter()
            .find(|e| e["type"] == "oom_kill" && e["container"].to_string().contains("\"hog\""));
        if let Some(kill) = found {
            break kill;
        }
        assert!(
            Instant::now() < deadline,
            "no oom_kill naming hog in memtrace's output within 30 s; oom_kill lines:\n{}\nstderr:\n{}",
            stdout
                .lines()
                .filter(|l| l.contains("oom_kill"))
                .collect::<Vec<_>>()
                .join("\n"),
            String::from_utf8_lossy(&logs.stderr)
        );
        thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(kill["comm"], "tail", "{kill}");

    assert_hog_counted_in_metrics(&metrics_addr);
}
