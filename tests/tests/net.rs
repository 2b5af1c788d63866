//! `flamewarden net` against the real kernel: TCP traffic between two network namespaces the
//! test creates (and removes) and joins with a veth pair, made by `tests/workloads/net_peer.c`.
//!
//! What is counted (see also `flamewarden net --help`): per connection, IN/OUT are TCP payload
//! bytes (headers, SYN and FIN excluded, retransmitted bytes counted once), so they equal what
//! the programs wrote and read exactly; per cgroup, the traffic counts IP packets with their
//! headers, so it exceeds the payload by a few percent.
//!
//! Run with `cargo test --release -p flamewarden-tests --test net -- --test-threads=1`.

mod net_support;

use std::{ffi::OsString, process::Command, thread, time::Duration};

use flamewarden_tests::{BackgroundProcess, require_bpf, require_cgroup, require_tool};
use net_support::{NetReport, NetnsPair, net_peer, num};
use serde_json::Value;

/// Command-line arguments of mixed types as one `Vec<OsString>`.
macro_rules! args {
    ($($arg:expr),* $(,)?) => {
        vec![$(OsString::from(AsRef::<std::ffi::OsStr>::as_ref(&$arg))),*]
    };
}

const PORT: u16 = 9100;

/// Root, BPF, `ip` and `nft`: what every test here needs.
fn ready() -> bool {
    require_bpf() && require_tool("ip") && require_tool("nft")
}

/// `flamewarden net --json ARGS -- ip netns exec CLIENT net_peer CLIENT_ARGS`.
fn trace_client(pair: &NetnsPair, flags: &[&str], client: &[&str]) -> NetReport {
    let mut args: Vec<OsString> = flags.iter().map(OsString::from).collect();
    args.extend(args!["--", "ip", "netns", "exec", pair.client, net_peer()]);
    args.extend(client.iter().map(OsString::from));
    let report = NetReport::run(args);
    eprintln!("client: {}", report.run.stderr.trim_end());
    report
}

/// Flags that make `flamewarden net` log its programs' recursion misses at the end (runs the
/// kernel skipped because the program was already running on that CPU: events not seen).
const LOG_RECURSION_MISSES: [&str; 2] = ["--log", "warn,flamewarden::probes::net=debug"];

/// The line with the programs' recursion misses, from a run with [`LOG_RECURSION_MISSES`].
fn recursion_misses(report: &NetReport) -> &str {
    report
        .run
        .stderr
        .lines()
        .find(|l| l.contains("network tracer programs:"))
        .unwrap_or("(no recursion misses logged)")
}

fn figures(conn: &Value) -> String {
    format!(
        "{} -> {} latency {} retrans {}/{} resets {}/{} in {} out {} failure {}",
        conn["local"],
        conn["remote"],
        conn["connect_latency_ns"],
        conn["retransmits"],
        conn["syn_retransmits"],
        conn["resets_in"],
        conn["resets_out"],
        conn["bytes_in"],
        conn["bytes_out"],
        conn["failure"]
    )
}

#[test]
fn counts_50_connects_over_a_veth_with_their_exact_payload_bytes() {
    if !ready() {
        return;
    }
    let pair = NetnsPair::new();
    let port = PORT.to_string();
    let _server = pair.start_server(&["serve", &port, "3000"]);
    let report = trace_client(
        &pair,
        &[],
        &["connect", &pair.server_ip, &port, "50", "1000", "3000"],
    );
    let conns = report.connects_to(PORT);
    assert_eq!(conns.len(), 50, "connections: {:#?}", report.connections());
    for conn in &conns {
        assert_eq!(conn["failure"], Value::Null, "{}", figures(conn));
        assert_eq!(num(conn, "bytes_out"), 1000, "{}", figures(conn));
        assert_eq!(num(conn, "bytes_in"), 3000, "{}", figures(conn));
        assert!(
            conn["connect_latency_ns"].as_u64().is_some(),
            "{}",
            figures(conn)
        );
        assert_eq!(
            conn["local"].as_str().unwrap().split(':').next(),
            Some(&*pair.client_ip)
        );
    }
    let total = &report.json["total"];
    assert_eq!(num(total, "connects"), 50);
    assert_eq!(num(&total["failed"], "refused"), 0);
    assert_eq!(num(total, "bytes_out"), 50_000);
    assert_eq!(num(total, "bytes_in"), 150_000);
    assert_eq!(num(&report.json["counters"], "events_lost"), 0);
}

