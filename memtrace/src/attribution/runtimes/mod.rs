//! Container names from the runtimes' own state on the node: podman, Docker, containerd (CRI)
//! and CRI-O, read from their files, never from a network service.
//!
//! The cgroup path gives a container's id; the name an operator knows (`hog`), its image and,
//! under Kubernetes, its pod are in the runtime's metadata:
//!
//! | runtime | where | what |
//! |---|---|---|
//! | podman | `/var/lib/containers/storage/*-containers/containers.json` (and `/run/…/volatile-containers.json`) | name, image |
//! | CRI-O | the same store, and the OCI spec's annotations in `…/overlay-containers/<id>/userdata/config.json` | pod namespace/name, container name, image |
//! | Docker | `/var/lib/docker/containers/<id>/config.v2.json` | name, image, labels (`io.kubernetes.*` under dockershim/cri-dockerd) |
//! | containerd | `/var/lib/containerd/io.containerd.metadata.v1.bolt/meta.db` (read-only copy) | image, labels (the CRI plugin's `io.kubernetes.*`) |
//!
//! Each is read when a container's cgroup appears, off the event pipeline
//! ([`RuntimeLookups`]), and the names are kept with the identity so they outlive the
//! container.

mod bolt;
mod containerd;
mod docker;
mod lookups;
mod storage;

use std::{
    collections::HashMap,
    fs,
    path::{Path, PathBuf},
    time::SystemTime,
};

pub use lookups::RuntimeLookups;

use super::{ContainerIdentity, runtime};

/// The CRI labels (and CRI-O's annotations) that name a container's pod.
pub const POD_NAMESPACE_LABEL: &str = "io.kubernetes.pod.namespace";
pub const POD_NAME_LABEL: &str = "io.kubernetes.pod.name";
pub const CONTAINER_NAME_LABEL: &str = "io.kubernetes.container.name";
pub const POD_UID_LABEL: &str = "io.kubernetes.pod.uid";

/// What a runtime's state says about one container.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RuntimeNames {
    /// The [`runtime`] whose state named it.
    pub runtime: &'static str,
    /// The runtime's own name (`podman run --name hog`, `docker run --name hog`).
    pub name: Option<String>,
    pub image: Option<String>,
    /// From the CRI labels.
    pub pod_namespace: Option<String>,
    pub pod_name: Option<String>,
    /// The Kubernetes container name (`io.kubernetes.container.name`).
    pub container_name: Option<String>,
    /// The pod's UID (`io.kubernetes.pod.uid`): the pod's own memcg is named after it.
    pub pod_uid: Option<String>,
}

impl RuntimeNames {
    /// The Kubernetes names among a container's labels or annotations.
    #[must_use]
    pub fn from_labels(runtime: &'static str, labels: &HashMap<String, String>) -> Self {
        let label = |key: &str| labels.get(key).filter(|v| !v.is_empty()).cloned();
        Self {
            runtime,
            name: None,
            // CRI-O's and containerd's CRI plugin's own annotations for the image the
            // kubelet asked for.
            image: label("io.kubernetes.cri-o.ImageName")
                .or_else(|| label("io.kubernetes.cri.image-name")),
            pod_namespace: label(POD_NAMESPACE_LABEL),
            pod_name: label(POD_NAME_LABEL),
            container_name: label(CONTAINER_NAME_LABEL),
            pod_uid: label(POD_UID_LABEL),
        }
    }

    /// Fills the pod's names into the identity of the pod's own memcg (or of a container the
    /// runtime does not know, in the same pod); returns whether anything changed.
    pub fn apply_pod(&self, identity: &mut ContainerIdentity) -> bool {
        if self.pod_uid.is_none() || identity.pod_uid != self.pod_uid {
            return false;
        }
        fill(&mut identity.pod_namespace, self.pod_namespace.as_ref())
            | fill(&mut identity.pod_name, self.pod_name.as_ref())
    }

