//! Kernel memory read in place (6.2+): `bpf_rdonly_cast()`, a kfunc, makes an address a
//! read-only, untrusted pointer to a BTF type, which the program then loads from directly.
//! The JIT makes each such load one instruction with a fault handler, where
//! `bpf_probe_read_kernel` is a helper call (tens of nanoseconds on a CPU that mitigates
//! return-stack attacks: every call and return of the helper pays it).
//!
//! aya 0.16 cannot emit a kfunc call from Rust (its `.ksyms` support reads what clang writes), so
//! the programs emit a placeholder: a helper call to [`PLACEHOLDER_HELPER`], a number no helper
//! has. Where the kernel has the kfunc, the loader rewrites each placeholder into the kfunc call
//! ([`kfunc_call`]) before aya reads the object, and sets
//! [`crate::KernelOffsets::in_place_btf_id`]; the programs test that value, which the verifier
//! knows (read-only data), so it never visits the other path, and removes it. Where it does
//! not, the placeholder stays and the value is 0: the programs read through the helper, and
//! the placeholder is on the path the verifier removes.

/// The helper number of the placeholder call.
pub const PLACEHOLDER_HELPER: i32 = 0x7ead_ca57;

/// `BPF_JMP | BPF_CALL`.
const CALL: u8 = 0x85;
/// `BPF_PSEUDO_KFUNC_CALL`, in the source-register nibble.
const KFUNC_SRC: u8 = 2 << 4;

/// The placeholder call as the compiler emits it (no registers, offset 0).
#[must_use]
pub fn placeholder_call() -> [u8; 8] {
    instruction(0, PLACEHOLDER_HELPER.to_le_bytes())
}

/// A call of the kernel function whose BTF id (in vmlinux's BTF) is `btf_id`.
#[must_use]
pub fn kfunc_call(btf_id: u32) -> [u8; 8] {
    instruction(KFUNC_SRC, btf_id.to_le_bytes())
}

fn instruction(regs: u8, imm: [u8; 4]) -> [u8; 8] {
    let [a, b, c, d] = imm;
    [CALL, regs, 0, 0, a, b, c, d]
}
