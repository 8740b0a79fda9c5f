//! memtrace's eBPF programs: one module per probe family under `probes/`.
#![no_std]
#![no_main]
#![feature(asm_experimental_arch)]
#![expect(
    clippy::inline_always,
    reason = "BPF-to-BPF calls cost and older verifiers refuse some; small helpers are inlined"
)]
#![expect(
    clippy::needless_pass_by_value,
    reason = "the program macros hand each program its context by value"
)]

mod kernel;
mod maps;
mod paired;
mod probes;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any program that could reach a panic, so this is never called.
    loop {}
}

/// The helpers the programs call (`bpf_probe_read_kernel`, …) are GPL-only.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
