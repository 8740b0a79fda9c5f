//! containerd's own record of its containers: the metadata store
//! (`/var/lib/containerd/io.containerd.metadata.v1.bolt/meta.db`), read-only.
//!
//! Layout (containerd's `metadata/buckets.go`):
//! `v1/<namespace>/containers/<id>/{image, labels/<key> = <value>, …}`. The CRI plugin
//! (Kubernetes) keeps its containers in the `k8s.io` namespace and labels them with the pod's
//! `io.kubernetes.pod.namespace`, `io.kubernetes.pod.name` and `io.kubernetes.container.name`;
//! `ctr run --label` sets the same labels by hand.

use std::collections::HashMap;

use super::{
    RuntimeNames,
    bolt::{Db, Value},
};
use crate::attribution::runtime;

/// Every container in every namespace of a metadata store, by id.
pub fn containers(db: &Db) -> HashMap<String, RuntimeNames> {
    let mut out = HashMap::new();
    let Some(v1) = db.root().bucket(b"v1") else {
        return out;
    };
    for (namespace, value) in v1.entries().unwrap_or_default() {
        let (Value::Bucket(namespace_bucket), Ok(namespace)) =
            (value, std::str::from_utf8(namespace))
        else {
            continue;
        };
        let Some(containers) = namespace_bucket.bucket(b"containers") else {
            continue;
        };
        for (id, value) in containers.entries().unwrap_or_default() {
            let (Value::Bucket(container), Ok(id)) = (value, std::str::from_utf8(id)) else {
                continue;
            };
            let labels: HashMap<String, String> = container
                .bucket(b"labels")
                .and_then(|l| l.entries().ok())
                .unwrap_or_default()
                .into_iter()
                .filter_map(|(k, v)| match v {
                    Value::Bytes(v) => Some((
                        String::from_utf8_lossy(k).into_owned(),
                        String::from_utf8_lossy(v).into_owned(),
                    )),
                    Value::Bucket(_) => None,
                })
                .collect();
            let image = container
                .get(b"image")
                .map(|i| String::from_utf8_lossy(i).into_owned())
                .filter(|i| !i.is_empty());
            let mut names = RuntimeNames::from_labels(runtime::CONTAINERD, &labels);
            names.image = names.image.or(image);
            // Outside Kubernetes a containerd container has no name but its id; nerdctl keeps
            // the name it shows as a label.
            names.name = labels.get("nerdctl/name").cloned();
            log::trace!("containerd namespace {namespace}: container {id}: {names:?}");
            out.insert(id.to_owned(), names);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{
        super::bolt::tests::{Builder, Item},
        *,
    };

    const ID: &str = "9d368194b819c50c9248357a287c30622a124ab37cddc6b9e3497cf6e7d19049";

    fn container(labels: Vec<Item>) -> Item {
        Item::Bucket(
            ID.as_bytes().to_vec().leak(),
            vec![
                Item::Bytes(b"image", b"localhost/memtrace-busybox:test".to_vec()),
                Item::Bytes(b"snapshotter", b"overlayfs".to_vec()),
                Item::Inline(b"labels", labels),
                Item::Inline(
                    b"runtime",
                    vec![Item::Bytes(b"name", b"io.containerd.runc.v2".to_vec())],
                ),
            ],
        )
    }

    #[test]
    fn names_containers_from_their_cri_labels_and_image() {
        let file = Builder::new().file(vec![Item::Bucket(
            b"v1",
            vec![
                Item::Bytes(b"version", b"3".to_vec()),
                Item::Bucket(
                    b"k8s.io",
                    vec![
                        Item::Bucket(
                            b"containers",
                            vec![container(vec![
                                Item::Bytes(b"io.kubernetes.pod.namespace", b"shop".to_vec()),
                                Item::Bytes(b"io.kubernetes.pod.name", b"hog-pod".to_vec()),
                                Item::Bytes(b"io.kubernetes.container.name", b"hog".to_vec()),
                            ])],
                        ),
                        Item::Inline(b"images", vec![]),
                    ],
                ),
            ],
        )]);
        let db = Db::parse(file).expect("parses");
        let found = containers(&db);
        let names = &found[ID];
        assert_eq!(names.runtime, runtime::CONTAINERD);
        assert_eq!(names.pod_namespace.as_deref(), Some("shop"));
        assert_eq!(names.pod_name.as_deref(), Some("hog-pod"));
        assert_eq!(names.container_name.as_deref(), Some("hog"));
        assert_eq!(
            names.image.as_deref(),
            Some("localhost/memtrace-busybox:test")
        );
    }

    #[test]
    fn a_store_without_containers_names_nothing() {
        let file = Builder::new().file(vec![Item::Inline(b"v1", vec![])]);
        assert!(containers(&Db::parse(file).expect("parses")).is_empty());
    }
}
