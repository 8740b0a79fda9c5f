//! containers/storage, the store podman and CRI-O share: `containers.json` lists every
//! container with its names, image and a runtime-defined metadata string; the OCI spec each
//! runtime wrote for a container (`<driver>-containers/<id>/userdata/config.json`) carries
//! CRI-O's Kubernetes annotations.
//!
//! Podman's metadata is `{"image-name", "image-id", "name", "created-at"}`; CRI-O's adds
//! `"pod-name"`, `"namespace"` and `"metadata-name"` (the Kubernetes container name).

use std::{
    collections::HashMap,
    fs,
    path::{Path, PathBuf},
};

use serde::Deserialize;

use super::{MAX_DB_BYTES, RuntimeNames, read_bounded};
use crate::attribution::runtime;

/// The store's persistent root and its run-time root (containers made with `--rm` and CRI-O's
/// specs live there).
const GRAPH_ROOT: &str = "var/lib/containers/storage";
const RUN_ROOT: &str = "run/containers/storage";

/// A container as `containers.json` lists it.
#[derive(Clone, Debug, Deserialize)]
pub struct Entry {
    id: String,
    #[serde(default)]
    names: Vec<String>,
    /// The image's id.
    #[serde(default)]
    image: String,
    /// JSON, as a string.
    #[serde(default)]
    metadata: String,
}

#[derive(Default, Deserialize)]
struct Metadata {
    #[serde(rename = "image-name")]
    image_name: Option<String>,
    name: Option<String>,
    #[serde(rename = "pod-name")]
    pod_name: Option<String>,
    namespace: Option<String>,
    /// The Kubernetes container name.
    #[serde(rename = "metadata-name")]
    kubernetes_name: Option<String>,
}

#[derive(Default, Deserialize)]
struct Spec {
    #[serde(default)]
    annotations: HashMap<String, String>,
}

/// Every container list of the store under `root`, one per storage driver (`overlay`, `vfs`,
/// `btrfs`, …).
pub fn container_lists(root: &Path) -> Vec<PathBuf> {
    let mut lists = Vec::new();
    for (dir, file) in [
        (GRAPH_ROOT, "containers.json"),
        (RUN_ROOT, "volatile-containers.json"),
    ] {
        let Ok(entries) = fs::read_dir(root.join(dir)) else {
            continue;
        };
        let mut found: Vec<PathBuf> = entries
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with("-containers"))
            .map(|e| e.path().join(file))
            .filter(|p| p.is_file())
            .collect();
        found.sort();
        lists.extend(found);
    }
    lists
}

/// A container list by id.
pub fn read_list(path: &Path) -> Option<HashMap<String, Entry>> {
    let data = read_bounded(path, MAX_DB_BYTES)?;
    let entries: Vec<Entry> = serde_json::from_slice(&data)
        .inspect_err(|e| log::debug!("{}: {e}", path.display()))
        .ok()?;
    Some(entries.into_iter().map(|e| (e.id.clone(), e)).collect())
}

/// The names of container `id`, listed in `list` as `entry`.
pub fn names(root: &Path, list: &Path, id: &str, entry: &Entry) -> RuntimeNames {
    let metadata: Metadata = serde_json::from_str(&entry.metadata).unwrap_or_default();
    let is_crio = metadata.pod_name.is_some() && metadata.namespace.is_some();
    let runtime = if is_crio {
        runtime::CRIO
    } else {
        runtime::PODMAN
    };
    let mut names = RuntimeNames::from_labels(runtime, &annotations(root, list, id));
    names.name = metadata.name.or_else(|| entry.names.first().cloned());
    if is_crio {
        names.pod_namespace = names.pod_namespace.or(metadata.namespace);
        names.pod_name = names.pod_name.or(metadata.pod_name);
        names.container_name = names.container_name.or(metadata.kubernetes_name);
    }
    names.image = names
        .image
        .or(metadata.image_name)
        .filter(|i| !i.is_empty())
        .or_else(|| entry.image.get(..12).map(str::to_owned));
    names
}