    /// Fills what `identity` does not know yet; returns whether anything changed. In a pod,
    /// the Kubernetes container name is the container's name; outside, the runtime's.
    pub fn apply(&self, identity: &mut ContainerIdentity) -> bool {
        let mut changed = false;
        if identity.runtime.is_none() {
            identity.runtime = Some(self.runtime);
            changed = true;
        }
        let in_pod = self.pod_name.is_some();
        if in_pod {
            changed |= fill(&mut identity.pod_namespace, self.pod_namespace.as_ref());
            changed |= fill(&mut identity.pod_name, self.pod_name.as_ref());
        }
        let name = if in_pod {
            self.container_name.as_ref()
        } else {
            self.name.as_ref()
        };
        changed |= fill(&mut identity.container_name, name);
        changed |= fill(&mut identity.image, self.image.as_ref());
        changed
    }
}

fn fill(field: &mut Option<String>, value: Option<&String>) -> bool {
    match value {
        Some(v) if field.as_ref() != Some(v) => {
            *field = Some(v.clone());
            true
        }
        _ => false,
    }
}

/// The runtimes' state under a root (`/`, or where the host's root is mounted in a container),
/// with what was parsed kept until its file changes.
pub struct RuntimeState {
    root: PathBuf,
    containerd: Cached<HashMap<String, RuntimeNames>>,
    storage: HashMap<PathBuf, Cached<HashMap<String, storage::Entry>>>,
}

impl Default for RuntimeState {
    fn default() -> Self {
        Self::new("/")
    }
}

/// Where containerd keeps its metadata: its default root, and k3s's.
const CONTAINERD_DBS: [&str; 2] = [
    "var/lib/containerd/io.containerd.metadata.v1.bolt/meta.db",
    "var/lib/rancher/k3s/agent/containerd/io.containerd.metadata.v1.bolt/meta.db",
];
/// A metadata store larger than this is not read (a node's is well under a few MiB).
const MAX_DB_BYTES: u64 = 256 << 20;

impl RuntimeState {
    #[must_use]
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            containerd: Cached::default(),
            storage: HashMap::new(),
        }
    }

    /// The names of container `id`, asking the runtime the cgroup path named first, then the
    /// others (a bare id under the kubelet's cgroupfs driver names no runtime).
    pub fn lookup(&mut self, runtime: Option<&str>, id: &str) -> Option<RuntimeNames> {
        let order: &[Source] = match runtime {
            Some(runtime::DOCKER) => &[Source::Docker, Source::Containerd, Source::Storage],
            // The kubelet's cgroupfs driver names no runtime: containerd is the common one.
            Some(runtime::CONTAINERD) | None => {
                &[Source::Containerd, Source::Storage, Source::Docker]
            }
            Some(_) => &[Source::Storage, Source::Containerd, Source::Docker],
        };
        order.iter().find_map(|source| match source {
            Source::Docker => docker::lookup(&self.root, id),
            Source::Containerd => self.containerd(id),
            Source::Storage => self.storage(id),
        })
    }

    fn containerd(&mut self, id: &str) -> Option<RuntimeNames> {
        let path = CONTAINERD_DBS
            .iter()
            .map(|db| self.root.join(db))
            .find(|p| p.exists())?;
        let containers = self.containerd.get(&path, |path| {
            let data = read_bounded(path, MAX_DB_BYTES)?;
            match bolt::Db::parse(data) {
                Ok(db) => Some(containerd::containers(&db)),
                Err(e) => {
                    log::debug!("{}: {e}", path.display());
                    None
                }
            }
        })?;
        containers.get(id).cloned()
    }

    fn storage(&mut self, id: &str) -> Option<RuntimeNames> {
        for file in storage::container_lists(&self.root) {
            let cached = self.storage.entry(file.clone()).or_default();
            let Some(entry) = cached
                .get(&file, storage::read_list)
                .and_then(|l| l.get(id))
            else {
                continue;
            };
            let entry = entry.clone();
            return Some(storage::names(&self.root, &file, id, &entry));
        }
        None
    }
}