#[test]
fn a_dropped_first_syn_shows_as_one_second_of_connect_latency_and_a_retransmit() {
    if !ready() {
        return;
    }
    let pair = NetnsPair::new();
    let port = PORT.to_string();
    let _server = pair.start_server(&["serve", &port, "10"]);
    // A SYN is 60 IP bytes: the quota lets the first one be dropped and none after it.
    NetnsPair::nft(
        &pair.server,
        &format!(
            "add table inet fwtest; add chain inet fwtest input {{ type filter hook input \
             priority 0; }}; add rule inet fwtest input tcp dport {port} tcp flags & (syn | ack) \
             == syn quota until 100 bytes drop"
        ),
    );
    let mut flags = vec!["--events"];
    flags.extend(LOG_RECURSION_MISSES);
    let report = trace_client(
        &pair,
        &flags,
        &["connect", &pair.server_ip, &port, "1", "10", "10"],
    );
    // Printed up front and in every failure: a miss is an event the tracer did not see.
    let misses = recursion_misses(&report);
    eprintln!("{misses}");
    let conns = report.connects_to(PORT);
    assert_eq!(conns.len(), 1, "{:#?}\n{misses}", report.connections());
    let conn = conns[0];
    // --events streams the retransmitted SYN, the open and the close (to stderr, as a command
    // owns stdout).
    let stream = &report.run.stderr;
    for what in [" retx ", " open ", " close "] {
        assert!(
            stream
                .lines()
                .any(|l| l.contains(what) && l.contains(&format!(":{port}"))),
            "no `{what}` line in:\n{stream}"
        );
    }
    assert!(stream.contains("state SYN_SENT"), "{stream}");
    eprintln!("{}", figures(conn));
    let latency = num(conn, "connect_latency_ns") as f64 / 1e9;
    assert!(
        (1.0..=1.3).contains(&latency),
        "connect latency {latency:.3} s, expected the initial SYN timeout, 1.0-1.3 s; {misses}"
    );
    assert!(num(conn, "retransmits") >= 1, "{}; {misses}", figures(conn));
    assert!(
        num(conn, "syn_retransmits") >= 1,
        "{}; {misses}",
        figures(conn)
    );
}

#[test]
fn a_connect_to_a_closed_port_fails_as_refused() {
    if !ready() {
        return;
    }
    let pair = NetnsPair::new();
    let report = trace_client(&pair, &[], &["refused", &pair.server_ip, "9199"]);
    let conns = report.connects_to(9199);
    assert_eq!(conns.len(), 1, "{:#?}", report.connections());
    eprintln!("{}", figures(conns[0]));
    assert_eq!(conns[0]["failure"], "refused");
    assert_eq!(num(&report.json["total"]["failed"], "refused"), 1);
    assert_eq!(report.json["total"]["connect_latency"]["count"], 0);
}

#[test]
fn a_peer_that_resets_the_connection_is_counted() {
    if !ready() {
        return;
    }
    let pair = NetnsPair::new();
    let port = PORT.to_string();
    let _server = pair.start_server(&["reset-serve", &port]);
    let report = trace_client(&pair, &[], &["reset", &pair.server_ip, &port]);
    let conns = report.connects_to(PORT);
    assert_eq!(conns.len(), 1, "{:#?}", report.connections());
    eprintln!("{}", figures(conns[0]));
    assert!(num(conns[0], "resets_in") >= 1);
    assert_eq!(conns[0]["failure"], Value::Null);
    assert_eq!(num(&report.json["total"], "resets"), 1);
}

