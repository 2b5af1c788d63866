//! `sandbox run --profile`: a CPU recording of the run's cgroup with the machinery of
//! `flamewarden record`, started before the command and written after it.

use std::{
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use crate::{
    cli::output,
    probes::MapSizes,
    record::{RecordMode, RecordOptions, RecordTarget, Recording, record_ready},
    symbolize::{SymbolDetail, Symbolizer},
};

/// Sampling frequency of a run's profile: runs last milliseconds to seconds, so more than
/// `record`'s default 99 Hz.
const FREQUENCY_HZ: u64 = 999;
/// How long the recording may take to attach before the run goes on without it.
const ATTACH_TIMEOUT: Duration = Duration::from_secs(10);

/// A recording in progress.
pub struct Profiling {
    output: output::Output,
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Result<Recording, String>>,
}

impl Profiling {
    /// Starts recording `cgroup` (a cgroup v2 directory) and returns once it samples.
    pub fn start(cgroup: &Path, out: &Path) -> Result<Self, String> {
        let output = output::parse_output(&out.to_string_lossy())?;
        let opts = RecordOptions {
            target: RecordTarget::Cgroups(vec![cgroup.to_path_buf()]),
            mode: RecordMode::Cpu,
            frequency_hz: FREQUENCY_HZ,
            min_block_ns: 0,
            duration: None,
            map_sizes: MapSizes::default(),
            symbols: if matches!(
                output.format,
                output::OutputFormat::Json | output::OutputFormat::Pprof
            ) {
                SymbolDetail::Lines
            } else {
                SymbolDetail::Names
            },
        };
        let stop = Arc::new(AtomicBool::new(false));
        let ready = Arc::new(AtomicBool::new(false));
        let thread = {
            let (stop, ready) = (Arc::clone(&stop), Arc::clone(&ready));
            std::thread::spawn(move || {
                let mut symbolizer = Symbolizer::with_detail(opts.symbols);
                record_ready(&opts, &stop, &mut symbolizer, &ready).map_err(|e| e.to_string())
            })
        };
        let deadline = Instant::now() + ATTACH_TIMEOUT;
        while !ready.load(Ordering::Acquire) {
            if thread.is_finished() || Instant::now() > deadline {
                stop.store(true, Ordering::Relaxed);
                return Err(match thread.join() {
                    Ok(Err(e)) => format!("--profile: {e}"),
                    _ => "--profile: the recording did not start".to_owned(),
                });
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(Self {
            output,
            stop,
            thread,
        })
    }

    /// Stops the recording and writes the profile; what went wrong, if anything.
    pub fn finish(self, title: &str) -> Result<PathBuf, String> {
        self.stop.store(true, Ordering::Relaxed);
        let recording = self
            .thread
            .join()
            .map_err(|_| "--profile: the recording thread panicked".to_owned())??;
        output::write_all(
            &recording.profile,
            std::slice::from_ref(&self.output),
            title,
        )
        .map_err(|e| format!("--profile: {e:#}"))?;
        Ok(self.output.path)
    }
}
