//! `flamewarden guard attach|detach` against the real kernel: the cgroup-BPF network programs
//! pinned on a test cgroup under `policies/judge.toml` (network deny-all) refuse TCP connects,
//! UDP sends and raw sockets of processes inside the cgroup, leave everyone else alone, and are
//! gone after `guard detach`.
//!
//! Each probe is a forked child that moves itself into the cgroup and makes the raw system
//! calls; its exit code is the errno it got (0: the call went through). The effect is checked on
//! the other end too: the listener sees no connection, the receiver gets no datagram.

use std::{
    fs::File,
    io::{self, ErrorKind},
    net::{SocketAddr, TcpListener, TcpStream, UdpSocket},
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
    thread,
    time::Duration,
};

use flamewarden_tests::{TestCgroup, flamewarden, require_bpf, require_cgroup, workspace_root};

/// Where `guard attach` pins the objects of the cgroup with this id.
fn pin_dir(id: u64) -> PathBuf {
    Path::new("/sys/fs/bpf/flamewarden").join(id.to_string())
}

/// The network guard attached to a test cgroup; detached (pins removed) on drop.
struct AttachedGuard<'a> {
    cgroup: &'a TestCgroup,
    attached: bool,
}

impl<'a> AttachedGuard<'a> {
    fn attach(cgroup: &'a TestCgroup) -> Self {
        Self::attach_policy(cgroup, &workspace_root().join("policies/judge.toml"))
    }

    fn attach_policy(cgroup: &'a TestCgroup, policy: &Path) -> Self {
        let run = flamewarden([
            "guard".as_ref(),
            "attach".as_ref(),
            "--cgroup".as_ref(),
            cgroup.path().as_os_str(),
            "--policy".as_ref(),
            policy.as_os_str(),
        ]);
        assert_eq!(run.code(), Some(0), "guard attach failed: {}", run.stderr);
        eprintln!("{}", run.stdout.trim_end());
        Self {
            cgroup,
            attached: true,
        }
    }

    fn detach(&mut self) {
        let run = flamewarden([
            "guard".as_ref(),
            "detach".as_ref(),
            "--cgroup".as_ref(),
            self.cgroup.path().as_os_str(),
        ]);
        assert_eq!(run.code(), Some(0), "guard detach failed: {}", run.stderr);
        self.attached = false;
    }
}

impl Drop for AttachedGuard<'_> {
    fn drop(&mut self) {
        if self.attached {
            let _ = flamewarden([
                "guard".as_ref(),
                "detach".as_ref(),
                "--cgroup".as_ref(),
                self.cgroup.path().as_os_str(),
            ]);
        }
    }
}

/// What a probe child does once inside the cgroup; returns 0 or the errno it got.
#[derive(Clone, Copy)]
enum Attempt {
    TcpConnect(u16),
    UdpSend(u16),
    RawSocket,
}

/// The errno of the last failed call.
fn errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(-1)
}

fn loopback(port: u16) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_be_bytes([127, 0, 0, 1]).to_be(),
        },
        sin_zero: [0; 8],
    }
}

/// Runs the attempt with raw system calls only (it runs between fork and exit).
fn attempt(what: Attempt) -> i32 {
    const LEN: libc::socklen_t = size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: plain system calls on a fresh descriptor and a stack-allocated address.
    unsafe {
        match what {
            Attempt::TcpConnect(port) => {
                let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
                if fd < 0 {
                    return errno();
                }
                let addr = loopback(port);
                if libc::connect(fd, (&raw const addr).cast(), LEN) == 0 {
                    0
                } else {
                    errno()
                }
            }
            Attempt::UdpSend(port) => {
                let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0);
                if fd < 0 {
                    return errno();
                }
                let addr = loopback(port);
                let sent = libc::sendto(
                    fd,
                    b"x".as_ptr().cast(),
                    1,
                    0,
                    (&raw const addr).cast(),
                    LEN,
                );
                if sent == 1 { 0 } else { errno() }
            }
            Attempt::RawSocket => {
                if libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP) >= 0 {
                    0
                } else {
                    errno()
                }
            }
        }
    }
}

