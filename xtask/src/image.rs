//! `cargo xtask image`: memtrace's container image, built with podman from the release binary
//! (deploy/Containerfile, staged by deploy/build-image.sh; nothing pulled from a registry).

use clap::Args;

use crate::{
    process, setup,
    vm::apt::Apt,
    workspace::{MEMTRACE, Workspace},
};

#[derive(Args)]
pub struct Options {
    /// Image name and tag
    #[arg(long, default_value = concat!("localhost/memtrace:", env!("CARGO_PKG_VERSION")))]
    tag: String,
}

/// Sets up, installs podman, builds memtrace (release), then the image.
pub fn run(workspace: &Workspace, options: &Options) -> anyhow::Result<()> {
    setup::run(workspace)?;
    Apt::system(&workspace.tools_dir().join("image"))
        .for_task("image")
        .ensure_installed(&["podman"])?;
    process::run(
        workspace
            .cargo()
            .args(["build", "--release", "-p", MEMTRACE]),
    )?;
    let binary = workspace.target_dir().join("release").join(MEMTRACE);
    process::run(
        std::process::Command::new(workspace.root().join("deploy/build-image.sh"))
            .arg(binary)
            .arg(&options.tag),
    )?;
    println!(
        "built {}: see deploy/daemonset.yaml and README.md (Deploying on Kubernetes)",
        options.tag
    );
    Ok(())
}
