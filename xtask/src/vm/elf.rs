//! The three questions xtask asks of an ELF file, answered by the `object` crate: is it linked
//! statically (no `PT_INTERP`, so it runs in an initramfs without a dynamic loader), does a
//! kernel image carry the PVH entry note (so QEMU can boot it directly, skipping the bzImage's own
//! decompression), and what does a kernel module's `.modinfo` section say.

use anyhow::Context as _;
use object::{
    Endianness, Object as _, ObjectSection as _,
    elf::PT_INTERP,
    read::elf::{ElfFile64, ProgramHeader as _},
};

/// `XEN_ELFNOTE_PHYS32_ENTRY`: the 32-bit entry point QEMU uses to boot a `vmlinux` the PVH way.
/// <https://github.com/torvalds/linux/blob/v6.12/include/xen/interface/elfnote.h>
const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;

/// A 64-bit ELF file.
pub struct Elf<'a>(ElfFile64<'a, Endianness>);

/// The contents of the section called `name` in `data`, a 64-bit ELF file (an object file such
/// as a kernel module has sections but no program headers).
pub fn section<'a>(data: &'a [u8], name: &str) -> anyhow::Result<Option<&'a [u8]>> {
    let elf = Elf::parse(data)?;
    let Some(section) = elf.0.section_by_name(name) else {
        return Ok(None);
    };
    let contents = section
        .data()
        .with_context(|| format!("reading the section {name}"))?;
    Ok(Some(contents))
}

impl<'a> Elf<'a> {
    /// Reads the headers of `data`, which must be a whole 64-bit ELF file.
    pub fn parse(data: &'a [u8]) -> anyhow::Result<Self> {
        ElfFile64::parse(data)
            .map(Self)
            .context("not a whole 64-bit ELF file")
    }

    /// Whether the file names a dynamic loader: a static (or static-pie) executable does not.
    pub fn has_interpreter(&self) -> bool {
        let endian = self.0.endian();
        self.0
            .elf_program_headers()
            .iter()
            .any(|segment| segment.p_type(endian) == PT_INTERP)
    }

    /// Whether the image has the PVH entry note QEMU needs to boot it as `-kernel`.
    pub fn has_pvh_entry(&self) -> anyhow::Result<bool> {
        let endian = self.0.endian();
        for segment in self.0.elf_program_headers() {
            let Some(mut notes) = segment
                .notes(endian, self.0.data())
                .context("reading a PT_NOTE segment")?
            else {
                continue;
            };
            while let Some(note) = notes.next().context("reading a note")? {
                if note.name() == b"Xen" && note.n_type(endian).0 == XEN_ELFNOTE_PHYS32_ENTRY {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use object::elf::{PT_INTERP, PT_NOTE};

    use super::{Elf, XEN_ELFNOTE_PHYS32_ENTRY, section};

    /// A minimal ELF64 file: the header, then one program header per `(type, contents)`, then the
    /// contents.
    fn elf_with_segments(segments: &[(object::elf::ProgramType, &[u8])]) -> Vec<u8> {
        let phoff = 0x40_usize;
        let mut data = vec![0; phoff + segments.len() * 0x38];
        data[..7].copy_from_slice(b"\x7fELF\x02\x01\x01");
        data[0x20..0x28].copy_from_slice(&(phoff as u64).to_le_bytes());
        data[0x36..0x38].copy_from_slice(&0x38_u16.to_le_bytes());
        data[0x38..0x3a].copy_from_slice(&u16::try_from(segments.len()).unwrap_or(0).to_le_bytes());
        for (i, (kind, contents)) in segments.iter().enumerate() {
            let header = phoff + i * 0x38;
            let offset = data.len() as u64;
            data[header..header + 4].copy_from_slice(&kind.0.to_le_bytes());
            // p_align: notes are 4-byte aligned.
            data[header + 0x30..header + 0x38].copy_from_slice(&4_u64.to_le_bytes());
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
        let static_pie = elf_with_segments(&[
            (object::elf::PT_LOAD, b"code"),
            (object::elf::PT_DYNAMIC, b"dynamic"),
        ]);
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
        data[..7].copy_from_slice(b"\x7fELF\x02\x01\x01");
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
    fn rejects_what_is_not_a_whole_elf64_file() -> anyhow::Result<()> {
        assert!(Elf::parse(b"MZ\x90\0").is_err());
        let mut truncated = elf_with_segments(&[(PT_NOTE, b"0123456789abcdef")]);
        truncated.truncate(truncated.len() - 1);
        assert!(Elf::parse(&truncated)?.has_pvh_entry().is_err());
        Ok(())
    }
}
