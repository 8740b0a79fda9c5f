//! Pod and container names from the kubelet's log directories: the fallback when the
//! runtime's own state ([`RuntimeState`](super::RuntimeState)) does not name them.
//!
//! The cgroup path carries only a pod UID and a container id. The names an operator knows are in
//! the API server, but memtrace makes no network calls: the kubelet already writes them to the
//! node's disk, for every CRI runtime, as
//!
//! - `/var/log/pods/<namespace>_<pod>_<uid>/<container>/<restart>.log`, and
//! - `/var/log/containers/<pod>_<namespace>_<container>-<container id>.log` (symlinks into the
//!   former, kept for log shippers).
//!
//! Namespaces, pod names and container names are DNS labels or subdomains, which cannot contain
//! `_`, and UIDs and container ids contain no `_` or (ids) `-`, so both names split unambiguously.

use std::{
    collections::HashMap,
    fs,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use super::container::{ContainerIdentity, is_container_id, is_pod_uid};

/// A pod's namespace and name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodName {
    pub namespace: String,
    pub name: String,
}

/// A container as `/var/log/containers` names it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct ContainerLog {
    pod: PodName,
    container: String,
}

/// Maps pod UIDs and container ids to names from the kubelet's log directories under a root
/// (`/var/log` unless told otherwise).
///
/// Nothing is read until the first lookup. A lookup that misses rescans, at most once per
/// [`min_rescan_interval`](Self::with_min_rescan_interval) (a second by default): pods start all
/// the time, but a container that never logs (the pod sandbox) misses forever and must not make
/// every lookup walk the directories. Call [`enrich`](Self::enrich) once per memcg and keep the
/// result, not once per event. A missing or unreadable directory enriches nothing; it is not an
/// error, since most hosts running containers are not Kubernetes nodes.
#[derive(Debug)]
pub struct PodDirectory {
    root: PathBuf,
    min_rescan_interval: Duration,
    last_scan: Option<Instant>,
    pods: HashMap<String, PodName>,
    containers: HashMap<String, ContainerLog>,
}

impl Default for PodDirectory {
    fn default() -> Self {
        Self::new(Self::DEFAULT_ROOT)
    }
}

impl PodDirectory {
    /// Where the kubelet writes `pods/` and `containers/`.
    pub const DEFAULT_ROOT: &str = "/var/log";

    #[must_use]
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            min_rescan_interval: Duration::from_secs(1),
            last_scan: None,
            pods: HashMap::new(),
            containers: HashMap::new(),
        }
    }

    /// The least time between two rescans caused by misses; [`rescan`](Self::rescan) itself is
    /// never limited.
    #[must_use]
    pub fn with_min_rescan_interval(mut self, interval: Duration) -> Self {
        self.min_rescan_interval = interval;
        self
    }

    #[must_use]
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Fills `pod_namespace`, `pod_name` and `container_name` where the kubelet's files know
    /// them. Only Kubernetes identities (with a pod UID) are looked up. Returns whether anything
    /// was filled.
    pub fn enrich(&mut self, identity: &mut ContainerIdentity) -> bool {
        let Some(uid) = identity.pod_uid.as_deref() else {
            return false;
        };
        let container_id = identity.container_id.as_deref();
        let known = self.pods.contains_key(uid)
            && container_id.is_none_or(|id| self.containers.contains_key(id));
        let may_rescan = self
            .last_scan
            .is_none_or(|at| at.elapsed() >= self.min_rescan_interval);
        if !known && may_rescan {
            self.rescan();
        }

        let mut filled = false;
        // A container's log names its pod too: that covers a node whose `pods/` is unreadable.
        let pod = self.pods.get(uid).or_else(|| {
            container_id
                .and_then(|id| self.containers.get(id))
                .map(|c| &c.pod)
        });
        if let Some(pod) = pod {
            filled |= fill(&mut identity.pod_namespace, &pod.namespace);
            filled |= fill(&mut identity.pod_name, &pod.name);
        }
        if let Some(log) = container_id.and_then(|id| self.containers.get(id)) {
            filled |= fill(&mut identity.container_name, &log.container);
        }
        filled
    }

    /// The pod with this UID, as of the last scan.
    #[must_use]
    pub fn pod(&self, uid: &str) -> Option<&PodName> {
        self.pods.get(uid)
    }

    /// The name of the container with this id, as of the last scan.
    #[must_use]
    pub fn container_name(&self, container_id: &str) -> Option<&str> {
        self.containers
            .get(container_id)
            .map(|c| c.container.as_str())
    }

    /// Reads both directories again. Pods deleted since the last scan are forgotten: the
    /// identities already handed out keep their names.
    pub fn rescan(&mut self) {
        self.last_scan = Some(Instant::now());
        self.pods = file_names(&self.root.join("pods"))
            .filter_map(|name| parse_pod_dir(&name))
            .collect();
        self.containers = file_names(&self.root.join("containers"))
            .filter_map(|name| parse_container_log(&name))
            .collect();
    }
}

