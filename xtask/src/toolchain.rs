//! The pinned Rust toolchains: read from a `rust-toolchain.toml`, installed with rustup.

use std::{fs, path::Path, process::Command};

use anyhow::Context as _;
use serde::Deserialize;

use crate::process;

#[derive(Deserialize)]
struct ToolchainFile {
    toolchain: Toolchain,
}

/// The `[toolchain]` table of a `rust-toolchain.toml`.
#[derive(Debug, Deserialize, PartialEq)]
pub struct Toolchain {
    pub channel: String,
    #[serde(default)]
    pub components: Vec<String>,
    #[serde(default = "minimal")]
    pub profile: String,
}

fn minimal() -> String {
    "minimal".to_owned()
}

impl Toolchain {
    /// Reads the `[toolchain]` table of the `rust-toolchain.toml` at `path`.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text =
            fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("parsing {}", path.display()))
    }

    fn parse(text: &str) -> anyhow::Result<Self> {
        let file: ToolchainFile = toml::from_str(text)?;
        Ok(file.toolchain)
    }

    /// Installs this toolchain and its components unless they are there, printing one line that
    /// says which. `listed` is the output of `rustup toolchain list`.
    pub fn ensure_installed(&self, listed: &str) -> anyhow::Result<()> {
        let label = format!(
            "toolchain {} ({})",
            self.channel,
            self.components.join(", ")
        );
        if !is_listed(listed, &self.channel) {
            eprintln!("{label}: installing ...");
            let mut install = Command::new("rustup");
            install.args([
                "toolchain",
                "install",
                &self.channel,
                "--profile",
                &self.profile,
            ]);
            if !self.components.is_empty() {
                install.arg("-c").arg(self.components.join(","));
            }
            return process::run(&mut install);
        }

        let installed = process::output(Command::new("rustup").args([
            "component",
            "list",
            "--installed",
            "--toolchain",
            &self.channel,
        ]))?;
        let missing: Vec<&str> = self
            .components
            .iter()
            .map(String::as_str)
            .filter(|component| !has_component(&installed, component))
            .collect();
        if missing.is_empty() {
            eprintln!("{label}: ok (already installed)");
            return Ok(());
        }
        eprintln!("{label}: installing {} ...", missing.join(", "));
        process::run(
            Command::new("rustup")
                .args(["component", "add", "--toolchain", &self.channel])
                .args(&missing),
        )
    }
}

/// Whether `rustup toolchain list` lists `channel`, which it shows with the host triple
/// appended (`1.99.1-x86_64-unknown-linux-gnu (active)`).
fn is_listed(listed: &str, channel: &str) -> bool {
    listed
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .any(|name| {
            name == channel
                || name
                    .strip_prefix(channel)
                    .and_then(|rest| rest.strip_prefix('-'))
                    .is_some_and(is_triple)
        })
}

/// Whether `s` looks like a target triple rather than the rest of a longer channel name: `nightly`
/// must not match `nightly-2026-10-29-x86_64-unknown-linux-gnu`.
fn is_triple(s: &str) -> bool {
    s.split('-').count() >= 3 && !s.starts_with(|c: char| c.is_ascii_digit())
}

/// Whether `rustup component list --installed` output includes `component`, which rustup shows
/// with the host triple appended unless it is target-independent (`rust-src`).
fn has_component(installed: &str, component: &str) -> bool {
    let triple = installed
        .lines()
        .find_map(|line| line.trim().strip_prefix("rustc-"));
    installed.lines().map(str::trim).any(|name| {
        name == component
            || triple.is_some_and(|triple| {
                name.strip_prefix(component)
                    .and_then(|rest| rest.strip_prefix('-'))
                    == Some(triple)
            })
    })
}

#[cfg(test)]
mod tests {
    use super::{Toolchain, has_component, is_listed};

    #[test]
    fn reads_the_toolchain_table() -> anyhow::Result<()> {
        let toolchain = Toolchain::parse(
            "# comment\n[toolchain]\nchannel = \"nightly-2026-10-29\"\n\
             components = [\"rust-src\", \"llvm-tools\"]\n",
        )?;
        assert_eq!(
            toolchain,
            Toolchain {
                channel: "nightly-2026-10-29".to_owned(),
                components: vec!["rust-src".to_owned(), "llvm-tools".to_owned()],
                profile: "minimal".to_owned(),
            }
        );
        Ok(())
    }

    #[test]
    fn finds_a_listed_toolchain_by_its_exact_channel() {
        let listed = "stable-x86_64-unknown-linux-gnu (default)\n\
                      nightly-2026-10-29-x86_64-unknown-linux-gnu\n\
                      1.99.1-x86_64-unknown-linux-gnu (active)\n";
        assert!(is_listed(listed, "1.99.1"));
        assert!(is_listed(listed, "nightly-2026-10-29"));
        assert!(is_listed(listed, "stable"));
        assert!(!is_listed(listed, "nightly"));
        assert!(!is_listed(listed, "1.99"));
        assert!(!is_listed("no installed toolchains\n", "1.99.1"));
    }

    #[test]
    fn finds_installed_components_with_or_without_a_triple() {
        let installed = "cargo-x86_64-unknown-linux-gnu\nllvm-tools-x86_64-unknown-linux-gnu\n\
                         rust-src\nrustc-x86_64-unknown-linux-gnu\n";
        assert!(has_component(installed, "rust-src"));
        assert!(has_component(installed, "llvm-tools"));
        assert!(!has_component(installed, "clippy"));
        assert!(!has_component(installed, "rust"));
    }
}
