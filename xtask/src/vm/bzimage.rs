//! The `vmlinux` ELF inside a bzImage. A bzImage decompresses itself in the guest, which takes
//! 7–11 s under TCG; QEMU boots the inner ELF directly (through its PVH note) in a fraction of that.
//!
//! Unlike `scripts/extract-vmlinux`, which tries every offset where some compressor's magic
//! appears, this reads where the compressed stream is from the boot protocol header
//! (`payload_offset`/`payload_length`, boot protocol ≥ 2.08), then checks that the magic found
//! there is the one for the compressor the kernel's config names.
//! <https://docs.kernel.org/arch/x86/boot.html>
//!
//! Hand-written because no crate reads the x86 boot protocol header; the few fields it needs
//! are at fixed offsets. The stream itself goes through the system's `gzip`, `xz` or `zstd`.

use std::fmt;

use anyhow::{Context as _, bail, ensure};

/// A compressor the kernel can use for its image (`CONFIG_KERNEL_<NAME>=y`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    Gzip,
    Bzip2,
    Lzma,
    Xz,
    Lzo,
    Lz4,
    Zstd,
}

impl Compression {
    const ALL: [Self; 7] = [
        Self::Gzip,
        Self::Bzip2,
        Self::Lzma,
        Self::Xz,
        Self::Lzo,
        Self::Lz4,
        Self::Zstd,
    ];

    /// The suffix of its `CONFIG_KERNEL_*` option.
    fn config_name(self) -> &'static str {
        match self {
            Self::Gzip => "GZIP",
            Self::Bzip2 => "BZIP2",
            Self::Lzma => "LZMA",
            Self::Xz => "XZ",
            Self::Lzo => "LZO",
            Self::Lz4 => "LZ4",
            Self::Zstd => "ZSTD",
        }
    }

    /// The bytes its stream starts with (what `scripts/extract-vmlinux` looks for).
    fn magic(self) -> &'static [u8] {
        match self {
            Self::Gzip => b"\x1f\x8b\x08",
            Self::Bzip2 => b"BZh",
            Self::Lzma => b"\x5d\x00\x00",
            Self::Xz => b"\xfd7zXZ\x00",
            Self::Lzo => b"\x89LZO",
            Self::Lz4 => b"\x02\x21\x4c\x18",
            Self::Zstd => b"\x28\xb5\x2f\xfd",
        }
    }

    /// The compressor a kernel config (`/boot/config-*`) selects.
    pub fn from_config(config: &str) -> anyhow::Result<Self> {
        let chosen: Vec<Self> = Self::ALL
            .into_iter()
            .filter(|c| {
                let option = format!("CONFIG_KERNEL_{}=y", c.config_name());
                config.lines().any(|line| line.trim() == option)
            })
            .collect();
        match chosen.as_slice() {
            [one] => Ok(*one),
            [] => bail!("the config sets none of CONFIG_KERNEL_{{GZIP,XZ,ZSTD,...}}"),
            _ => bail!("the config sets more than one CONFIG_KERNEL_* compressor: {chosen:?}"),
        }
    }

    /// The compressor whose magic `stream` starts with.
    pub fn detect(stream: &[u8]) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|c| stream.starts_with(c.magic()))
    }

    /// The command that decompresses this format from stdin to stdout, where Debian 12 has one
    /// installed by default (`gzip`, `xz-utils`, `zstd`).
    pub fn decompressor(self) -> anyhow::Result<[&'static str; 2]> {
        match self {
            Self::Gzip => Ok(["gzip", "-dc"]),
            Self::Xz => Ok(["xz", "-dc"]),
            Self::Zstd => Ok(["zstd", "-dcq"]),
            _ => bail!("no decompressor is wired up for {self} kernels (only gzip, xz and zstd)"),
        }
    }

    /// Whether the kernel's build appends the uncompressed size after the stream
    /// (`size_append` in `scripts/Makefile.lib`); gzip's own trailer already ends with it.
    fn has_appended_size(self) -> bool {
        self != Self::Gzip
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.config_name().to_lowercase())
    }
}

/// The compressed kernel inside a bzImage.
#[derive(Debug, PartialEq, Eq)]
pub struct Payload<'a> {
    /// The compressed stream alone, as the decompressor wants it.
    pub stream: &'a [u8],
    pub compression: Compression,
    /// What the decompressed stream must measure (modulo 2³², as the kernel stores it).
    pub uncompressed_size: u32,
}

