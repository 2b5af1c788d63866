//! `perf record` as the reference profiler the tests compare flamewarden against.

use std::{
    collections::BTreeMap,
    ffi::OsStr,
    fs::File,
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use crate::{BackgroundProcess, folded::percent};

/// Self samples per function, as `perf record -g` saw them.
#[derive(Clone, Debug, Default)]
pub struct PerfProfile {
    /// All samples.
    pub samples: u64,
    /// Samples per leaf symbol (`[unknown]` when perf could not resolve it).
    pub self_samples: BTreeMap<String, u64>,
}

impl PerfProfile {
    /// Percentage of samples whose leaf is `function`.
    pub fn self_share(&self, function: &str) -> f64 {
        percent(
            self.self_samples.get(function).copied().unwrap_or(0),
            self.samples,
        )
    }

    /// Parses `perf script -F comm,tid,ip,sym` output of a recording with call graphs: a header
    /// line per sample, then its callchain leaf first, one `ADDRESS SYMBOL` per line.
    pub fn parse_script(text: &str) -> PerfProfile {
        let mut profile = PerfProfile::default();
        let mut expecting_leaf = false;
        for line in text.lines() {
            if line.trim().is_empty() {
                expecting_leaf = false;
            } else if !line.starts_with(char::is_whitespace) {
                profile.samples += 1;
                expecting_leaf = true;
            } else if expecting_leaf {
                let symbol = line
                    .trim()
                    .split_once(' ')
                    .map_or("[unknown]", |(_, s)| s.trim());
                *profile.self_samples.entry(symbol.to_owned()).or_default() += 1;
                expecting_leaf = false;
            }
        }
        profile
    }
}

/// Runs `perf record -F FREQUENCY -g -- PROGRAM ARGS...` and reads the result back with
/// `perf script`. Leaves nothing behind: the data file is temporary and `-N` keeps perf from
/// filling `~/.debug`.
///
/// # Panics
/// When perf fails or runs longer than a minute.
pub fn perf_record<I, S>(frequency: u32, program: &Path, args: I) -> PerfProfile
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let dir = tempfile::tempdir().expect("failed to create a temporary directory");
    let data = dir.path().join("perf.data");
    let log = dir.path().join("perf.log");
    let mut record = BackgroundProcess::spawn(
        Command::new("perf")
            .args([
                "record",
                "-N",
                "-q",
                "-g",
                "-F",
                &frequency.to_string(),
                "-o",
            ])
            .arg(&data)
            .arg("--")
            .arg(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log).expect("failed to create perf.log")),
        "perf record",
    );
    let status = record.wait_or_kill(Duration::from_secs(60));
    assert!(
        status.success(),
        "perf record failed ({status}): {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let script = Command::new("perf")
        .arg("script")
        .arg("-i")
        .arg(&data)
        .args(["-F", "comm,tid,ip,sym"])
        .stdin(Stdio::null())
        .output()
        .expect("failed to run perf script");
    assert!(
        script.status.success(),
        "perf script failed: {}",
        String::from_utf8_lossy(&script.stderr)
    );
    PerfProfile::parse_script(&String::from_utf8_lossy(&script.stdout))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_the_leaf_of_each_sample() {
        let text = "cpu_mix 42 \n\t  11a9 hot_function\n\t  1290 main\n\n\
                    cpu_mix 42 \n\t  ffff8123 clear_user_rep_good\n\t  11c0 read\n\n\
                    cpu_mix 42 \n\t  11b1 hot_function\n\t  1290 main\n";
        let p = PerfProfile::parse_script(text);
        assert_eq!(p.samples, 3);
        assert_eq!(p.self_samples["hot_function"], 2);
        assert_eq!(p.self_samples["clear_user_rep_good"], 1);
        assert!((p.self_share("hot_function") - 200.0 / 3.0).abs() < 1e-9);
    }
}
