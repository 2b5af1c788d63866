//! `--control fifo:CTL[,ACK]` or `--control fd:CTL[,ACK]`, as in `perf record --control`: a
//! program drives a running tracer through a FIFO (or a descriptor it inherited) with one
//! command per line — `enable` and `disable` attach and detach the kernel programs (measuring
//! only a region of interest, or the same workload with and without tracing), `ping`, `stop` —
//! and reads `ack` (or `err` for an unknown command) from ACK once each is carried out.

use std::{
    fs::{File, OpenOptions},
    io::{ErrorKind, Read as _, Write as _},
    os::{
        fd::{AsRawFd as _, FromRawFd as _, RawFd},
        unix::fs::OpenOptionsExt as _,
    },
    path::PathBuf,
};

use anyhow::Context as _;

/// One command read from the control descriptor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ControlCommand {
    /// Attach the programs (again).
    Enable,
    /// Detach the programs; nothing is seen until `enable`.
    Disable,
    /// Nothing: answered with `ack`.
    Ping,
    /// End tracing as Ctrl-C would.
    Stop,
}

/// Where commands come from or acknowledgements go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// A FIFO (made beforehand with `mkfifo`), opened read-write so that opening never waits
    /// for the other side.
    Fifo(PathBuf),
    /// A descriptor inherited from the parent.
    Fd(RawFd),
}

/// The value of `--control`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ControlSpec {
    ctl: Endpoint,
    ack: Option<Endpoint>,
}

/// Parses `fifo:CTL[,ACK]` or `fd:CTL[,ACK]`.
pub fn parse_control(value: &str) -> Result<ControlSpec, String> {
    let usage = "expected fifo:CTL-PATH[,ACK-PATH] or fd:CTL-FD[,ACK-FD]";
    let (kind, rest) = value
        .split_once(':')
        .ok_or_else(|| format!("{value:?}: {usage}"))?;
    let endpoint = |part: &str| -> Result<Endpoint, String> {
        if part.is_empty() {
            return Err(format!("{value:?}: an empty name; {usage}"));
        }
        match kind {
            "fifo" => Ok(Endpoint::Fifo(PathBuf::from(part))),
            "fd" => part
                .parse::<RawFd>()
                .ok()
                .filter(|fd| *fd >= 0)
                .map(Endpoint::Fd)
                .ok_or_else(|| format!("{value:?}: {part:?} is not a descriptor number")),
            _ => Err(format!("{value:?}: unknown kind {kind:?}; {usage}")),
        }
    };
    let (ctl, ack) = match rest.split_once(',') {
        Some((ctl, ack)) => (endpoint(ctl)?, Some(endpoint(ack)?)),
        None => (endpoint(rest)?, None),
    };
    Ok(ControlSpec { ctl, ack })
}

/// The open control descriptors.
#[derive(Debug)]
pub struct Control {
    ctl: File,
    ack: Option<File>,
    /// Bytes of a command line not complete yet.
    pending: Vec<u8>,
    /// The writing end was closed (an inherited pipe): nothing more will come.
    ended: bool,
}

fn open(endpoint: &Endpoint, what: &str) -> anyhow::Result<File> {
    match endpoint {
        Endpoint::Fifo(path) => OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
            .with_context(|| format!("cannot open the control {what} FIFO {}", path.display())),
        Endpoint::Fd(fd) => {
            // SAFETY: fcntl on any number is safe; it only says whether the descriptor exists.
            let flags = unsafe { libc::fcntl(*fd, libc::F_GETFL) };
            if flags < 0 {
                return Err(std::io::Error::last_os_error())
                    .with_context(|| format!("the control {what} descriptor {fd} is not open"));
            }
            // SAFETY: as above; setting O_NONBLOCK on a descriptor flamewarden now owns.
            unsafe { libc::fcntl(*fd, libc::F_SETFL, flags | libc::O_NONBLOCK) };
            // SAFETY: the descriptor is open and handed to flamewarden by its parent, for
            // flamewarden alone to use from now on.
            Ok(unsafe { File::from_raw_fd(*fd) })
        }
    }
}

impl Control {
    /// Opens the descriptors of `spec`.
    pub fn open(spec: &ControlSpec) -> anyhow::Result<Self> {
        let ctl = open(&spec.ctl, "command")?;
        let ack = spec.ack.as_ref().map(|a| open(a, "ack")).transpose()?;
        Ok(Self {
            ctl,
            ack,
            pending: Vec::new(),
            ended: false,
        })
    }

