//! The guard's cgroup-BPF network programs: load, attach to a cgroup, pin under bpffs, adopt
//! what an earlier run pinned, detach.
//!
//! Everything of one attachment lives in `/sys/fs/bpf/flamewarden/<cgroup-id>/`: a link and a
//! program per hook, and the guard's maps. The pinned links keep the programs attached after
//! flamewarden exits; removing the link pins detaches them.

use std::{
    fs::{self, File},
    io,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf,
    maps::{HashMap, LpmTrie, Map, MapData, lpm_trie::Key},
    programs::{
        CgroupAttachMode, CgroupSock, CgroupSockAddr, RawTracePoint, TracePoint, links::FdLink,
    },
};
use profiler_common::{
    GuardAllowKey, GuardPolicy, MAP_GUARD_ALLOW, MAP_GUARD_EVENTS, MAP_GUARD_FS_ALLOW,
    MAP_GUARD_NET_PENDING, MAP_GUARD_POLICIES, MAP_GUARD_RUN_PIDS, MAP_GUARD_RUNS, MAP_GUARD_SEEN,
    MAP_GUARD_STATS, MAP_GUARD_SYSCALL_CLASS, MAP_GUARD_VIOLATIONS,
};

use super::{MapSizes, ProbeError, system};

mod sys_hooks;

pub use sys_hooks::{
    SysHooks, hold_sys_hooks, release_sys_hooks, runs_registered, sys_hooks_attached,
    while_runs_dirs,
};
use sys_hooks::{WHILE_RUNS_MARKER, attach_sys_links, lock_dir, unpin_link};

/// Where every guard attachment is pinned, one directory per cgroup id.
pub const GUARD_PIN_ROOT: &str = "/sys/fs/bpf/flamewarden";

/// The guard's programs (as named in the object) and the hook each one is attached to.
pub const GUARD_PROGRAMS: [(&str, &str); 7] = [
    ("guard_connect4", "connect4"),
    ("guard_connect6", "connect6"),
    ("guard_sendmsg4", "sendmsg4"),
    ("guard_sendmsg6", "sendmsg6"),
    ("guard_bind4", "bind4"),
    ("guard_bind6", "bind6"),
    ("guard_sock_create", "sock_create"),
];

/// A cgroup `bpf_link` takes no attach flags (`BPF_F_ALLOW_MULTI` is refused with `EINVAL`):
/// links are always attached in multi mode, beside other programs on the same hook.
const ATTACH_MODE: CgroupAttachMode = CgroupAttachMode::Single;

/// The guard's syscall-layer programs (raw tracepoints, system-wide; they act only on tasks of
/// cgroups with an entry in `GUARD_RUNS`) and their tracepoints. Attached, they cost every
/// system call of every process on the host (about 300 ns here, see [`SysHooks`]).
pub const GUARD_TRACEPOINTS: [(&str, &str); 2] = [
    ("guard_sys_enter", "sys_enter"),
    ("guard_sys_exit", "sys_exit"),
];

/// The guard's classic tracepoint program (files executed in audit-mode runs) and its event.
pub const GUARD_EXEC_TRACEPOINT: (&str, &str) = ("guard_sched_exec", "sched_process_exec");

/// The guard's maps, pinned beside the programs.
pub const GUARD_MAPS: [&str; 11] = [
    MAP_GUARD_POLICIES,
    MAP_GUARD_ALLOW,
    MAP_GUARD_EVENTS,
    MAP_GUARD_RUNS,
    MAP_GUARD_VIOLATIONS,
    MAP_GUARD_SYSCALL_CLASS,
    MAP_GUARD_FS_ALLOW,
    MAP_GUARD_NET_PENDING,
    MAP_GUARD_STATS,
    MAP_GUARD_RUN_PIDS,
    MAP_GUARD_SEEN,
];

