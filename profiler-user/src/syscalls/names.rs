//! Names of syscalls and errnos, from the `syscalls` crate's tables (generated from the kernel's
//! own syscall table and errno headers), never from a hand-typed list.

use std::{borrow::Cow, str::FromStr as _};

use syscalls::{Errno, Sysno};

/// The name of syscall `nr` of this machine's table (`openat`), or `syscall_NR` when the table
/// does not know it (a kernel newer than the crate).
pub fn syscall_name(nr: u32) -> Cow<'static, str> {
    match Sysno::new(nr as usize) {
        Some(sysno) => Cow::Borrowed(sysno.name()),
        None => Cow::Owned(format!("syscall_{nr}")),
    }
}

/// The number of a syscall given by name (`openat`), as `syscall_NR`, or as a plain number.
pub fn parse_syscall(name: &str) -> Option<u32> {
    if let Ok(sysno) = Sysno::from_str(name) {
        return u32::try_from(sysno.id()).ok();
    }
    name.strip_prefix("syscall_").unwrap_or(name).parse().ok()
}

/// The symbolic name of a (positive) errno, `ENOENT`, or `E<n>` when unknown.
pub fn errno_name(errno: u32) -> Cow<'static, str> {
    match i32::try_from(errno).ok().and_then(|e| Errno::new(e).name()) {
        Some(name) => Cow::Borrowed(name),
        None => Cow::Owned(format!("E{errno}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_syscalls_of_this_machine_and_falls_back_to_the_number() {
        assert_eq!(syscall_name(libc::SYS_openat as u32), "openat");
        assert_eq!(syscall_name(libc::SYS_getppid as u32), "getppid");
        assert_eq!(syscall_name(100_000), "syscall_100000");
    }

    #[test]
    fn parses_names_numbers_and_fallback_names() {
        assert_eq!(parse_syscall("nanosleep"), Some(libc::SYS_nanosleep as u32));
        assert_eq!(parse_syscall("syscall_9999"), Some(9999));
        assert_eq!(parse_syscall("1"), Some(1));
        assert_eq!(parse_syscall("no_such_call"), None);
    }

    #[test]
    fn names_errnos() {
        assert_eq!(errno_name(libc::ENOENT as u32), "ENOENT");
        assert_eq!(errno_name(libc::EAGAIN as u32), "EAGAIN");
        assert_eq!(errno_name(4000), "E4000");
    }
}
