//! `flamewarden daemon`: the always-on node agent. A thread owns the BPF objects (syscall
//! tracer, sandbox discovery and guard events, see [`node`]); a tokio runtime serves HTTP
//! (`/metrics`, `/api/v1/*`, `/`), reloads the configuration on SIGHUP and shuts down on
//! SIGTERM / SIGINT. Guard attachments are pinned: they keep enforcing while the daemon is down
//! and are adopted when it comes back.

pub mod board;
pub mod config;
pub mod cpu;
pub mod http;
pub mod lifecycle;
pub mod metrics;
pub mod names;
pub mod node;
pub mod own;
pub mod page;
pub mod pins;
pub mod profile;
pub mod retire;
pub mod rolling;
pub mod stream;
pub mod syscalls;
pub mod tcp;
pub mod tcp_metrics;
pub mod verdicts;
pub mod watch;

use std::{
    fs,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc,
    },
    time::Duration,
};

use board::GuardBoard;
use config::{ConfigError, DaemonConfig, Overrides};
use node::{Node, NodeRequest};

/// The latest on-demand profile, for the web page.
#[derive(Clone, Debug)]
pub struct LatestProfile {
    /// What was recorded.
    pub target: String,
    /// When it finished, ms since the epoch.
    pub unix_ms: u64,
    /// The hottest functions by self weight: (name, self %).
    pub hot: Vec<(String, f64)>,
}

/// State shared by the HTTP handlers.
pub struct Shared {
    config: RwLock<Arc<DaemonConfig>>,
    node: mpsc::Sender<NodeRequest>,
    /// The CPU thread, when always-on profiling is on.
    cpu: Option<mpsc::Sender<cpu::CpuRequest>>,
    /// What the guard side has seen.
    pub board: Arc<Mutex<GuardBoard>>,
    own_ids: Vec<(String, u32)>,
    reloads: AtomicU64,
    reload_errors: AtomicU64,
    latest: Mutex<Option<LatestProfile>>,
    profiling: tokio::sync::Mutex<()>,
    ready: AtomicBool,
}

impl Shared {
    /// The configuration in use.
    pub fn config(&self) -> Arc<DaemonConfig> {
        Arc::clone(&self.config.read().unwrap())
    }

    fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// Validates the configuration file again and, if it is good, swaps it in; a bad one
    /// keeps the old one and counts an error.
    fn reload(&self, path: &Path, overrides: &Overrides) {
        match config::load(Some(path), overrides) {
            Ok(new) => {
                let old = self.config();
                if new.listen != old.listen {
                    tracing::warn!(
                        "config reload: `listen` changed to {}; it takes effect on restart",
                        new.listen
                    );
                }
                let new = Arc::new(new);
                *self.config.write().unwrap() = Arc::clone(&new);
                let _ = self.node.send(NodeRequest::Reload(new));
                self.reloads.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                self.reload_errors.fetch_add(1, Ordering::Relaxed);
                tracing::error!("config reload refused, keeping the running configuration: {e}");
            }
        }
    }
}

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The syscall tracer could not start.
    #[error("starting the syscall tracer")]
    Collector(#[source] crate::record::RecordError),
    /// The runtime, the listener or the signal handlers could not be set up.
    #[error("{what}")]
    Io {
        /// What failed.
        what: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Runs the daemon until SIGTERM or SIGINT.
pub fn run(config_file: Option<PathBuf>, overrides: Overrides) -> Result<(), DaemonError> {
    let config = Arc::new(config::load(config_file.as_deref(), &overrides)?);
    // Two malloc arenas for a handful of threads: glibc's default (eight per core) keeps
    // freed memory of every thread that ever allocated, and RSS creeps up.
    // SAFETY: mallopt only tunes the allocator; called before the daemon's threads start.
    unsafe { libc::mallopt(libc::M_ARENA_MAX, 2) };
    let stale = pins::remove_stale_pins();
    if stale > 0 {
        tracing::info!("removed {stale} pinned guard(s) of cgroups that are gone");
    }
    let _bpf_stats = own::enable_bpf_stats();
    let board = Arc::new(Mutex::new(GuardBoard::default()));
    let (tx, rx) = mpsc::channel();
    let (node, samples) = Node::start(Arc::clone(&config), Arc::clone(&board), tx.clone())
        .map_err(DaemonError::Collector)?;
    let own_ids = node.program_ids();
    let cpu = match samples {
        Some(maps) => {
            let options = cpu::WindowOptions {
                frequency_hz: config.cpu_sampling_hz,
                slot_ms: config.cpu_slot_seconds * 1000,
                keep_ms: config.cpu_window_seconds * 1000,
            };
            Some(
                cpu::start(maps, options)
                    .map_err(|e| DaemonError::Collector(crate::record::RecordError::Mappings(e)))?,
            )
        }
        None => None,
    };
    // Loading parsed the kernel's BTF and verified programs: give that memory back.
    // SAFETY: malloc_trim only releases free heap memory; it has no preconditions.
    unsafe { libc::malloc_trim(0) };
    let node_thread = std::thread::Builder::new()
        .name("flamewarden-node".into())
        .spawn(move || node.run(rx))
        .map_err(|source| DaemonError::Io {
            what: "starting the collector thread".into(),
            source,
        })?;
    let shared = Arc::new(Shared {
        config: RwLock::new(Arc::clone(&config)),
        node: tx,
        cpu,
        board,
        own_ids,
        reloads: AtomicU64::new(0),
        reload_errors: AtomicU64::new(0),
        latest: Mutex::new(None),
        profiling: tokio::sync::Mutex::new(()),
        ready: AtomicBool::new(false),
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .max_blocking_threads(4)
        .build()
        .map_err(|source| DaemonError::Io {
            what: "building the tokio runtime".into(),
            source,
        })?;
    let result = runtime.block_on(serve_until_stopped(
        Arc::clone(&shared),
        config_file,
        overrides,
    ));
    runtime.shutdown_timeout(Duration::from_secs(2));
    // Ending the node thread drops its objects, which detaches the tracers. The guard's pinned
    // links stay and keep enforcing.
    let _ = shared.node.send(NodeRequest::Stop);
    drop(shared);
    let _ = node_thread.join();
    tracing::info!("stopped");
    result
}

async fn serve_until_stopped(
    shared: Arc<Shared>,
    config_file: Option<PathBuf>,
    overrides: Overrides,
) -> Result<(), DaemonError> {
    use tokio::signal::unix::{SignalKind, signal};

    let io = |what: &str| {
        let what = what.to_owned();
        move |source| DaemonError::Io { what, source }
    };
    let listen = shared.config().listen;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(io(&format!("cannot listen on {listen}")))?;
    tracing::info!(
        "listening on http://{}",
        listener.local_addr().map_err(io("listener"))?
    );
    let mut hangup = signal(SignalKind::hangup()).map_err(io("SIGHUP handler"))?;
    let mut terminate = signal(SignalKind::terminate()).map_err(io("SIGTERM handler"))?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(io("SIGINT handler"))?;
    let server = tokio::spawn(http::serve(listener, Arc::clone(&shared)));
    shared.ready.store(true, Ordering::Relaxed);
    let reloader = {
        let shared = Arc::clone(&shared);
        let (config_file, overrides) = (config_file.clone(), overrides.clone());
        tokio::spawn(async move {
            while hangup.recv().await.is_some() {
                match &config_file {
                    Some(path) => {
                        let (shared, path, overrides) =
                            (Arc::clone(&shared), path.clone(), overrides.clone());
                        let _ =
                            tokio::task::spawn_blocking(move || shared.reload(&path, &overrides))
                                .await;
                    }
                    None => tracing::warn!("SIGHUP: no --config file to reload"),
                }
            }
        })
    };
    // A changed file is reloaded like on SIGHUP (checked every 2 s).
    let watcher = {
        let shared = Arc::clone(&shared);
        let config_file = config_file.clone();
        let overrides = overrides.clone();
        tokio::spawn(async move {
            let Some(path) = config_file else {
                return;
            };
            let mtime = |p: &Path| fs::metadata(p).and_then(|m| m.modified()).ok();
            let mut seen = mtime(&path);
            loop {
                tokio::time::sleep(Duration::from_secs(2)).await;
                let now = mtime(&path);
                if now.is_some() && now != seen {
                    seen = now;
                    tracing::info!("{} changed: reloading", path.display());
                    let (shared, path, overrides) =
                        (Arc::clone(&shared), path.clone(), overrides.clone());
                    let _ =
                        tokio::task::spawn_blocking(move || shared.reload(&path, &overrides)).await;
                }
            }
        })
    };
    let stop = Arc::new(tokio::sync::Notify::new());
    let on_interrupt = {
        let stop = Arc::clone(&stop);
        tokio::spawn(async move {
            interrupt.recv().await;
            stop.notify_one();
        })
    };
    let on_terminate = {
        let stop = Arc::clone(&stop);
        tokio::spawn(async move {
            terminate.recv().await;
            stop.notify_one();
        })
    };
    stop.notified().await;
    tracing::info!("shutting down");
    shared.ready.store(false, Ordering::Relaxed);
    for task in [server, reloader, watcher, on_interrupt, on_terminate] {
        task.abort();
    }
    Ok(())
}

/// `--cleanup`: detaches and unpins every guard attachment the daemon made.
pub fn cleanup() -> Result<Vec<u64>, crate::probes::guard::GuardAttachError> {
    pins::cleanup()
}
