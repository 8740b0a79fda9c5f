//! Linking for `bpfel-unknown-none` goes through `bpf-linker`, an undeclared dependency: say
//! plainly how to get it, and rebuild when it changes (as aya-template does).
fn main() {
    match which::which("bpf-linker") {
        Ok(path) => println!("cargo::rerun-if-changed={}", path.display()),
        Err(err) => {
            println!(
                "cargo::error=bpf-linker not found on PATH ({err}): build through `cargo xtask build`, \
                 or run `cargo xtask setup` and add .tools/bpf-linker/bin to PATH"
            );
        }
    }
}
