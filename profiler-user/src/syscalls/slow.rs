//! Slow calls: one event from the kernel, its arguments decoded for the common syscalls, as one
//! line of text (plus its user stack) or as JSON.

use std::fmt::Write as _;

use profiler_common::{PATH_LEN, SlowSyscallEvent};
use serde::Serialize;
use syscalls::Sysno;

use super::{
    histogram::format_ns,
    names::{errno_name, syscall_name},
};
use crate::{profile::Frame, record::assemble::comm_str};

/// `CLOCK_REALTIME - CLOCK_MONOTONIC` now, ns: turns `bpf_ktime_get_ns` times into wall time.
pub fn realtime_minus_monotonic_ns() -> i64 {
    let now = |clock| {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid out-pointer.
        unsafe { libc::clock_gettime(clock, &mut ts) };
        ts.tv_sec * 1_000_000_000 + ts.tv_nsec
    };
    now(libc::CLOCK_REALTIME) - now(libc::CLOCK_MONOTONIC)
}

/// Largest errno the kernel returns as a negative value.
const MAX_ERRNO: i64 = 4095;
/// `AT_FDCWD` as a file-descriptor argument.
const AT_FDCWD: i32 = -100;

/// One call slower than the threshold.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SlowCall {
    /// When it returned, ns since the Unix epoch.
    pub time_unix_ns: u64,
    /// Process id.
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// The thread's name.
    pub comm: String,
    /// cgroup v2 id.
    pub cgroup_id: u64,
    /// The cgroup's path (or `cgroup #ID`).
    pub cgroup: String,
    /// Syscall number.
    pub nr: u32,
    /// Syscall name.
    pub syscall: String,
    /// Decoded arguments, `fd=3, count=4096`.
    pub args: String,
    /// Return value (negative errno on failure).
    pub ret: i64,
    /// The errno's name when it failed.
    pub errno: Option<String>,
    /// How long it took, ns.
    pub duration_ns: u64,
    /// The calling user stack, innermost function first.
    pub stack: Vec<String>,
}

impl SlowCall {
    /// Decodes a kernel event; `time_unix_ns` is its exit time on the wall clock, `stack` its
    /// symbolized user stack (innermost first).
    pub fn from_event(
        event: &SlowSyscallEvent,
        time_unix_ns: u64,
        cgroup: String,
        stack: &[Frame],
    ) -> Self {
        let path_len = (event.path_len as usize).min(PATH_LEN);
        let path = (path_len > 0).then(|| comm_str(&event.path[..path_len]));
        let failed = event.ret < 0 && event.ret >= -MAX_ERRNO;
        Self {
            time_unix_ns,
            pid: event.tgid,
            tid: event.tid,
            comm: comm_str(&event.comm),
            cgroup_id: event.cgroup_id,
            cgroup,
            nr: event.nr,
            syscall: syscall_name(event.nr).into_owned(),
            args: describe_args(event.nr, &event.args, path.as_deref()),
            ret: event.ret,
            errno: failed.then(|| errno_name((-event.ret) as u32).into_owned()),
            duration_ns: event.duration_ns,
            stack: stack.iter().map(|f| f.name.clone()).collect(),
        }
    }

    /// `12:00:01.123456Z 1234/1240 worker cgroup=/judge nanosleep(...) = 0 50.1ms`, then one
    /// `    at FUNCTION` line per user frame.
    pub fn to_text(&self) -> String {
        let ret = match &self.errno {
            Some(name) => format!("-1 {name}"),
            None => self.ret.to_string(),
        };
        let mut out = format!(
            "{} {}/{} {} cgroup={} {}({}) = {ret} {}\n",
            time_of_day(self.time_unix_ns),
            self.pid,
            self.tid,
            self.comm,
            self.cgroup,
            self.syscall,
            self.args,
            format_ns(self.duration_ns),
        );
        for frame in &self.stack {
            let _ = writeln!(out, "    at {frame}");
        }
        out
    }
}

/// `HH:MM:SS.ffffffZ` (UTC) of a Unix time in ns.
pub fn time_of_day(unix_ns: u64) -> String {
    let secs = unix_ns / 1_000_000_000;
    let micros = (unix_ns % 1_000_000_000) / 1_000;
    let day = secs % 86_400;
    format!(
        "{:02}:{:02}:{:02}.{micros:06}Z",
        day / 3600,
        day / 60 % 60,
        day % 60
    )
}

fn fd(arg: u64) -> String {
    match arg as i32 {
        AT_FDCWD => "AT_FDCWD".to_owned(),
        fd => fd.to_string(),
    }
}

fn quoted(path: Option<&str>) -> String {
    path.map_or_else(|| "?".to_owned(), |p| format!("{p:?}"))
}

