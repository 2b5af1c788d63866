//! What the daemon tests share: a `flamewarden daemon` on a free loopback port with a temporary
//! config (killed on drop), a tiny HTTP client, a real Prometheus, the guard's pins.

#![allow(dead_code, reason = "each test binary uses a different subset")]

use std::{
    fs,
    io::{Read as _, Write as _},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    thread,
    time::{Duration, Instant},
};

use flamewarden_tests::{BackgroundProcess, flamewarden_bin, target_dir, workspace_root};
use tempfile::TempDir;

/// A port nobody listens on now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free loopback port")
}

/// An HTTP response: status and body.
#[derive(Debug)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Body bytes.
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// `GET http://127.0.0.1:port{path}` with HTTP/1.1 and `Connection: close`.
pub fn http_get(port: u16, path: &str) -> std::io::Result<HttpResponse> {
    http_get_with(port, path, "")
}

/// [`http_get`] with extra header lines (each ending in `\r\n`).
pub fn http_get_with(port: u16, path: &str, headers: &str) -> std::io::Result<HttpResponse> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n{headers}\r\n"
    )?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no end of headers"))?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line: {head}")))?;
    Ok(HttpResponse {
        status,
        body: raw[split + 4..].to_vec(),
    })
}

/// Percent-encodes a query component.
pub fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Polls `f` every 100 ms until it returns `Some` or `timeout` passes.
pub fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// A running `flamewarden daemon`, killed on drop.
pub struct Daemon {
    /// Its process.
    pub process: BackgroundProcess,
    /// Its port.
    pub port: u16,
    /// Its config file.
    pub config: PathBuf,
    /// Where its stderr goes.
    pub log: PathBuf,
}

impl Daemon {
    /// Writes `config_body` (plus `listen`) into `dir/config.toml` and starts the daemon.
    pub fn start(dir: &Path, config_body: &str) -> Daemon {
        Self::start_args(dir, config_body, &[])
    }

    /// Starts the daemon on an existing config file.
    pub fn start_with(dir: &Path, config: &Path, port: u16) -> Daemon {
        Self::start_with_args(dir, config, port, &[])
    }

    /// [`Daemon::start`] with extra `flamewarden daemon` arguments.
    pub fn start_args(dir: &Path, config_body: &str, args: &[&str]) -> Daemon {
        let port = free_port();
        let config = dir.join("config.toml");
        fs::write(
            &config,
            format!("listen = \"127.0.0.1:{port}\"\n{config_body}"),
        )
        .expect("write config");
        Self::start_with_args(dir, &config, port, args)
    }

    /// Starts the daemon on an existing config file with extra arguments.
    pub fn start_with_args(dir: &Path, config: &Path, port: u16, args: &[&str]) -> Daemon {
        static STARTS: AtomicU32 = AtomicU32::new(0);
        let n = STARTS.fetch_add(1, Ordering::Relaxed);
        let log = dir.join(format!("daemon-{n}.log"));
        let log_file = fs::File::create(&log).expect("create daemon log");
        let process = BackgroundProcess::spawn(
            Command::new(flamewarden_bin())
                .args(["--log", "info", "daemon"])
                .args(args)
                .arg("--config")
                .arg(config)
                .stdout(Stdio::null())
                .stderr(log_file),
            "flamewarden daemon",
        );
        let daemon = Daemon {
            process,
            port,
            config: config.to_path_buf(),
            log,
        };
        let ready = wait_for(Duration::from_secs(30), || {
            http_get(port, "/readyz").ok().filter(|r| r.status == 200)
        });
        assert!(ready.is_some(), "daemon not ready:\n{}", daemon.log_text());
        daemon
    }

    /// `GET path`, panicking on a transport error.
    pub fn get(&self, path: &str) -> HttpResponse {
        http_get(self.port, path).unwrap_or_else(|e| panic!("GET {path}: {e}\n{}", self.log_text()))
    }

    /// `/metrics` text.
    pub fn metrics(&self) -> String {
        let r = self.get("/metrics");
        assert_eq!(r.status, 200, "{}", r.text());
        r.text()
    }