#[test]
fn packets_lost_for_a_moment_are_retransmitted() {
    if !ready() {
        return;
    }
    let pair = NetnsPair::new();
    let port = PORT.to_string();
    let _server = pair.start_server(&["serve", &port, "0"]);
    let server_ns = pair.server.clone();
    let drop_port = port.clone();
    // Once the stream is flowing, drops everything to the server's port for 0.3 s.
    let dropper = thread::spawn(move || {
        wait_for_established(&server_ns, &drop_port);
        thread::sleep(Duration::from_millis(300));
        NetnsPair::nft(
            &server_ns,
            &format!(
                "add table inet fwloss; add chain inet fwloss input {{ type filter hook input \
                 priority 0; }}; add rule inet fwloss input tcp dport {drop_port} drop"
            ),
        );
        thread::sleep(Duration::from_millis(300));
        NetnsPair::nft(&server_ns, "delete table inet fwloss");
    });
    // The stream starts once flamewarden is attached and lasts 3 s.
    let report = trace_client(&pair, &[], &["stream", &pair.server_ip, &port, "3"]);
    dropper.join().expect("the nft thread panicked");
    let conns = report.connects_to(PORT);
    assert_eq!(conns.len(), 1, "{:#?}", report.connections());
    eprintln!("{}", figures(conns[0]));
    assert!(num(conns[0], "retransmits") > 0, "{}", figures(conns[0]));
    assert_eq!(num(conns[0], "syn_retransmits"), 0);
}

/// Waits (at most 20 s) until the server in `ns` has an established connection on `port`.
fn wait_for_established(ns: &str, port: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::time::Instant::now() < deadline {
        let out = Command::new("ip")
            .args(["netns", "exec", ns, "ss", "-Htn", "state", "established"])
            .arg(format!("( sport = :{port} )"))
            .output()
            .expect("ss (iproute2)");
        if !String::from_utf8_lossy(&out.stdout).trim().is_empty() {
            return;
        }
        thread::sleep(Duration::from_millis(50));
    }
    panic!("no established connection on port {port} in {ns} within 20 s");
}

/// Waits (at most 30 s) until flamewarden says, in its stderr `log`, that it is tracing.
fn wait_until_tracing(log: &std::path::Path) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::time::Instant::now() < deadline {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.contains("tracing TCP connections") {
            return;
        }
        thread::sleep(Duration::from_millis(50));
    }
    panic!(
        "flamewarden net did not start tracing within 30 s: {}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

#[test]
fn cgroup_traffic_matches_the_payload_sent_from_the_cgroup_within_5_percent() {
    if !ready() {
        return;
    }
    let Some(cgroup) = require_cgroup("net-bytes") else {
        return;
    };
    let pair = NetnsPair::new();
    let port = PORT.to_string();
    let _server = pair.start_server(&["serve", &port, "0"]);
    const PAYLOAD: u64 = 8_000_000;
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("net.json");
    let log = dir.path().join("stderr");
    let mut tracer = BackgroundProcess::spawn(
        Command::new(flamewarden_tests::flamewarden_bin())
            .args(["net", "--json", "-d", "8", "--by", "cgroup", "--cgroup"])
            .arg(cgroup.path())
            .arg("-o")
            .arg(&out)
            .stderr(std::fs::File::create(&log).expect("stderr file")),
        "flamewarden net --cgroup",
    );
    wait_until_tracing(&log);
    let mut client = cgroup.spawn(
        &mut NetnsPair::exec(
            &pair.client,
            &net_peer(),
            &["bulk", &pair.server_ip, &port, &PAYLOAD.to_string()],
        ),
        "net_peer bulk",
    );
    let status = client.wait_or_kill(Duration::from_secs(30));
    assert!(status.success(), "net_peer bulk failed: {status}");
    let status = tracer.wait_or_kill(Duration::from_secs(60));
    assert!(status.success(), "flamewarden net failed: {status}");
    let json: Value =
        serde_json::from_str(&std::fs::read_to_string(&out).expect("net.json")).expect("JSON");
    let traffic = json["traffic"].as_array().expect("traffic");
    let row = traffic
        .iter()
        .find(|t| t["cgroup_id"] == cgroup.id())
        .unwrap_or_else(|| panic!("no traffic of cgroup {}: {traffic:#?}", cgroup.id()));
    let sent = num(&row["ipv4"], "tx_bytes");
    eprintln!("cgroup {}: {row}", cgroup.path().display());
    let ratio = sent as f64 / PAYLOAD as f64;
    assert!(
        (1.0..=1.05).contains(&ratio),
        "cgroup sent {sent} IP bytes for {PAYLOAD} payload bytes (ratio {ratio:.4}); headers \
         should add 0-5 %"
    );
    // The connection itself is in the report too, with the payload exact.
    let conn = json["connections"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["direction"] == "active"))
        .expect("the bulk connection");
    assert_eq!(num(conn, "bytes_out"), PAYLOAD);
}

