//! Whose memory a memcg holds, from its cgroup path alone.
//!
//! Container runtimes, the kubelet and systemd all name the cgroups they create after what runs
//! in them, so the path says which container, pod or service a memcg belongs to without asking a
//! runtime socket or the API server — which may be slow, remote, or the very thing that is out of
//! memory. The same names appear on cgroup v1, hybrid and v2 hosts; only the mount point differs,
//! and that is not part of the path given here.
//!
//! The path is read from the root down and the innermost pod and container win, so a pod inside a
//! kind or k3d node (itself a Docker container) is attributed to the pod, not to the node. A
//! cgroup below a recognised container (crun's `container` sub-cgroup, systemd running inside the
//! container) still belongs to that container.
//!
//! The path gives ids; the names people know (the container's name, its image, its pod) are
//! added from the runtime's own state on the node ([`RuntimeState`](super::RuntimeState)) and,
//! failing that, the kubelet's log directories ([`PodDirectory`](super::PodDirectory)).

use std::fmt;

/// The values of [`ContainerIdentity::runtime`].
pub mod runtime {
    pub const DOCKER: &str = "docker";
    pub const CONTAINERD: &str = "containerd";
    pub const CRIO: &str = "cri-o";
    /// CRI-O's per-container monitor process: the id is the container it watches, but the memory
    /// is conmon's own, not the container's.
    pub const CRIO_CONMON: &str = "crio-conmon";
    pub const PODMAN: &str = "podman";
    /// Podman's per-container monitor process, as [`CRIO_CONMON`] for CRI-O.
    pub const PODMAN_CONMON: &str = "podman-conmon";

    /// The constant spelled `name`, for reading identities back from a trace file.
    #[must_use]
    pub fn from_name(name: &str) -> Option<&'static str> {
        [DOCKER, CONTAINERD, CRIO, CRIO_CONMON, PODMAN, PODMAN_CONMON]
            .into_iter()
            .find(|&known| known == name)
    }
}

/// A Kubernetes pod's quality-of-service class, which decides where the kubelet puts the pod's
/// cgroup.
///
/// Serialized as Kubernetes spells it in `pod.status.qosClass` (`"Guaranteed"`, `"Burstable"`,
/// `"BestEffort"`), so JSON output can be compared with `kubectl get pod -o json` directly.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum QosClass {
    Guaranteed,
    Burstable,
    BestEffort,
}

impl QosClass {
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Guaranteed => "Guaranteed",
            Self::Burstable => "Burstable",
            Self::BestEffort => "BestEffort",
        }
    }

    /// The class from the cgroup level the kubelet puts a pod under: `burstable` and
    /// `besteffort` have a level of their own, Guaranteed pods sit directly under `kubepods`.
    fn from_level(level: &str) -> Option<Self> {
        match level {
            "kubepods" => Some(Self::Guaranteed),
            "burstable" => Some(Self::Burstable),
            "besteffort" => Some(Self::BestEffort),
            _ => None,
        }
    }
}

impl fmt::Display for QosClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a [`ContainerIdentity`] identifies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdentityKind {
    /// A container (possibly in a pod); for conmon scopes, the container's monitor.
    Container,
    /// A pod's own cgroup, above its containers.
    Pod,
    /// A systemd service, scope or slice that is not a container.
    SystemdUnit,
    /// The root cgroup, or a path in no shape memtrace knows.
    Unknown,
}

/// The container, pod or systemd unit a memcg belongs to.
///
/// Fields that are not known are left out of the JSON rather than written as `null`, so an event
/// for a plain systemd service does not carry six empty Kubernetes fields. Trace files store
/// the same JSON, also inside postcard (as a string), so that adding a field keeps old files
/// readable; version 3 files used a fixed binary layout ([`with_version_3_layout`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContainerIdentity {
    /// One of the [`runtime`] constants; `None` for a bare container id whose parent does not
    /// name the runtime (the kubelet's cgroupfs driver, a custom `--cgroup-parent`). Reading back
    /// a name this version does not know (a trace from a newer memtrace) gives `None`.
    pub runtime: Option<&'static str>,
    /// The full id as it appears in the path (64 hex digits).
    pub container_id: Option<String>,
    /// The pod's UID as the API server spells it (with dashes).
    pub pod_uid: Option<String>,
    pub qos_class: Option<QosClass>,
    /// The innermost systemd unit, systemd's escaping undone; only for memcgs that are not a
    /// container or pod.
    pub systemd_unit: Option<String>,
    /// From the runtime's own state on the node (the CRI labels `io.kubernetes.pod.*`, see
    /// [`RuntimeState`](super::RuntimeState)) or the kubelet's log directories
    /// ([`PodDirectory`](super::PodDirectory)), not from the path.
    pub pod_namespace: Option<String>,
    pub pod_name: Option<String>,
    /// The Kubernetes container name (`io.kubernetes.container.name`) in a pod; outside
    /// Kubernetes, the name the runtime gave the container (`podman run --name hog`).
    pub container_name: Option<String>,
    /// The image the container runs, as the runtime names it (`docker.io/library/nginx:1.27`).
    pub image: Option<String>,
}