enum Source {
    Docker,
    Containerd,
    Storage,
}

/// A file's parsed content, kept while its modification time and size stay the same.
struct Cached<T> {
    stamp: Option<(SystemTime, u64)>,
    value: Option<T>,
}

impl<T> Default for Cached<T> {
    fn default() -> Self {
        Self {
            stamp: None,
            value: None,
        }
    }
}

impl<T> Cached<T> {
    fn get(&mut self, path: &Path, parse: impl FnOnce(&Path) -> Option<T>) -> Option<&T> {
        let meta = fs::metadata(path).ok()?;
        let stamp = (meta.modified().ok()?, meta.len());
        if self.stamp != Some(stamp) || self.value.is_none() {
            self.value = parse(path);
            self.stamp = Some(stamp);
        }
        self.value.as_ref()
    }
}

/// A file's bytes, if it is no larger than `max`.
fn read_bounded(path: &Path, max: u64) -> Option<Vec<u8>> {
    let len = fs::metadata(path).ok()?.len();
    if len > max {
        log::warn!(
            "{} is {len} bytes, more than {max}: not read for container names",
            path.display()
        );
        return None;
    }
    fs::read(path).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apply_fills_names_once() {
        let mut identity = ContainerIdentity::from_cgroup_path(&format!(
            "/libpod_parent/libpod-{}",
            crate::attribution::container::test_ids::PODMAN_ID
        ));
        let names = RuntimeNames {
            runtime: runtime::PODMAN,
            name: Some("hog".into()),
            image: Some("localhost/memtrace-busybox:test".into()),
            ..RuntimeNames::default()
        };
        assert!(names.apply(&mut identity));
        assert!(!names.apply(&mut identity), "nothing new the second time");
        assert_eq!(identity.container_name.as_deref(), Some("hog"));
        assert_eq!(identity.name(), "hog");
        assert_eq!(
            identity.display_name(),
            "hog (localhost/memtrace-busybox:test)"
        );
    }

    #[test]
    fn cri_labels_name_the_pod_and_the_runtime_of_a_bare_id() {
        let mut identity = ContainerIdentity::from_cgroup_path(&format!(
            "/kubepods/burstable/pod0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d/{}",
            crate::attribution::container::test_ids::CONTAINERD_ID
        ));
        assert_eq!(identity.runtime, None);
        let labels: HashMap<String, String> = [
            (POD_NAMESPACE_LABEL, "shop"),
            (POD_NAME_LABEL, "hog-pod"),
            (CONTAINER_NAME_LABEL, "hog"),
            (
                "io.kubernetes.cri.image-name",
                "localhost/memtrace-busybox:test",
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let mut names = RuntimeNames::from_labels(runtime::CONTAINERD, &labels);
        names.name = Some("ignored-in-a-pod".into());
        assert!(names.apply(&mut identity));
        assert_eq!(identity.runtime, Some(runtime::CONTAINERD));
        assert_eq!(
            identity.display_name(),
            "shop/hog-pod/hog (localhost/memtrace-busybox:test)"
        );

        // The pod's own memcg, named by its container's labels once they carry its UID.
        let mut pod = ContainerIdentity::from_cgroup_path(
            "/kubepods/burstable/pod0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d",
        );
        assert!(!names.apply_pod(&mut pod), "no pod UID label");
        names.pod_uid = Some("0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d".into());
        assert!(names.apply_pod(&mut pod));
        assert_eq!(pod.display_name(), "shop/hog-pod");
        assert_eq!(pod.runtime, None);
        let mut other_pod = ContainerIdentity::from_cgroup_path(
            "/kubepods/burstable/pod51574d85-6f3d-4f54-8831-bcfd7eb5efa0",
        );
        assert!(!names.apply_pod(&mut other_pod));
    }
}