/// Forks a child that moves itself into `cgroup`, makes the attempt and exits with its result.
fn attempt_in(cgroup: &TestCgroup, what: Attempt) -> i32 {
    let procs = File::options()
        .write(true)
        .open(cgroup.path().join("cgroup.procs"))
        .expect("open cgroup.procs");
    let procs_fd = procs.as_raw_fd();
    // SAFETY: the child only makes system calls (write, socket, connect, sendto) and _exit; it
    // never returns into the test harness.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", io::Error::last_os_error());
    if pid == 0 {
        // SAFETY: see above.
        unsafe {
            if libc::write(procs_fd, b"0".as_ptr().cast(), 1) != 1 {
                libc::_exit(255);
            }
            libc::_exit(attempt(what));
        }
    }
    let mut status = 0;
    // SAFETY: waits for the child just forked.
    let waited = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(waited, pid, "waitpid: {}", io::Error::last_os_error());
    assert!(
        libc::WIFEXITED(status),
        "probe child did not exit normally: {status:#x}"
    );
    let code = libc::WEXITSTATUS(status);
    assert_ne!(
        code,
        255,
        "probe child could not move into {}",
        cgroup.path().display()
    );
    code
}

fn listener() -> (TcpListener, u16) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback listener");
    listener
        .set_nonblocking(true)
        .expect("non-blocking listener");
    let port = listener.local_addr().expect("listener address").port();
    (listener, port)
}

fn receiver() -> (UdpSocket, u16) {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind a loopback UDP socket");
    socket
        .set_nonblocking(true)
        .expect("non-blocking UDP socket");
    let port = socket.local_addr().expect("receiver address").port();
    (socket, port)
}

/// Whether a connection is waiting on the listener (after a moment for it to arrive).
fn saw_connection(listener: &TcpListener) -> bool {
    thread::sleep(Duration::from_millis(100));
    match listener.accept() {
        Ok(_) => true,
        Err(e) if e.kind() == ErrorKind::WouldBlock => false,
        Err(e) => panic!("accept: {e}"),
    }
}

fn saw_datagram(socket: &UdpSocket) -> bool {
    thread::sleep(Duration::from_millis(100));
    let mut buf = [0u8; 16];
    match socket.recv(&mut buf) {
        Ok(_) => true,
        Err(e) if e.kind() == ErrorKind::WouldBlock => false,
        Err(e) => panic!("recv: {e}"),
    }
}

#[test]
fn denies_tcp_connect_from_sandbox_cgroup_but_not_from_outside() {
    if !require_bpf() {
        return;
    }
    let Some(cgroup) = require_cgroup("guard-connect") else {
        return;
    };
    let _guard = AttachedGuard::attach(&cgroup);
    let (listener, port) = listener();

    assert_eq!(attempt_in(&cgroup, Attempt::TcpConnect(port)), libc::EPERM);
    assert!(
        !saw_connection(&listener),
        "the listener saw a connection from the sandbox"
    );

    let outside = TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], port)));
    assert!(
        outside.is_ok(),
        "connect from outside the cgroup failed: {outside:?}"
    );
    assert!(
        saw_connection(&listener),
        "the listener missed the connection from outside"
    );
}

#[test]
fn denies_udp_send_from_sandbox_cgroup() {
    if !require_bpf() {
        return;
    }
    let Some(cgroup) = require_cgroup("guard-udp") else {
        return;
    };
    let _guard = AttachedGuard::attach(&cgroup);
    let (socket, port) = receiver();

    assert_eq!(attempt_in(&cgroup, Attempt::UdpSend(port)), libc::EPERM);
    assert!(
        !saw_datagram(&socket),
        "the receiver got a datagram from the sandbox"
    );
}

#[test]
fn denies_raw_socket_in_sandbox_cgroup() {
    if !require_bpf() {
        return;
    }
    let Some(cgroup) = require_cgroup("guard-raw") else {
        return;
    };
    let _guard = AttachedGuard::attach(&cgroup);

    assert_eq!(attempt_in(&cgroup, Attempt::RawSocket), libc::EPERM);
}

