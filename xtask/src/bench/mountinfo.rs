//! `/proc/self/mountinfo`: where the memory controller is, and what filesystem a path is on.
//!
//! memtrace's `attribution` module does the same for the tool itself; xtask cannot depend on the
//! memtrace crate, whose build needs the very toolchain and bpf-linker `cargo xtask setup`
//! installs.

use std::path::{Path, PathBuf};

/// One mount: where it is, its filesystem type and its per-superblock options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub path: PathBuf,
    pub fs_type: String,
    pub super_options: String,
}

/// The mounts in mountinfo's order; lines that do not parse are skipped.
pub fn parse(mountinfo: &str) -> Vec<Mount> {
    mountinfo
        .lines()
        .filter_map(|line| {
            // "36 25 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory"; the
            // optional fields before " - " vary in number, the five before them do not.
            let (left, right) = line.split_once(" - ")?;
            let mount_point = left.split(' ').nth(4)?;
            let mut right = right.split(' ');
            let (fs_type, _source, super_options) = (right.next()?, right.next()?, right.next()?);
            Some(Mount {
                path: PathBuf::from(unescape(mount_point)),
                fs_type: fs_type.to_owned(),
                super_options: super_options.to_owned(),
            })
        })
        .collect()
}

/// The mount that holds `path` (absolute, without symlinks): the last-mounted of the longest
/// mount points that are its ancestors.
pub fn mount_of<'a>(mounts: &'a [Mount], path: &Path) -> Option<&'a Mount> {
    mounts
        .iter()
        .filter(|mount| path.starts_with(&mount.path))
        .fold(None, |best: Option<&Mount>, mount| match best {
            Some(best) if best.path.components().count() > mount.path.components().count() => {
                Some(best)
            }
            _ => Some(mount),
        })
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('\\') {
        out.push_str(&rest[..i]);
        let code = rest.get(i + 1..i + 4);
        if let Some(code) = code.and_then(|o| u8::from_str_radix(o, 8).ok()) {
            out.push(char::from(code));
            rest = &rest[i + 4..];
        } else {
            out.push('\\');
            rest = &rest[i + 1..];
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::{mount_of, parse, unescape};

    const HOST: &str = "\
23 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
50 23 0:40 / /tmp/memtrace\\040bench rw - tmpfs memtrace-bench rw,size=524288k
garbage
";

    #[test]
    fn parses_mounts_with_and_without_optional_fields() {
        let mounts = parse(HOST);
        assert_eq!(mounts.len(), 5);
        assert_eq!(mounts[0].path, Path::new("/"));
        assert_eq!(mounts[0].fs_type, "ext4");
        assert_eq!(mounts[2].super_options, "rw,memory");
        assert_eq!(mounts[4].path, Path::new("/tmp/memtrace bench"));
    }

    #[test]
    fn finds_the_innermost_mount_holding_a_path() {
        let mounts = parse(HOST);
        let fs_type = |path: &str| mount_of(&mounts, Path::new(path)).map(|m| m.fs_type.as_str());
        assert_eq!(fs_type("/work/main/target/bench"), Some("ext4"));
        assert_eq!(fs_type("/sys/fs/cgroup/memory/x"), Some("cgroup"));
        assert_eq!(fs_type("/sys/fs/cgroupfoo"), Some("ext4"));
        assert_eq!(fs_type("/tmp/memtrace bench/f1"), Some("tmpfs"));
        assert_eq!(mount_of(&[], Path::new("/")), None);
    }

    #[test]
    fn decodes_octal_escapes() {
        assert_eq!(unescape(r"/a\040b\134c"), r"/a b\c");
        assert_eq!(unescape(r"/trailing\"), r"/trailing\");
    }
}
