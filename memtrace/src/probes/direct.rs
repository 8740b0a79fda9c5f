//! Kernel memory read in place, where the kernel allows it ([`memtrace_common::direct`]): the
//! loader tries the kfunc in a program of its own, then patches the programs' placeholder calls
//! into calls of it and tells them what to cast to ([`KernelOffsets::in_place_btf_id`]).

use memtrace_common::{
    KernelOffsets,
    direct::{kfunc_call, placeholder_call},
    names::RDONLY_CAST_KFUNC,
};

use super::{bpf_sys, btf::KernelBtf};

/// What the programs need to read in place: the kfunc's BTF id, and that of the struct they cast
/// to (`struct folio`, whose first member, `flags`, is a 64-bit number).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InPlace {
    kfunc_id: u32,
    folio_id: u32,
}

impl InPlace {
    /// Whether this kernel lets the programs read in place: its BTF has the kfunc and
    /// `struct folio`, and it loads a raw tracepoint program that casts with it and reads as the
    /// programs do (found by trying). The reason when not, for the debug log.
    ///
    /// # Errors
    ///
    /// What is missing, or the kernel's refusal of the trial program.
    pub fn find(btf: &KernelBtf) -> Result<Self, String> {
        let kfunc_id = btf
            .function_id(RDONLY_CAST_KFUNC)
            .ok_or_else(|| format!("no {RDONLY_CAST_KFUNC} in kernel BTF (before 6.2)"))?;
        let folio_id = btf
            .struct_id("folio")
            .ok_or_else(|| "no struct folio in kernel BTF".to_owned())?;
        bpf_sys::try_rdonly_cast(kfunc_id, folio_id)
            .map_err(|e| format!("the kernel refused a raw tracepoint calling it: {e}"))?;
        Ok(Self { kfunc_id, folio_id })
    }

    /// Tells the programs to read in place.
    pub fn enable(self, offsets: &mut KernelOffsets) {
        offsets.in_place_btf_id = self.folio_id;
    }

    /// `object` with every placeholder call made a call of the kfunc, and how many there were.
    /// Instructions are 8-byte aligned in the file, as their sections are.
    #[must_use]
    pub fn patch(self, object: &[u8]) -> (AlignedObject, usize) {
        let mut object = AlignedObject::copy_of(object);
        let placeholder = u64::from_le_bytes(placeholder_call());
        let call = u64::from_le_bytes(kfunc_call(self.kfunc_id));
        let mut patched = 0;
        for insn in &mut object.words {
            if u64::from_le(*insn) == placeholder {
                *insn = call.to_le();
                patched += 1;
            }
        }
        (object, patched)
    }
}

/// An object file's bytes, 8-byte aligned as the ELF parser needs them.
pub struct AlignedObject {
    words: Vec<u64>,
    len: usize,
}

impl AlignedObject {
    fn copy_of(bytes: &[u8]) -> Self {
        let mut words = vec![0_u64; bytes.len().div_ceil(8)];
        bytemuck::cast_slice_mut::<u64, u8>(&mut words)[..bytes.len()].copy_from_slice(bytes);
        Self {
            words,
            len: bytes.len(),
        }
    }

    #[must_use]
    pub fn bytes(&self) -> &[u8] {
        &bytemuck::cast_slice::<u64, u8>(&self.words)[..self.len]
    }
}

/// The object to load: patched where the kernel allows in-place reads (and `offsets` told so),
/// else as built.
pub fn object<'a>(built: &'a [u8], btf: &KernelBtf, offsets: &mut KernelOffsets) -> Object<'a> {
    match InPlace::find(btf) {
        Ok(in_place) => {
            let (patched, calls) = in_place.patch(built);
            in_place.enable(offsets);
            log::debug!(
                "kernel memory read in place: {calls} {RDONLY_CAST_KFUNC} calls patched in"
            );
            Object::Patched(patched)
        }
        Err(why) => {
            log::debug!("kernel memory read through bpf_probe_read_kernel: {why}");
            Object::Built(built)
        }
    }
}

/// The object file aya loads.
pub enum Object<'a> {
    Built(&'a [u8]),
    Patched(AlignedObject),
}

impl Object<'_> {
    #[must_use]
    pub fn bytes(&self) -> &[u8] {
        match self {
            Self::Built(bytes) => bytes,
            Self::Patched(object) => object.bytes(),
        }
    }
}

#[cfg(test)]
mod tests {
    use memtrace_common::direct::{kfunc_call, placeholder_call};

    use super::InPlace;
    use crate::probes::EBPF_OBJECT;

    #[test]
    fn every_placeholder_in_the_object_becomes_the_kfunc_call() {
        let in_place = InPlace {
            kfunc_id: 65_475,
            folio_id: 713,
        };
        let count = |bytes: &[u8], insn: [u8; 8]| {
            bytes
                .as_chunks::<8>()
                .0
                .iter()
                .filter(|&&chunk| chunk == insn)
                .count()
        };
        let placeholders = count(EBPF_OBJECT, placeholder_call());
        assert!(
            placeholders > 0,
            "the programs that read folios have placeholder calls"
        );
        // The patch looks at 8-byte-aligned words only: no placeholder may sit elsewhere.
        let anywhere = EBPF_OBJECT
            .windows(8)
            .filter(|&window| window == placeholder_call())
            .count();
        assert_eq!(
            anywhere, placeholders,
            "every placeholder is 8-byte aligned"
        );
        let (patched, calls) = in_place.patch(EBPF_OBJECT);
        assert_eq!(calls, placeholders);
        assert_eq!(count(patched.bytes(), placeholder_call()), 0);
        assert_eq!(count(patched.bytes(), kfunc_call(65_475)), placeholders);
        assert_eq!(patched.bytes().len(), EBPF_OBJECT.len());
        let changed = EBPF_OBJECT
            .iter()
            .zip(patched.bytes())
            .filter(|(a, b)| a != b)
            .count();
        assert!(changed <= 8 * placeholders, "only the placeholders changed");
    }

    #[test]
    fn the_kfunc_call_names_its_btf_id_as_a_kfunc() {
        // BPF_JMP | BPF_CALL, src_reg BPF_PSEUDO_KFUNC_CALL, offset 0 (vmlinux), imm the id.
        assert_eq!(kfunc_call(0x0102_0304), [0x85, 0x20, 0, 0, 4, 3, 2, 1]);
    }
}