/// Sends `command` on the control FIFO and waits (at most 30 s) for its answer on `ack`.
fn control(ctl: &std::path::Path, ack: &mut std::fs::File, command: &str) -> String {
    use std::io::{Read as _, Write as _};
    let mut writer = std::fs::OpenOptions::new()
        .write(true)
        .open(ctl)
        .expect("control FIFO");
    writeln!(writer, "{command}").expect("write a control command");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut answer = Vec::new();
    while !answer.ends_with(b"\n") {
        assert!(
            std::time::Instant::now() < deadline,
            "no answer to {command:?} within 30 s"
        );
        let mut byte = [0u8; 1];
        match ack.read(&mut byte) {
            Ok(1) => answer.push(byte[0]),
            _ => thread::sleep(Duration::from_millis(10)),
        }
    }
    String::from_utf8_lossy(&answer).trim().to_owned()
}

#[test]
fn control_disable_detaches_the_tracer_and_enable_attaches_it_again() {
    use std::os::unix::fs::OpenOptionsExt as _;
    if !ready() {
        return;
    }
    let pair = NetnsPair::new();
    let port = PORT.to_string();
    let _server = pair.start_server(&["serve", &port, "300"]);
    let dir = tempfile::tempdir().expect("tempdir");
    let (ctl, ack, out) = (
        dir.path().join("ctl"),
        dir.path().join("ack"),
        dir.path().join("net.json"),
    );
    for fifo in [&ctl, &ack] {
        let status = Command::new("mkfifo").arg(fifo).status().expect("mkfifo");
        assert!(status.success());
    }
    let mut tracer = BackgroundProcess::spawn(
        Command::new(flamewarden_tests::flamewarden_bin())
            .args(["net", "-a", "--json", "--control"])
            .arg(format!("fifo:{},{}", ctl.display(), ack.display()))
            .arg("-o")
            .arg(&out),
        "flamewarden net --control",
    );
    let mut ack = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&ack)
        .expect("ack FIFO");
    // The first answer comes once the programs are attached.
    assert_eq!(control(&ctl, &mut ack, "ping"), "ack");
    let connect = |n: usize| {
        let output = NetnsPair::exec(
            &pair.client,
            &net_peer(),
            &[
                "connect",
                &pair.server_ip,
                &port,
                &n.to_string(),
                "100",
                "300",
            ],
        )
        .output()
        .expect("net_peer connect");
        assert!(output.status.success(), "net_peer connect failed");
    };
    connect(5);
    assert_eq!(control(&ctl, &mut ack, "disable"), "ack");
    connect(7);
    assert_eq!(control(&ctl, &mut ack, "enable"), "ack");
    connect(3);
    assert_eq!(control(&ctl, &mut ack, "bogus"), "err");
    assert_eq!(control(&ctl, &mut ack, "stop"), "ack");
    let status = tracer.wait_or_kill(Duration::from_secs(60));
    assert!(status.success(), "flamewarden net failed: {status}");
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(&out).expect("net.json")).expect("JSON");
    let conns: Vec<&Value> = report["connections"]
        .as_array()
        .expect("connections")
        .iter()
        .filter(|c| c["direction"] == "active" && net_support::remote_port(c) == Some(PORT))
        .filter(|c| {
            c["local"]
                .as_str()
                .is_some_and(|l| l.starts_with(&pair.client_ip))
        })
        .collect();
    // The 7 connections made while disabled were not seen; the 5 before and the 3 after were,
    // each with its exact bytes.
    assert_eq!(conns.len(), 8, "connections: {conns:#?}");
    for conn in conns {
        assert_eq!(num(conn, "bytes_out"), 100, "{}", figures(conn));
        assert_eq!(num(conn, "bytes_in"), 300, "{}", figures(conn));
    }
}
