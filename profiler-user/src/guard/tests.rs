//! The guard layers against the real kernel: each test forks a child that applies a shipped
//! policy with [`PreparedLayers::apply_in_child`] and then attempts one thing a submission must
//! not do, using raw system calls only (the test harness is multi-threaded). The child reports
//! the errno it got as its exit code; every child is bounded by `alarm`.

use std::{
    ffi::{CString, OsString},
    io::Read as _,
    net::TcpListener,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    path::{Path, PathBuf},
};

use super::{PreparedCommand, PreparedLayers};
use crate::policy::{CompiledPolicy, load};

/// Exit code of a child whose layers could not be applied.
const APPLY_FAILED: i32 = 200;
/// Exit code of a child whose forbidden attempt succeeded.
const GOT_THROUGH: i32 = 0;

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        eprintln!("skipping test - needs root");
    }
    root
}

fn shipped(name: &str) -> CompiledPolicy {
    load(
        &Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../policies")
            .join(name),
    )
    .expect("shipped policy")
}

/// A work directory with one file in it, and a secret outside it.
struct Run {
    workdir: tempfile::TempDir,
    secret_dir: tempfile::TempDir,
}

impl Run {
    fn new() -> Self {
        let run = Self {
            workdir: tempfile::tempdir().unwrap(),
            secret_dir: tempfile::tempdir().unwrap(),
        };
        std::fs::write(run.workdir.path().join("input.txt"), "allowed input\n").unwrap();
        std::fs::write(run.secret(), "TOP-SECRET-7f3a\n").unwrap();
        run
    }

    fn secret(&self) -> PathBuf {
        self.secret_dir.path().join("secret.txt")
    }

    fn layers(&self, policy: &str, command: &str) -> PreparedLayers {
        PreparedLayers::prepare(&shipped(policy), self.workdir.path(), Path::new(command))
            .expect("prepare")
    }
}

fn c_path(path: &Path) -> CString {
    CString::new(path.as_os_str().as_encoded_bytes()).unwrap()
}

fn errno() -> i32 {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(255)
}

/// Forks a child that applies `layers`, runs `attempt` and exits with what it returns; returns
/// the child's exit code (or 128 + signal).
fn in_sandbox(layers: &PreparedLayers, attempt: impl Fn() -> i32) -> i32 {
    // SAFETY: the child only makes system calls (apply_in_child, the attempt, _exit).
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        // SAFETY: alarm and _exit are async-signal-safe.
        unsafe { libc::alarm(10) };
        let code = match layers.apply_in_child() {
            Ok(()) => attempt(),
            Err(_) => APPLY_FAILED,
        };
        // SAFETY: see above.
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    // SAFETY: waiting for our own child into a valid int.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        128 + libc::WTERMSIG(status)
    }
}

/// A system call's result as the child reports it: [`GOT_THROUGH`] on success, else the errno.
fn outcome(rc: libc::c_int) -> i32 {
    if rc >= 0 { GOT_THROUGH } else { errno() }
}

/// `open(path)`: 0 if it opened (the attempt got through), else the errno.
fn open_errno(path: &CString) -> i32 {
    // SAFETY: a valid NUL-terminated path.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd >= 0 { GOT_THROUGH } else { errno() }
}

#[test]
fn reading_a_file_outside_the_allowed_trees_fails_with_eacces() {
    if !is_root() {
        return;
    }
    let run = Run::new();
    let layers = run.layers("judge.toml", "/usr/bin/true");
    let (secret, input) = (
        c_path(&run.secret()),
        c_path(&run.workdir.path().join("input.txt")),
    );
    let hostname = c_path(Path::new("/etc/hostname"));
    assert_eq!(
        in_sandbox(&layers, || open_errno(&input)),
        GOT_THROUGH,
        "the work directory is readable"
    );
    assert_eq!(in_sandbox(&layers, || open_errno(&secret)), libc::EACCES);
    assert_eq!(in_sandbox(&layers, || open_errno(&hostname)), libc::EACCES);
}