fn fill(field: &mut Option<String>, value: &str) -> bool {
    if field.as_deref() == Some(value) {
        return false;
    }
    *field = Some(value.to_owned());
    true
}

/// The UTF-8 names in a directory; nothing if it cannot be read.
fn file_names(dir: &Path) -> impl Iterator<Item = String> {
    fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| entry.file_name().into_string().ok())
}

/// `<namespace>_<pod>_<uid>`.
fn parse_pod_dir(name: &str) -> Option<(String, PodName)> {
    let mut parts = name.split('_');
    let (Some(namespace), Some(pod), Some(uid), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    if namespace.is_empty() || pod.is_empty() || !is_pod_uid(uid) {
        return None;
    }
    let pod = PodName {
        namespace: namespace.to_owned(),
        name: pod.to_owned(),
    };
    Some((uid.to_owned(), pod))
}

/// `<pod>_<namespace>_<container>-<id>.log`; the container name may contain dashes, the id not.
fn parse_container_log(name: &str) -> Option<(String, ContainerLog)> {
    let (rest, id) = name.strip_suffix(".log")?.rsplit_once('-')?;
    if !is_container_id(id) {
        return None;
    }
    let mut parts = rest.split('_');
    let (Some(pod), Some(namespace), Some(container), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    if pod.is_empty() || namespace.is_empty() || container.is_empty() {
        return None;
    }
    let log = ContainerLog {
        pod: PodName {
            namespace: namespace.to_owned(),
            name: pod.to_owned(),
        },
        container: container.to_owned(),
    };
    Some((id.to_owned(), log))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;
    use crate::attribution::container::test_ids::{
        CONTAINERD_ID as APP_ID, CRIO_ID as SIDECAR_ID, PODMAN_ID as SANDBOX_ID,
    };

    const UID: &str = "9c5d88c2-0869-486d-9f7c-1daba9d5821a";
    const UID_SYSTEMD: &str = "9c5d88c2_0869_486d_9f7c_1daba9d5821a";
    const OTHER_UID: &str = "51574d85-6f3d-4f54-8831-bcfd7eb5efa0";

    /// The pod the tests look up: `shop/checkout-api-…` with [`UID`].
    fn add_checkout_pod(root: &Path, containers: &[(&str, &str)]) {
        add_pod(
            root,
            "shop",
            "checkout-api-6d9f8b7c5d-q8m2z",
            UID,
            containers,
        );
    }

    /// What the kubelet leaves on disk for a pod: `pods/<ns>_<pod>_<uid>/<container>/0.log` and
    /// the `containers/` symlink to it.
    fn add_pod(root: &Path, namespace: &str, pod: &str, uid: &str, containers: &[(&str, &str)]) {
        let pod_dir = root.join(format!("pods/{namespace}_{pod}_{uid}"));
        fs::create_dir_all(root.join("containers")).expect("mkdir");
        for (container, id) in containers {
            let log = pod_dir.join(format!("{container}/0.log"));
            fs::create_dir_all(log.parent().expect("parent")).expect("mkdir");
            fs::write(&log, "").expect("write");
            let link = root.join(format!("containers/{pod}_{namespace}_{container}-{id}.log"));
            symlink(&log, link).expect("symlink");
        }
        fs::create_dir_all(pod_dir).expect("mkdir");
    }

    fn identity(path: &str) -> ContainerIdentity {
        ContainerIdentity::from_cgroup_path(path)
    }

    fn app_path() -> String {
        format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_SYSTEMD}.slice/\
             cri-containerd-{APP_ID}.scope"
        )
    }

    #[test]
    fn names_pods_and_containers() {
        let root = tempfile::tempdir().expect("tempdir");
        add_checkout_pod(root.path(), &[("api", APP_ID), ("istio-proxy", SIDECAR_ID)]);
        let mut pods = PodDirectory::new(root.path());

        let mut app = identity(&app_path());
        assert!(pods.enrich(&mut app));
        assert_eq!(app.pod_namespace.as_deref(), Some("shop"));
        assert_eq!(
            app.pod_name.as_deref(),
            Some("checkout-api-6d9f8b7c5d-q8m2z")
        );
        assert_eq!(app.container_name.as_deref(), Some("api"));
        assert_eq!(app.display_name(), "shop/checkout-api-6d9f8b7c5d-q8m2z/api");
        assert!(!pods.enrich(&mut app), "nothing new the second time");

        // A container name with dashes.
        let mut sidecar = identity(&format!("/kubepods/burstable/pod{UID}/{SIDECAR_ID}"));
        assert!(pods.enrich(&mut sidecar));
        assert_eq!(sidecar.container_name.as_deref(), Some("istio-proxy"));

        // The sandbox never logs: pod names, no container name.
        let mut sandbox = identity(&format!("/kubepods/burstable/pod{UID}/{SANDBOX_ID}"));
        assert!(pods.enrich(&mut sandbox));
        assert_eq!(sandbox.container_name, None);
        assert_eq!(
            sandbox.display_name(),
            "shop/checkout-api-6d9f8b7c5d-q8m2z/ec05ca7f86fd"
        );

        // Pod-level memcg.
        let mut pod_level = identity(&format!("/kubepods/burstable/pod{UID}"));
        assert!(pods.enrich(&mut pod_level));
        assert_eq!(
            pod_level.display_name(),
            "shop/checkout-api-6d9f8b7c5d-q8m2z"
        );

        assert_eq!(pods.pod(UID).map(|p| p.namespace.as_str()), Some("shop"));
        assert_eq!(pods.container_name(SIDECAR_ID), Some("istio-proxy"));
        assert_eq!(pods.pod(OTHER_UID), None);
    }

    #[test]
    fn missing_directory_enriches_nothing() {
        let root = tempfile::tempdir().expect("tempdir");
        let mut pods = PodDirectory::new(root.path().join("does-not-exist"));
        let mut app = identity(&app_path());
        let before = app.clone();
        assert!(!pods.enrich(&mut app));
        assert_eq!(app, before);
    }

    #[test]
    fn non_kubernetes_identities_are_not_looked_up() {
        let root = tempfile::tempdir().expect("tempdir");
        let mut pods = PodDirectory::new(root.path());
        let mut docker = identity(&format!("/docker/{APP_ID}"));
        let mut service = identity("/system.slice/nginx.service");
        assert!(!pods.enrich(&mut docker));
        assert!(!pods.enrich(&mut service));
        assert!(
            pods.last_scan.is_none(),
            "no scan for identities without a pod"
        );
    }

    #[test]
    fn a_miss_rescans() {
        let root = tempfile::tempdir().expect("tempdir");
        let mut pods = PodDirectory::new(root.path()).with_min_rescan_interval(Duration::ZERO);
        let mut app = identity(&app_path());
        assert!(!pods.enrich(&mut app), "not started yet");
        add_checkout_pod(root.path(), &[("api", APP_ID)]);
        assert!(pods.enrich(&mut app), "the pod started since the last scan");
        assert_eq!(app.container_name.as_deref(), Some("api"));
    }

    #[test]
    fn rescans_are_rate_limited() {
        let root = tempfile::tempdir().expect("tempdir");
        let mut pods =
            PodDirectory::new(root.path()).with_min_rescan_interval(Duration::from_secs(3600));
        let mut app = identity(&app_path());
        assert!(!pods.enrich(&mut app));
        let first = pods.last_scan.expect("scanned on the first lookup");
        add_checkout_pod(root.path(), &[("api", APP_ID)]);
        assert!(!pods.enrich(&mut app), "too soon to rescan");
        assert_eq!(pods.last_scan, Some(first));
        pods.rescan();
        assert!(pods.enrich(&mut app), "an explicit rescan is not limited");
    }

    #[test]
    fn container_logs_alone_name_the_pod() {
        let root = tempfile::tempdir().expect("tempdir");
        let containers = root.path().join("containers");
        fs::create_dir(&containers).expect("mkdir");
        // A dangling link is fine: only its name is read.
        symlink(
            "/nonexistent",
            containers.join(format!(
                "coredns-5d78c9869d-8tq2h_kube-system_coredns-{APP_ID}.log"
            )),
        )
        .expect("symlink");
        let mut pods = PodDirectory::new(root.path());
        let mut app = identity(&app_path());
        assert!(pods.enrich(&mut app));
        assert_eq!(
            app.display_name(),
            "kube-system/coredns-5d78c9869d-8tq2h/coredns"
        );
    }

    #[test]
    fn malformed_names_are_ignored() {
        let root = tempfile::tempdir().expect("tempdir");
        for dir in [
            "garbage".to_owned(),
            "ns_pod".to_owned(),
            "ns_pod_not-a-uid".to_owned(),
            format!("_pod_{UID}"),
            format!("ns_pod_{UID}_extra"),
            // Pre-1.14 kubelets used `pods/<uid>/`: no names in it.
            UID.to_owned(),
        ] {
            fs::create_dir_all(root.path().join("pods").join(dir)).expect("mkdir");
        }
        fs::create_dir_all(root.path().join("containers")).expect("mkdir");
        for file in [
            "x.log".to_owned(),
            format!("pod_ns_ctr-{APP_ID}.txt"),
            format!("pod_ns-{APP_ID}.log"),
            format!("pod_ns_ctr-{}.log", &APP_ID[..63]),
            format!("pod_ns_ctr_x-{APP_ID}.log"),
            format!("pod__ctr-{APP_ID}.log"),
        ] {
            fs::write(root.path().join("containers").join(file), "").expect("write");
        }
        let mut pods = PodDirectory::new(root.path());
        pods.rescan();
        assert!(pods.pods.is_empty(), "{:?}", pods.pods);
        assert!(pods.containers.is_empty(), "{:?}", pods.containers);
        let mut app = identity(&app_path());
        assert!(!pods.enrich(&mut app));
    }

    #[test]
    fn default_root_is_var_log() {
        assert_eq!(PodDirectory::default().root(), Path::new("/var/log"));
    }
}
