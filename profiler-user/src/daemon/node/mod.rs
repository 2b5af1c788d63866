//! The daemon's kernel side, on one thread that owns every BPF object: the syscall tracer,
//! sandbox discovery and the guard's violation events. The HTTP side asks it for snapshots over
//! a channel.
//!
//! The guard is attached once per glob parent directory (its cgroup programs cover every cgroup
//! below) and pinned; each discovered sandbox gets its own policy entry, keyed by its cgroup
//! id, in that attachment's maps: a map update, well within the 100 ms budget, where a fresh
//! attachment would spend about a second in the verifier.

use std::{
    collections::{HashMap, HashSet},
    path::{Path, PathBuf},
    sync::{Arc, Mutex, mpsc},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use super::{
    board::{GuardBoard, LiveEvent, SandboxStatus, ViolationRecord},
    config::DaemonConfig,
    lifecycle::{ProcStats, ProcTotals},
    names::CgroupNames,
    syscalls::{REMOVED_CGROUPS, SyscallCollector, SyscallTotalsMap},
    tcp::{TcpStats, TcpTotals},
    verdicts::{VERDICT_SOCKET, VerdictListener},
    watch::{WatchId, Watcher},
};
use crate::{
    collect::{SampleMaps, guard::GuardEventReader},
    net::{CgroupTraffic, NetCounters},
    probes::guard::{AttachOutcome, GuardMaps},
    syscalls::{SlowCall, SyscallCounters, realtime_minus_monotonic_ns},
};

mod discover;
mod ends;
mod hooks;

/// How often the globs' parents are read even when inotify reported nothing.
const FULL_SCAN_EVERY: Duration = Duration::from_secs(1);

/// How often the totals of removed cgroups are folded together and freed memory is given back.
const UPKEEP_EVERY: Duration = Duration::from_secs(10);

/// A snapshot of the node's statistics for `/metrics` and the page.
#[derive(Debug, Default)]
pub struct NodeView {
    /// Syscall totals per (cgroup id, syscall).
    pub totals: SyscallTotalsMap,
    /// Syscall loss counters.
    pub counters: SyscallCounters,
    /// TCP totals per cgroup id.
    pub tcp: HashMap<u64, TcpTotals>,
    /// IP traffic per cgroup id.
    pub traffic: Vec<CgroupTraffic>,
    /// The network tracer's loss counters.
    pub net_counters: NetCounters,
    /// Execs and exits per cgroup id.
    pub procs: HashMap<u64, ProcTotals>,
    /// cgroup id → path.
    pub names: HashMap<u64, String>,
}

/// Requests from the HTTP side.
pub enum NodeRequest {
    /// Send the syscall statistics, with the paths of these other cgroup ids too.
    Syscalls(Vec<u64>, tokio::sync::oneshot::Sender<NodeView>),
    /// Use this configuration from now on.
    Reload(Arc<DaemonConfig>),
    /// These inotify watches fired.
    Changed(Vec<WatchId>),
    /// `flamewarden sandbox run` reported a verdict (`None`: a datagram that was not one).
    Verdict(Option<super::verdicts::VerdictRecord>),
    /// End the thread (the watcher holds a sender, so the channel never closes by itself).
    Stop,
}

/// A sandbox the daemon guards: a policy entry for its cgroup id in its parent's attachment.
struct Guarded {
    path: PathBuf,
    glob: String,
    parent: PathBuf,
    violations: u64,
    enforce: bool,
    /// `pids.events` max and `memory.events` oom_kill, as last read.
    pids_max_hits: u64,
    oom_kills: u64,
    watches: Vec<WatchId>,
    /// The daemon wrote its policy and derives its verdict. `false` for the runs of
    /// `flamewarden sandbox run`/`batch` (a glob over their `flamewarden-sandboxes` parent):
    /// a run writes and removes its own policy entry and reports its own verdict, so the
    /// daemon only labels and lists it.
    owned: bool,
}

/// The guard attached to the parent directory of a glob: its programs cover every cgroup
/// below, each sandbox gets its own policy entry, so a new sandbox costs one map update.
struct ParentGuard {
    id: u64,
    outcome: AttachOutcome,
    maps: GuardMaps,
    reader: GuardEventReader,
    lost_at_open: u64,
}

/// How long to wait before attaching to a parent again after a failure.
const RETRY_AFTER: Duration = Duration::from_secs(5);

/// The thread's state.
pub struct Node {
    config: Arc<DaemonConfig>,
    syscalls: SyscallCollector,
    parents: HashMap<PathBuf, ParentGuard>,
    failed_parents: HashMap<PathBuf, Instant>,
    guarded: HashMap<u64, Guarded>,
    names: CgroupNames,
    tcp: TcpStats,
    procs: ProcStats,
    watcher: Option<Watcher>,
    parent_watches: HashMap<PathBuf, WatchId>,
    file_watches: HashMap<WatchId, u64>,
    /// Receives verdicts on its thread; removes the socket on drop.
    _verdicts: Option<VerdictListener>,
    board: Arc<Mutex<GuardBoard>>,
    lost_of_removed: u64,
    last_upkeep: Instant,
    /// The syscall layers of flamewarden's own runs: when each was first seen without a run.
    hooks: hooks::IdleHooks,
    /// When the globs' parents were last read whole.
    last_scan: Instant,
}

impl Node {
    /// Starts the syscall tracer and the CPU sampler (whose maps it returns, for the CPU
    /// thread) and guards the sandboxes that exist already.
    /// `wake` is the node's own request channel: inotify events arrive through it.
    pub fn start(
        config: Arc<DaemonConfig>,
        board: Arc<Mutex<GuardBoard>>,
        wake: mpsc::Sender<NodeRequest>,
    ) -> Result<(Self, Option<SampleMaps>), crate::record::RecordError> {
        let (syscalls, samples) =
            SyscallCollector::start(config.cpu_sampling_hz, config.slow_call_ns)?;
        let watcher = Watcher::start(wake.clone(), NodeRequest::Changed)
            .inspect_err(|e| tracing::warn!("inotify unavailable, discovery polls only: {e}"))
            .ok();
        // Verdicts are received on a thread of their own, as they come: the kernel queues only
        // `net.unix.max_dgram_qlen` (10) datagrams, fewer than a 50 ms period brings at
        // 100 runs a second.
        let verdicts = VerdictListener::bind()
            .and_then(|listener| {
                let wake = wake.clone();
                listener.receive_on_thread(move |verdict| {
                    wake.send(NodeRequest::Verdict(verdict)).is_ok()
                })?;
                Ok(listener)
            })
            .inspect_err(|e| tracing::warn!("cannot receive verdicts on {VERDICT_SOCKET}: {e}"))
            .ok();
        let mut node = Self {
            config,
            syscalls,
            parents: HashMap::new(),
            failed_parents: HashMap::new(),
            guarded: HashMap::new(),
            names: CgroupNames::default(),
            tcp: TcpStats::default(),
            procs: ProcStats::default(),
            watcher,
            parent_watches: HashMap::new(),
            file_watches: HashMap::new(),
            _verdicts: verdicts,
            board,
            lost_of_removed: 0,
            last_upkeep: Instant::now(),
            hooks: hooks::IdleHooks::default(),
            last_scan: Instant::now(),
        };
        // Attaching to the globs' parents verifies the guard's programs (about a second); it
        // is done before the daemon reports ready, so that a sandbox made afterwards costs
        // only a map update.
        node.discover();
        Ok((node, samples))
    }

    /// The tracer's program names and ids.
    pub fn program_ids(&self) -> Vec<(String, u32)> {
        self.syscalls.program_ids()
    }

    /// Serves requests and watches the sandboxes until the channel closes.
    pub fn run(mut self, requests: mpsc::Receiver<NodeRequest>) {
        let mut next_tick = Instant::now();
        loop {
            let period = Duration::from_millis(self.config.discovery_interval_ms);
            // Inotify events and reloads look at the sandboxes at once; the rest waits for
            // the period.
            let mut now_due = false;
            match requests.recv_timeout(next_tick.saturating_duration_since(Instant::now())) {
                Ok(NodeRequest::Syscalls(extra, reply)) => {
                    let mut view = self.node_view();
                    for id in extra {
                        view.names
                            .entry(id)
                            .or_insert_with(|| self.cgroup_label(id));
                    }
                    let _ = reply.send(view);
                }
                Ok(NodeRequest::Reload(config)) => {
                    if config.slow_call_ns != self.config.slow_call_ns
                        && let Err(e) = self.syscalls.set_slow_threshold(config.slow_call_ns)
                    {
                        tracing::warn!("slow-call threshold not changed: {e}");
                    }
                    self.config = config;
                    self.reapply_policies();
                    tracing::info!("configuration reloaded");
                    now_due = true;
                }
                Ok(NodeRequest::Changed(ids)) => {
                    for id in ids {
                        if let Some(&cgroup) = self.file_watches.get(&id) {
                            self.read_sandbox_events(cgroup);
                        }
                    }
                    now_due = true;
                }
                Ok(NodeRequest::Verdict(verdict)) => self.verdict_reported(verdict),
                Ok(NodeRequest::Stop) | Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
            if !now_due && Instant::now() < next_tick {
                continue;
            }
            next_tick = Instant::now() + period;
            // Violations first: a sandbox that is gone gets a verdict that counts them.
            self.drain_events();
            // Inotify on every glob's parent says when a sandbox comes or goes: the parents
            // are read on its word, and once a second in case it missed something.
            if now_due || self.last_scan.elapsed() >= FULL_SCAN_EVERY || !self.parents_watched() {
                self.last_scan = Instant::now();
                self.discover();
            }
            for event in self.syscalls.net_events() {
                self.tcp.record(&event);
            }
            self.drain_slow_calls();
            self.hooks.check(self.config.guard_idle_detach);
            if self.last_upkeep.elapsed() >= UPKEEP_EVERY {
                self.last_upkeep = Instant::now();
                let live = CgroupNames::all_ids();
                self.syscalls.fold_removed_cgroups(&live);
                self.tcp.fold_removed_cgroups(&live);
                self.procs.retire_removed(self.syscalls.ebpf_mut(), &live);
                self.names.retain(&live);
                // What the folds and the sandboxes that went freed goes back to the system.
                // SAFETY: malloc_trim only releases free heap memory; it has no preconditions.
                unsafe { libc::malloc_trim(0) };
            }
        }
    }

    fn node_view(&mut self) -> NodeView {
        let (totals, counters) = self.syscalls.totals().unwrap_or_else(|e| {
            tracing::warn!("reading syscall statistics: {e}");
            Default::default()
        });
        let (traffic, net_counters) = self.syscalls.traffic().unwrap_or_else(|e| {
            tracing::warn!("reading TCP statistics: {e}");
            Default::default()
        });
        let tcp = self.tcp.by_cgroup().clone();
        let procs = self
            .procs
            .totals(self.syscalls.ebpf_mut())
            .unwrap_or_else(|e| {
                tracing::warn!("reading process counts: {e}");
                HashMap::new()
            });
        let ids: HashSet<u64> = totals
            .keys()
            .map(|(id, _)| *id)
            .chain(tcp.keys().copied())
            .chain(traffic.iter().map(|t| t.cgroup_id))
            .chain(procs.keys().copied())
            .collect();
        let names = ids
            .into_iter()
            .map(|id| (id, self.cgroup_label(id)))
            .collect();
        NodeView {
            totals,
            counters,
            tcp,
            traffic,
            net_counters,
            procs,
            names,
        }
    }

    /// The label of cgroup `id`: its path, `removed` for the removed ones.
    fn cgroup_label(&mut self, id: u64) -> String {
        match id {
            REMOVED_CGROUPS => "removed".to_owned(),
            // A guarded sandbox's path is known, even when it is newer than the names' scan.
            _ => match self.guarded.get(&id) {
                Some(g) => g.path.display().to_string(),
                None => self.names.path(id),
            },
        }
    }

    fn attach_failed(&self, path: &Path, e: &dyn std::error::Error) {
        let mut chain = e.to_string();
        let mut source = e.source();
        while let Some(s) = source {
            chain.push_str(&format!(": {s}"));
            source = s.source();
        }
        tracing::warn!("{}: guard failed: {chain}", path.display());
        self.board.lock().unwrap().attach_errors += 1;
    }

    fn publish_sandboxes(&self) {
        let mut sandboxes: Vec<SandboxStatus> = self
            .guarded
            .iter()
            .map(|(id, g)| SandboxStatus {
                path: g.path.clone(),
                cgroup_id: *id,
                glob: g.glob.clone(),
                guard: match self.parents.get(&g.parent).map(|p| p.outcome) {
                    Some(AttachOutcome::Attached) => "attached",
                    Some(AttachOutcome::Adopted) => "adopted",
                    None => "none",
                },
                violations: g.violations,
            })
            .collect();
        sandboxes.sort_by(|a, b| a.path.cmp(&b.path));
        let lost: u64 = self.lost_of_removed
            + self
                .parents
                .values()
                .map(|p| p.reader.lost().saturating_sub(p.lost_at_open))
                .sum::<u64>();
        let mut board = self.board.lock().unwrap();
        board.sandboxes = sandboxes;
        board.events_lost = lost;
    }

    /// Publishes the slow calls since the last tick, but those of the waiting syscalls.
    fn drain_slow_calls(&mut self) {
        let events = self.syscalls.slow_calls();
        if events.is_empty() {
            return;
        }
        let offset = realtime_minus_monotonic_ns();
        let mut calls = Vec::new();
        let own = std::process::id();
        for e in events {
            // The daemon's own threads wait on purpose (the verdict socket, with a timeout).
            if e.tgid == own || self.config.slow_call_ignore.contains(&e.nr) {
                continue;
            }
            let time = (e.exit_ns as i64).saturating_add(offset).max(0) as u64;
            let cgroup = self.cgroup_label(e.cgroup_id);
            calls.push(SlowCall::from_event(&e, time, cgroup, &[]));
        }
        let keep = self.config.events_kept;
        let mut board = self.board.lock().unwrap();
        for call in calls {
            board.push(LiveEvent::SlowCall(call), keep);
        }
    }

    fn drain_events(&mut self) {
        let mut events = Vec::new();
        for parent in self.parents.values_mut() {
            events.extend(parent.reader.poll(Duration::ZERO));
        }
        if events.is_empty() {
            return;
        }
        let unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let mut records = Vec::with_capacity(events.len());
        for violation in events {
            if let Some(g) = self.guarded.get_mut(&violation.cgroup_id) {
                g.violations += 1;
            }
            records.push(ViolationRecord {
                unix_ms,
                cgroup: self.cgroup_label(violation.cgroup_id),
                violation,
            });
        }
        let keep = self.config.events_kept;
        {
            let mut board = self.board.lock().unwrap();
            for record in records {
                board.push(LiveEvent::Violation(record), keep);
            }
        }
        self.publish_sandboxes();
    }
}
