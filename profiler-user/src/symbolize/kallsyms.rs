//! Kernel addresses to function names through `/proc/kallsyms`, reading only as far as needed.
//!
//! `/proc/kallsyms` is about 120 000 lines (5 MB) of text that the kernel formats on every
//! read, and most of a profile's kernel frames sit in a small part of it. The core kernel's
//! symbols come first, in ascending address order; module, BPF and other symbols follow (with
//! their module in a fourth column), in no particular order. The addresses looked up are known in advance, so the reading stops as soon
//! as the ascending part has passed all of them, and nothing but their names is kept.
//!
//! The rule is blazesym's (used before): the symbol with the greatest address at or below the
//! address, the first listed among symbols at the same address, symbols at address 0 (hidden
//! by `kptr_restrict`) ignored.

use std::{
    fs::File,
    io::{BufRead, BufReader},
};

const KALLSYMS: &str = "/proc/kallsyms";

/// The name of each of `wanted` (sorted ascending, without duplicates), `None` where no symbol
/// is at or below it or kallsyms cannot be read.
pub fn resolve_kallsyms(wanted: &[u64]) -> Vec<Option<String>> {
    match File::open(KALLSYMS) {
        Ok(file) => resolve(BufReader::with_capacity(64 * 1024, file), wanted),
        Err(_) => vec![None; wanted.len()],
    }
}

/// [`resolve_kallsyms`] over any kallsyms-formatted text (`ADDR TYPE NAME [MODULE]` lines).
pub fn resolve(mut reader: impl BufRead, wanted: &[u64]) -> Vec<Option<String>> {
    debug_assert!(wanted.windows(2).all(|w| w[0] < w[1]));
    let mut best: Vec<Option<(u64, String)>> = vec![None; wanted.len()];
    let Some(&highest) = wanted.last() else {
        return Vec::new();
    };
    // The ascending prefix resolves on the fly: wanted[..next] are settled by it.
    let mut next = 0;
    let mut previous: Option<(u64, String)> = None;
    let mut ascending = true;
    // Symbols after the prefix that may still be the best match of something.
    let mut tail: Vec<(u64, String)> = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let Some((addr, name, in_module)) = parse_line(&line) else {
            continue;
        };
        if ascending && (in_module || previous.as_ref().is_some_and(|(p, _)| addr < *p)) {
            ascending = false;
        }
        if !ascending {
            if addr <= highest {
                tail.push((addr, name.to_owned()));
            }
            continue;
        }
        if previous.as_ref().is_some_and(|(p, _)| addr == *p) {
            // The first name at an address wins.
            continue;
        }
        while next < wanted.len() && wanted[next] < addr {
            best[next] = previous.clone();
            next += 1;
        }
        match &mut previous {
            Some((p, n)) => {
                *p = addr;
                n.clear();
                n.push_str(name);
            }
            None => previous = Some((addr, name.to_owned())),
        }
        // Every address is now between two symbols of the core kernel, where nothing later in
        // the file (modules, BPF programs) can be.
        if next == wanted.len() && best[0].is_some() {
            return best.into_iter().map(|b| b.map(|(_, n)| n)).collect();
        }
    }
    for slot in &mut best[next..] {
        slot.clone_from(&previous);
    }
    tail.sort_by_key(|(addr, _)| *addr);
    wanted
        .iter()
        .zip(best)
        .map(|(&addr, from_prefix)| {
            let from_tail = first_at_or_below(&tail, addr);
            match (from_prefix, from_tail) {
                (Some(p), Some(t)) if t.0 > p.0 => Some(t.1.clone()),
                (Some(p), _) => Some(p.1),
                (None, t) => t.map(|t| t.1.clone()),
            }
        })
        .collect()
}

/// In `symbols` sorted by address (stable): the first of the symbols with the greatest address
/// at or below `addr`.
fn first_at_or_below(symbols: &[(u64, String)], addr: u64) -> Option<&(u64, String)> {
    let end = symbols.partition_point(|(a, _)| *a <= addr);
    let found = symbols.get(end.checked_sub(1)?)?.0;
    let first = symbols[..end].partition_point(|(a, _)| *a < found);
    symbols.get(first)
}

/// `ffffffff81000000 T _stext [module]` → (address, name, whether a module column follows);
/// `None` for address 0 or garbage.
fn parse_line(line: &str) -> Option<(u64, &str, bool)> {
    let mut fields = line.split_ascii_whitespace();
    let addr = u64::from_str_radix(fields.next()?, 16).ok()?;
    let _kind = fields.next()?;
    let name = fields.next()?;
    (addr != 0).then_some((addr, name, fields.next().is_some()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
0000000000000000 A fixed_percpu_data
ffffffff81000000 T _stext
ffffffff81000000 T _text
ffffffff81000100 t do_one_initcall
ffffffff81000200 T schedule
ffffffff81000300 T vfs_read
ffffffff81000400 T _etext
ffffffffc0001000 t ext4_read [ext4]
ffffffffc0000000 t btrfs_sync [btrfs]
ffffffffa0000100 t bpf_prog_6deef7357e7b4530_sample [bpf]
";

    fn names(text: &str, wanted: &[u64]) -> Vec<Option<String>> {
        resolve(text.as_bytes(), wanted)
    }

    #[test]
    fn names_each_address_by_the_nearest_symbol_at_or_below_it() {
        assert_eq!(
            names(
                TEXT,
                &[0xffffffff81000000, 0xffffffff81000250, 0xffffffff81000300]
            ),
            [
                Some("_stext".into()),
                Some("schedule".into()),
                Some("vfs_read".into())
            ]
        );
    }

    #[test]
    fn stops_reading_once_the_core_kernel_passed_every_address() {
        // A line past the end that would win if it were read (real files never have one).
        let text = format!("{TEXT}ffffffff81000240 t never_read\n");
        assert_eq!(
            names(&text, &[0xffffffff81000250]),
            [Some("schedule".into())]
        );
        // Without the early stop (an address in a module), it is read.
        assert_eq!(
            names(&text, &[0xffffffff81000250, 0xffffffffc0000010]),
            [Some("never_read".into()), Some("btrfs_sync".into())]
        );
    }

    #[test]
    fn finds_module_and_bpf_symbols_listed_after_the_core_kernel() {
        assert_eq!(
            names(
                TEXT,
                &[0xffffffffa0000180, 0xffffffffc0000010, 0xffffffffc0001010]
            ),
            [
                Some("bpf_prog_6deef7357e7b4530_sample".into()),
                Some("btrfs_sync".into()),
                Some("ext4_read".into()),
            ]
        );
    }

    #[test]
    fn leaves_addresses_below_every_symbol_unresolved() {
        assert_eq!(
            names(TEXT, &[0x1000, 0xffffffff81000100]),
            [None, Some("do_one_initcall".into())]
        );
        assert_eq!(names("", &[0x1000]), [None]);
        assert!(names(TEXT, &[]).is_empty());
    }

    #[test]
    fn reads_the_running_kernels_symbols_when_allowed() {
        let Ok(text) = std::fs::read_to_string(KALLSYMS) else {
            return;
        };
        let Some(schedule) = text.lines().find_map(|line| {
            let (addr, name, _) = parse_line(line)?;
            (name == "schedule").then_some(addr)
        }) else {
            println!("skipping test - kallsyms addresses are hidden (needs root)");
            return;
        };
        assert_eq!(resolve_kallsyms(&[schedule + 1]), [Some("schedule".into())]);
    }
}