/// The arguments of the common syscalls by name (fds, paths, byte counts, timeouts); the
/// others as six hexadecimal words.
pub fn describe_args(nr: u32, a: &[u64; 6], path: Option<&str>) -> String {
    let Some(sysno) = Sysno::new(nr as usize) else {
        return raw(a);
    };
    let path = quoted(path);
    match sysno {
        Sysno::read | Sysno::write | Sysno::pread64 | Sysno::pwrite64 => {
            format!("fd={}, count={}", fd(a[0]), a[2])
        }
        Sysno::readv | Sysno::writev | Sysno::preadv | Sysno::pwritev => {
            format!("fd={}, iovcnt={}", fd(a[0]), a[2])
        }
        Sysno::recvfrom | Sysno::sendto => format!("fd={}, len={}", fd(a[0]), a[2]),
        Sysno::close
        | Sysno::fsync
        | Sysno::fdatasync
        | Sysno::fstat
        | Sysno::recvmsg
        | Sysno::sendmsg
        | Sysno::connect
        | Sysno::accept
        | Sysno::accept4
        | Sysno::getdents64
        | Sysno::flock => format!("fd={}", fd(a[0])),
        Sysno::lseek => format!("fd={}, offset={}, whence={}", fd(a[0]), a[1] as i64, a[2]),
        Sysno::ioctl | Sysno::fcntl => format!("fd={}, cmd={:#x}", fd(a[0]), a[1]),
        Sysno::open => format!("path={path}, flags={:#o}", a[1]),
        Sysno::openat => format!("dirfd={}, path={path}, flags={:#o}", fd(a[0]), a[2]),
        Sysno::openat2 => format!("dirfd={}, path={path}", fd(a[0])),
        Sysno::execve
        | Sysno::stat
        | Sysno::lstat
        | Sysno::access
        | Sysno::truncate
        | Sysno::chdir
        | Sysno::mkdir
        | Sysno::rmdir
        | Sysno::creat
        | Sysno::unlink
        | Sysno::readlink
        | Sysno::chmod
        | Sysno::chown
        | Sysno::lchown => format!("path={path}"),
        Sysno::newfstatat
        | Sysno::statx
        | Sysno::unlinkat
        | Sysno::mkdirat
        | Sysno::fchownat
        | Sysno::readlinkat
        | Sysno::fchmodat
        | Sysno::faccessat
        | Sysno::faccessat2
        | Sysno::execveat => format!("dirfd={}, path={path}", fd(a[0])),
        Sysno::poll | Sysno::ppoll => format!("nfds={}, timeout_ms={}", a[1], a[2] as i32),
        Sysno::epoll_wait | Sysno::epoll_pwait | Sysno::epoll_pwait2 => {
            format!(
                "epfd={}, maxevents={}, timeout_ms={}",
                fd(a[0]),
                a[2] as i32,
                a[3] as i32
            )
        }
        Sysno::select | Sysno::pselect6 => format!("nfds={}", a[0]),
        Sysno::futex => format!("uaddr={:#x}, op={}, val={}", a[0], a[1], a[2] as i32),
        Sysno::wait4 => format!("pid={}", a[0] as i32),
        Sysno::clock_nanosleep => format!("clockid={}, flags={}", a[0], a[1]),
        Sysno::mmap => format!(
            "addr={:#x}, len={}, prot={:#x}, flags={:#x}",
            a[0], a[1], a[2], a[3]
        ),
        Sysno::munmap | Sysno::mprotect | Sysno::madvise => {
            format!("addr={:#x}, len={}", a[0], a[1])
        }
        Sysno::sendfile => format!("out_fd={}, in_fd={}, count={}", fd(a[0]), fd(a[1]), a[3]),
        Sysno::splice => format!("fd_in={}, fd_out={}, len={}", fd(a[0]), fd(a[2]), a[4]),
        Sysno::nanosleep | Sysno::sched_yield | Sysno::pause | Sysno::getppid | Sysno::getpid => {
            String::new()
        }
        _ => raw(a),
    }
}

fn raw(a: &[u64; 6]) -> String {
    a.iter()
        .map(|v| format!("{v:#x}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::FrameKind;

    fn event(nr: i64, ret: i64, path: &str) -> SlowSyscallEvent {
        let mut comm = [0; 16];
        comm[..6].copy_from_slice(b"worker");
        let mut p = [0; PATH_LEN];
        p[..path.len()].copy_from_slice(path.as_bytes());
        SlowSyscallEvent {
            exit_ns: 0,
            duration_ns: 52_300_000,
            cgroup_id: 7,
            ret,
            args: [(-100i64) as u64, 0x1000, 0o2, 0, 0, 0],
            user_stack_id: 1,
            tgid: 10,
            tid: 11,
            nr: nr as u32,
            path_len: if path.is_empty() {
                0
            } else {
                path.len() as u32 + 1
            },
            comm,
            path: p,
        }
    }

    #[test]
    fn decodes_a_failed_openat_with_its_path_errno_and_stack() {
        let stack = [
            Frame::function("open_missing", FrameKind::User),
            Frame::function("main", FrameKind::User),
        ];
        let ev = event(libc::SYS_openat, -2, "/nope");
        let call = SlowCall::from_event(&ev, 3_600_000_123_456, "/judge".into(), &stack);
        assert_eq!(call.syscall, "openat");
        assert_eq!(call.errno.as_deref(), Some("ENOENT"));
        assert_eq!(call.args, "dirfd=AT_FDCWD, path=\"/nope\", flags=0o2");
        let text = call.to_text();
        assert_eq!(
            text,
            "01:00:00.000123Z 10/11 worker cgroup=/judge openat(dirfd=AT_FDCWD, path=\"/nope\", \
             flags=0o2) = -1 ENOENT 52.3ms\n    at open_missing\n    at main\n"
        );
    }

    #[test]
    fn decodes_byte_counts_and_leaves_unknown_calls_raw() {
        let call = SlowCall::from_event(&event(libc::SYS_read, 4096, ""), 0, String::new(), &[]);
        assert_eq!(call.args, "fd=AT_FDCWD, count=2");
        assert_eq!(call.errno, None);
        assert!(call.to_text().contains("= 4096 "));
        assert_eq!(describe_args(libc::SYS_nanosleep as u32, &[0; 6], None), "");
        assert_eq!(
            describe_args(100_000, &[1, 2, 0, 0, 0, 0], None),
            "0x1, 0x2, 0x0, 0x0, 0x0, 0x0"
        );
    }
}