/// Why the guard's programs could not be attached, adopted or detached.
#[derive(Debug, thiserror::Error)]
pub enum GuardAttachError {
    /// Loading the object failed.
    #[error(transparent)]
    Probe(#[from] ProbeError),
    /// The path is not a cgroup v2 directory.
    #[error("{}: not a cgroup v2 directory: {reason}", path.display())]
    BadCgroup {
        /// The path given.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// bpffs is not mounted at /sys/fs/bpf and could not be mounted.
    #[error("bpffs is not mounted at /sys/fs/bpf and mounting it failed")]
    Bpffs(#[source] io::Error),
    /// A pin file or directory could not be created, read or removed.
    #[error("{}", path.display())]
    Pin {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The kernel refused to load, attach or pin a program.
    #[error("guard program {name}")]
    Program {
        /// The program.
        name: &'static str,
        /// Why.
        #[source]
        source: aya::programs::ProgramError,
    },
    /// A link could not be pinned or opened.
    #[error("guard link of {name}")]
    Link {
        /// The program the link belongs to.
        name: &'static str,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A guard map could not be pinned, opened or updated.
    #[error("guard map {name}")]
    Map {
        /// The map.
        name: &'static str,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// The cgroup id of a cgroup v2 directory: its inode number.
pub fn cgroup_id(path: &Path) -> Result<u64, GuardAttachError> {
    let bad = |reason: String| GuardAttachError::BadCgroup {
        path: path.to_path_buf(),
        reason,
    };
    let meta = fs::metadata(path).map_err(|e| bad(e.to_string()))?;
    if !meta.is_dir() || !path.join("cgroup.procs").exists() {
        return Err(bad("no cgroup.procs in it".into()));
    }
    Ok(meta.ino())
}

/// The pin directory of the attachment on cgroup `id`.
pub fn pin_dir(id: u64) -> PathBuf {
    Path::new(GUARD_PIN_ROOT).join(id.to_string())
}

pub(super) fn link_pin(dir: &Path, program: &str) -> PathBuf {
    dir.join(format!("link_{program}"))
}

fn prog_pin(dir: &Path, program: &str) -> PathBuf {
    dir.join(format!("prog_{program}"))
}

pub fn map_pin(dir: &Path, map: &str) -> PathBuf {
    dir.join(format!("map_{map}"))
}

/// The guard map `name` pinned in `dir`.
pub fn open_pinned(dir: &Path, name: &'static str) -> Result<MapData, GuardAttachError> {
    MapData::from_pin(map_pin(dir, name)).map_err(|e| GuardAttachError::Map {
        name,
        source: Box::new(e),
    })
}

/// The error of an operation on guard map `name`.
pub fn map_error(name: &'static str) -> impl Fn(aya::maps::MapError) -> GuardAttachError {
    move |e| GuardAttachError::Map {
        name,
        source: Box::new(e),
    }
}

/// Whether every link and map of an attachment is pinned in `dir` (the syscall layer's
/// programs, whose links may come and go, see [`SysHooks`]).
pub fn is_attached(dir: &Path) -> bool {
    GUARD_PROGRAMS
        .iter()
        .chain(std::iter::once(&GUARD_EXEC_TRACEPOINT))
        .all(|(name, _)| link_pin(dir, name).exists())
        && GUARD_TRACEPOINTS
            .iter()
            .all(|(name, _)| prog_pin(dir, name).exists())
        && GUARD_MAPS.iter().all(|name| map_pin(dir, name).exists())
}

/// Whether a pinned attachment was made by a flamewarden whose run entries have this one's
/// layout; an older one is replaced.
fn same_layout(dir: &Path) -> bool {
    version_dir(dir).is_dir()
}

/// An empty directory in the pin directory naming the eBPF object the pins came from.
fn version_dir(dir: &Path) -> PathBuf {
    dir.join(concat!("object-", env!("FLAMEWARDEN_EBPF_HASH")))
}

/// How [`attach`] found the cgroup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachOutcome {
    /// The programs were loaded, attached and pinned now.
    Attached,
    /// An earlier attachment was pinned; its objects are used as they are.
    Adopted,
}

/// Attaches the guard's programs to the cgroup at `cgroup` as links (which coexist with other
/// programs) and pins everything, or adopts a complete earlier attachment. A partial one (an
/// interrupted attach) is removed first.
///
/// Processes that attach to the same cgroup at once (the first runs of several `sandbox batch`
/// processes, the daemon discovering their cgroups) take turns on an exclusive `flock` of the
/// cgroup directory: the first attaches, the others adopt what it pinned, and none removes
/// another's attachment half-way as a partial one.
///
/// `hooks` says how long the syscall-layer tracepoints stay attached; adopting a
/// [`SysHooks::WhileRuns`] attachment as [`SysHooks::Pinned`] pins them for good.
pub fn attach(
    cgroup: &Path,
    hooks: SysHooks,
) -> Result<(u64, PathBuf, AttachOutcome), GuardAttachError> {
    let id = cgroup_id(cgroup)?;
    system::ensure_bpffs().map_err(GuardAttachError::Bpffs)?;
    let _lock = lock_dir(cgroup)?;
    let dir = pin_dir(id);
    if is_attached(&dir) && same_layout(&dir) {
        if hooks == SysHooks::Pinned {
            // As a run holding the layer does: a release cannot run in between.
            let _dir_lock = lock_dir(&dir)?;
            attach_sys_links(&dir)?;
            let marker = dir.join(WHILE_RUNS_MARKER);
            if marker.is_dir() {
                fs::remove_dir(&marker).map_err(|source| GuardAttachError::Pin {
                    path: marker,
                    source,
                })?;
            }
        }
        return Ok((id, dir, AttachOutcome::Adopted));
    }
    if dir.exists() {
        detach_dir(&dir)?;
    }
    fs::create_dir_all(version_dir(&dir)).map_err(|source| GuardAttachError::Pin {
        path: dir.clone(),
        source,
    })?;
    let mut ebpf = super::load(MapSizes::default())?;
    if let Err(e) = attach_and_pin(&mut ebpf, cgroup, &dir, hooks) {
        // Leave nothing half-attached behind.
        let _ = detach_dir(&dir);
        return Err(e);
    }
    Ok((id, dir, AttachOutcome::Attached))
}

fn attach_and_pin(
    ebpf: &mut Ebpf,
    cgroup: &Path,
    dir: &Path,
    hooks: SysHooks,
) -> Result<(), GuardAttachError> {
    for name in GUARD_MAPS {
        let map = ebpf.map(name).ok_or(ProbeError::MissingMap(name))?;
        map.pin(map_pin(dir, name))
            .map_err(|e| GuardAttachError::Map {
                name,
                source: Box::new(e),
            })?;
    }
    super::guard_runs::fill_syscall_classes(ebpf)?;
    for (name, _) in GUARD_TRACEPOINTS {
        let program = ebpf
            .program_mut(name)
            .ok_or(ProbeError::MissingProgram(name))?;
        let prog_err = |source| GuardAttachError::Program { name, source };
        let link_err = |e: Box<dyn std::error::Error + Send + Sync>| GuardAttachError::Link {
            name,
            source: e,
        };
        let program: &mut RawTracePoint = program.try_into().map_err(prog_err)?;
        program.load().map_err(prog_err)?;
        program
            .pin(prog_pin(dir, name))
            .map_err(|e| link_err(Box::new(e)))?;
    }
    match hooks {
        SysHooks::Pinned => attach_sys_links(dir)?,
        SysHooks::WhileRuns => {
            let marker = dir.join(WHILE_RUNS_MARKER);
            fs::create_dir(&marker).map_err(|source| GuardAttachError::Pin {
                path: marker,
                source,
            })?;
        }
    }
    {
        let (name, event) = GUARD_EXEC_TRACEPOINT;
        let prog_err = |source| GuardAttachError::Program { name, source };
        let program: &mut TracePoint = ebpf
            .program_mut(name)
            .ok_or(ProbeError::MissingProgram(name))?
            .try_into()
            .map_err(prog_err)?;
        program.load().map_err(prog_err)?;
        let link_id = program.attach("sched", event).map_err(prog_err)?;
        let link = program.take_link(link_id).map_err(prog_err)?;
        let fd_link: FdLink = link.try_into().map_err(|e| GuardAttachError::Link {
            name,
            source: Box::new(e),
        })?;
        fd_link
            .pin(link_pin(dir, name))
            .map_err(|e| GuardAttachError::Link {
                name,
                source: Box::new(e),
            })?;
    }
    let cgroup_fd = File::open(cgroup).map_err(|source| GuardAttachError::Pin {
        path: cgroup.to_path_buf(),
        source,
    })?;
    for (name, _) in GUARD_PROGRAMS {
        let program = ebpf
            .program_mut(name)
            .ok_or(ProbeError::MissingProgram(name))?;
        let prog_err = |source| GuardAttachError::Program { name, source };
        let link_err = |e: Box<dyn std::error::Error + Send + Sync>| GuardAttachError::Link {
            name,
            source: e,
        };
        let fd_link: FdLink = if name == "guard_sock_create" {
            let program: &mut CgroupSock = program.try_into().map_err(prog_err)?;
            program.load().map_err(prog_err)?;
            let link_id = program.attach(&cgroup_fd, ATTACH_MODE).map_err(prog_err)?;
            let link = program.take_link(link_id).map_err(prog_err)?;
            program
                .pin(prog_pin(dir, name))
                .map_err(|e| link_err(Box::new(e)))?;
            link.try_into().map_err(|e| link_err(Box::new(e)))?
        } else {
            let program: &mut CgroupSockAddr = program.try_into().map_err(prog_err)?;
            program.load().map_err(prog_err)?;
            let link_id = program.attach(&cgroup_fd, ATTACH_MODE).map_err(prog_err)?;
            let link = program.take_link(link_id).map_err(prog_err)?;
            program
                .pin(prog_pin(dir, name))
                .map_err(|e| link_err(Box::new(e)))?;
            link.try_into().map_err(|e| link_err(Box::new(e)))?
        };
        fd_link
            .pin(link_pin(dir, name))
            .map_err(|e| link_err(Box::new(e)))?;
    }
    Ok(())
}

/// Detaches the attachment on cgroup `id` and removes its pins; `false` when there was none.
pub fn detach(id: u64) -> Result<bool, GuardAttachError> {
    let dir = pin_dir(id);
    if !dir.exists() {
        return Ok(false);
    }
    detach_dir(&dir)?;
    Ok(true)
}

fn detach_dir(dir: &Path) -> Result<(), GuardAttachError> {
    for (name, _) in GUARD_PROGRAMS
        .iter()
        .chain(&GUARD_TRACEPOINTS)
        .chain(std::iter::once(&GUARD_EXEC_TRACEPOINT))
    {
        unpin_link(dir, name)?;
    }
    let entries = fs::read_dir(dir).map_err(|source| GuardAttachError::Pin {
        path: dir.into(),
        source,
    })?;
    for entry in entries {
        let path = entry
            .map_err(|source| GuardAttachError::Pin {
                path: dir.into(),
                source,
            })?
            .path();
        let removed = if path.is_dir() {
            // The object's version marker.
            fs::remove_dir(&path)
        } else {
            fs::remove_file(&path)
        };
        removed.map_err(|source| GuardAttachError::Pin { path, source })?;
    }
    fs::remove_dir(dir).map_err(|source| GuardAttachError::Pin {
        path: dir.into(),
        source,
    })
}

/// The policy maps of a pinned attachment: where each sandbox's network policy is written.
pub struct GuardMaps {
    policies: HashMap<MapData, u64, GuardPolicy>,
    allow: LpmTrie<MapData, GuardAllowKey, u32>,
}

impl GuardMaps {
    /// Opens the maps pinned in `dir`.
    pub fn open(dir: &Path) -> Result<Self, GuardAttachError> {
        let policies = HashMap::try_from(Map::HashMap(open_pinned(dir, MAP_GUARD_POLICIES)?))
            .map_err(map_error(MAP_GUARD_POLICIES))?;
        let allow = LpmTrie::try_from(Map::LpmTrie(open_pinned(dir, MAP_GUARD_ALLOW)?))
            .map_err(map_error(MAP_GUARD_ALLOW))?;
        Ok(Self { policies, allow })
    }

    /// Sets the policy of cgroup `id`, replacing its allow list with `allow` (prefix length in
    /// bits, key).
    pub fn set_policy(
        &mut self,
        id: u64,
        policy: GuardPolicy,
        allow: &[(u32, GuardAllowKey)],
    ) -> Result<(), GuardAttachError> {
        self.clear_allow(id)?;
        for (bits, key) in allow {
            self.allow
                .insert(&Key::new(*bits, *key), 1, 0)
                .map_err(|e| GuardAttachError::Map {
                    name: MAP_GUARD_ALLOW,
                    source: Box::new(e),
                })?;
        }
        self.policies
            .insert(id, policy, 0)
            .map_err(|e| GuardAttachError::Map {
                name: MAP_GUARD_POLICIES,
                source: Box::new(e),
            })
    }

    /// Sets the policy of a cgroup `id` that has none yet (a new sandbox), with its allow list:
    /// unlike [`Self::set_policy`], the allow list is not searched for older entries.
    pub fn insert_policy(
        &mut self,
        id: u64,
        policy: GuardPolicy,
        allow: &[(u32, GuardAllowKey)],
    ) -> Result<(), GuardAttachError> {
        for (bits, key) in allow {
            self.allow
                .insert(&Key::new(*bits, *key), 1, 0)
                .map_err(|e| GuardAttachError::Map {
                    name: MAP_GUARD_ALLOW,
                    source: Box::new(e),
                })?;
        }
        self.policies
            .insert(id, policy, 0)
            .map_err(|e| GuardAttachError::Map {
                name: MAP_GUARD_POLICIES,
                source: Box::new(e),
            })
    }

    /// Removes what [`Self::insert_policy`] wrote, best effort.
    pub fn remove_policy_entries(&mut self, id: u64, allow: &[(u32, GuardAllowKey)]) {
        let _ = self.policies.remove(&id);
        for (bits, key) in allow {
            let _ = self.allow.remove(&Key::new(*bits, *key));
        }
    }

    /// Removes the policy (and allow list) of cgroup `id`; its processes are then governed by
    /// an ancestor's policy, if any.
    pub fn remove_policy(&mut self, id: u64) -> Result<(), GuardAttachError> {
        match self.policies.remove(&id) {
            Ok(()) | Err(aya::maps::MapError::KeyNotFound) => {}
            Err(e) => {
                return Err(GuardAttachError::Map {
                    name: MAP_GUARD_POLICIES,
                    source: Box::new(e),
                });
            }
        }
        self.clear_allow(id)
    }

    fn clear_allow(&mut self, id: u64) -> Result<(), GuardAttachError> {
        let ours: Vec<Key<GuardAllowKey>> = self
            .allow
            .keys()
            .filter_map(Result::ok)
            .filter(|key| key.data().cgroup_id == id.to_ne_bytes())
            .collect();
        for key in ours {
            self.allow.remove(&key).map_err(|e| GuardAttachError::Map {
                name: MAP_GUARD_ALLOW,
                source: Box::new(e),
            })?;
        }
        Ok(())
    }
}