#[test]
fn the_secret_never_reaches_the_output_of_an_executed_command() {
    if !is_root() {
        return;
    }
    let run = Run::new();
    let layers = run.layers("judge.toml", "/usr/bin/cat");
    let cat = |file: &Path| {
        let args: Vec<OsString> = vec!["cat".into(), file.into()];
        let command = PreparedCommand::new(Path::new("/usr/bin/cat"), &args).unwrap();
        let mut fds = [0; 2];
        // SAFETY: a valid array of two ints.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        // SAFETY: pipe2 just returned these two fds, owned by nobody else.
        let (read_end, write_end) =
            unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        let status = in_sandbox(&layers, || {
            // SAFETY: dup2 onto stdout and stderr in the child.
            unsafe {
                libc::dup2(write_end.as_raw_fd(), 1);
                libc::dup2(write_end.as_raw_fd(), 2);
            }
            command.exec().into_raw()
        });
        drop(write_end);
        let mut output = String::new();
        std::fs::File::from(read_end)
            .read_to_string(&mut output)
            .unwrap();
        (status, output)
    };
    let (status, output) = cat(&run.workdir.path().join("input.txt"));
    assert_eq!(
        (status, output.as_str()),
        (0, "allowed input\n"),
        "the solution may read its input"
    );
    let (status, output) = cat(&run.secret());
    assert_ne!(status, 0);
    assert!(!output.contains("TOP-SECRET"), "{output}");
    assert!(output.contains("Permission denied"), "{output}");
}

#[test]
fn executing_a_shell_fails() {
    if !is_root() {
        return;
    }
    let run = Run::new();
    let layers = run.layers("judge.toml", "/usr/bin/true");
    let shell = PreparedCommand::new(
        Path::new("/bin/sh"),
        &["sh".into(), "-c".into(), "exit 0".into()],
    )
    .unwrap();
    assert_eq!(
        in_sandbox(&layers, || shell.exec().into_raw()),
        libc::EACCES
    );
    let allowed = PreparedCommand::new(Path::new("/usr/bin/true"), &["true".into()]).unwrap();
    assert_eq!(
        in_sandbox(&layers, || allowed.exec().into_raw()),
        0,
        "the command itself runs"
    );
}

#[test]
fn creating_a_user_namespace_fails() {
    if !is_root() {
        return;
    }
    let layers = Run::new().layers("judge.toml", "/usr/bin/true");
    let attempt = || {
        // SAFETY: unshare with a flag only.
        outcome(unsafe { libc::unshare(libc::CLONE_NEWUSER) })
    };
    assert_eq!(in_sandbox(&layers, attempt), libc::EPERM);
}

/// Raw `clone(flags)` without a new stack: a fork-like child that exits at once.
fn clone_errno(flags: u64) -> i32 {
    // SAFETY: without CLONE_VM the child gets a copy of our memory and only calls _exit.
    let pid = unsafe { libc::syscall(libc::SYS_clone, flags | libc::SIGCHLD as u64, 0, 0, 0, 0) };
    match pid {
        // SAFETY: the clone child exits immediately.
        0 => unsafe { libc::_exit(0) },
        -1 => errno(),
        pid => {
            // SAFETY: reaping our own child.
            unsafe { libc::waitpid(pid as libc::pid_t, std::ptr::null_mut(), 0) };
            GOT_THROUGH
        }
    }
}

