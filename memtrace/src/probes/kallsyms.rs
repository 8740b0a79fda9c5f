//! Kernel function addresses from `/proc/kallsyms`, for what BTF does not give: where code is.

use std::{fs, io};

use memtrace_common::{IgnoredCallers, names::BPF_MEMALLOC_FUNCTIONS};

/// The address ranges of the BPF memory allocator's functions that call `kmalloc()`. Empty
/// (nothing ignored) when kallsyms hides addresses (`kptr_restrict`) or lacks the functions.
///
/// # Errors
///
/// When `/proc/kallsyms` cannot be read.
pub fn bpf_memalloc_callers() -> io::Result<IgnoredCallers> {
    Ok(ranges_of(
        &fs::read_to_string("/proc/kallsyms")?,
        &BPF_MEMALLOC_FUNCTIONS,
    ))
}

/// Each named text symbol's `[address, next symbol's address)`; kallsyms lists the kernel's
/// own symbols in address order.
fn ranges_of(kallsyms: &str, names: &[&str]) -> IgnoredCallers {
    let mut callers = IgnoredCallers::default();
    let mut found = 0;
    let mut open: Option<usize> = None;
    for line in kallsyms.lines() {
        let mut fields = line.split_ascii_whitespace();
        let (Some(address), Some(kind), Some(name)) = (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let Ok(address) = u64::from_str_radix(address, 16) else {
            continue;
        };
        if let Some(i) = open.take()
            && address > callers.ranges[i][0]
        {
            callers.ranges[i][1] = address;
        }
        // A module's symbol has its module in brackets after the name: not ours.
        if address != 0
            && found < callers.ranges.len()
            && matches!(kind, "t" | "T")
            && fields.next().is_none()
            && names.contains(&name)
        {
            callers.ranges[found] = [address, address];
            open = Some(found);
            found += 1;
        }
    }
    callers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_each_function_up_to_the_next_symbol() {
        let kallsyms = "\
ffffffff81544bb0 t __pfx___alloc
ffffffff81544bc0 t __alloc
ffffffff81544d00 t free_one
ffffffff81544f70 t alloc_bulk
ffffffff81545170 t __pfx_check_leaked_objs
ffffffffc0001000 t __alloc\t[some_module]
";
        let callers = ranges_of(kallsyms, &BPF_MEMALLOC_FUNCTIONS);
        assert_eq!(
            callers.ranges[..2],
            [
                [0xffff_ffff_8154_4bc0, 0xffff_ffff_8154_4d00],
                [0xffff_ffff_8154_4f70, 0xffff_ffff_8154_5170]
            ]
        );
        assert_eq!(callers.ranges[2], [0, 0]);
        assert!(callers.contains(0xffff_ffff_8154_4c10));
        assert!(!callers.contains(0xffff_ffff_8154_4d00));
    }

    #[test]
    fn hidden_addresses_ignore_nothing() {
        let callers = ranges_of(
            "0000000000000000 t __alloc\n0000000000000000 t alloc_bulk\n",
            &BPF_MEMALLOC_FUNCTIONS,
        );
        assert_eq!(callers, IgnoredCallers::default());
    }
}
