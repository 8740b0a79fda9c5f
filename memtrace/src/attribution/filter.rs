//! `--cgroup`, `--container`, `--pod`: which memcgs the user asked about.

use super::ContainerIdentity;

/// Empty filter: everything matches. Each given criterion must match.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    /// Cgroup subtree: the path itself and everything below it.
    pub cgroup: Option<String>,
    /// Container id prefix (as `docker ps` shows 12 characters, or more).
    pub container: Option<String>,
    /// Pod UID, pod name, or `namespace/name`.
    pub pod: Option<String>,
}

impl Filter {
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.cgroup.is_none() && self.container.is_none() && self.pod.is_none()
    }

    /// Whether an event about `cgroup` (with its `identity`) is wanted. An event without a known
    /// cgroup matches only the empty filter.
    #[must_use]
    pub fn matches(&self, cgroup: Option<&str>, identity: Option<&ContainerIdentity>) -> bool {
        if self.is_empty() {
            return true;
        }
        let Some(cgroup) = cgroup else {
            return false;
        };
        if let Some(subtree) = &self.cgroup {
            let subtree = subtree.trim_end_matches('/');
            let below = cgroup
                .strip_prefix(subtree)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'));
            if !(below || subtree.is_empty()) {
                return false;
            }
        }
        if let Some(prefix) = &self.container
            && !identity
                .and_then(|i| i.container_id.as_deref())
                .is_some_and(|id| id.starts_with(prefix.as_str()))
        {
            return false;
        }
        if let Some(pod) = &self.pod
            && !identity.is_some_and(|i| pod_matches(i, pod))
        {
            return false;
        }
        true
    }
}

fn pod_matches(identity: &ContainerIdentity, wanted: &str) -> bool {
    let uid = identity.pod_uid.as_deref();
    let name = identity.pod_name.as_deref();
    let namespaced = identity
        .pod_namespace
        .as_deref()
        .zip(name)
        .map(|(ns, name)| format!("{ns}/{name}"));
    uid == Some(wanted) || name == Some(wanted) || namespaced.as_deref() == Some(wanted)
}

#[cfg(test)]
mod tests {
    use super::*;

    const POD: &str = "/kubepods/burstable/pod0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0";
    const CTR: &str = "4c01db0b339c5c5ba5f8e1b2a9d3e4f5061728394a5b6c7d8e9f0a1b2c3d4e5f";

    fn identity(path: &str) -> ContainerIdentity {
        ContainerIdentity::from_cgroup_path(path)
    }

    #[test]
    fn subtree_means_the_path_and_below_not_siblings_with_the_same_prefix() {
        let f = Filter {
            cgroup: Some("/a/b".into()),
            ..Filter::default()
        };
        assert!(f.matches(Some("/a/b"), None));
        assert!(f.matches(Some("/a/b/c"), None));
        assert!(!f.matches(Some("/a/bc"), None));
        assert!(!f.matches(Some("/a"), None));
        assert!(!f.matches(None, None));
        let root = Filter {
            cgroup: Some("/".into()),
            ..Filter::default()
        };
        assert!(root.matches(Some("/anything"), None));
    }

    #[test]
    fn container_prefix_and_pod_uid_or_name() {
        let path = format!("{POD}/{CTR}");
        let mut id = identity(&path);
        let f = Filter {
            container: Some(CTR[..12].into()),
            ..Filter::default()
        };
        assert!(f.matches(Some(&path), Some(&id)));
        assert!(!f.matches(Some(POD), Some(&identity(POD))));

        let by_uid = Filter {
            pod: Some("0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0".into()),
            ..Filter::default()
        };
        assert!(by_uid.matches(Some(&path), Some(&id)));
        id.pod_namespace = Some("shop".into());
        id.pod_name = Some("cart-7d9f".into());
        for wanted in ["cart-7d9f", "shop/cart-7d9f"] {
            let by_name = Filter {
                pod: Some(wanted.into()),
                ..Filter::default()
            };
            assert!(by_name.matches(Some(&path), Some(&id)), "{wanted}");
        }
        assert!(Filter::default().matches(None, None));
    }
}
