//! The test rig of the escape corpus (`sandbox_escape.rs`): what an attempt aims at, set up
//! outside the sandbox ([`Stage`]), and what it did, seen from outside ([`Effects`], [`Watcher`]).

use std::{
    fs,
    io::ErrorKind,
    net::{TcpListener, UdpSocket},
    os::unix::{fs::MetadataExt as _, process::CommandExt as _},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::{self, JoinHandle},
    time::Duration,
};

use flamewarden_tests::{
    BackgroundProcess,
    sandbox::{contains, new_tag, random_hex, tagged_processes},
};
use tempfile::TempDir;

/// The port of a bound socket.
pub fn port(addr: &std::io::Result<std::net::SocketAddr>) -> String {
    addr.as_ref().expect("local address").port().to_string()
}

/// Everything an attempt aims at, set up by the test outside the sandbox.
pub struct Stage {
    pub tag: String,
    /// What the shell and the memfd payload would print (`shell-ran-TOKEN`, ...).
    pub token: String,
    pub workdir: TempDir,
    _outside: TempDir,
    pub secret: PathBuf,
    pub secret_text: String,
    /// Where `write_outside` tries to create its marker (outside the work directory).
    pub marker: PathBuf,
    pub tcp: TcpListener,
    pub udp: UdpSocket,
    /// A process outside the sandbox, to trace, signal, renice or limit.
    pub victim: BackgroundProcess,
    /// The victim's open-file limit as it started.
    pub victim_files: String,
}

impl Stage {
    pub fn new() -> Self {
        let outside = tempfile::tempdir().expect("temporary directory");
        let secret = outside.path().join("secret.txt");
        let secret_text = format!("SECRET-{}", random_hex(24));
        fs::write(&secret, &secret_text).expect("write the secret");
        let tcp = TcpListener::bind("127.0.0.1:0").expect("bind a TCP listener");
        tcp.set_nonblocking(true).expect("non-blocking listener");
        let udp = UdpSocket::bind("127.0.0.1:0").expect("bind a UDP socket");
        udp.set_nonblocking(true).expect("non-blocking UDP socket");
        let mut sleep = Command::new("sleep");
        sleep.arg("60").stdin(Stdio::null());
        // SAFETY: the closure only calls sigprocmask-like libc functions on a local set, which
        // are async-signal-safe.
        unsafe {
            sleep.pre_exec(|| {
                let mut set: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut set);
                libc::sigaddset(&mut set, VICTIM_SIGNAL);
                match libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) {
                    0 => Ok(()),
                    _ => Err(std::io::Error::last_os_error()),
                }
            });
        }
        let victim = BackgroundProcess::spawn(&mut sleep, "victim (sleep 60)");
        let victim_files = open_files_limit(victim.pid()).expect("the victim's limits");
        assert_eq!(
            nice_of(victim.pid()),
            Some(0),
            "the victim starts at nice 0"
        );
        Stage {
            victim_files,
            tag: new_tag(),
            token: random_hex(8),
            workdir: tempfile::tempdir().expect("temporary directory"),
            marker: outside.path().join("marker"),
            _outside: outside,
            secret,
            secret_text,
            tcp,
            udp,
            victim,
        }
    }

    /// What happened, from the output of the run and from the other side.
    pub fn effects(&mut self, seen: Seen, output: &[u8]) -> Effects {
        let mut datagrams = Vec::new();
        let mut buf = [0u8; 64];
        while let Ok(n) = self.udp.recv(&mut buf) {
            datagrams.push(buf[..n].to_vec());
        }
        let tcp_connected = match self.tcp.accept() {
            Ok(_) => true,
            Err(e) if e.kind() == ErrorKind::WouldBlock => false,
            Err(e) => panic!("accept: {e}"),
        };
        Effects {
            secret_leaked: contains(output, self.secret_text.as_bytes()),
            marker_created: self.marker.exists(),
            shell_ran: contains(output, format!("shell-ran-{}", self.token).as_bytes()),
            payload_ran: contains(
                output,
                format!("memfd-payload-ran-{}", self.token).as_bytes(),
            ),
            loader_payload_ran: contains(
                output,
                format!("loader-payload-ran-{}", self.token).as_bytes(),
            ),
            tcp_connected,
            datagrams,
            victim_killed: !self.victim.is_running(),
            victim_signalled: signal_pending(self.victim.pid(), VICTIM_SIGNAL),
            victim_reniced: nice_of(self.victim.pid()) != Some(0),
            victim_limited: open_files_limit(self.victim.pid())
                .is_some_and(|l| l != self.victim_files),
            traced: seen.traced,
            mounted: seen.mounted,
            new_namespace: seen.new_namespace,
        }
    }
}

