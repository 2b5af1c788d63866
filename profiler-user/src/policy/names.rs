//! Names a policy may use: syscalls (this architecture's table), errno names, argument flags.

use std::str::FromStr as _;

use syscalls::{Errno, Sysno};

/// Resolves a syscall name, or a prefix pattern ending in `*`, to `(number, name)` pairs.
pub fn syscalls_named(pattern: &str) -> Result<Vec<(u32, &'static str)>, String> {
    let to_pair = |sysno: Sysno| (u32::try_from(sysno.id()).unwrap_or(u32::MAX), sysno.name());
    if let Some(prefix) = pattern.strip_suffix('*') {
        if prefix.is_empty() || prefix.contains('*') {
            return Err(format!(
                "`{pattern}`: a pattern needs a prefix before a single trailing `*`"
            ));
        }
        let matches: Vec<_> = Sysno::iter()
            .filter(|s| s.name().starts_with(prefix))
            .map(to_pair)
            .collect();
        if matches.is_empty() {
            return Err(format!(
                "`{pattern}` matches no syscall on {}",
                std::env::consts::ARCH
            ));
        }
        return Ok(matches);
    }
    match Sysno::from_str(pattern) {
        Ok(sysno) => Ok(vec![to_pair(sysno)]),
        Err(()) => {
            let similar: Vec<&str> = Sysno::iter()
                .map(|s| s.name())
                .filter(|name| {
                    !pattern.is_empty() && (name.contains(pattern) || pattern.contains(name))
                })
                .filter(|name| name.len() > 2)
                .take(4)
                .collect();
            let hint = if similar.is_empty() {
                String::new()
            } else {
                format!("; did you mean {}?", similar.join(", "))
            };
            Err(format!(
                "`{pattern}` is not a syscall on {}{hint}",
                std::env::consts::ARCH
            ))
        }
    }
}

/// Parses an errno name (`EPERM`, `ENOSYS`) to its number.
pub fn errno_named(name: &str) -> Result<u16, String> {
    (1..4096u16)
        .find(|&n| Errno::new(i32::from(n)).name() == Some(name))
        .ok_or_else(|| format!("`{name}` is not an errno name (e.g. EPERM, EACCES, ENOSYS)"))
}

/// Flags that `if_arg.any_of` knows by name: the namespace bits of clone/unshare.
pub const FLAG_NAMES: &[(&str, u64)] = &[
    ("CLONE_NEWTIME", 0x0000_0080),
    ("CLONE_NEWNS", 0x0002_0000),
    ("CLONE_NEWCGROUP", 0x0200_0000),
    ("CLONE_NEWUTS", 0x0400_0000),
    ("CLONE_NEWIPC", 0x0800_0000),
    ("CLONE_NEWUSER", 0x1000_0000),
    ("CLONE_NEWPID", 0x2000_0000),
    ("CLONE_NEWNET", 0x4000_0000),
];

/// Parses a flag name from [`FLAG_NAMES`] or a number (`"0x10000000"`, `"268435456"`); zero is
/// refused since it could never match.
pub fn flag_value(text: &str) -> Result<u64, String> {
    if let Some(&(_, value)) = FLAG_NAMES.iter().find(|(name, _)| *name == text) {
        return Ok(value);
    }
    let parsed = match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => text.parse(),
    };
    match parsed {
        Ok(0) => Err("a flag of 0 can never be set".to_owned()),
        Ok(value) => Ok(value),
        Err(_) => {
            let known: Vec<&str> = FLAG_NAMES.iter().map(|(name, _)| *name).collect();
            Err(format!(
                "`{text}` is neither a known flag ({}) nor a number",
                known.join(", ")
            ))
        }
    }
}

/// The names of the flags in `mask`, or its hex value for bits without a name.
pub fn flag_names(mask: u64) -> String {
    let mut rest = mask;
    let mut names = Vec::new();
    for &(name, value) in FLAG_NAMES {
        if mask & value == value {
            names.push(name.to_owned());
            rest &= !value;
        }
    }
    if rest != 0 {
        names.push(format!("{rest:#x}"));
    }
    names.join("|")
}

#[cfg(test)]
mod tests {
    use super::{errno_named, flag_names, flag_value, syscalls_named};

    #[test]
    fn syscall_patterns_expand_to_every_match() {
        let uring = syscalls_named("io_uring_*").unwrap();
        let names: Vec<&str> = uring.iter().map(|(_, name)| *name).collect();
        assert!(
            names.contains(&"io_uring_setup") && names.contains(&"io_uring_enter"),
            "{names:?}"
        );
        assert_eq!(syscalls_named("ptrace").unwrap().len(), 1);
        assert!(
            syscalls_named("ptrac")
                .unwrap_err()
                .contains("did you mean ptrace")
        );
        assert!(
            syscalls_named("nosuch_*")
                .unwrap_err()
                .contains("matches no syscall")
        );
    }

    #[test]
    fn errno_and_flag_names_resolve() {
        assert_eq!(errno_named("EPERM"), Ok(1));
        assert_eq!(errno_named("ENOSYS"), Ok(38));
        assert!(errno_named("EWHATEVER").is_err());
        assert_eq!(flag_value("CLONE_NEWUSER"), Ok(0x1000_0000));
        assert_eq!(flag_value("0x20"), Ok(0x20));
        assert!(flag_value("0").is_err());
        assert_eq!(flag_names(0x1000_0000 | 0x1), "CLONE_NEWUSER|0x1");
    }
}
