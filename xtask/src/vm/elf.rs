//! Just enough of ELF64 to answer three questions about a file: is it linked statically (no
//! `PT_INTERP`, so it runs in an initramfs without a dynamic loader), does a kernel image carry
//! the PVH entry note (so QEMU can boot it directly, skipping the bzImage's own decompression),
//! and what does a kernel module's `.modinfo` section say.

use anyhow::{Context as _, bail, ensure};

const PT_INTERP: u32 = 3;
const PT_NOTE: u32 = 4;

/// `XEN_ELFNOTE_PHYS32_ENTRY`: the 32-bit entry point QEMU uses to boot a `vmlinux` the PVH way.
/// <https://github.com/torvalds/linux/blob/v6.12/include/xen/interface/elfnote.h>
const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;

/// A little-endian 64-bit ELF file's program headers.
pub struct Elf<'a> {
    data: &'a [u8],
    segments: Vec<Segment>,
}

/// The contents of the section called `name` in `data`, a little-endian ELF64 file (an object
/// file such as a kernel module has sections but no program headers).
pub fn section<'a>(data: &'a [u8], name: &str) -> anyhow::Result<Option<&'a [u8]>> {
    ensure!(
        data.starts_with(b"\x7fELF") && data.get(4) == Some(&2) && data.get(5) == Some(&1),
        "not a little-endian 64-bit ELF file"
    );
    let shoff = usize_at(data, 0x28, 8)?;
    let shentsize = usize_at(data, 0x3a, 2)?;
    let shnum = usize_at(data, 0x3c, 2)?;
    let shstrndx = usize_at(data, 0x3e, 2)?;
    ensure!(
        shentsize >= 0x40,
        "section header entries of {shentsize} bytes"
    );
    let contents = |i: usize| -> anyhow::Result<(usize, &'a [u8])> {
        let at = shoff + i * shentsize;
        let name = usize_at(data, at, 4)?;
        let offset = usize_at(data, at + 0x18, 8)?;
        let size = usize_at(data, at + 0x20, 8)?;
        let bytes = data
            .get(offset..offset.saturating_add(size))
            .with_context(|| format!("section {i} points past the end of the file"))?;
        Ok((name, bytes))
    };
    let (_, names) = contents(shstrndx).context("reading the section names")?;
    for i in 0..shnum {
        let (name_at, bytes) = contents(i)?;
        let section_name = names
            .get(name_at..)
            .and_then(|rest| rest.split(|&b| b == 0).next())
            .with_context(|| format!("section {i}'s name is outside the name table"))?;
        if section_name == name.as_bytes() {
            return Ok(Some(bytes));
        }
    }
    Ok(None)
}

struct Segment {
    kind: u32,
    offset: usize,
    size: usize,
}

/// One entry of a `PT_NOTE` segment.
#[derive(Debug, PartialEq, Eq)]
pub struct Note<'a> {
    pub name: &'a [u8],
    pub kind: u32,
    pub desc: &'a [u8],
}

impl<'a> Elf<'a> {
    /// Reads the program headers of `data`, which must be a whole little-endian ELF64 file.
    pub fn parse(data: &'a [u8]) -> anyhow::Result<Self> {
        ensure!(data.starts_with(b"\x7fELF"), "not an ELF file");
        ensure!(
            data.get(4) == Some(&2) && data.get(5) == Some(&1),
            "not a little-endian 64-bit ELF file"
        );
        let phoff = usize_at(data, 0x20, 8)?;
        let phentsize = usize_at(data, 0x36, 2)?;
        let phnum = usize_at(data, 0x38, 2)?;
        ensure!(
            phentsize >= 0x38,
            "program header entries of {phentsize} bytes"
        );
        let segments = (0..phnum)
            .map(|i| {
                let at = phoff + i * phentsize;
                let kind = u32::try_from(usize_at(data, at, 4)?)?;
                let offset = usize_at(data, at + 0x08, 8)?;
                let size = usize_at(data, at + 0x20, 8)?;
                ensure!(
                    offset
                        .checked_add(size)
                        .is_some_and(|end| end <= data.len()),
                    "program header {i} points past the end of the file"
                );
                Ok(Segment { kind, offset, size })
            })
            .collect::<anyhow::Result<_>>()
            .context("reading the program headers")?;
        Ok(Self { data, segments })
    }

