//! Docker's record of a container: `/var/lib/docker/containers/<id>/config.v2.json`, written
//! when the container is created (`Name` is `/hog`; `Config.Labels` carries the
//! `io.kubernetes.*` labels of dockershim and cri-dockerd containers).

use std::{collections::HashMap, path::Path};

use serde::Deserialize;

use super::{RuntimeNames, read_bounded};
use crate::attribution::runtime;

const CONTAINERS: &str = "var/lib/docker/containers";

#[derive(Deserialize)]
struct ConfigV2 {
    #[serde(rename = "Name", default)]
    name: String,
    #[serde(rename = "Config", default)]
    config: Config,
}

#[derive(Default, Deserialize)]
struct Config {
    #[serde(rename = "Image", default)]
    image: String,
    #[serde(rename = "Labels", default)]
    labels: Option<HashMap<String, String>>,
}

/// The names of container `id`, if Docker under `root` knows it.
pub fn lookup(root: &Path, id: &str) -> Option<RuntimeNames> {
    let path = root.join(CONTAINERS).join(id).join("config.v2.json");
    let data = read_bounded(&path, 16 << 20)?;
    let config: ConfigV2 = serde_json::from_slice(&data)
        .inspect_err(|e| log::debug!("{}: {e}", path.display()))
        .ok()?;
    let mut names =
        RuntimeNames::from_labels(runtime::DOCKER, &config.config.labels.unwrap_or_default());
    let name = config.name.trim_start_matches('/');
    names.name = (!name.is_empty()).then(|| name.to_owned());
    names.image = (!config.config.image.is_empty()).then_some(config.config.image);
    Some(names)
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;
    use crate::attribution::container::test_ids::DOCKER_ID;

    #[test]
    fn names_a_container_from_its_config() {
        let root = tempfile::tempdir().expect("tempdir");
        let dir = root.path().join(CONTAINERS).join(DOCKER_ID);
        fs::create_dir_all(&dir).expect("mkdir");
        fs::write(
            dir.join("config.v2.json"),
            serde_json::json!({
                "ID": DOCKER_ID,
                "Name": "/hog",
                "Config": {"Image": "busybox:1.36", "Labels": {"team": "memory"}},
                "State": {"Running": true},
            })
            .to_string(),
        )
        .expect("write");
        let names = lookup(root.path(), DOCKER_ID).expect("found");
        assert_eq!(names.runtime, runtime::DOCKER);
        assert_eq!(names.name.as_deref(), Some("hog"));
        assert_eq!(names.image.as_deref(), Some("busybox:1.36"));
        assert_eq!(lookup(root.path(), &"0".repeat(64)), None);
    }
}
