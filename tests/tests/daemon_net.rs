//! `flamewarden daemon`'s TCP metrics: connections on loopback from a workload in a cgroup the
//! test creates, counted exactly per cgroup and by result.

mod daemon_support;
#[expect(dead_code, reason = "only the net_peer workload is used here")]
mod net_support;

use std::{
    net::TcpStream,
    process::{Command, Stdio},
    time::Duration,
};

use daemon_support::{Daemon, free_port, sample, wait_for};
use flamewarden_tests::{BackgroundProcess, require_bpf, require_cgroup};
use net_support::net_peer;

const CONNECTS: u64 = 25;

#[test]
fn tcp_connects_of_a_cgroup_are_counted_exactly_by_result() {
    if !require_bpf() {
        return;
    }
    let Some(cgroup) = require_cgroup("daemon-tcp") else {
        return;
    };
    let peer = net_peer();
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), "");
    let port = free_port();
    let _server = BackgroundProcess::spawn(
        Command::new(&peer)
            .args(["serve", &port.to_string(), "200"])
            .stdout(Stdio::null()),
        "net_peer serve",
    );
    // The server listens once a connect from here (another cgroup) succeeds.
    let listening = wait_for(Duration::from_secs(10), || {
        TcpStream::connect(("127.0.0.1", port)).ok()
    });
    drop(listening.expect("net_peer serve does not listen"));

    let mut client = cgroup.spawn(
        Command::new(&peer)
            .args([
                "connect",
                "127.0.0.1",
                &port.to_string(),
                &CONNECTS.to_string(),
                "100",
                "200",
            ])
            .stdout(Stdio::null()),
        "net_peer connect",
    );
    assert!(client.wait_or_kill(Duration::from_secs(30)).success());
    let closed = free_port();
    let mut refused = cgroup.spawn(
        Command::new(&peer)
            .args(["refused", "127.0.0.1", &closed.to_string()])
            .stdout(Stdio::null()),
        "net_peer refused",
    );
    assert!(refused.wait_or_kill(Duration::from_secs(10)).success());

    let path = cgroup.path().display().to_string();
    let labels = |result: &str| format!("cgroup=\"{path}\",result=\"{result}\"");
    let counted = wait_for(Duration::from_secs(5), || {
        let text = daemon.metrics();
        let established = sample(
            &text,
            "flamewarden_tcp_connects_total",
            &labels("established"),
        )?;
        let refused = sample(&text, "flamewarden_tcp_connects_total", &labels("refused"))?;
        (established >= CONNECTS as f64 && refused >= 1.0).then_some((established, refused, text))
    });
    let (established, refused, text) = counted.unwrap_or_else(|| {
        panic!(
            "connects not counted:\n{}\n{}",
            daemon.metrics(),
            daemon.log_text()
        )
    });
    assert_eq!((established, refused), (CONNECTS as f64, 1.0), "{text}");
    let latencies = sample(
        &text,
        "flamewarden_tcp_connect_duration_seconds_count",
        &format!("cgroup=\"{path}\""),
    );
    assert_eq!(latencies, Some(CONNECTS as f64), "{text}");
    // Every request was sent: 100 payload bytes per connection, plus headers.
    let sent = sample(
        &text,
        "flamewarden_network_bytes_total",
        &format!("cgroup=\"{path}\",direction=\"tx\""),
    );
    assert!(sent.is_some_and(|b| b >= (CONNECTS * 100) as f64), "{text}");
}
