//! The few kernel modules the guests load. Debian builds every block driver and disk file system
//! as a module; the tests' `CARGO_TARGET_TMPDIR` must be on a disk file system (page cache there
//! can be dropped, unlike tmpfs's), which takes `loop` and `ext4` with what they depend on;
//! `overlay` for the test that reads a file through an overlay as a container does.

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
};

use anyhow::{Context as _, bail, ensure};

use super::{bzimage::Compression, elf};
use crate::process::{self, Shown};

/// The modules /init needs; their dependencies are found from their `.modinfo`. ext4 also has a
/// soft dependency (`softdep=pre: crc32c`, a crypto algorithm it allocates at mount time, which
/// fails with "Cannot load crc32c driver" without it), provided by `crc32c_generic`.
pub const NEEDED: &[&str] = &["loop", "crc32c_generic", "ext4", "overlay"];

/// A module file as the package has it: plain (Debian's 6.1) or compressed (6.12's `.ko.xz`).
#[derive(Debug, PartialEq, Eq)]
pub struct ModuleFile {
    pub path: PathBuf,
    pub compression: Option<Compression>,
}

impl ModuleFile {
    /// The plain module, decompressed with the system's tool if need be: busybox's `insmod`
    /// hands the file to `init_module` as it is.
    pub fn read(&self) -> anyhow::Result<Vec<u8>> {
        let Some(compression) = self.compression else {
            return fs::read(&self.path)
                .with_context(|| format!("reading {}", self.path.display()));
        };
        let [program, args] = compression.decompressor()?;
        let input = fs::File::open(&self.path)
            .with_context(|| format!("opening {}", self.path.display()))?;
        let mut cmd = Command::new(program);
        cmd.arg(args).stdin(input).stderr(Stdio::piped());
        let Output {
            status,
            stdout,
            stderr,
        } = cmd
            .output()
            .map_err(|error| process::spawn_error(&cmd, error))?;
        if !status.success() {
            bail!(
                "`{} < {}` failed with {status}: {}",
                Shown(&cmd),
                self.path.display(),
                String::from_utf8_lossy(&stderr).trim()
            );
        }
        Ok(stdout)
    }
}

/// The module and its compression, if `file_name` names a module file.
fn module_file_name(file_name: &str) -> Option<(String, Option<Compression>)> {
    let (stem, extension) = file_name.split_once(".ko")?;
    let compression = match extension {
        "" => None,
        ".xz" => Some(Compression::Xz),
        ".zst" => Some(Compression::Zstd),
        ".gz" => Some(Compression::Gzip),
        _ => return None,
    };
    Some((module_name(stem), compression))
}

/// The module files under `dir` (a `lib/modules/<release>/kernel` tree), by module name.
pub fn index(dir: &Path) -> anyhow::Result<BTreeMap<String, ModuleFile>> {
    let mut found = BTreeMap::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(dir) = pending.pop() {
        for entry in fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))? {
            let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
            let path = entry.path();
            let file_type = entry
                .file_type()
                .with_context(|| format!("reading {}", path.display()))?;
            let file_name = entry.file_name();
            let file_name = file_name.to_string_lossy();
            if file_type.is_dir() {
                pending.push(path);
            } else if let Some((name, compression)) = module_file_name(&file_name) {
                found.insert(name, ModuleFile { path, compression });
            }
        }
    }
    Ok(found)
}

/// A module's name as the kernel and `depends=` spell it: `-` in a file name is `_`.
fn module_name(file_stem: &str) -> String {
    file_stem.replace('-', "_")
}

/// The modules a module's `.modinfo` says it depends on. `.modinfo` is NUL-separated
/// `key=value` strings (`object` reads the section); no crate reads it short of libkmod's
/// bindings, which would need the C library and its index files (`modules.dep`) this tree lacks.
pub fn depends(modinfo: &[u8]) -> Vec<String> {
    modinfo
        .split(|&b| b == 0)
        .find_map(|entry| entry.strip_prefix(b"depends="))
        .map(|list| {
            String::from_utf8_lossy(list)
                .split(',')
                .filter(|name| !name.is_empty())
                .map(module_name)
                .collect()
        })
        .unwrap_or_default()
}