    /// The descriptor to wait on for commands; `None` once its writing end was closed (it
    /// would be readable for ever, at end of file).
    pub fn fd(&self) -> Option<RawFd> {
        (!self.ended).then(|| self.ctl.as_raw_fd())
    }

    /// Every complete command waiting, in order; `Err(line)` for a line that is no command.
    pub fn read(&mut self) -> anyhow::Result<Vec<Result<ControlCommand, String>>> {
        let mut buf = [0u8; 512];
        loop {
            match self.ctl.read(&mut buf) {
                Ok(0) => {
                    self.ended = true;
                    break;
                }
                Ok(n) => self.pending.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e).context("cannot read the control descriptor"),
            }
        }
        let Some(end) = self.pending.iter().rposition(|&b| b == b'\n') else {
            return Ok(Vec::new());
        };
        let lines: Vec<u8> = self.pending.drain(..=end).collect();
        Ok(String::from_utf8_lossy(&lines)
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(|line| match line {
                "enable" => Ok(ControlCommand::Enable),
                "disable" => Ok(ControlCommand::Disable),
                "ping" => Ok(ControlCommand::Ping),
                "stop" => Ok(ControlCommand::Stop),
                other => Err(other.to_owned()),
            })
            .collect())
    }

    /// Answers a command: `ack` when it was carried out, `err` when it was not.
    pub fn answer(&mut self, done: bool) -> anyhow::Result<()> {
        if let Some(ack) = &mut self.ack {
            ack.write_all(if done { b"ack\n" } else { b"err\n" })
                .context("cannot write the control ack")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_fifos_and_descriptors_like_perf() {
        assert_eq!(
            parse_control("fifo:/tmp/ctl,/tmp/ack").unwrap(),
            ControlSpec {
                ctl: Endpoint::Fifo("/tmp/ctl".into()),
                ack: Some(Endpoint::Fifo("/tmp/ack".into())),
            }
        );
        assert_eq!(
            parse_control("fd:10").unwrap(),
            ControlSpec {
                ctl: Endpoint::Fd(10),
                ack: None
            }
        );
        for bad in ["ctl", "pipe:/tmp/ctl", "fd:x", "fd:-1", "fifo:", "fifo:/a,"] {
            assert!(parse_control(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn reads_commands_a_line_at_a_time_and_answers_each() {
        let dir = tempfile::tempdir().unwrap();
        let (ctl, ack) = (dir.path().join("ctl"), dir.path().join("ack"));
        for fifo in [&ctl, &ack] {
            let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
            // SAFETY: a NUL-terminated path.
            assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        }
        let spec = parse_control(&format!("fifo:{},{}", ctl.display(), ack.display())).unwrap();
        let mut control = Control::open(&spec).unwrap();
        assert!(control.read().unwrap().is_empty());
        assert!(
            control.fd().is_some(),
            "a FIFO opened read-write never ends"
        );
        let mut writer = OpenOptions::new().write(true).open(&ctl).unwrap();
        writer.write_all(b"disable\nenable\n\nbogus\nsto").unwrap();
        assert_eq!(
            control.read().unwrap(),
            [
                Ok(ControlCommand::Disable),
                Ok(ControlCommand::Enable),
                Err("bogus".to_owned())
            ]
        );
        writer.write_all(b"p\n").unwrap();
        assert_eq!(control.read().unwrap(), [Ok(ControlCommand::Stop)]);
        control.answer(true).unwrap();
        control.answer(false).unwrap();
        let mut answers = [0u8; 8];
        File::open(&ack).unwrap().read_exact(&mut answers).unwrap();
        assert_eq!(&answers, b"ack\nerr\n");
    }

    #[test]
    fn a_closed_pipe_is_no_longer_waited_on() {
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for the two descriptors.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        let mut control =
            Control::open(&parse_control(&format!("fd:{}", fds[0])).unwrap()).unwrap();
        // SAFETY: the write end, owned here and closed once.
        let mut writer = unsafe { File::from_raw_fd(fds[1]) };
        writer.write_all(b"ping\n").unwrap();
        drop(writer);
        assert_eq!(control.read().unwrap(), [Ok(ControlCommand::Ping)]);
        assert_eq!(control.fd(), None);
    }
}
