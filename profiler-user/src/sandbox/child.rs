//! The run's command, started the way `posix_spawn` starts one: `clone(CLONE_VM | CLONE_VFORK)`
//! onto a stack of its own, so that none of flamewarden's page tables is copied and no page of
//! it is copied on write afterwards (a fork of this process cost about 1 ms). Between clone and
//! exec the child makes system calls only, on memory prepared before the clone: it resets the
//! signal handlers, notes its pid in the guard's map, moves itself into the run's cgroups, takes
//! its standard streams, work directory, session, rlimits, Landlock ruleset and seccomp filter,
//! and executes the command. The calling thread sleeps meanwhile (`CLONE_VFORK`) and
//! wakes once exec succeeded or the child exited; a failure is written into the shared memory.

use std::{
    io,
    os::fd::RawFd,
    sync::atomic::{AtomicI32, Ordering},
};

use crate::guard::{PreparedCommand, PreparedLayers};

/// Exit code of a child that could not set itself up or exec.
const SETUP_FAILED: i32 = 127;

/// The child's stack: what it runs before exec is a few frames of system calls.
const STACK_SIZE: usize = 128 * 1024;

/// What the child needs, prepared before the clone.
pub struct ChildSetup<'a> {
    /// The command.
    pub command: &'a PreparedCommand,
    /// The guard's layers.
    pub layers: &'a PreparedLayers,
    /// The work directory.
    pub workdir: std::ffi::CString,
    /// Descriptors for fds 0, 1, 2 (`None`: inherited).
    pub stdio: [Option<RawFd>; 3],
    /// The `cgroup.procs` of each of the run's cgroups (v2 first), open for writing: the child
    /// moves itself in by writing `0`.
    pub procs: &'a [RawFd],
    /// The guard's pid map and the run's cgroup id: the child notes its pid there before exec,
    /// so that the kernel side knows it from its first instruction.
    pub register: Option<(RawFd, u64)>,
}

/// A started child: its command runs.
pub struct Child {
    /// Its pid.
    pub pid: u32,
}

/// Why the child failed before exec, as it reported it.
#[derive(Debug, thiserror::Error)]
#[error("{step}")]
pub struct ChildError {
    /// What the child was doing.
    pub step: &'static str,
    /// The error.
    #[source]
    pub source: io::Error,
}

const STEPS: [&str; 8] = [
    "creating the process",
    "setting up standard streams",
    "entering the work directory",
    "applying the guard layers (rlimits, Landlock, seccomp)",
    "executing the command",
    "moving into the run's cgroups",
    "noting the process in the guard's map",
    "closing inherited file descriptors",
];

/// What the child writes before it exits without exec: the index in [`STEPS`] and errno.
struct Report {
    step: AtomicI32,
    errno: AtomicI32,
}

/// The child's argument.
struct Start<'a> {
    setup: &'a ChildSetup<'a>,
    report: &'a Report,
    /// The calling thread's signal mask, which the command gets.
    mask: libc::sigset_t,
}

/// `union bpf_attr` for `BPF_MAP_UPDATE_ELEM`.
#[repr(C)]
struct MapUpdate {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

/// A mapping for the child's stack, with a guard page below it; unmapped on drop.
struct Stack {
    base: *mut libc::c_void,
}

impl Stack {
    fn new() -> io::Result<Self> {
        // SAFETY: a fresh anonymous mapping; nothing else refers to it.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                STACK_SIZE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let stack = Self { base };
        // SAFETY: the lowest page of our own mapping.
        if unsafe { libc::mprotect(base, page_size(), libc::PROT_NONE) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(stack)
    }

    fn top(&self) -> *mut libc::c_void {
        // SAFETY: one past the end of the mapping, where a downward-growing stack starts.
        unsafe { self.base.cast::<u8>().add(STACK_SIZE).cast() }
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        // SAFETY: our own mapping, which the child no longer uses (it has exec'd or exited).
        unsafe { libc::munmap(self.base, STACK_SIZE) };
    }
}

fn page_size() -> usize {
    // SAFETY: sysconf with a constant argument.
    usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096)
}

impl Child {
    /// Starts the command; returns once it runs (exec succeeded), or with what failed.
    pub fn spawn(setup: &ChildSetup<'_>) -> Result<Child, ChildError> {
        let failed = |source| ChildError {
            step: STEPS[0],
            source,
        };
        let stack = Stack::new().map_err(failed)?;
        let report = Report {
            step: AtomicI32::new(-1),
            errno: AtomicI32::new(0),
        };
        let mut start = Start {
            setup,
            report: &report,
            // SAFETY: an all-zero sigset is a valid value (and pthread_sigmask overwrites it).
            mask: unsafe { std::mem::zeroed() },
        };
        // SAFETY: as above.
        let mut all: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: both sigsets are valid and ours. No signal handler may run in the child,
        // which shares this memory: all are blocked until the child has reset them.
        unsafe {
            libc::sigfillset(&mut all);
            libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut start.mask);
        }
        // SAFETY: CLONE_VM | CLONE_VFORK: the child runs `child_main` on its own stack, makes
        // only system calls on memory prepared here, and this thread sleeps until it has
        // exec'd or exited, so `start` and `stack` outlive its use of them.
        let pid = unsafe {
            libc::clone(
                child_main,
                stack.top(),
                libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
                std::ptr::from_mut(&mut start).cast(),
            )
        };
        let clone_error = io::Error::last_os_error();
        // SAFETY: restores this thread's mask saved above.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &start.mask, std::ptr::null_mut()) };
        drop(stack);
        if pid < 0 {
            return Err(failed(clone_error));
        }
        let step = report.step.load(Ordering::Acquire);
        if step >= 0 {
            // The child exited without exec: reap it.
            let _ = crate::launch::wait(pid as u32, true);
            return Err(ChildError {
                step: STEPS.get(step as usize).copied().unwrap_or("setup"),
                source: io::Error::from_raw_os_error(report.errno.load(Ordering::Acquire)),
            });
        }
        Ok(Child { pid: pid as u32 })
    }
}