/// The annotations of the OCI spec the runtime wrote for `id`: podman keeps it under the
/// persistent root, CRI-O under the run-time root.
fn annotations(root: &Path, list: &Path, id: &str) -> HashMap<String, String> {
    let Some(driver_dir) = list.parent().and_then(Path::file_name) else {
        return HashMap::new();
    };
    [RUN_ROOT, GRAPH_ROOT]
        .into_iter()
        .map(|store| {
            root.join(store)
                .join(driver_dir)
                .join(id)
                .join("userdata/config.json")
        })
        .find_map(|spec| {
            let data = read_bounded(&spec, 16 << 20)?;
            serde_json::from_slice::<Spec>(&data).ok()
        })
        .map(|spec| spec.annotations)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attribution::{
        RuntimeState,
        container::test_ids::{CRIO_ID, PODMAN_ID},
    };

    fn write(path: &Path, content: &str) {
        fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        fs::write(path, content).expect("write");
    }

    #[test]
    fn podman_and_crio_containers_by_id() {
        let root = tempfile::tempdir().expect("tempdir");
        let graph = root.path().join(GRAPH_ROOT).join("overlay-containers");
        // As podman 4.3 and CRI-O 1.28 write them.
        write(
            &graph.join("containers.json"),
            &serde_json::json!([
                {
                    "id": PODMAN_ID,
                    "names": ["hog"],
                    "image": "c0ed76f4bd463913c6006d57304567d15465886d4bf2170e02bd38c378740510",
                    "layer": "34c531db5c077f2e00fccf8d771efdb1a7dd58af66aa0dfe54241d910255b015",
                    "metadata": "{\"image-name\":\"localhost/memtrace-busybox:test\",\"image-id\":\"c0ed76f4bd463913c6006d57304567d15465886d4bf2170e02bd38c378740510\",\"name\":\"hog\",\"created-at\":1795939013}",
                },
                {
                    "id": CRIO_ID,
                    "names": ["k8s_api_checkout-7d9f_shop_0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0_0"],
                    "image": "16811efc271c3a1a1d1e8d0b5f6f3b5c8e3c3d0b8a1f0e9d8c7b6a5f4e3d2c1b",
                    "metadata": "{\"pod-name\":\"checkout-7d9f\",\"pod-id\":\"9f3b\",\"image-name\":\"registry.local/shop/api:1.4\",\"name\":\"k8s_api_checkout-7d9f_shop_0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0_0\",\"metadata-name\":\"api\",\"namespace\":\"shop\"}",
                },
            ])
            .to_string(),
        );
        write(
            &root
                .path()
                .join(RUN_ROOT)
                .join("overlay-containers")
                .join(CRIO_ID)
                .join("userdata/config.json"),
            &serde_json::json!({
                "ociVersion": "1.0.2",
                "annotations": {
                    "io.kubernetes.pod.namespace": "shop",
                    "io.kubernetes.pod.name": "checkout-7d9f",
                    "io.kubernetes.container.name": "api",
                    "io.kubernetes.cri-o.ImageName": "registry.local/shop/api:1.4",
                },
            })
            .to_string(),
        );
        let mut state = RuntimeState::new(root.path());
        let podman = state
            .lookup(Some(runtime::PODMAN), PODMAN_ID)
            .expect("podman");
        assert_eq!(podman.runtime, runtime::PODMAN);
        assert_eq!(podman.name.as_deref(), Some("hog"));
        assert_eq!(
            podman.image.as_deref(),
            Some("localhost/memtrace-busybox:test")
        );
        assert_eq!(podman.pod_name, None);

        let crio = state.lookup(Some(runtime::CRIO), CRIO_ID).expect("cri-o");
        assert_eq!(crio.runtime, runtime::CRIO);
        assert_eq!(crio.pod_namespace.as_deref(), Some("shop"));
        assert_eq!(crio.pod_name.as_deref(), Some("checkout-7d9f"));
        assert_eq!(crio.container_name.as_deref(), Some("api"));
        assert_eq!(crio.image.as_deref(), Some("registry.local/shop/api:1.4"));

        assert_eq!(state.lookup(None, &"0".repeat(64)), None);
    }

    #[test]
    fn a_broken_list_names_nothing() {
        let root = tempfile::tempdir().expect("tempdir");
        write(
            &root
                .path()
                .join(GRAPH_ROOT)
                .join("overlay-containers/containers.json"),
            "[{\"id\": ",
        );
        assert_eq!(RuntimeState::new(root.path()).lookup(None, PODMAN_ID), None);
    }
}