    /// What it logged.
    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// The value of the sample `name{labels}` in a Prometheus text exposition.
pub fn sample(text: &str, name: &str, labels: &str) -> Option<f64> {
    let prefix = if labels.is_empty() {
        format!("{name} ")
    } else {
        format!("{name}{{{labels}}} ")
    };
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
}

/// The metric names a text exposition declares (`# TYPE` lines), with the sample suffixes of
/// histograms added.
pub fn exposed_names(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    for line in text.lines() {
        let mut f = line.split_whitespace();
        if let (Some("#"), Some("TYPE"), Some(name), Some(kind)) =
            (f.next(), f.next(), f.next(), f.next())
        {
            names.push(name.to_owned());
            if kind == "histogram" {
                for suffix in ["_bucket", "_sum", "_count"] {
                    names.push(format!("{name}{suffix}"));
                }
            }
        }
    }
    names
}

/// A real Prometheus on loopback scraping `target_port` every second; killed on drop.
pub struct Prometheus {
    _process: BackgroundProcess,
    /// Its HTTP port.
    pub port: u16,
    _dir: TempDir,
}

impl Prometheus {
    /// Starts Prometheus with a temporary config and storage.
    pub fn start(target_port: u16) -> Prometheus {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("prometheus.yml");
        fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  \
                 - job_name: flamewarden\n    static_configs:\n      \
                 - targets: ['127.0.0.1:{target_port}']\n"
            ),
        )
        .expect("write prometheus.yml");
        let port = free_port();
        let process = BackgroundProcess::spawn(
            Command::new("prometheus")
                .arg(format!("--config.file={}", config.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.path().join("data").display()
                ))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
            "prometheus",
        );
        Prometheus {
            _process: process,
            port,
            _dir: dir,
        }
    }

    /// The value of an instant PromQL query with one result, once it has one.
    pub fn query(&self, promql: &str) -> Option<f64> {
        let r = http_get(
            self.port,
            &format!("/api/v1/query?query={}", encode(promql)),
        )
        .ok()?;
        let json: serde_json::Value = serde_json::from_slice(&r.body).ok()?;
        json["data"]["result"][0]["value"][1].as_str()?.parse().ok()
    }
}

/// Where the tests leave screenshots and other outputs.
pub fn output_dir() -> PathBuf {
    let dir = target_dir().join("flamewarden-tests").join("daemon");
    fs::create_dir_all(&dir).expect("create output dir");
    dir
}

/// The policy denying all network access.
pub fn judge_policy() -> PathBuf {
    workspace_root().join("policies").join("judge.toml")
}

/// Detaches the guard from a cgroup on drop (the daemon's pins outlive it by design).
pub struct GuardPins {
    /// The cgroup the guard is attached to.
    pub cgroup: PathBuf,
}

impl Drop for GuardPins {
    fn drop(&mut self) {
        let _ = Command::new(flamewarden_bin())
            .args(["guard", "detach", "--cgroup"])
            .arg(&self.cgroup)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// The pin directory of the guard on cgroup `id`.
pub fn pin_dir(id: u64) -> PathBuf {
    PathBuf::from("/sys/fs/bpf/flamewarden").join(id.to_string())
}

/// The files in a pin directory, sorted.
pub fn pinned_files(dir: &Path) -> Vec<String> {
    let mut files: Vec<String> = fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

/// Whether a connect from cgroup `cgroup` to `listener` is refused (bash `/dev/tcp`), and
/// the listener saw no connection.
pub fn connect_is_denied(cgroup: &flamewarden_tests::TestCgroup, listener: &TcpListener) -> bool {
    let port = listener.local_addr().expect("listener address").port();
    let mut attempt = cgroup.spawn(
        Command::new("bash")
            .arg("-c")
            .arg(format!("exec 3<>/dev/tcp/127.0.0.1/{port}"))
            .stderr(Stdio::null()),
        "connect attempt",
    );
    let status = attempt.wait_or_kill(Duration::from_secs(10));
    listener.set_nonblocking(true).expect("nonblocking");
    let accepted = listener.accept().is_ok();
    !status.success() && !accepted
}