    /// Whether the file names a dynamic loader: a static (or static-pie) executable does not.
    pub fn has_interpreter(&self) -> bool {
        self.segments.iter().any(|s| s.kind == PT_INTERP)
    }

    /// Every note in every `PT_NOTE` segment.
    pub fn notes(&self) -> anyhow::Result<Vec<Note<'a>>> {
        let mut notes = Vec::new();
        for segment in self.segments.iter().filter(|s| s.kind == PT_NOTE) {
            let mut rest = &self.data[segment.offset..segment.offset + segment.size];
            while rest.len() >= 12 {
                let namesz = usize_at(rest, 0, 4)?;
                let descsz = usize_at(rest, 4, 4)?;
                let kind = u32::try_from(usize_at(rest, 8, 4)?)?;
                let name_end = 12 + namesz;
                let desc_start = align4(name_end);
                let desc_end = desc_start + descsz;
                let (Some(name), Some(desc)) =
                    (rest.get(12..name_end), rest.get(desc_start..desc_end))
                else {
                    bail!("a note runs past the end of its segment");
                };
                // The name's size counts its terminating NUL.
                let name = name.strip_suffix(b"\0").unwrap_or(name);
                notes.push(Note { name, kind, desc });
                rest = rest.get(align4(desc_end)..).unwrap_or_default();
            }
        }
        Ok(notes)
    }

    /// Whether the image has the PVH entry note QEMU needs to boot it as `-kernel`.
    pub fn has_pvh_entry(&self) -> anyhow::Result<bool> {
        Ok(self
            .notes()?
            .iter()
            .any(|note| note.name == b"Xen" && note.kind == XEN_ELFNOTE_PHYS32_ENTRY))
    }
}

fn align4(n: usize) -> usize {
    n.next_multiple_of(4)
}

/// The little-endian unsigned integer of `width` bytes at `at`.
fn usize_at(data: &[u8], at: usize, width: usize) -> anyhow::Result<usize> {
    let bytes = data
        .get(at..at + width)
        .with_context(|| format!("the file ends before byte {}", at + width))?;
    let mut value = [0; 8];
    value[..width].copy_from_slice(bytes);
    usize::try_from(u64::from_le_bytes(value)).context("an offset does not fit in usize")
}

#[cfg(test)]
mod tests {
    use super::{Elf, Note, PT_INTERP, PT_NOTE, XEN_ELFNOTE_PHYS32_ENTRY, section};

    /// A minimal ELF64 file: the header, then one program header per `(type, contents)`, then the
    /// contents.
    fn elf_with_segments(segments: &[(u32, &[u8])]) -> Vec<u8> {
        let phoff = 0x40_usize;
        let mut data = vec![0; phoff + segments.len() * 0x38];
        data[..6].copy_from_slice(b"\x7fELF\x02\x01");
        data[0x20..0x28].copy_from_slice(&(phoff as u64).to_le_bytes());
        data[0x36..0x38].copy_from_slice(&0x38_u16.to_le_bytes());
        data[0x38..0x3a].copy_from_slice(&u16::try_from(segments.len()).unwrap_or(0).to_le_bytes());
        for (i, (kind, contents)) in segments.iter().enumerate() {
            let header = phoff + i * 0x38;
            let offset = data.len() as u64;
            data[header..header + 4].copy_from_slice(&kind.to_le_bytes());
            data[header + 0x08..header + 0x10].copy_from_slice(&offset.to_le_bytes());
            data[header + 0x20..header + 0x28]
                .copy_from_slice(&(contents.len() as u64).to_le_bytes());
            data.extend_from_slice(contents);
        }
        data
    }

    fn note(name: &[u8], kind: u32, desc: &[u8]) -> Vec<u8> {
        let mut note = Vec::new();
        note.extend_from_slice(&u32::try_from(name.len() + 1).unwrap_or(0).to_le_bytes());
        note.extend_from_slice(&u32::try_from(desc.len()).unwrap_or(0).to_le_bytes());
        note.extend_from_slice(&kind.to_le_bytes());
        note.extend_from_slice(name);
        note.push(0);
        note.resize(note.len().next_multiple_of(4), 0);
        note.extend_from_slice(desc);
        note.resize(note.len().next_multiple_of(4), 0);
        note
    }