#[test]
fn clone3_is_answered_enosys_and_clone_with_namespace_flags_fails() {
    if !is_root() {
        return;
    }
    let layers = Run::new().layers("judge.toml", "/usr/bin/true");
    let clone3 = || {
        // struct clone_args (88 bytes): flags, pidfd, child_tid, parent_tid, exit_signal, ...
        let mut args = [0u64; 11];
        args[0] = libc::CLONE_NEWUSER as u64;
        args[4] = libc::SIGCHLD as u64;
        // SAFETY: a valid clone_args of the size given; a child (if the filter failed) exits.
        match unsafe { libc::syscall(libc::SYS_clone3, args.as_ptr(), size_of_val(&args)) } {
            // SAFETY: the clone3 child exits immediately.
            0 => unsafe { libc::_exit(0) },
            -1 => errno(),
            _ => GOT_THROUGH,
        }
    };
    assert_eq!(in_sandbox(&layers, clone3), libc::ENOSYS);
    assert_eq!(
        in_sandbox(&layers, || clone_errno(libc::CLONE_NEWUSER as u64)),
        libc::EPERM
    );
    assert_eq!(
        in_sandbox(&layers, || clone_errno(libc::CLONE_NEWNET as u64)),
        libc::EPERM
    );
    assert_eq!(
        in_sandbox(&layers, || clone_errno(0)),
        GOT_THROUGH,
        "a plain fork still works"
    );
}

#[test]
fn tcp_connect_to_a_loopback_listener_is_refused_and_never_arrives() {
    if !is_root() {
        return;
    }
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let layers = Run::new().layers("judge.toml", "/usr/bin/true");
    let connect = || {
        // SAFETY: socket/connect with a valid sockaddr_in on the stack.
        unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
            if fd < 0 {
                return 100 + errno();
            }
            let addr = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: port.to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes([127, 0, 0, 1]),
                },
                sin_zero: [0; 8],
            };
            let len = size_of_val(&addr) as libc::socklen_t;
            if libc::connect(fd, std::ptr::from_ref(&addr).cast(), len) == 0 {
                GOT_THROUGH
            } else {
                errno()
            }
        }
    };
    assert_eq!(
        in_sandbox(&layers, connect),
        libc::EACCES,
        "Landlock refuses the connect"
    );
    assert_eq!(
        listener.accept().map_err(|e| e.kind()).err(),
        Some(std::io::ErrorKind::WouldBlock),
        "no connection arrived"
    );
    let udp = || {
        // SAFETY: socket with integer arguments.
        outcome(unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0) })
    };
    assert_eq!(
        in_sandbox(&layers, udp),
        libc::EACCES,
        "UDP sockets cannot be created"
    );
}

#[test]
fn signalling_a_process_outside_the_sandbox_fails() {
    if !is_root() {
        return;
    }
    let layers = Run::new().layers("judge.toml", "/usr/bin/true");
    let attempt = || {
        // SAFETY: signal 0 only checks permission; the parent is the test process.
        outcome(unsafe { libc::kill(libc::getppid(), 0) })
    };
    assert_eq!(in_sandbox(&layers, attempt), libc::EPERM);
}

#[test]
fn python_runs_under_the_interpreted_policy_but_cannot_read_outside() {
    let python = Path::new("/usr/bin/python3");
    if !is_root() || !python.exists() {
        return;
    }
    let run = Run::new();
    let script = run.workdir.path().join("solution.py");
    let secret = run.secret();
    std::fs::write(
        &script,
        format!(
            "print(sum(range(10)), flush=True)\nopen({:?}).read()\n",
            secret.display().to_string()
        ),
    )
    .unwrap();
    let layers = run.layers("interpreted.toml", "/usr/bin/python3");
    let command = PreparedCommand::new(python, &["python3".into(), script.into()]).unwrap();
    let output = tempfile::NamedTempFile::new_in(run.workdir.path()).unwrap();
    let out_fd = output.as_file().as_raw_fd();
    let status = in_sandbox(&layers, || {
        // SAFETY: dup2 onto stdout and stderr in the child.
        unsafe {
            libc::dup2(out_fd, 1);
            libc::dup2(out_fd, 2);
        }
        command.exec().into_raw()
    });
    let text = std::fs::read_to_string(output.path()).unwrap();
    assert_eq!(status, 1, "the script fails on the secret: {text}");
    assert!(
        text.starts_with("45\n"),
        "the interpreter and its standard library work: {text}"
    );
    assert!(
        text.contains("PermissionError") && !text.contains("TOP-SECRET"),
        "{text}"
    );
}