impl Drop for Stage {
    fn drop(&mut self) {
        // A mount that got through (audit, bare) must not keep the work directory busy.
        let mnt = self.workdir.path().join("mnt\0");
        // SAFETY: `mnt` is a NUL-terminated path that outlives the call.
        unsafe {
            libc::umount2(
                mnt.as_os_str().as_encoded_bytes().as_ptr().cast(),
                libc::MNT_DETACH,
            )
        };
    }
}

/// The nice value of a process (field 19 of /proc/PID/stat).
fn nice_of(pid: u32) -> Option<i64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Past the command name, which may hold spaces: field 3 is the first after ") ".
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(19 - 3)?.parse().ok()
}

/// The signal `signal_everyone` sends: the victim blocks it (the mask survives its exec), so a
/// delivery stays pending where /proc shows it, instead of being dropped as ignored.
const VICTIM_SIGNAL: libc::c_int = libc::SIGURG;

/// Whether `signal` is pending for the whole process `pid` (`ShdPnd` of /proc/PID/status).
fn signal_pending(pid: u32, signal: libc::c_int) -> bool {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            let mask = status.lines().find_map(|l| l.strip_prefix("ShdPnd:"))?;
            u64::from_str_radix(mask.trim(), 16).ok()
        })
        .is_some_and(|mask| mask & (1 << (signal - 1)) != 0)
}

/// The "Max open files" line of /proc/PID/limits (soft and hard), as written there.
fn open_files_limit(pid: u32) -> Option<String> {
    let limits = fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    Some(line.split_whitespace().collect::<Vec<_>>().join(" "))
}

/// What an attempt did, as seen from outside.
#[derive(Debug, Default)]
pub struct Effects {
    pub secret_leaked: bool,
    pub marker_created: bool,
    pub shell_ran: bool,
    pub payload_ran: bool,
    pub loader_payload_ran: bool,
    pub tcp_connected: bool,
    pub datagrams: Vec<Vec<u8>>,
    pub victim_killed: bool,
    /// The victim has a signal pending that it did not have: something signalled it.
    pub victim_signalled: bool,
    pub victim_reniced: bool,
    pub victim_limited: bool,
    pub traced: bool,
    pub mounted: bool,
    pub new_namespace: bool,
}

impl Effects {
    pub fn nothing(&self) -> bool {
        !(self.secret_leaked
            || self.marker_created
            || self.shell_ran
            || self.payload_ran
            || self.loader_payload_ran
            || self.tcp_connected
            || !self.datagrams.is_empty()
            || self.victim_killed
            || self.victim_signalled
            || self.victim_reniced
            || self.victim_limited
            || self.traced
            || self.mounted
            || self.new_namespace)
    }
}

/// What the watcher thread saw while the attempt ran.
#[derive(Debug, Default, Clone, Copy)]
pub struct Seen {
    pub traced: bool,
    pub mounted: bool,
    pub new_namespace: bool,
}

/// Polls, every 5 ms while a run lasts: the victim's TracerPid, whether `mnt` in the work
/// directory is a mount point, and the namespaces of the run's processes.
/// Stopped on drop too, when a test fails.
pub struct Watcher {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Seen>>,
}

impl Watcher {
    /// `scan`: also scan the run's processes (a walk of /proc each time).
    pub fn start(stage: &Stage, scan: bool) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (flag, tag, pid) = (stop.clone(), stage.tag.clone(), stage.victim.pid());
        let workdir = stage.workdir.path().to_owned();
        let thread = thread::spawn(move || {
            let mut seen = Seen::default();
            let own = namespaces(Path::new("/proc/self"));
            let dev = |p: &Path| fs::metadata(p).map(|m| m.dev()).ok();
            loop {
                let last = flag.load(Ordering::SeqCst);
                let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
                seen.traced |= status.lines().any(|l| {
                    l.starts_with("TracerPid:") && l.split_whitespace().nth(1) != Some("0")
                });
                let mnt = dev(&workdir.join("mnt"));
                seen.mounted |= mnt.is_some() && mnt != dev(&workdir);
                seen.new_namespace |= scan
                    && tagged_processes(&tag).iter().any(|(pid, _)| {
                        let theirs = namespaces(Path::new(&format!("/proc/{pid}")));
                        own.iter().zip(&theirs).any(|(a, b)| b.is_some() && a != b)
                    });
                if last {
                    return seen;
                }
                thread::sleep(Duration::from_millis(5));
            }
        });
        Watcher {
            stop,
            thread: Some(thread),
        }
    }

    pub fn stop(mut self) -> Seen {
        self.stop.store(true, Ordering::SeqCst);
        let thread = self.thread.take().expect("stopped once");
        thread.join().expect("the watcher thread panicked")
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// The namespaces of a process (user, mnt, pid, net, uts, ipc), as their link targets.
fn namespaces(proc_dir: &Path) -> Vec<Option<PathBuf>> {
    ["user", "mnt", "pid", "net", "uts", "ipc"]
        .iter()
        .map(|ns| fs::read_link(proc_dir.join("ns").join(ns)).ok())
        .collect()
}