/// Adds `name` to `order` after its dependencies; `visiting` is the path to it.
fn visit(
    name: &str,
    depends_of: &mut dyn FnMut(&str) -> anyhow::Result<Vec<String>>,
    visiting: &mut Vec<String>,
    order: &mut Vec<String>,
) -> anyhow::Result<()> {
    if order.iter().any(|done| done == name) {
        return Ok(());
    }
    ensure!(
        !visiting.iter().any(|on_path| on_path == name),
        "modules depend on each other in a cycle: {} -> {name}",
        visiting.join(" -> ")
    );
    visiting.push(name.to_owned());
    for dependency in depends_of(name)? {
        visit(&dependency, depends_of, visiting, order)?;
    }
    visiting.pop();
    order.push(name.to_owned());
    Ok(())
}

/// `roots` and everything they depend on, each after its dependencies: the order to `insmod`
/// them in. `depends_of` reads one module's dependencies.
pub fn load_order(
    roots: &[&str],
    mut depends_of: impl FnMut(&str) -> anyhow::Result<Vec<String>>,
) -> anyhow::Result<Vec<String>> {
    let mut order = Vec::new();
    // Depth-first, remembering the path to report a cycle (which modpost would have refused).
    let mut visiting: Vec<String> = Vec::new();
    for root in roots {
        visit(root, &mut depends_of, &mut visiting, &mut order)?;
    }
    Ok(order)
}

/// [`NEEDED`] and their dependencies from the module files in `index`, each as a plain `.ko`,
/// in load order.
pub fn needed(index: &BTreeMap<String, ModuleFile>) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let mut plain = BTreeMap::new();
    let order = load_order(NEEDED, |name| {
        let file = index
            .get(name)
            .with_context(|| format!("the kernel package has no module {name}"))?;
        let data = file.read()?;
        let modinfo = elf::section(&data, ".modinfo")
            .with_context(|| format!("reading {}", file.path.display()))?
            .with_context(|| format!("{} has no .modinfo section", file.path.display()))?;
        let dependencies = depends(modinfo);
        plain.insert(name.to_owned(), data);
        Ok(dependencies)
    })?;
    order
        .into_iter()
        .map(|name| {
            let data = plain
                .remove(&name)
                .with_context(|| format!("module {name} was ordered but not read"))?;
            Ok((name, data))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::{depends, load_order, module_file_name};
    use crate::vm::bzimage::Compression;

    #[test]
    fn reads_depends_from_modinfo() {
        let modinfo = b"license=GPL\0softdep=pre: crc32c\0depends=jbd2,mbcache,crc16\0\
                        intree=Y\0name=ext4\0";
        assert_eq!(depends(modinfo), ["jbd2", "mbcache", "crc16"]);
        assert_eq!(
            depends(b"license=GPL\0depends=\0name=loop\0"),
            Vec::<String>::new()
        );
        assert_eq!(depends(b"depends=crc32c-generic\0"), ["crc32c_generic"]);
    }

    #[test]
    fn recognises_plain_and_compressed_module_files() {
        assert_eq!(module_file_name("ext4.ko"), Some(("ext4".to_owned(), None)));
        assert_eq!(
            module_file_name("crc32c-generic.ko.xz"),
            Some(("crc32c_generic".to_owned(), Some(Compression::Xz)))
        );
        assert_eq!(
            module_file_name("loop.ko.zst"),
            Some(("loop".to_owned(), Some(Compression::Zstd)))
        );
        assert_eq!(module_file_name("modules.order"), None);
        assert_eq!(module_file_name("ext4.ko.sig"), None);
    }

    #[test]
    fn orders_each_module_after_what_it_depends_on() -> anyhow::Result<()> {
        let graph: BTreeMap<&str, &[&str]> = [
            ("ext4", &["jbd2", "mbcache", "crc16"][..]),
            ("jbd2", &["crc16"][..]),
            ("mbcache", &[][..]),
            ("crc16", &[][..]),
            ("loop", &[][..]),
        ]
        .into_iter()
        .collect();
        let order = load_order(&["loop", "ext4"], |name| {
            Ok(graph[name].iter().map(|d| (*d).to_owned()).collect())
        })?;
        assert_eq!(order, ["loop", "crc16", "jbd2", "mbcache", "ext4"]);
        Ok(())
    }

    #[test]
    fn reports_a_dependency_cycle() {
        let error = load_order(&["a"], |name| {
            Ok(vec![if name == "a" { "b" } else { "a" }.to_owned()])
        })
        .map(|_| ())
        .expect_err("a cycle");
        assert_eq!(
            error.to_string(),
            "modules depend on each other in a cycle: a -> b -> a"
        );
    }
}
