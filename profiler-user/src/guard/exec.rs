//! Preparing the in-process layers before fork, applying them between fork and exec.

use std::{
    ffi::{CString, OsStr, OsString},
    os::{fd::AsRawFd as _, fd::OwnedFd, unix::ffi::OsStrExt as _},
    path::{Path, PathBuf},
};

use seccompiler::BpfProgram;
use syscalls::Errno;

use super::{GuardError, landlock, seccomp};
use crate::policy::{CompiledPolicy, Mode, ResolvedPath, SeccompLayer};

/// The kernel's `struct rlimit64`, as `prlimit64` takes it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct KernelRlimit {
    soft: u64,
    hard: u64,
}

/// `struct __user_cap_header_struct` of `capset(2)`.
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

/// `struct __user_cap_data_struct` of `capset(2)`.
#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// `_LINUX_CAPABILITY_VERSION_3`: two [`CapData`], 64 capabilities.
const CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// Drops every capability of the calling thread: effective, permitted and inheritable (and with
/// them the ambient set). With `no_new_privs` set (first), exec cannot give any back, not even to
/// root: under `no_new_privs` the kernel grants root's capabilities at exec only within the old
/// permitted set. One `capset`: lowering the bounding set too would cost a credential commit
/// per capability, for nothing `no_new_privs` does not already ensure. A sandboxed root process
/// would otherwise keep `CAP_SYS_NICE`, `CAP_SYS_ADMIN`, `CAP_NET_RAW`... and with them ways
/// around the other layers.
fn drop_capabilities() -> Result<(), Errno> {
    let header = CapHeader {
        version: CAPABILITY_VERSION_3,
        pid: 0,
    };
    let none = [CapData {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    // SAFETY: a valid header and two data structs, as version 3 reads.
    let rc = unsafe { libc::syscall(libc::SYS_capset, std::ptr::from_ref(&header), none.as_ptr()) };
    if rc != 0 {
        return Err(Errno::last());
    }
    Ok(())
}

/// `struct sock_fprog`: a seccomp program as `seccomp(SECCOMP_SET_MODE_FILTER)` takes it.
#[repr(C)]
struct SockFprog {
    len: libc::c_ushort,
    filter: *const seccompiler::sock_filter,
}

/// The Landlock ruleset, seccomp programs and resource limits of one run, built before fork.
#[derive(Debug)]
pub struct PreparedLayers {
    landlock: Option<OwnedFd>,
    landlock_abi: i32,
    seccomp: Vec<BpfProgram>,
    rlimits: Vec<(libc::c_int, KernelRlimit)>,
    mode: Mode,
    paths: Vec<ResolvedPath>,
}

impl PreparedLayers {
    /// Resolves `{workdir}` and `{command}` (both absolute), builds the Landlock ruleset and the
    /// seccomp programs, and computes the rlimits (never above the current hard limits, which an
    /// unprivileged process could not raise). In audit mode Landlock is skipped (it cannot log
    /// without denying) and every seccomp rule only logs.
    pub fn prepare(
        policy: &CompiledPolicy,
        workdir: &Path,
        command: &Path,
    ) -> Result<Self, GuardError> {
        let paths = policy.resolve_paths(workdir, command)?;
        let landlock_abi = landlock::kernel_abi();
        let landlock = match policy.mode {
            Mode::Audit => None,
            Mode::Enforce if landlock_abi < 1 => return Err(GuardError::LandlockUnavailable),
            Mode::Enforce => Some(landlock::build(policy, &paths)?),
        };
        Ok(Self {
            landlock,
            landlock_abi,
            seccomp: seccomp_programs(&policy.seccomp, policy.mode)?,
            rlimits: rlimits(policy)?,
            mode: policy.mode,
            paths,
        })
    }

    /// The policy's path rules as resolved for this run.
    pub fn paths(&self) -> &[ResolvedPath] {
        &self.paths
    }

    /// The kernel's Landlock ABI version (7 on Linux 6.15+); rights newer than the kernel's are
    /// dropped (best effort), so below 6 signals are not scoped and below 4 TCP is open.
    pub fn landlock_abi(&self) -> i32 {
        self.landlock_abi
    }

    /// Whether a Landlock ruleset will be applied (not in audit mode).
    pub fn applies_landlock(&self) -> bool {
        self.landlock.is_some()
    }

    /// The number of seccomp programs that will be installed.
    pub fn seccomp_programs(&self) -> usize {
        self.seccomp.len()
    }

    /// The policy's mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Applies the layers to the calling thread: rlimits, `no_new_privs`, Landlock, then seccomp
    /// (last, so that its rules cannot refuse the calls before it). Only system calls, no
    /// allocation or locking: safe in the child of a multi-threaded process between `fork` and
    /// `execve`. On error the process is partly restricted and should exit.
    pub fn apply_in_child(&self) -> Result<(), Errno> {
        self.apply_before_seccomp()?;
        self.apply_seccomp()
    }

    /// The first part of [`Self::apply_in_child`]: rlimits, `no_new_privs`, in enforce mode no
    /// capabilities, and Landlock.
    pub fn apply_before_seccomp(&self) -> Result<(), Errno> {
        for (resource, limit) in &self.rlimits {
            // SAFETY: prlimit64 on ourselves (pid 0) reads one valid `struct rlimit64` and writes
            // nothing (null old-limit pointer).
            let rc = unsafe {
                libc::syscall(
                    libc::SYS_prlimit64,
                    0,
                    *resource,
                    std::ptr::from_ref(limit),
                    std::ptr::null_mut::<KernelRlimit>(),
                )
            };
            if rc != 0 {
                return Err(Errno::last());
            }
        }
        // SAFETY: prctl with integer arguments only.
        if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
            return Err(Errno::last());
        }
        if self.mode == Mode::Enforce {
            drop_capabilities()?;
        }
        if let Some(ruleset) = &self.landlock {
            // SAFETY: the fd is a Landlock ruleset we own; flags 0 asks for nothing else.
            let rc = unsafe {
                libc::syscall(libc::SYS_landlock_restrict_self, ruleset.as_raw_fd(), 0u32)
            };
            if rc != 0 {
                return Err(Errno::last());
            }
        }
        Ok(())
    }

    /// The second part of [`Self::apply_in_child`]: the seccomp filter (after
    /// [`Self::apply_before_seccomp`], which sets `no_new_privs`).
    pub fn apply_seccomp(&self) -> Result<(), Errno> {
        for program in &self.seccomp {
            let fprog = SockFprog {
                len: libc::c_ushort::try_from(program.len()).map_err(|_| Errno::EINVAL)?,
                filter: program.as_ptr(),
            };
            // SAFETY: `fprog` points to a live program of `len` instructions; the kernel copies
            // it before returning.
            let rc = unsafe {
                libc::syscall(
                    libc::SYS_seccomp,
                    libc::SECCOMP_SET_MODE_FILTER,
                    0u32,
                    std::ptr::from_ref(&fprog),
                )
            };
            if rc != 0 {
                return Err(Errno::last());
            }
        }
        Ok(())
    }
}

/// The seccomp programs of a layer, compiled once per process for the last layer seen: a batch
/// of runs under one policy compiles them once.
fn seccomp_programs(layer: &SeccompLayer, mode: Mode) -> Result<Vec<BpfProgram>, GuardError> {
    type Cached = Option<(SeccompLayer, Mode, Vec<BpfProgram>)>;
    static LAST: std::sync::Mutex<Cached> = std::sync::Mutex::new(None);
    let mut last = LAST
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some((cached, cached_mode, programs)) = last.as_ref()
        && cached == layer
        && *cached_mode == mode
    {
        return Ok(programs.clone());
    }
    let programs = seccomp::build(layer, mode)?;
    *last = Some((layer.clone(), mode, programs.clone()));
    Ok(programs)
}

/// The rlimits a policy implies, capped at the current hard limits.
fn rlimits(policy: &CompiledPolicy) -> Result<Vec<(libc::c_int, KernelRlimit)>, GuardError> {
    let limits = &policy.limits;
    let mut wanted: Vec<(libc::c_int, &'static str, u64, u64)> =
        vec![(libc::RLIMIT_CORE as libc::c_int, "RLIMIT_CORE", 0, 0)];
    if let Some(cpu) = limits.cpu_time {
        // Whole seconds: SIGXCPU at the soft limit, SIGKILL a second later.
        let secs = cpu.as_secs() + u64::from(cpu.subsec_nanos() > 0);
        wanted.push((
            libc::RLIMIT_CPU as libc::c_int,
            "RLIMIT_CPU",
            secs,
            secs + 1,
        ));
    }
    if let Some(memory) = limits.memory_bytes {
        // DATA rather than AS: Go and sanitizer runtimes reserve far more address space than
        // they use; DATA counts what is actually writable.
        wanted.push((
            libc::RLIMIT_DATA as libc::c_int,
            "RLIMIT_DATA",
            memory,
            memory,
        ));
    }
    if let Some(output) = limits.output_bytes {
        wanted.push((
            libc::RLIMIT_FSIZE as libc::c_int,
            "RLIMIT_FSIZE",
            output,
            output,
        ));
    }
    // Not with RLIMIT_DATA (`flamewarden exec`, where no memory cgroup bounds memory): the C
    // library reserves every thread's stack at the stack limit, in mappings DATA counts, so a
    // 256 MiB stack would leave no thread startable under a 256 MiB DATA limit. `sandbox run`
    // bounds memory with its cgroup and applies the stack limit.
    if let Some(stack) = limits.stack_bytes
        && limits.memory_bytes.is_none()
    {
        wanted.push((
            libc::RLIMIT_STACK as libc::c_int,
            "RLIMIT_STACK",
            stack,
            stack,
        ));
    }
    if let Some(tasks) = limits.tasks {
        // Per user, and ignored for root: a backup for the pids cgroup.
        wanted.push((
            libc::RLIMIT_NPROC as libc::c_int,
            "RLIMIT_NPROC",
            u64::from(tasks),
            u64::from(tasks),
        ));
    }
    wanted
        .into_iter()
        .map(|(resource, name, soft, hard)| {
            let mut current = KernelRlimit { soft: 0, hard: 0 };
            // SAFETY: reads our own limit into a valid `struct rlimit64`.
            let rc = unsafe {
                libc::syscall(
                    libc::SYS_prlimit64,
                    0,
                    resource,
                    std::ptr::null::<KernelRlimit>(),
                    std::ptr::from_mut(&mut current),
                )
            };
            if rc != 0 {
                return Err(GuardError::Rlimit {
                    name,
                    source: std::io::Error::last_os_error(),
                });
            }
            let hard = hard.min(current.hard);
            Ok((
                resource,
                KernelRlimit {
                    soft: soft.min(hard),
                    hard,
                },
            ))
        })
        .collect()
}

/// Finds `command` like `execvp` does: a name with a `/` as is, otherwise the first executable
/// file of that name on `PATH`. The result is absolute.
pub fn resolve_command(command: &OsStr) -> Result<PathBuf, GuardError> {
    let error = |reason: &str| GuardError::Command {
        command: command.to_string_lossy().into_owned(),
        reason: reason.to_owned(),
    };
    if command.is_empty() {
        return Err(error("empty command"));
    }
    let is_executable = |path: &Path| {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    let found = if command.as_bytes().contains(&b'/') {
        let path = std::path::absolute(command).map_err(|e| error(&e.to_string()))?;
        is_executable(&path).then_some(path)
    } else {
        let search =
            std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
        std::env::split_paths(&search)
            .map(|dir| dir.join(command))
            .find(|path| path.is_absolute() && is_executable(path))
    };
    found.ok_or_else(|| error("not found, or not an executable file"))
}

/// A command ready for `execv`: path and arguments as C strings, built before fork.
#[derive(Debug)]
pub struct PreparedCommand {
    path: CString,
    _args: Vec<CString>,
    argv: Vec<*const libc::c_char>,
    /// `NAME=VALUE` strings and their null-terminated pointer array, when the command gets an
    /// environment of its own instead of the current one.
    environment: Option<(Vec<CString>, Vec<*const libc::c_char>)>,
}

/// `strings` as C strings and a null-terminated array of pointers to them.
fn c_strings(
    strings: &[OsString],
    c_string: impl Fn(&OsStr) -> Result<CString, GuardError>,
) -> Result<(Vec<CString>, Vec<*const libc::c_char>), GuardError> {
    let owned = strings
        .iter()
        .map(|s| c_string(s))
        .collect::<Result<Vec<_>, _>>()?;
    let pointers = owned
        .iter()
        .map(|s| s.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    Ok((owned, pointers))
}

impl PreparedCommand {
    /// `path` is what to execute (see [`resolve_command`]), `args` the full argument vector,
    /// `args[0]` included.
    pub fn new(path: &Path, args: &[OsString]) -> Result<Self, GuardError> {
        let c_string = |s: &OsStr| {
            CString::new(s.as_bytes()).map_err(|_| GuardError::Command {
                command: s.to_string_lossy().into_owned(),
                reason: "contains a NUL byte".to_owned(),
            })
        };
        let path = c_string(path.as_os_str())?;
        let (args, argv) = c_strings(args, c_string)?;
        Ok(Self {
            path,
            _args: args,
            argv,
            environment: None,
        })
    }

    /// The command with exactly `variables` (`NAME=VALUE` each) as its environment.
    pub fn with_environment(mut self, variables: &[OsString]) -> Result<Self, GuardError> {
        let c_string = |s: &OsStr| {
            CString::new(s.as_bytes()).map_err(|_| GuardError::Command {
                command: s.to_string_lossy().into_owned(),
                reason: "environment variable contains a NUL byte".to_owned(),
            })
        };
        self.environment = Some(c_strings(variables, c_string)?);
        Ok(self)
    }

    /// Executes the command with its environment (by default the current one); returns only on
    /// failure, with why. Only a system call: safe between `fork` and `execve`.
    pub fn exec(&self) -> Errno {
        // SAFETY: `path` and every `argv` and `envp` entry are NUL-terminated strings owned by
        // `self`, and both arrays end with a null pointer.
        unsafe {
            match &self.environment {
                Some((_, envp)) => {
                    libc::execve(self.path.as_ptr(), self.argv.as_ptr(), envp.as_ptr())
                }
                None => libc::execv(self.path.as_ptr(), self.argv.as_ptr()),
            }
        };
        Errno::last()
    }
}

#[cfg(test)]
mod tests {
    use super::rlimits;
    use crate::policy::parse;

    fn resources(limits: &str) -> Vec<libc::c_int> {
        let policy = parse("p.toml", &format!("[limits]\n{limits}")).unwrap();
        rlimits(&policy)
            .unwrap()
            .into_iter()
            .map(|(resource, _)| resource)
            .collect()
    }

    #[test]
    fn the_stack_limit_applies_where_no_data_limit_counts_thread_stacks() {
        let stack = libc::RLIMIT_STACK as libc::c_int;
        let data = libc::RLIMIT_DATA as libc::c_int;
        assert!(resources("stack = \"256MiB\"\n").contains(&stack));
        let both = resources("stack = \"256MiB\"\nmemory = \"256MiB\"\n");
        assert!(both.contains(&data) && !both.contains(&stack), "{both:?}");
    }
}