/// The child, from clone to exec.
///
/// Only system calls on memory prepared before the clone: no allocation, no lock, no
/// thread-local of Rust's (errno is the sleeping parent thread's, as in `posix_spawn`).
extern "C" fn child_main(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the `Start` of `Child::spawn`, alive while the parent thread sleeps.
    let start = unsafe { &*arg.cast::<Start<'_>>() };
    let setup = start.setup;
    let fail = |step: i32| -> ! {
        // SAFETY: errno of this thread; then an exit without running anything of the parent's.
        unsafe {
            start
                .report
                .errno
                .store(*libc::__errno_location(), Ordering::Relaxed);
            start.report.step.store(step, Ordering::Release);
            libc::_exit(SETUP_FAILED)
        }
    };
    // SAFETY: plain system calls on fds, strings and structs prepared before the clone.
    unsafe {
        // Handlers of flamewarden's would run on memory it shares with the child: default.
        // SIGPIPE too, which Rust ignores (an ignored signal stays ignored across exec);
        // signals the judge ignored stay ignored.
        for signal in 1..65 {
            if signal == libc::SIGKILL || signal == libc::SIGSTOP {
                continue;
            }
            let mut old: libc::sigaction = std::mem::zeroed();
            // glibc refuses its own two signals (32, 33): EINVAL, nothing to reset.
            if libc::sigaction(signal, std::ptr::null(), &mut old) != 0 {
                continue;
            }
            if signal == libc::SIGPIPE
                || (old.sa_sigaction != libc::SIG_DFL && old.sa_sigaction != libc::SIG_IGN)
            {
                let default: libc::sigaction = std::mem::zeroed();
                libc::sigaction(signal, &default, std::ptr::null_mut());
            }
        }
        // Before the move: in the run's cgroup the guard would see this bpf() as the run's.
        if let Some((map_fd, cgroup_id)) = setup.register {
            let pid = libc::getpid() as u32;
            let attr = MapUpdate {
                map_fd: map_fd as u32,
                _pad: 0,
                key: std::ptr::from_ref(&pid) as u64,
                value: std::ptr::from_ref(&cgroup_id) as u64,
                flags: 0,
            };
            if libc::syscall(
                libc::SYS_bpf,
                2, // BPF_MAP_UPDATE_ELEM
                std::ptr::from_ref(&attr),
                size_of::<MapUpdate>() as u32,
            ) != 0
            {
                fail(6);
            }
        }
        for fd in setup.procs {
            // "0": the writing process, into the cgroup of this cgroup.procs.
            if libc::write(*fd, b"0".as_ptr().cast(), 1) != 1 {
                fail(5);
            }
        }
        // A session of its own, without a controlling terminal: a terminal's Ctrl-C reaches
        // flamewarden (which ends the run), not the command, and the command cannot type into
        // the judge's terminal (TIOCSTI needs the terminal to be the caller's controlling one,
        // or CAP_SYS_ADMIN, which enforce mode drops; audit mode keeps capabilities).
        libc::setsid();
        for (target, fd) in setup.stdio.iter().enumerate() {
            if let Some(fd) = *fd
                && libc::dup2(fd, target as i32) < 0
            {
                fail(1);
            }
        }
        // Descriptors the judge leaked to flamewarden (opened without O_CLOEXEC: a secret's
        // file, a socket, a pipe to another run) must not reach the command: every one past
        // the three standard streams is closed at exec (the prepared ones are used until then).
        if libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        ) != 0
        {
            fail(7);
        }
        if libc::chdir(setup.workdir.as_ptr()) != 0 {
            fail(2);
        }
        if let Err(errno) = setup.layers.apply_before_seccomp() {
            *libc::__errno_location() = errno.into_raw();
            fail(3);
        }
        // The command gets the mask flamewarden's thread had; the handlers are defaults now.
        libc::pthread_sigmask(libc::SIG_SETMASK, &start.mask, std::ptr::null_mut());
        // Seccomp last: it may refuse the calls before it.
        if let Err(errno) = setup.layers.apply_seccomp() {
            *libc::__errno_location() = errno.into_raw();
            fail(3);
        }
        let errno = setup.command.exec();
        *libc::__errno_location() = errno.into_raw();
        fail(4)
    }
}
