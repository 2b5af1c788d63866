//! What the network tests share: the `net_peer` workload (`tests/workloads/net_peer.c`), a
//! pair of network namespaces joined by a veth pair that exists for one test, nftables rules in
//! a namespace, and `flamewarden net --json` runs read back.

use std::{
    collections::hash_map::DefaultHasher,
    ffi::OsString,
    fs,
    hash::{Hash as _, Hasher as _},
    io::{BufRead as _, BufReader},
    path::PathBuf,
    process::{Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use flamewarden_tests::{BackgroundProcess, Run, flamewarden, target_dir, workloads::sources_dir};
use serde_json::Value;

/// `net_peer`, built with gcc on first use and cached by the hash of its source.
///
/// # Panics
/// When gcc is missing or fails, with its output.
pub fn net_peer() -> PathBuf {
    let source = sources_dir().join("net_peer.c");
    let text = fs::read(&source).unwrap_or_else(|e| panic!("read {}: {e}", source.display()));
    let mut hasher = DefaultHasher::new();
    text.hash(&mut hasher);
    let dir = target_dir()
        .join("flamewarden-tests")
        .join("net-workloads")
        .join(format!("net_peer-{:016x}", hasher.finish()));
    let binary = dir.join("net_peer");
    if binary.is_file() {
        return binary;
    }
    fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
    let partial = dir.join(format!("net_peer.partial-{}", std::process::id()));
    let output = Command::new("gcc")
        .args(["-O2", "-g", "-Wall", "-Wextra", "-Werror", "-o"])
        .arg(&partial)
        .arg(&source)
        .output()
        .unwrap_or_else(|e| panic!("failed to run gcc: {e}"));
    assert!(
        output.status.success(),
        "gcc failed on {}:\n{}",
        source.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    fs::rename(&partial, &binary).unwrap_or_else(|e| panic!("rename: {e}"));
    binary
}

/// Runs `ip ARGS...` (or `nft` with [`Netns::nft`]), panicking with its stderr on failure.
fn run_tool(program: &str, args: &[&str]) {
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("failed to run {program} (install iproute2/nftables): {e}"));
    assert!(
        output.status.success(),
        "`{program} {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Two network namespaces, `client` and `server`, joined by a veth pair with addresses
/// 10.231.N.1 (client) and 10.231.N.2 (server); both removed on drop (their veth ends and
/// nftables rules go with them), also when the test panics.
#[derive(Debug)]
pub struct NetnsPair {
    /// The client's namespace.
    pub client: String,
    /// The server's namespace.
    pub server: String,
    /// The client's address.
    pub client_ip: String,
    /// The server's address.
    pub server_ip: String,
}

impl NetnsPair {
    /// Creates both namespaces and the link; panics (after cleaning up) when `ip` fails.
    pub fn new() -> Self {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let subnet = (pid + n) % 200 + 20;
        let pair = NetnsPair {
            client: format!("fwnet-{pid}-{n}-c"),
            server: format!("fwnet-{pid}-{n}-s"),
            client_ip: format!("10.231.{subnet}.1"),
            server_ip: format!("10.231.{subnet}.2"),
        };
        // From here on, Drop removes whatever was created.
        let (vc, vs) = (format!("fwv{subnet}c{n}"), format!("fwv{subnet}s{n}"));
        run_tool("ip", &["netns", "add", &pair.client]);
        run_tool("ip", &["netns", "add", &pair.server]);
        run_tool(
            "ip",
            &[
                "link",
                "add",
                &vc,
                "netns",
                &pair.client,
                "type",
                "veth",
                "peer",
                "name",
                &vs,
                "netns",
                &pair.server,
            ],
        );
        for (ns, dev, ip) in [
            (&pair.client, &vc, &pair.client_ip),
            (&pair.server, &vs, &pair.server_ip),
        ] {
            run_tool(
                "ip",
                &["-n", ns, "addr", "add", &format!("{ip}/24"), "dev", dev],
            );
            run_tool("ip", &["-n", ns, "link", "set", dev, "up"]);
            run_tool("ip", &["-n", ns, "link", "set", "lo", "up"]);
        }
        pair
    }

    /// `ip netns exec NS PROGRAM ARGS...` as a command (exec, no extra process).
    pub fn exec(ns: &str, program: &PathBuf, args: &[&str]) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", ns]).arg(program).args(args);
        command
    }

    /// Runs `nft` in `ns` with the given ruleset text.
    pub fn nft(ns: &str, ruleset: &str) {
        run_tool("ip", &["netns", "exec", ns, "nft", ruleset]);
    }

    /// Starts `net_peer ARGS...` in the server namespace and waits (at most 10 s) until it
    /// listens.
    pub fn start_server(&self, args: &[&str]) -> BackgroundProcess {
        start_listening(
            NetnsPair::exec(&self.server, &net_peer(), args),
            "net_peer server",
        )
    }
}

/// Spawns `command` (a `net_peer` server) and waits for its `ready` line.
pub fn start_listening(mut command: Command, what: &str) -> BackgroundProcess {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("failed to start {what}: {e}"));
    let stdout = child.stdout.take().expect("piped stdout");
    let mut process = BackgroundProcess::from_child(child, what);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    match rx.recv_timeout(Duration::from_secs(10)) {
        Ok(line) if line.trim() == "ready" => process,
        other => {
            process.kill();
            panic!("{what} did not get ready: {other:?}");
        }
    }
}

impl Drop for NetnsPair {
    fn drop(&mut self) {
        for ns in [&self.client, &self.server] {
            let _ = Command::new("ip")
                .args(["netns", "del", ns])
                .stdin(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// A finished `flamewarden net --json` run, parsed.
#[derive(Debug)]
pub struct NetReport {
    /// The run (its stderr holds the command's output).
    pub run: Run,
    /// The JSON document.
    pub json: Value,
}

impl NetReport {
    /// Runs `flamewarden net --json -o FILE ARGS...` and parses FILE; panics unless it exited
    /// with 0.
    pub fn run(args: Vec<OsString>) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("net.json");
        let mut full: Vec<OsString> = vec!["net".into(), "--json".into(), "-o".into()];
        full.push(out.clone().into());
        full.extend(args);
        let started = Instant::now();
        let run = flamewarden(&full);
        assert_eq!(
            run.code(),
            Some(0),
            "flamewarden net failed ({:?}); stderr:\n{}",
            started.elapsed(),
            run.stderr
        );
        let text = fs::read_to_string(&out)
            .unwrap_or_else(|e| panic!("no {}: {e}; stderr:\n{}", out.display(), run.stderr));
        let json = serde_json::from_str(&text).unwrap_or_else(|e| panic!("bad JSON: {e}\n{text}"));
        NetReport { run, json }
    }

    /// The connections, in start order.
    pub fn connections(&self) -> &[Value] {
        self.json["connections"]
            .as_array()
            .map(Vec::as_slice)
            .expect("connections")
    }

    /// The active connections (opened by `connect`) to `port`.
    pub fn connects_to(&self, port: u16) -> Vec<&Value> {
        self.connections()
            .iter()
            .filter(|c| c["direction"] == "active" && remote_port(c) == Some(port))
            .collect()
    }
}

/// The remote port of a connection in the JSON.
pub fn remote_port(conn: &Value) -> Option<u16> {
    conn["remote"].as_str()?.rsplit(':').next()?.parse().ok()
}

/// `field` of `value` as a number.
pub fn num(value: &Value, field: &str) -> u64 {
    value[field]
        .as_u64()
        .unwrap_or_else(|| panic!("no number {field} in {value}"))
}
