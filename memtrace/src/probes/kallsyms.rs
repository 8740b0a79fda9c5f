//! Kernel function addresses from `/proc/kallsyms`, for what BTF does not give: where code is.

use std::{
    fs,
    io::{self, BufRead as _, BufReader},
};

use memtrace_common::{IgnoredCallers, names::BPF_MEMALLOC_FUNCTIONS};

/// The address ranges of the BPF memory allocator's functions that call `kmalloc()`. Empty
/// (nothing ignored) when kallsyms hides addresses (`kptr_restrict`) or lacks the functions.
///
/// # Errors
///
/// When `/proc/kallsyms` cannot be read.
pub fn bpf_memalloc_callers() -> io::Result<IgnoredCallers> {
    let kallsyms = BufReader::with_capacity(1 << 16, fs::File::open("/proc/kallsyms")?);
    ranges_of(kallsyms.lines(), &BPF_MEMALLOC_FUNCTIONS)
}

/// Each named text symbol's `[address, next symbol's address)`; kallsyms lists the kernel's
/// own symbols in address order. Stops reading once every name's range is closed, or
/// [`PAST_THE_FILE`] symbols after the last one found (the names are one source file's, and the
/// compiler inlines some of them away): the kernel formats kallsyms as it is read, tens of
/// milliseconds for all of it.
const PAST_THE_FILE: usize = 200;

fn ranges_of(
    lines: impl Iterator<Item = io::Result<String>>,
    names: &[&str],
) -> io::Result<IgnoredCallers> {
    let mut callers = IgnoredCallers::default();
    let mut found = 0;
    let mut open: Option<usize> = None;
    let mut seen: Vec<String> = Vec::new();
    let mut since_found = 0;
    for line in lines {
        // Each name once: the kernel's own text comes first, so the first match is its
        // function, not a module's of the same name.
        if open.is_none()
            && (found >= names.len().min(callers.ranges.len())
                || (found > 0 && since_found > PAST_THE_FILE))
        {
            break;
        }
        let line = line?;
        since_found += 1;
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
            && !seen.contains(&name.to_owned())
        {
            seen.push(name.to_owned());
            since_found = 0;
            callers.ranges[found] = [address, address];
            open = Some(found);
            found += 1;
        }
    }
    Ok(callers)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &str) -> impl Iterator<Item = io::Result<String>> + '_ {
        text.lines().map(|l| Ok(l.to_owned()))
    }

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
        let callers = ranges_of(lines(kallsyms), &BPF_MEMALLOC_FUNCTIONS).expect("no I/O");
        assert_eq!(
            callers.ranges[..3],
            [
                [0xffff_ffff_8154_4bc0, 0xffff_ffff_8154_4d00],
                [0xffff_ffff_8154_4d00, 0xffff_ffff_8154_4f70],
                [0xffff_ffff_8154_4f70, 0xffff_ffff_8154_5170]
            ]
        );
        assert_eq!(callers.ranges[3], [0, 0]);
        assert!(callers.contains(0xffff_ffff_8154_4c10));
        assert!(callers.contains(0xffff_ffff_8154_4d00));
        assert!(!callers.contains(0xffff_ffff_8154_5170));
    }

    #[test]
    fn stops_reading_well_past_the_last_function_found() {
        let symbols = (0..=PAST_THE_FILE as u64 + 1).map(|i| {
            Ok(format!(
                "{:x} t {}",
                0xffff_ffff_8154_4bc0 + i * 16,
                if i == 0 { "__alloc" } else { "unrelated" }
            ))
        });
        let unread = std::iter::once(Err(io::Error::other("read too far")));
        let callers =
            ranges_of(symbols.chain(unread), &BPF_MEMALLOC_FUNCTIONS).expect("stopped before");
        assert_eq!(
            callers.ranges[0],
            [0xffff_ffff_8154_4bc0, 0xffff_ffff_8154_4bd0]
        );
    }

    #[test]
    fn hidden_addresses_ignore_nothing() {
        let callers = ranges_of(
            lines("0000000000000000 t __alloc\n0000000000000000 t alloc_bulk\n"),
            &BPF_MEMALLOC_FUNCTIONS,
        )
        .expect("no I/O");
        assert_eq!(callers, IgnoredCallers::default());
    }
}