/// Finds the compressed kernel in `bzimage` and checks that it is compressed with `expected`.
pub fn payload(bzimage: &[u8], expected: Compression) -> anyhow::Result<Payload<'_>> {
    ensure!(
        bzimage.get(0x202..0x206) == Some(b"HdrS"),
        "not a bzImage: no \"HdrS\" boot protocol header at 0x202"
    );
    let version = u16::from_le_bytes(array_at(bzimage, 0x206)?);
    ensure!(
        version >= 0x208,
        "boot protocol {}.{:02} has no payload_offset (needs 2.08)",
        version >> 8,
        version & 0xff
    );
    // The protected-mode kernel follows the boot sector and `setup_sects` setup sectors
    // (0 means 4, for historical reasons).
    let setup_sects = match bzimage[0x1f1] {
        0 => 4,
        n => usize::from(n),
    };
    let protected_mode = (setup_sects + 1) * 512;
    let offset = usize::try_from(u32::from_le_bytes(array_at(bzimage, 0x248)?))?;
    let length = usize::try_from(u32::from_le_bytes(array_at(bzimage, 0x24c)?))?;
    let start = protected_mode + offset;
    let whole = bzimage.get(start..start + length).with_context(|| {
        format!(
            "the payload ({length} bytes at {start:#x}) runs past the end of the {}-byte bzImage",
            bzimage.len()
        )
    })?;
    ensure!(whole.len() > 4, "the payload is only {length} bytes");

    let found = Compression::detect(whole);
    ensure!(
        found == Some(expected),
        "the config says {expected}, but the payload starts with {}",
        found.map_or_else(
            || format!("the unknown bytes {:02x?}", &whole[..whole.len().min(6)]),
            |c| format!("{c}'s magic")
        )
    );
    let (stream, size) = whole.split_at(whole.len() - 4);
    Ok(Payload {
        stream: if expected.has_appended_size() {
            stream
        } else {
            whole
        },
        compression: expected,
        uncompressed_size: u32::from_le_bytes(array_at(size, 0)?),
    })
}

fn array_at<const N: usize>(data: &[u8], at: usize) -> anyhow::Result<[u8; N]> {
    data.get(at..at + N)
        .and_then(|bytes| bytes.try_into().ok())
        .with_context(|| format!("the file ends before byte {}", at + N))
}

#[cfg(test)]
mod tests {
    use super::{Compression, Payload, payload};

    /// A bzImage with `setup_sects` setup sectors and `compressed` (what the kernel build puts in
    /// the payload) 0x100 bytes into the protected-mode part.
    fn bzimage(setup_sects: u8, compressed: &[u8]) -> Vec<u8> {
        let sectors = if setup_sects == 0 { 4 } else { setup_sects };
        let protected_mode = (usize::from(sectors) + 1) * 512;
        let mut image = vec![0xcc; protected_mode + 0x100];
        image[0x1f1] = setup_sects;
        image[0x202..0x206].copy_from_slice(b"HdrS");
        image[0x206..0x208].copy_from_slice(&0x020f_u16.to_le_bytes());
        image[0x248..0x24c].copy_from_slice(&0x100_u32.to_le_bytes());
        let length = u32::try_from(compressed.len()).unwrap_or(0);
        image[0x24c..0x250].copy_from_slice(&length.to_le_bytes());
        image.extend_from_slice(compressed);
        // The decompressor stub and padding follow the payload.
        image.extend_from_slice(&[0x90; 64]);
        image
    }

    #[test]
    fn finds_an_xz_stream_and_the_size_appended_after_it() -> anyhow::Result<()> {
        let stream = b"\xfd7zXZ\x00 compressed kernel";
        let mut compressed = stream.to_vec();
        compressed.extend_from_slice(&0x0123_4567_u32.to_le_bytes());
        let image = bzimage(27, &compressed);
        assert_eq!(
            payload(&image, Compression::Xz)?,
            Payload {
                stream,
                compression: Compression::Xz,
                uncompressed_size: 0x0123_4567,
            }
        );
        Ok(())
    }

    #[test]
    fn keeps_gzip_s_own_trailer_in_the_stream() -> anyhow::Result<()> {
        let compressed = b"\x1f\x8b\x08\x00 deflate... crc32 \x10\x00\x00\x00";
        let image = bzimage(0, compressed);
        let found = payload(&image, Compression::Gzip)?;
        assert_eq!(found.stream, compressed);
        assert_eq!(found.uncompressed_size, 16);
        Ok(())
    }

    #[test]
    fn refuses_a_payload_that_is_not_what_the_config_says() {
        let image = bzimage(27, b"\x28\xb5\x2f\xfd zstd frame \0\0\0\0");
        let error = payload(&image, Compression::Xz)
            .map(|_| ())
            .expect_err("zstd is not xz");
        assert_eq!(
            error.to_string(),
            "the config says xz, but the payload starts with zstd's magic"
        );
        assert!(payload(&image, Compression::Zstd).is_ok());
        assert!(payload(b"MZ not a kernel", Compression::Zstd).is_err());
    }

    #[test]
    fn detects_compressors_by_magic() {
        assert_eq!(
            Compression::detect(b"\x28\xb5\x2f\xfd\x04"),
            Some(Compression::Zstd)
        );
        assert_eq!(Compression::detect(b"\xfd7zXZ\0\0"), Some(Compression::Xz));
        assert_eq!(
            Compression::detect(b"\x1f\x8b\x08\0"),
            Some(Compression::Gzip)
        );
        assert_eq!(Compression::detect(b"\x7fELF"), None);
    }

    #[test]
    fn reads_the_compressor_from_a_kernel_config() -> anyhow::Result<()> {
        let config =
            "# CONFIG_KERNEL_GZIP is not set\nCONFIG_KERNEL_XZ=y\nCONFIG_KERNEL_XZ_EXTRA=y\n";
        assert_eq!(Compression::from_config(config)?, Compression::Xz);
        assert!(Compression::from_config("CONFIG_KERNEL_XZ=m\n").is_err());
        Ok(())
    }
}
