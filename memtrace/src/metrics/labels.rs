//! The labels of a container's series, as cAdvisor and kube-state-metrics name them, so that
//! memtrace's series join theirs in `PromQL` (`on (namespace, pod, container)`).
//!
//! [`ContainerLabels::of`] is the one place that turns a cgroup and its [`ContainerIdentity`]
//! into labels. Labels are the container's names only: never a file, a slab cache or a pid,
//! whose number is unbounded.

use prometheus_client::encoding::EncodeLabelSet;

use crate::attribution::ContainerIdentity;

/// `namespace`, `pod` and `container` are the Kubernetes names (empty outside Kubernetes, as
/// cAdvisor leaves them); `id` is the cgroup path in the memory hierarchy, as cAdvisor's `id`;
/// `image` is the container's image where the runtime says.
#[derive(Clone, Debug, Default, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ContainerLabels {
    pub namespace: String,
    pub pod: String,
    pub container: String,
    pub image: String,
    pub id: String,
}

impl ContainerLabels {
    #[must_use]
    pub fn of(cgroup: Option<&str>, identity: Option<&ContainerIdentity>) -> Self {
        let field = |f: fn(&ContainerIdentity) -> Option<&String>| {
            identity.and_then(f).cloned().unwrap_or_default()
        };
        Self {
            namespace: field(|c| c.pod_namespace.as_ref()),
            pod: field(|c| c.pod_name.as_ref()),
            container: field(|c| c.container_name.as_ref()),
            image: field(|c| c.image.as_ref()),
            id: cgroup.unwrap_or_default().to_owned(),
        }
    }
}

/// An OOM kill's series: the container's labels and why it was killed, one of the fixed set
/// of [`VerdictKind`](crate::report::VerdictKind)s.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OomLabels {
    #[prometheus(flatten)]
    pub container: ContainerLabels,
    pub verdict: &'static str,
}

/// A memcg's kernel counter that comes in a few kinds, one series each: the container's labels
/// and one label from a fixed set (`event`, `kind` or `type`, as the kernel's file splits it).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabels {
    #[prometheus(flatten)]
    pub container: ContainerLabels,
    /// `memory.events`' key: `low`, `high`, `max`, `oom`, `oom_kill`, `oom_group_kill`.
    pub event: &'static str,
}

/// PSI's `some` or `full` line.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PressureLabels {
    #[prometheus(flatten)]
    pub container: ContainerLabels,
    pub kind: &'static str,
}

/// The working set's `anon` or `file` pages.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PageTypeLabels {
    #[prometheus(flatten)]
    pub container: ContainerLabels,
    pub r#type: &'static str,
}

/// Lost events, per kind of event (a fixed set: `LostKind`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LostLabels {
    pub kind: &'static str,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubernetes_names_and_the_cgroup_path() {
        let path = "/kubepods/burstable/pod0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0/\
                    4c01db0b339c5c5ba5f8e1b2a9d3e4f5061728394a5b6c7d8e9f0a1b2c3d4e5f";
        let mut identity = ContainerIdentity::from_cgroup_path(path);
        identity.pod_namespace = Some("shop".into());
        identity.pod_name = Some("cart-7d9f".into());
        identity.container_name = Some("cart".into());
        let labels = ContainerLabels::of(Some(path), Some(&identity));
        assert_eq!(
            (labels.namespace.as_str(), labels.pod.as_str()),
            ("shop", "cart-7d9f")
        );
        assert_eq!(labels.container, "cart");
        assert_eq!(labels.id, path);
    }

    #[test]
    fn unnamed_cgroups_have_only_their_path() {
        let labels = ContainerLabels::of(Some("/system.slice/cron.service"), None);
        assert_eq!(
            labels,
            ContainerLabels {
                id: "/system.slice/cron.service".into(),
                ..ContainerLabels::default()
            }
        );
    }
}