#[test]
fn attaching_twice_adopts_the_pinned_programs() {
    if !require_bpf() {
        return;
    }
    let Some(cgroup) = require_cgroup("guard-adopt") else {
        return;
    };
    let _guard = AttachedGuard::attach(&cgroup);
    let policy = workspace_root().join("policies/judge.toml");
    let again = flamewarden([
        "guard".as_ref(),
        "attach".as_ref(),
        "--cgroup".as_ref(),
        cgroup.path().as_os_str(),
        "--policy".as_ref(),
        policy.as_os_str(),
    ]);
    assert_eq!(
        again.code(),
        Some(0),
        "second guard attach failed: {}",
        again.stderr
    );
    assert!(
        again.stdout.contains("adopted"),
        "second attach did not adopt: {}",
        again.stdout
    );
    let (listener, port) = listener();
    assert_eq!(attempt_in(&cgroup, Attempt::TcpConnect(port)), libc::EPERM);
    assert!(!saw_connection(&listener));
}

#[test]
fn detach_removes_pins_and_lets_the_cgroup_connect_again() {
    if !require_bpf() {
        return;
    }
    let Some(cgroup) = require_cgroup("guard-detach") else {
        return;
    };
    let mut guard = AttachedGuard::attach(&cgroup);
    let pins = pin_dir(cgroup.id());
    assert!(pins.is_dir(), "nothing pinned at {}", pins.display());
    let (listener, port) = listener();
    assert_eq!(attempt_in(&cgroup, Attempt::TcpConnect(port)), libc::EPERM);

    guard.detach();
    assert!(!pins.exists(), "{} is left after detach", pins.display());
    assert_eq!(attempt_in(&cgroup, Attempt::TcpConnect(port)), 0);
    assert!(
        saw_connection(&listener),
        "the listener missed the connection after detach"
    );
}

/// A policy file written for one test.
fn policy_file(text: &str) -> tempfile::NamedTempFile {
    let file = tempfile::Builder::new()
        .suffix(".toml")
        .tempfile()
        .expect("create a policy file");
    std::fs::write(file.path(), text).expect("write the policy file");
    file
}

#[test]
fn audit_mode_lets_connect_through() {
    if !require_bpf() {
        return;
    }
    let Some(cgroup) = require_cgroup("guard-audit") else {
        return;
    };
    let judge = std::fs::read_to_string(workspace_root().join("policies/judge.toml"))
        .expect("read policies/judge.toml");
    let audit = policy_file(&judge.replace("mode = \"enforce\"", "mode = \"audit\""));
    let _guard = AttachedGuard::attach_policy(&cgroup, audit.path());
    let (listener, port) = listener();

    assert_eq!(attempt_in(&cgroup, Attempt::TcpConnect(port)), 0);
    assert!(
        saw_connection(&listener),
        "audit mode blocked the connection"
    );
}

#[test]
fn allow_list_admits_only_the_listed_destination() {
    if !require_bpf() {
        return;
    }
    let Some(cgroup) = require_cgroup("guard-allow") else {
        return;
    };
    let (allowed, allowed_port) = listener();
    let (other, other_port) = listener();
    let policy = policy_file(&format!(
        "[network]\nallow = [\"127.0.0.1:{allowed_port}/tcp\"]\n"
    ));
    let _guard = AttachedGuard::attach_policy(&cgroup, policy.path());

    assert_eq!(attempt_in(&cgroup, Attempt::TcpConnect(allowed_port)), 0);
    assert!(
        saw_connection(&allowed),
        "the allowed listener missed the connection"
    );
    assert_eq!(
        attempt_in(&cgroup, Attempt::TcpConnect(other_port)),
        libc::EPERM
    );
    assert!(
        !saw_connection(&other),
        "an unlisted listener saw a connection"
    );
    assert_eq!(
        attempt_in(&cgroup, Attempt::UdpSend(allowed_port)),
        libc::EPERM
    );
}
