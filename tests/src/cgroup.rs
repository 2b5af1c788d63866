//! A cgroup v2 directory that exists for one test.
//!
//! It is created beneath this process's own cgroup (the `0::` line of `/proc/self/cgroup`, under
//! the cgroup2 mount from `/proc/self/mounts`), so the test never touches cgroups that belong to
//! someone else. On drop, every process left in it (or in a descendant) is killed and the
//! directories are removed.

use std::{
    fs::{self, File},
    io::{self, Write as _},
    os::{fd::AsRawFd as _, unix::fs::MetadataExt as _, unix::process::CommandExt as _},
    path::{Path, PathBuf},
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
    thread,
    time::{Duration, Instant},
};

use crate::BackgroundProcess;

/// Limits set on every test cgroup whose controllers are enabled, so that a runaway workload
/// stays bounded: (file, value).
const LIMITS: [(&str, &str); 2] = [("pids.max", "256"), ("memory.max", "1073741824")];

/// A cgroup v2 directory removed (with everything in it) on drop.
#[derive(Debug)]
pub struct TestCgroup {
    path: PathBuf,
}

impl TestCgroup {
    /// Creates `flamewarden-test-PID-N-LABEL` beneath this process's own cgroup v2.
    pub fn new(label: &str) -> io::Result<TestCgroup> {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let parent = own_cgroup_dir()?;
        TestCgroup::create(parent.join(format!(
            "flamewarden-test-{}-{n}-{label}",
            std::process::id()
        )))
    }

    /// Creates a child cgroup `name` of this one.
    pub fn child(&self, name: &str) -> io::Result<TestCgroup> {
        TestCgroup::create(self.path.join(name))
    }

    fn create(path: PathBuf) -> io::Result<TestCgroup> {
        fs::create_dir(&path)
            .map_err(|e| io::Error::new(e.kind(), format!("mkdir {}: {e}", path.display())))?;
        let cgroup = TestCgroup { path };
        for (file, value) in LIMITS {
            let file = cgroup.path.join(file);
            // Present only when the parent delegates the controller; best effort.
            if file.exists() {
                let _ = fs::write(&file, value);
            }
        }
        Ok(cgroup)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The cgroup id the kernel (and flamewarden's JSON) uses: the directory's inode number.
    pub fn id(&self) -> u64 {
        fs::metadata(&self.path)
            .map(|m| m.ino())
            .unwrap_or_else(|e| panic!("stat {}: {e}", self.path.display()))
    }

    /// Starts `command` inside this cgroup: the child moves itself in before `exec`, so the
    /// program never runs anywhere else.
    pub fn spawn(&self, command: &mut Command, what: &str) -> BackgroundProcess {
        let procs_path = self.path.join("cgroup.procs");
        let procs = File::options()
            .write(true)
            .open(&procs_path)
            .unwrap_or_else(|e| panic!("failed to open {}: {e}", procs_path.display()));
        let fd = procs.as_raw_fd();
        // SAFETY: the closure runs in the forked child before exec and only calls write(2), which
        // is async-signal-safe; `fd` stays open in the child because `procs` lives until spawn
        // returns (it is close-on-exec, so the program does not inherit it).
        unsafe {
            command.pre_exec(move || {
                // Writing "0" moves the writing process itself.
                if libc::write(fd, b"0".as_ptr().cast(), 1) == 1 {
                    Ok(())
                } else {
                    Err(io::Error::last_os_error())
                }
            });
        }
        let process = BackgroundProcess::spawn(command, what);
        drop(procs);
        process
    }

    /// Process ids in this cgroup (not its descendants).
    pub fn procs(&self) -> Vec<u32> {
        fs::read_to_string(self.path.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    /// Whether any process is left in this cgroup or a descendant (`populated` in cgroup.events).
    fn populated(&self) -> bool {
        fs::read_to_string(self.path.join("cgroup.events"))
            .map(|events| events.lines().any(|l| l == "populated 1"))
            .unwrap_or(false)
    }

    /// Kills every process in this cgroup and its descendants.
    fn kill_all(&self) {
        // cgroup.kill (Linux 5.14) kills the whole subtree atomically, also processes that fork
        // while we kill; SIGKILL per pid is the fallback for older kernels.
        let kill_file = self.path.join("cgroup.kill");
        if kill_file.exists() && fs::write(&kill_file, "1").is_ok() {
            return;
        }
        for dir in subtree(&self.path) {
            for pid in fs::read_to_string(dir.join("cgroup.procs"))
                .unwrap_or_default()
                .lines()
            {
                if let Ok(pid) = pid.trim().parse::<libc::pid_t>() {
                    // SAFETY: kill has no memory-safety preconditions.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
        }
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.populated() && Instant::now() < deadline {
            self.kill_all();
            thread::sleep(Duration::from_millis(20));
        }
        // Children first: rmdir only removes empty cgroups.
        let mut dirs = subtree(&self.path);
        dirs.reverse();
        for dir in dirs {
            if let Err(e) = fs::remove_dir(&dir) {
                let _ = writeln!(
                    io::stderr(),
                    "warning: failed to remove cgroup {}: {e}",
                    dir.display()
                );
            }
        }
    }
}

/// `dir` and every directory beneath it, parents before children.
fn subtree(dir: &Path) -> Vec<PathBuf> {
    let mut dirs = vec![dir.to_owned()];
    let mut i = 0;
    while i < dirs.len() {
        if let Ok(entries) = fs::read_dir(&dirs[i]) {
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    dirs.push(entry.path());
                }
            }
        }
        i += 1;
    }
    dirs
}

/// This process's cgroup v2 directory.
pub fn own_cgroup_dir() -> io::Result<PathBuf> {
    let cgroups = fs::read_to_string("/proc/self/cgroup")?;
    let relative = cgroups
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .ok_or_else(|| io::Error::other("/proc/self/cgroup has no cgroup v2 (`0::`) line"))?;
    let mounts = fs::read_to_string("/proc/self/mounts")?;
    let mount = mounts
        .lines()
        .find_map(|l| {
            let mut fields = l.split_whitespace();
            let (_, mount_point, fs_type) = (fields.next()?, fields.next()?, fields.next()?);
            (fs_type == "cgroup2").then(|| PathBuf::from(mount_point))
        })
        .ok_or_else(|| io::Error::other("no cgroup2 file system is mounted"))?;
    Ok(mount.join(relative.trim().trim_start_matches('/')))
}