    #[test]
    fn tells_static_from_dynamic_executables() -> anyhow::Result<()> {
        let dynamic = elf_with_segments(&[(PT_INTERP, b"/lib64/ld-linux-x86-64.so.2\0")]);
        assert!(Elf::parse(&dynamic)?.has_interpreter());
        let static_pie = elf_with_segments(&[(1, b"code"), (2, b"dynamic")]);
        assert!(!Elf::parse(&static_pie)?.has_interpreter());
        Ok(())
    }

    #[test]
    fn finds_the_pvh_note_among_others() -> anyhow::Result<()> {
        let mut notes = note(b"GNU", 3, b"build-id-bytes");
        notes.extend(note(
            b"Xen",
            XEN_ELFNOTE_PHYS32_ENTRY,
            &0x0100_0000_u32.to_le_bytes(),
        ));
        let image = elf_with_segments(&[(PT_NOTE, &notes)]);
        let elf = Elf::parse(&image)?;
        assert_eq!(
            elf.notes()?[0],
            Note {
                name: b"GNU",
                kind: 3,
                desc: b"build-id-bytes"
            }
        );
        assert!(elf.has_pvh_entry()?);

        let without = elf_with_segments(&[(PT_NOTE, &note(b"Xen", 1, b"xen-3.0"))]);
        assert!(!Elf::parse(&without)?.has_pvh_entry()?);
        Ok(())
    }

    /// A minimal relocatable ELF64 file with the sections `(name, contents)`, after the null
    /// section and the section names.
    fn elf_with_sections(sections: &[(&str, &[u8])]) -> Vec<u8> {
        let mut names = b"\0.shstrtab\0".to_vec();
        let mut data = vec![0; 0x40];
        data[..6].copy_from_slice(b"\x7fELF\x02\x01");
        // (name offset, contents offset, size) of each section after the null one.
        let mut headers = Vec::new();
        headers.push((1, data.len(), 0));
        for (name, contents) in sections {
            headers.push((names.len(), data.len(), contents.len()));
            names.extend_from_slice(name.as_bytes());
            names.push(0);
            data.extend_from_slice(contents);
        }
        headers[0] = (1, data.len(), names.len());
        data.extend_from_slice(&names);
        let shoff = data.len();
        data.extend_from_slice(&[0; 0x40]);
        for (name, offset, size) in headers {
            let mut header = [0; 0x40];
            header[..4].copy_from_slice(&u32::try_from(name).unwrap_or(0).to_le_bytes());
            header[0x18..0x20].copy_from_slice(&(offset as u64).to_le_bytes());
            header[0x20..0x28].copy_from_slice(&(size as u64).to_le_bytes());
            data.extend_from_slice(&header);
        }
        data[0x28..0x30].copy_from_slice(&(shoff as u64).to_le_bytes());
        data[0x3a..0x3c].copy_from_slice(&0x40_u16.to_le_bytes());
        let shnum = u16::try_from(sections.len() + 2).unwrap_or(0);
        data[0x3c..0x3e].copy_from_slice(&shnum.to_le_bytes());
        data[0x3e..0x40].copy_from_slice(&1_u16.to_le_bytes());
        data
    }

    #[test]
    fn finds_a_section_by_name() -> anyhow::Result<()> {
        let module = elf_with_sections(&[
            (".text", b"\x90\x90"),
            (".modinfo", b"license=GPL\0depends=jbd2,crc16\0"),
        ]);
        assert_eq!(
            section(&module, ".modinfo")?,
            Some(&b"license=GPL\0depends=jbd2,crc16\0"[..])
        );
        assert_eq!(section(&module, ".text")?, Some(&b"\x90\x90"[..]));
        assert_eq!(section(&module, ".data")?, None);
        Ok(())
    }

    #[test]
    fn rejects_what_is_not_a_whole_elf64_file() {
        assert!(Elf::parse(b"MZ\x90\0").is_err());
        let mut truncated = elf_with_segments(&[(PT_NOTE, b"0123456789abcdef")]);
        truncated.truncate(truncated.len() - 1);
        assert!(Elf::parse(&truncated).is_err());
    }
}