thread_local! {
    /// Whether identities are (de)serialized in trace format 3's binary layout: while a
    /// version 3 file is read, or its encoding is pinned.
    static VERSION_3_LAYOUT: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` with identities in binary (postcard) form laid out as trace format 3 wrote them:
/// the eight fields before `image`, one after another. From version 4 on, the binary form is
/// the JSON object as a string, so that a field added later does not change the format again.
pub(crate) fn with_version_3_layout<T>(f: impl FnOnce() -> T) -> T {
    struct Reset(bool);
    impl Drop for Reset {
        fn drop(&mut self) {
            VERSION_3_LAYOUT.with(|v| v.set(self.0));
        }
    }
    let _reset = Reset(VERSION_3_LAYOUT.with(|v| v.replace(true)));
    f()
}

fn version_3_layout() -> bool {
    VERSION_3_LAYOUT.with(std::cell::Cell::get)
}

/// [`ContainerIdentity`] as read back, with an owned runtime name: a derived `Deserialize` would
/// try to borrow the `&'static str` from the input, which only works for `'static` input.
#[derive(Default, serde::Deserialize)]
#[serde(default)]
struct StoredIdentity {
    runtime: Option<String>,
    container_id: Option<String>,
    pod_uid: Option<String>,
    qos_class: Option<QosClass>,
    systemd_unit: Option<String>,
    pod_namespace: Option<String>,
    pod_name: Option<String>,
    container_name: Option<String>,
    image: Option<String>,
}

/// Trace format 3's binary layout of an identity: every field but `image`, in order.
#[derive(serde::Deserialize)]
struct Version3Identity {
    runtime: Option<String>,
    container_id: Option<String>,
    pod_uid: Option<String>,
    qos_class: Option<QosClass>,
    systemd_unit: Option<String>,
    pod_namespace: Option<String>,
    pod_name: Option<String>,
    container_name: Option<String>,
}

impl serde::Serialize for ContainerIdentity {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct as _;
        let human = serializer.is_human_readable();
        if !human && !version_3_layout() {
            let json = serde_json::to_string(self).map_err(serde::ser::Error::custom)?;
            return serializer.serialize_str(&json);
        }
        let mut s = serializer.serialize_struct("ContainerIdentity", 9)?;
        macro_rules! fields {
            ($($name:ident),+) => {$(
                if human && self.$name.is_none() {
                    s.skip_field(stringify!($name))?;
                } else {
                    s.serialize_field(stringify!($name), &self.$name)?;
                }
            )+};
        }
        fields!(
            runtime,
            container_id,
            pod_uid,
            qos_class,
            systemd_unit,
            pod_namespace,
            pod_name,
            container_name
        );
        if human {
            fields!(image);
        }
        s.end()
    }
}

impl<'de> serde::Deserialize<'de> for ContainerIdentity {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if deserializer.is_human_readable() {
            return StoredIdentity::deserialize(deserializer).map(Self::from);
        }
        if version_3_layout() {
            let v3 = Version3Identity::deserialize(deserializer)?;
            return Ok(Self::from(StoredIdentity {
                runtime: v3.runtime,
                container_id: v3.container_id,
                pod_uid: v3.pod_uid,
                qos_class: v3.qos_class,
                systemd_unit: v3.systemd_unit,
                pod_namespace: v3.pod_namespace,
                pod_name: v3.pod_name,
                container_name: v3.container_name,
                image: None,
            }));
        }
        let json = String::deserialize(deserializer)?;
        serde_json::from_str::<StoredIdentity>(&json)
            .map(Self::from)
            .map_err(serde::de::Error::custom)
    }
}

impl From<StoredIdentity> for ContainerIdentity {
    fn from(stored: StoredIdentity) -> Self {
        Self {
            runtime: stored.runtime.as_deref().and_then(runtime::from_name),
            container_id: stored.container_id,
            pod_uid: stored.pod_uid,
            qos_class: stored.qos_class,
            systemd_unit: stored.systemd_unit,
            pod_namespace: stored.pod_namespace,
            pod_name: stored.pod_name,
            container_name: stored.container_name,
            image: stored.image,
        }
    }
}

impl ContainerIdentity {
    /// Parses a cgroup path relative to its hierarchy (`/kubepods.slice/…`), as the kernel and
    /// `/proc/<pid>/cgroup` give it. A path that still carries the mount point
    /// (`/sys/fs/cgroup/memory/docker/…`) works too. Never fails: what is not recognised is
    /// [`IdentityKind::Unknown`].
    #[must_use]
    pub fn from_cgroup_path(path: &str) -> Self {
        let mut identity = Self::default();
        let mut unit = None;
        // The two segments above the current one: the cgroupfs driver spells the QoS class as
        // the pod's parent directory, and Docker's cgroupfs driver the runtime as the
        // container's.
        let mut above: [&str; 2] = ["", ""];
        for segment in path.trim().split('/').filter(|s| !s.is_empty()) {
            if let Some((uid, qos)) = pod_segment(segment, above) {
                // A pod is always inside whatever container came before it (a kind or k3d node);
                // the containers that matter are the pod's own, further down.
                identity.set_pod(uid, qos);
            } else if let Some((runtime, id)) = container_segment(segment, above[1]) {
                identity.set_container(runtime, id);
            } else if let Some((uid, qos, runtime, id)) = runc_systemd_segment(segment) {
                identity.set_pod(uid, qos);
                identity.set_container(runtime, id);
            } else if is_unit_name(segment) {
                unit = Some(segment);
            }
            above = [above[1], segment];
        }
        if identity.pod_uid.is_none() && identity.container_id.is_none() {
            identity.systemd_unit = unit.map(unescape_unit_name);
        }
        identity
    }

    fn set_pod(&mut self, uid: String, qos: QosClass) {
        self.pod_uid = Some(uid);
        self.qos_class = Some(qos);
        self.runtime = None;
        self.container_id = None;
    }

    fn set_container(&mut self, runtime: Option<&'static str>, id: &str) {
        self.runtime = runtime;
        self.container_id = Some(id.to_owned());
    }

    #[must_use]
    pub fn kind(&self) -> IdentityKind {
        if self.container_id.is_some() {
            IdentityKind::Container
        } else if self.pod_uid.is_some() {
            IdentityKind::Pod
        } else if self.systemd_unit.is_some() {
            IdentityKind::SystemdUnit
        } else {
            IdentityKind::Unknown
        }
    }

    /// Whether this is a conmon scope: the monitor of the container named by `container_id`,
    /// not the container itself.
    #[must_use]
    pub fn is_conmon(&self) -> bool {
        matches!(
            self.runtime,
            Some(runtime::CRIO_CONMON | runtime::PODMAN_CONMON)
        )
    }

    /// The first 12 characters of the container id, as `docker ps` and `crictl ps` show it.
    #[must_use]
    pub fn short_id(&self) -> Option<&str> {
        self.container_id
            .as_deref()
            .map(|id| id.get(..12).unwrap_or(id))
    }

    /// A short name for people, with the image the container runs: `namespace/pod/container`
    /// when the runtime's labels or the kubelet's files named the pod, else the container's own
    /// name (`hog`), `runtime:shortid`, `pod:<uid>`, the systemd unit, or `-`; then
    /// ` (image)` when the runtime said which.
    #[must_use]
    pub fn display_name(&self) -> String {
        self.to_string()
    }

    /// How many of the names people know (pod namespace and name, container name, image) the
    /// identity has: names read from a runtime's state after a container's first events make
    /// later identities of the same container know more.
    #[must_use]
    pub fn known_names(&self) -> usize {
        [
            &self.pod_namespace,
            &self.pod_name,
            &self.container_name,
            &self.image,
        ]
        .into_iter()
        .filter(|name| name.is_some())
        .count()
    }

    /// [`display_name`](Self::display_name) without the image.
    #[must_use]
    pub fn name(&self) -> String {
        let mut name = String::new();
        let _ = self.write_name(&mut name);
        name
    }

    fn write_name(&self, f: &mut impl fmt::Write) -> fmt::Result {
        if let (Some(namespace), Some(pod)) = (&self.pod_namespace, &self.pod_name) {
            write!(f, "{namespace}/{pod}")?;
            if let Some(container) = self.container_name.as_deref().or(self.short_id()) {
                write!(f, "/{container}")?;
            }
        } else if let (Some(name), Some(_)) = (&self.container_name, &self.container_id) {
            f.write_str(name)?;
        } else if let Some(short_id) = self.short_id() {
            write!(f, "{}:{short_id}", self.runtime.unwrap_or("container"))?;
        } else if let Some(uid) = &self.pod_uid {
            write!(f, "pod:{uid}")?;
        } else if let Some(unit) = &self.systemd_unit {
            f.write_str(unit)?;
        } else {
            f.write_str("-")?;
        }
        if self.is_conmon() && (self.pod_name.is_some() || self.container_name.is_some()) {
            f.write_str(" (conmon)")?;
        }
        Ok(())
    }
}

impl fmt::Display for ContainerIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write_name(f)?;
        // conmon runs no image: the one named is its container's.
        if let Some(image) = self.image.as_deref().filter(|_| !self.is_conmon()) {
            write!(f, " ({image})")?;
        }
        Ok(())
    }
}

/// Runtime prefixes of `<prefix>-<id>.scope` (systemd driver) and `<prefix>-<id>` (CRI-O's
/// cgroupfs driver).
const RUNTIME_PREFIXES: [(&str, &str); 6] = [
    ("docker", runtime::DOCKER),
    ("cri-containerd", runtime::CONTAINERD),
    ("crio-conmon", runtime::CRIO_CONMON),
    ("crio", runtime::CRIO),
    ("libpod-conmon", runtime::PODMAN_CONMON),
    ("libpod", runtime::PODMAN),
];

/// A pod's cgroup: `kubepods[-<qos>]-pod<uid>.slice` (systemd driver) or `pod<uid>` under
/// `kubepods[/<qos>]` (cgroupfs driver).
fn pod_segment(segment: &str, above: [&str; 2]) -> Option<(String, QosClass)> {
    if let Some(slice) = segment.strip_suffix(".slice") {
        return pod_slice(slice);
    }
    let uid = segment.strip_prefix("pod").filter(|uid| is_pod_uid(uid))?;
    let qos = match above {
        [_, "kubepods"] => QosClass::Guaranteed,
        ["kubepods", level @ ("burstable" | "besteffort")] => QosClass::from_level(level)?,
        _ => return None,
    };
    Some((uid.to_owned(), qos))
}

/// `kubepods-burstable-pod<uid>` without `.slice`. In a slice name `-` means "child of": systemd
/// derives `kubepods-burstable-podX.slice`'s parent, `kubepods-burstable.slice`, by cutting at the
/// last dash. A UID's own dashes would create bogus parents, so the kubelet writes them as `_`
/// (`escapeSystemdCgroupName`). kind and nested setups prefix the lot with `kubelet-`.
fn pod_slice(slice: &str) -> Option<(String, QosClass)> {
    let (parent, pod) = slice.rsplit_once('-')?;
    let uid = pod.strip_prefix("pod")?.replace('_', "-");
    if !is_pod_uid(&uid) {
        return None;
    }
    let mut levels = parent.rsplit('-');
    let qos = match (levels.next(), levels.next()) {
        (Some("kubepods"), _) => QosClass::Guaranteed,
        (Some(level @ ("burstable" | "besteffort")), Some("kubepods")) => {
            QosClass::from_level(level)?
        }
        _ => return None,
    };
    Some((uid, qos))
}

/// A container's cgroup: `<prefix>-<id>[.scope]`, or a bare id (Docker's and the kubelet's
/// cgroupfs drivers), whose runtime is only known when the parent is Docker's `/docker`.
fn container_segment<'a>(
    segment: &'a str,
    parent: &str,
) -> Option<(Option<&'static str>, &'a str)> {
    if is_container_id(segment) {
        return Some(((parent == "docker").then_some(runtime::DOCKER), segment));
    }
    let stem = segment.strip_suffix(".scope").unwrap_or(segment);
    RUNTIME_PREFIXES.iter().find_map(|&(prefix, runtime)| {
        let id = stem.strip_prefix(prefix)?.strip_prefix('-')?;
        is_container_id(id).then_some((Some(runtime), id))
    })
}

/// `kubepods-burstable-pod<uid>.slice:cri-containerd:<id>`: runc's notation for "this scope in
/// that slice". On v1 hosts, controllers that systemd does not manage get it as a literal
/// directory name under the runtime's service.
fn runc_systemd_segment(segment: &str) -> Option<(String, QosClass, Option<&'static str>, &str)> {
    let mut parts = segment.split(':');
    let (Some(slice), Some(prefix), Some(id), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    let (uid, qos) = pod_slice(slice.strip_suffix(".slice")?)?;
    let &(_, runtime) = RUNTIME_PREFIXES.iter().find(|(p, _)| *p == prefix)?;
    is_container_id(id).then_some((uid, qos, Some(runtime), id))
}

/// Docker, containerd, CRI-O and Podman ids are all 32 random bytes in hex.
pub(super) fn is_container_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A pod UID: a UUID for pods from the API server, or 32 hex digits without dashes for static
/// pods, whose UID the kubelet derives from an MD5 of the manifest (kube-apiserver, etcd, …).
pub(super) fn is_pod_uid(s: &str) -> bool {
    let b = s.as_bytes();
    match b.len() {
        36 => b.iter().enumerate().all(|(i, &c)| {
            if matches!(i, 8 | 13 | 18 | 23) {
                c == b'-'
            } else {
                c.is_ascii_hexdigit()
            }
        }),
        32 => b.iter().all(u8::is_ascii_hexdigit),
        _ => false,
    }
}

/// Unit types that get a cgroup of their own.
const UNIT_SUFFIXES: [&str; 6] = [".service", ".scope", ".slice", ".socket", ".mount", ".swap"];

/// systemd unit names are ASCII: anything else is escaped as `\xNN` before it becomes a name.
fn is_unit_name(segment: &str) -> bool {
    UNIT_SUFFIXES.iter().any(|suffix| {
        segment.strip_suffix(suffix).is_some_and(|stem| {
            !stem.is_empty()
                && stem
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b":-_.\\@".contains(&b))
        })
    })
}

/// Undoes systemd's `\xNN` escaping (`system-systemd\x2dfsck.slice` is the slice of
/// `systemd-fsck@.service`: a literal `-` has to be escaped because `-` means "child of" in
/// slice names). Only the escapes are undone: turning `-` back into `/`, as
/// `systemd-escape --unescape --path` does, would lose the slice hierarchy. Escapes that decode
/// to control characters stay escaped so that a name cannot garble a terminal.
fn unescape_unit_name(name: &str) -> String {
    let bytes = name.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'\\' && bytes.get(i + 1) == Some(&b'x') {
            let hex = |j: usize| bytes.get(j).and_then(|&d| char::from(d).to_digit(16));
            if let (Some(hi), Some(lo)) = (hex(i + 2), hex(i + 3)) {
                let decoded = u8::try_from(hi << 4 | lo).unwrap_or(b'?');
                if !decoded.is_ascii_control() {
                    out.push(decoded);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(b);
        i += 1;
    }
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// Real-looking container ids (64 hex digits), for the tests here and in `pods`.
#[cfg(test)]
pub(super) mod test_ids {
    pub const DOCKER_ID: &str = "9d6415444f18f3d3bfad03f16f37cec52c74e2eb9e85bd9e32d392bccb29232c";
    pub const CONTAINERD_ID: &str =
        "119ffdd721f0ffd388e7b457e0da8e7b67c49d5f0583af2015b4f5d662d03e25";
    pub const CRIO_ID: &str = "3208f9971fef6da28054ee29dafd44ff0a2517a21b2cbdf14ec8925273c4059c";
    pub const PODMAN_ID: &str = "ec05ca7f86fdeaff214366c7795cd8e0096302368052ebfc764a555fb4fce263";
    pub const NODE_ID: &str = "56dadb9249a07fb7bd79fed6188508e6b3d5ecb21236a2f6b0940b11cc5d6f6b";
}

#[cfg(test)]
mod tests {
    use super::{test_ids::*, *};

    // UUIDs for pods.
    const UID: &str = "a408b6dc-d67e-49a5-b6d0-1a2fc60b0bc8";
    const UID_SYSTEMD: &str = "a408b6dc_d67e_49a5_b6d0_1a2fc60b0bc8";
    const STATIC_UID: &str = "3ed1e8a1f54d8333aab30b0ce19de686";

    fn container(runtime: Option<&'static str>, id: &str) -> ContainerIdentity {
        ContainerIdentity {
            runtime,
            container_id: Some(id.into()),
            ..ContainerIdentity::default()
        }
    }

    fn pod(uid: &str, qos: QosClass) -> ContainerIdentity {
        ContainerIdentity {
            pod_uid: Some(uid.into()),
            qos_class: Some(qos),
            ..ContainerIdentity::default()
        }
    }

    fn in_pod(
        uid: &str,
        qos: QosClass,
        runtime: Option<&'static str>,
        id: &str,
    ) -> ContainerIdentity {
        ContainerIdentity {
            runtime,
            container_id: Some(id.into()),
            ..pod(uid, qos)
        }
    }

    fn unit(name: &str) -> ContainerIdentity {
        ContainerIdentity {
            systemd_unit: Some(name.into()),
            ..ContainerIdentity::default()
        }
    }

    fn unknown() -> ContainerIdentity {
        ContainerIdentity::default()
    }

    #[expect(
        clippy::too_many_lines,
        reason = "one table row per real-world path shape reads better than many tests"
    )]
    fn cases() -> Vec<(String, ContainerIdentity)> {
        use QosClass::{BestEffort, Burstable, Guaranteed};
        use runtime::{CONTAINERD, CRIO, CRIO_CONMON, DOCKER, PODMAN, PODMAN_CONMON};
        let burstable_slice = format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_SYSTEMD}.slice"
        );
        let besteffort_slice = format!(
            "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_SYSTEMD}.slice"
        );
        let guaranteed_slice = format!("/kubepods.slice/kubepods-pod{UID_SYSTEMD}.slice");
        let cri_scope = format!("cri-containerd-{CONTAINERD_ID}.scope");
        let short = &DOCKER_ID[..12];
        vec![
            // Docker, systemd driver (v2, and v1's memory hierarchy alike).
            (
                format!("/system.slice/docker-{DOCKER_ID}.scope"),
                container(Some(DOCKER), DOCKER_ID),
            ),
            // Docker, cgroupfs driver.
            (
                format!("/docker/{DOCKER_ID}"),
                container(Some(DOCKER), DOCKER_ID),
            ),
            // A path that still has the v1 mount point in it.
            (
                format!("/sys/fs/cgroup/memory/docker/{DOCKER_ID}"),
                container(Some(DOCKER), DOCKER_ID),
            ),
            // Docker with a custom --cgroup-parent (GitHub Actions runners): runtime unknown.
            (
                format!("/actions_job/{DOCKER_ID}"),
                container(None, DOCKER_ID),
            ),
            // The daemons themselves are services, not containers.
            (
                "/system.slice/docker.service".into(),
                unit("docker.service"),
            ),
            (
                "/system.slice/containerd.service".into(),
                unit("containerd.service"),
            ),
            // Kubernetes, systemd driver, each QoS class, containerd.
            (
                format!("{burstable_slice}/cri-containerd-{CONTAINERD_ID}.scope"),
                in_pod(UID, Burstable, Some(CONTAINERD), CONTAINERD_ID),
            ),
            (
                format!("{besteffort_slice}/{cri_scope}"),
                in_pod(UID, BestEffort, Some(CONTAINERD), CONTAINERD_ID),
            ),
            (
                format!("{guaranteed_slice}/{cri_scope}"),
                in_pod(UID, Guaranteed, Some(CONTAINERD), CONTAINERD_ID),
            ),
            // Static pod (kube-apiserver): MD5 UID, no dashes.
            (
                format!(
                    "/kubepods.slice/kubepods-burstable.slice/\
                     kubepods-burstable-pod{STATIC_UID}.slice/{cri_scope}"
                ),
                in_pod(STATIC_UID, Burstable, Some(CONTAINERD), CONTAINERD_ID),
            ),
            // Pod-level memcgs: a pod, no container.
            (burstable_slice.clone(), pod(UID, Burstable)),
            (
                format!("/kubepods.slice/kubepods-pod{UID_SYSTEMD}.slice"),
                pod(UID, Guaranteed),
            ),
            (format!("/kubepods/burstable/pod{UID}"), pod(UID, Burstable)),
            // QoS levels and the kubepods root are slices, not pods.
            (
                "/kubepods.slice/kubepods-besteffort.slice".into(),
                unit("kubepods-besteffort.slice"),
            ),
            ("/kubepods".into(), unknown()),
            // Kubernetes, cgroupfs driver: bare ids do not name the runtime.
            (
                format!("/kubepods/burstable/pod{UID}/{CONTAINERD_ID}"),
                in_pod(UID, Burstable, None, CONTAINERD_ID),
            ),
            (
                format!("/kubepods/besteffort/pod{UID}/{CONTAINERD_ID}"),
                in_pod(UID, BestEffort, None, CONTAINERD_ID),
            ),
            (
                format!("/kubepods/pod{UID}/{CONTAINERD_ID}/"),
                in_pod(UID, Guaranteed, None, CONTAINERD_ID),
            ),
            // Docker as the kubelet's runtime (dockershim, cri-dockerd), systemd driver.
            (
                format!("{burstable_slice}/docker-{DOCKER_ID}.scope"),
                in_pod(UID, Burstable, Some(DOCKER), DOCKER_ID),
            ),
            // CRI-O, systemd driver; its conmon scope; crun's `container` sub-cgroup.
            (
                format!("{burstable_slice}/crio-{CRIO_ID}.scope"),
                in_pod(UID, Burstable, Some(CRIO), CRIO_ID),
            ),
            (
                format!("{burstable_slice}/crio-conmon-{CRIO_ID}.scope"),
                in_pod(UID, Burstable, Some(CRIO_CONMON), CRIO_ID),
            ),
            (
                format!("{burstable_slice}/crio-{CRIO_ID}.scope/container"),
                in_pod(UID, Burstable, Some(CRIO), CRIO_ID),
            ),
            // conmon_cgroup = "system.slice": a conmon outside any pod.
            (
                format!("/system.slice/crio-conmon-{CRIO_ID}.scope"),
                container(Some(CRIO_CONMON), CRIO_ID),
            ),
            // CRI-O, cgroupfs driver: the prefix without `.scope`.
            (
                format!("/kubepods/besteffort/pod{UID}/crio-{CRIO_ID}"),
                in_pod(UID, BestEffort, Some(CRIO), CRIO_ID),
            ),
            // runc's `slice:prefix:id` as a literal directory (v1, unmanaged controllers).
            (
                format!(
                    "/system.slice/containerd.service/\
                     kubepods-burstable-pod{UID_SYSTEMD}.slice:cri-containerd:{CONTAINERD_ID}"
                ),
                in_pod(UID, Burstable, Some(CONTAINERD), CONTAINERD_ID),
            ),
            // Podman, rootful and rootless, its conmon, and systemd inside the container.
            (
                format!("/machine.slice/libpod-{PODMAN_ID}.scope"),
                container(Some(PODMAN), PODMAN_ID),
            ),
            (
                format!("/machine.slice/libpod-{PODMAN_ID}.scope/container"),
                container(Some(PODMAN), PODMAN_ID),
            ),
            (
                format!("/machine.slice/libpod-conmon-{PODMAN_ID}.scope"),
                container(Some(PODMAN_CONMON), PODMAN_ID),
            ),
            (
                format!(
                    "/user.slice/user-1000.slice/user@1000.service/user.slice/\
                     libpod-{PODMAN_ID}.scope"
                ),
                container(Some(PODMAN), PODMAN_ID),
            ),
            (
                format!(
                    "/machine.slice/libpod-{PODMAN_ID}.scope/container/system.slice/nginx.service"
                ),
                container(Some(PODMAN), PODMAN_ID),
            ),
            // Nested: k3d (k3s in Docker, cgroupfs) and kind (systemd, `kubelet-` prefix).
            (
                format!("/docker/{NODE_ID}/kubepods/burstable/pod{UID}/{CONTAINERD_ID}"),
                in_pod(UID, Burstable, None, CONTAINERD_ID),
            ),
            (
                format!("/docker/{NODE_ID}/kubepods/besteffort/pod{UID}"),
                pod(UID, BestEffort),
            ),
            // The node's own QoS level belongs to the node container.
            (
                format!("/docker/{NODE_ID}/kubepods/besteffort"),
                container(Some(DOCKER), NODE_ID),
            ),
            (
                format!(
                    "/system.slice/docker-{NODE_ID}.scope/kubelet.slice/kubelet-kubepods.slice/\
                     kubelet-kubepods-besteffort.slice/\
                     kubelet-kubepods-besteffort-pod{UID_SYSTEMD}.slice/{cri_scope}"
                ),
                in_pod(UID, BestEffort, Some(CONTAINERD), CONTAINERD_ID),
            ),
            (
                format!(
                    "/kubelet.slice/kubelet-kubepods.slice/\
                     kubelet-kubepods-pod{UID_SYSTEMD}.slice/{cri_scope}"
                ),
                in_pod(UID, Guaranteed, Some(CONTAINERD), CONTAINERD_ID),
            ),
            // systemd services, scopes and slices.
            ("/system.slice/nginx.service".into(), unit("nginx.service")),
            (
                "/user.slice/user-1000.slice/session-3.scope".into(),
                unit("session-3.scope"),
            ),
            (
                "/user.slice/user-1000.slice".into(),
                unit("user-1000.slice"),
            ),
            (
                "/user.slice/user-1000.slice/user@1000.service/app.slice/\
                 app-org.gnome.Terminal.slice/vte-spawn-5f1c.scope"
                    .into(),
                unit("vte-spawn-5f1c.scope"),
            ),
            ("/init.scope".into(), unit("init.scope")),
            (
                "/system.slice/system-getty.slice/getty@tty1.service".into(),
                unit("getty@tty1.service"),
            ),
            // systemd escaping: `\x2d` is a literal dash; an unfinished escape stays as it is;
            // a control character stays escaped.
            (
                "/system.slice/system-systemd\\x2dfsck.slice/\
                 systemd-fsck@dev-disk-by\\x2duuid-4a1c2b3d\\x2d5e6f.service"
                    .into(),
                unit("systemd-fsck@dev-disk-by-uuid-4a1c2b3d-5e6f.service"),
            ),
            (
                r"/system.slice/system-systemd\x2dfsck.slice".into(),
                unit("system-systemd-fsck.slice"),
            ),
            (
                r"/system.slice/odd\x2.service".into(),
                unit(r"odd\x2.service"),
            ),
            (
                r"/system.slice/nl\x0a.service".into(),
                unit(r"nl\x0a.service"),
            ),
            (
                r"/system.slice/caf\xc3\xa9.service".into(),
                unit("café.service"),
            ),
            // Root, empty and garbage.
            ("/".into(), unknown()),
            (String::new(), unknown()),
            ("///".into(), unknown()),
            ("  \n".into(), unknown()),
            ("/kubepods/burstable/podnot-a-uid/".into(), unknown()),
            (
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-podnot_a_uid.slice"
                    .into(),
                unit("kubepods-burstable-podnot_a_uid.slice"),
            ),
            // A pod directory outside kubepods is not a pod; the id below it is still an id.
            (
                format!("/pod{UID}/{CONTAINERD_ID}"),
                container(None, CONTAINERD_ID),
            ),
            (format!("/docker/{}", &DOCKER_ID[..63]), unknown()),
            (format!("/docker/{DOCKER_ID}0"), unknown()),
            (
                format!("/system.slice/docker-{short}.scope"),
                unit(&format!("docker-{short}.scope")),
            ),
            (".scope/.service/.slice".into(), unknown()),
            // Non-ASCII, including what a lossy conversion of non-UTF-8 bytes leaves behind.
            ("/ユニット/コンテナ".into(), unknown()),
            ("/system.slice/ñginx.service".into(), unit("system.slice")),
            (
                "/system.slice/docker-\u{FFFD}.scope".into(),
                unit("system.slice"),
            ),
            (
                format!("/system.slice/docker-{DOCKER_ID}.scope/é/\u{FFFD}"),
                container(Some(DOCKER), DOCKER_ID),
            ),
            // Very long input.
            (
                format!("{}/docker/{DOCKER_ID}", "/a".repeat(100_000)),
                container(Some(DOCKER), DOCKER_ID),
            ),
            ("x".repeat(1 << 20), unknown()),
            (
                format!("/{}.service", "-".repeat(10_000)),
                unit(&format!("{}.service", "-".repeat(10_000))),
            ),
        ]
    }

    #[test]
    fn real_world_paths() {
        let cases = cases();
        assert!(cases.len() >= 30);
        for (path, expected) in cases {
            let shown = path.get(..200).unwrap_or(&path);
            assert_eq!(
                ContainerIdentity::from_cgroup_path(&path),
                expected,
                "{shown}"
            );
        }
    }

    #[test]
    fn kinds() {
        let kind = |p: &str| ContainerIdentity::from_cgroup_path(p).kind();
        assert_eq!(
            kind(&format!("/docker/{DOCKER_ID}")),
            IdentityKind::Container
        );
        assert_eq!(kind(&format!("/kubepods/pod{UID}")), IdentityKind::Pod);
        assert_eq!(
            kind("/system.slice/nginx.service"),
            IdentityKind::SystemdUnit
        );
        assert_eq!(kind("/"), IdentityKind::Unknown);
    }

    #[test]
    fn conmon_is_told_apart_from_its_container() {
        let path = |scope: &str| format!("/kubepods.slice/kubepods-pod{UID_SYSTEMD}.slice/{scope}");
        let conmon =
            ContainerIdentity::from_cgroup_path(&path(&format!("crio-conmon-{CRIO_ID}.scope")));
        let ctr = ContainerIdentity::from_cgroup_path(&path(&format!("crio-{CRIO_ID}.scope")));
        assert!(conmon.is_conmon());
        assert!(!ctr.is_conmon());
        assert_ne!(conmon, ctr);
        assert_ne!(conmon.display_name(), ctr.display_name());
        let named = |id: &ContainerIdentity| ContainerIdentity {
            pod_namespace: Some("web".into()),
            pod_name: Some("nginx-7c5ddbdf54-x2xkq".into()),
            container_name: Some("nginx".into()),
            ..id.clone()
        };
        assert_eq!(
            named(&ctr).display_name(),
            "web/nginx-7c5ddbdf54-x2xkq/nginx"
        );
        assert_eq!(
            named(&conmon).display_name(),
            "web/nginx-7c5ddbdf54-x2xkq/nginx (conmon)"
        );
    }

    #[test]
    fn short_id_and_display_name() {
        let docker = ContainerIdentity::from_cgroup_path(&format!("/docker/{DOCKER_ID}"));
        assert_eq!(docker.short_id(), Some("9d6415444f18"));
        assert_eq!(docker.display_name(), "docker:9d6415444f18");

        let bare =
            ContainerIdentity::from_cgroup_path(&format!("/kubepods/pod{UID}/{CONTAINERD_ID}"));
        assert_eq!(bare.display_name(), "container:119ffdd721f0");

        let pod_level = ContainerIdentity::from_cgroup_path(&format!("/kubepods/pod{UID}"));
        assert_eq!(pod_level.short_id(), None);
        assert_eq!(pod_level.display_name(), format!("pod:{UID}"));
        let named_pod = ContainerIdentity {
            pod_namespace: Some("kube-system".into()),
            pod_name: Some("coredns-5d78c9869d-8tq2h".into()),
            ..pod_level
        };
        assert_eq!(
            named_pod.display_name(),
            "kube-system/coredns-5d78c9869d-8tq2h"
        );

        // Named pod, container not in the kubelet's logs (the sandbox): the short id stands in.
        let sandbox = ContainerIdentity {
            container_id: Some(CONTAINERD_ID.into()),
            ..named_pod
        };
        assert_eq!(
            sandbox.display_name(),
            "kube-system/coredns-5d78c9869d-8tq2h/119ffdd721f0"
        );

        let service = ContainerIdentity::from_cgroup_path("/system.slice/nginx.service");
        assert_eq!(service.display_name(), "nginx.service");
        assert_eq!(ContainerIdentity::from_cgroup_path("/").display_name(), "-");

        // Ids shorter than 12 never come from parsing, but the field is public.
        let short = ContainerIdentity {
            container_id: Some("abc".into()),
            ..ContainerIdentity::default()
        };
        assert_eq!(short.short_id(), Some("abc"));
    }

    #[test]
    fn json_carries_only_known_fields() {
        let id = ContainerIdentity::from_cgroup_path(&format!(
            "/kubepods/besteffort/pod{UID}/crio-{CRIO_ID}"
        ));
        let json = serde_json::to_value(&id).expect("serializes");
        assert_eq!(
            json,
            serde_json::json!({
                "runtime": "cri-o",
                "container_id": CRIO_ID,
                "pod_uid": UID,
                "qos_class": "BestEffort",
            })
        );
        let unknown = serde_json::to_string(&ContainerIdentity::default()).expect("serializes");
        assert_eq!(unknown, "{}");
        assert_eq!(
            serde_json::to_string(&IdentityKind::SystemdUnit).expect("serializes"),
            "\"systemd_unit\""
        );
    }

    #[test]
    fn json_round_trips() {
        let mut every_runtime = vec![
            format!("/kubepods/pod{UID}"),
            "/system.slice/nginx.service".into(),
            "/".into(),
        ];
        every_runtime.extend(
            cases()
                .into_iter()
                .map(|(path, _)| path)
                .filter(|p| p.len() < 1000),
        );
        for path in every_runtime {
            let mut id = ContainerIdentity::from_cgroup_path(&path);
            id.pod_name = id.pod_uid.as_ref().map(|_| "nginx-7c5ddbdf54-x2xkq".into());
            let json = serde_json::to_string(&id).expect("serializes");
            let back: ContainerIdentity = serde_json::from_str(&json).expect("deserializes");
            assert_eq!(back, id, "{json}");
        }
        // A runtime this version does not know, and an explicit null.
        let newer: ContainerIdentity =
            serde_json::from_str(r#"{"runtime":"youki","container_id":"ab","pod_uid":null}"#)
                .expect("deserializes");
        assert_eq!(newer.runtime, None);
        assert_eq!(newer.container_id.as_deref(), Some("ab"));
        assert_eq!(runtime::from_name("cri-o"), Some(runtime::CRIO));
    }

    #[test]
    fn pod_uids() {
        assert!(is_pod_uid(UID));
        assert!(is_pod_uid(STATIC_UID));
        assert!(!is_pod_uid(UID_SYSTEMD));
        assert!(!is_pod_uid("a408b6dc-d67e-49a5-b6d0-1a2fc60b0bc"));
        assert!(!is_pod_uid("a408b6dcd-67e-49a5-b6d0-1a2fc60b0bc8"));
        assert!(!is_pod_uid("g408b6dc-d67e-49a5-b6d0-1a2fc60b0bc8"));
        assert!(!is_pod_uid(""));
    }
}
