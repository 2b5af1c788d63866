//! Network tracing: the TCP raw tracepoints and the `cgroup_skb` counters on the cgroup2 root.

use std::{
    fs::{self, File},
    os::fd::{AsFd as _, AsRawFd as _},
    path::PathBuf,
};

use aya::{
    Btf, Ebpf,
    maps::Array,
    programs::{
        BtfTracePoint, CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, Program, ProgramError,
        RawTracePoint, cgroup_skb::CgroupSkbLinkId, raw_trace_point::RawTracePointLinkId,
        tp_btf::BtfTracePointLinkId,
    },
};
use profiler_common::{MAP_NET_CONFIG, NetConfig};

use super::ProbeError;

/// (raw tracepoint program, its BTF-typed build if any, tracepoint), attached in this order.
/// The BTF-typed build (`tp_btf`) reads the socket with plain loads instead of a helper call
/// per field; the plain raw tracepoint is the fallback when it does not load.
const TRACEPOINTS: [(&str, Option<&str>, &str); 4] = [
    (
        "net_set_state",
        Some("net_set_state_btf"),
        "inet_sock_set_state",
    ),
    (
        "net_retransmit",
        Some("net_retransmit_btf"),
        "tcp_retransmit_skb",
    ),
    ("net_receive_reset", None, "tcp_receive_reset"),
    ("net_send_reset", None, "tcp_send_reset"),
];
/// (program, direction) of the traffic counters.
const TRAFFIC: [(&str, CgroupSkbAttachType); 2] = [
    ("net_ingress", CgroupSkbAttachType::Ingress),
    ("net_egress", CgroupSkbAttachType::Egress),
];

fn attach_err(what: String) -> impl FnOnce(ProgramError) -> ProbeError {
    move |source| ProbeError::Attach { what, source }
}

/// The root of the cgroup2 hierarchy (the first cgroup2 mount), where the traffic counters
/// attach so that they see every cgroup.
pub fn cgroup2_root() -> Result<PathBuf, ProbeError> {
    let mounts = fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    mounts
        .lines()
        .find_map(|l| {
            let mut f = l.split_whitespace();
            let (_, dir, fstype) = (f.next()?, f.next()?, f.next()?);
            (fstype == "cgroup2").then(|| PathBuf::from(dir))
        })
        .ok_or_else(|| ProbeError::BadCgroup {
            path: "/sys/fs/cgroup".into(),
            reason: "no cgroup2 file system is mounted".into(),
        })
}

/// The attached network tracer; [`NetTracer::stop`] detaches and unloads it,
/// [`NetTracer::pause`] and [`NetTracer::resume`] detach and re-attach its programs (loaded
/// all along, their maps kept).
#[derive(Debug)]
pub struct NetTracer {
    /// The programs loaded, by name, with where they attach.
    programs: Vec<(&'static str, Hook)>,
    /// The links while attached (one per program, in the order of `programs`).
    links: Vec<Link>,
    /// The cgroup2 root, where the traffic counters attach.
    root: PathBuf,
    cgroup: File,
}

/// Where a program of the tracer attaches.
#[derive(Clone, Copy, Debug)]
enum Hook {
    /// A BTF-typed raw tracepoint (the tracepoint is fixed at load).
    Btf,
    /// A plain raw tracepoint.
    Raw(&'static str),
    /// A `cgroup_skb` counter on the cgroup2 root.
    Skb(CgroupSkbAttachType),
}

#[derive(Debug)]
enum Link {
    Btf(BtfTracePointLinkId),
    Raw(RawTracePointLinkId),
    Skb(CgroupSkbLinkId),
}

/// What the kernel counted for one program (`bpf_prog_info`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProgramStats {
    /// Runs (0 unless `kernel.bpf_stats_enabled` was 1).
    pub run_cnt: u64,
    /// Nanoseconds in the program (0 unless `kernel.bpf_stats_enabled` was 1).
    pub run_time_ns: u64,
    /// Runs skipped because the program was already running on the CPU (a tracepoint hit from
    /// within a BPF program, e.g. an NMI): each one is an event not seen.
    pub recursion_misses: u64,
}

/// `BPF_OBJ_GET_INFO_BY_FD` for the program behind `fd`: the fields of `bpf_prog_info` up to
/// `recursion_misses` (kernel 5.12; zero before), at their UAPI offsets.
pub fn program_stats(fd: std::os::fd::BorrowedFd<'_>) -> std::io::Result<ProgramStats> {
    const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
    // `run_time_ns`, `run_cnt` and `recursion_misses` are at bytes 192, 200 and 208.
    let mut info = [0u64; 28];
    #[repr(C)]
    struct InfoAttr {
        bpf_fd: u32,
        info_len: u32,
        info: u64,
    }
    let attr = InfoAttr {
        bpf_fd: fd.as_raw_fd() as u32,
        info_len: size_of_val(&info) as u32,
        info: info.as_mut_ptr() as u64,
    };
    // SAFETY: `attr` points to `info`, writable for `info_len` bytes, for the whole call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET_INFO_BY_FD,
            &raw const attr,
            size_of::<InfoAttr>(),
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(ProgramStats {
        run_time_ns: info[24],
        run_cnt: info[25],
        recursion_misses: info[26],
    })
}

/// Loads the BTF-typed build of a tracepoint handler and checks that it attaches (the
/// verifier's last word on a `tp_btf` program is at attach time).
fn load_btf(ebpf: &mut Ebpf, name: &str, tracepoint: &str, btf: &Btf) -> Result<(), String> {
    let program: &mut BtfTracePoint = ebpf
        .program_mut(name)
        .ok_or("no such program")?
        .try_into()
        .map_err(|e: ProgramError| e.to_string())?;
    program
        .load(tracepoint, btf)
        .map_err(|e| format!("{e:?}"))?;
    match program.attach() {
        Ok(link) => program.detach(link).map_err(|e| e.to_string()),
        Err(e) => {
            let _ = program.unload();
            Err(e.to_string())
        }
    }
}

impl NetTracer {
    /// Writes `config`, loads and attaches the four TCP raw tracepoints and the two traffic
    /// counters (on the cgroup2 root, as BPF links: they run beside any other program of any
    /// cgroup, and `BPF_LINK_CREATE` takes no attach flags).
    pub fn attach(ebpf: &mut Ebpf, config: NetConfig) -> Result<Self, ProbeError> {
        let map = ebpf
            .map_mut(MAP_NET_CONFIG)
            .ok_or(ProbeError::MissingMap(MAP_NET_CONFIG))?;
        let mut array: Array<_, NetConfig> =
            Array::try_from(map).map_err(|source| ProbeError::Map {
                map: MAP_NET_CONFIG,
                source,
            })?;
        array.set(0, config, 0).map_err(|source| ProbeError::Map {
            map: MAP_NET_CONFIG,
            source,
        })?;
        let btf = Btf::from_sys_fs().ok();
        let mut programs = Vec::new();
        for (name, typed, tracepoint) in TRACEPOINTS {
            if let (Some(typed), Some(btf)) = (typed, &btf) {
                match load_btf(ebpf, typed, tracepoint, btf) {
                    Ok(()) => {
                        tracing::debug!("{tracepoint}: BTF-typed raw tracepoint {typed}");
                        programs.push((typed, Hook::Btf));
                        continue;
                    }
                    Err(e) => tracing::debug!(
                        "{tracepoint}: the BTF-typed raw tracepoint did not load ({e}); \
                         falling back to the plain raw tracepoint {name}"
                    ),
                }
            } else {
                tracing::debug!("{tracepoint}: plain raw tracepoint {name}");
            }
            let program: &mut RawTracePoint = ebpf
                .program_mut(name)
                .ok_or(ProbeError::MissingProgram(name))?
                .try_into()
                .map_err(attach_err(format!("raw tracepoint {tracepoint}")))?;
            program
                .load()
                .map_err(attach_err(format!("raw tracepoint {tracepoint}")))?;
            programs.push((name, Hook::Raw(tracepoint)));
        }
        let root = cgroup2_root()?;
        let cgroup = File::open(&root).map_err(|e| ProbeError::BadCgroup {
            path: root.clone(),
            reason: e.to_string(),
        })?;
        for (name, direction) in TRAFFIC {
            let program: &mut CgroupSkb = ebpf
                .program_mut(name)
                .ok_or(ProbeError::MissingProgram(name))?
                .try_into()
                .map_err(attach_err(format!("cgroup_skb {name}")))?;
            program
                .load()
                .map_err(attach_err(format!("cgroup_skb {name}")))?;
            programs.push((name, Hook::Skb(direction)));
        }
        let mut tracer = Self {
            programs,
            links: Vec::new(),
            root,
            cgroup,
        };
        tracer.resume(ebpf)?;
        Ok(tracer)
    }

    /// Whether the programs are attached (not paused).
    pub fn attached(&self) -> bool {
        !self.links.is_empty()
    }

    /// Attaches every program again after [`NetTracer::pause`] (nothing when attached).
    pub fn resume(&mut self, ebpf: &mut Ebpf) -> Result<(), ProbeError> {
        if self.attached() {
            return Ok(());
        }
        for &(name, hook) in &self.programs {
            let program = ebpf
                .program_mut(name)
                .ok_or(ProbeError::MissingProgram(name))?;
            let link = match (hook, program) {
                (Hook::Btf, Program::BtfTracePoint(p)) => p
                    .attach()
                    .map(Link::Btf)
                    .map_err(attach_err(format!("BTF-typed raw tracepoint {name}"))),
                (Hook::Raw(tracepoint), Program::RawTracePoint(p)) => p
                    .attach(tracepoint)
                    .map(Link::Raw)
                    .map_err(attach_err(format!("raw tracepoint {tracepoint}"))),
                (Hook::Skb(direction), Program::CgroupSkb(p)) => p
                    .attach(&self.cgroup, direction, CgroupAttachMode::Single)
                    .map(Link::Skb)
                    .map_err(attach_err(format!(
                        "cgroup_skb {name} on {}",
                        self.root.display()
                    ))),
                _ => Err(ProbeError::MissingProgram(name)),
            };
            match link {
                Ok(link) => self.links.push(link),
                Err(e) => {
                    // All or nothing: what did attach is detached again.
                    let _ = self.pause(ebpf);
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Detaches every program, keeping them loaded and the maps as they are: from now on no
    /// connection or packet is seen (nor costs anything) until [`NetTracer::resume`].
    pub fn pause(&mut self, ebpf: &mut Ebpf) -> Result<(), ProbeError> {
        let links = std::mem::take(&mut self.links);
        let mut first_error = Ok(());
        for (&(name, _), link) in self.programs.iter().zip(links) {
            let Some(program) = ebpf.program_mut(name) else {
                continue;
            };
            let detached = match (program, link) {
                (Program::BtfTracePoint(p), Link::Btf(id)) => p.detach(id),
                (Program::RawTracePoint(p), Link::Raw(id)) => p.detach(id),
                (Program::CgroupSkb(p), Link::Skb(id)) => p.detach(id),
                _ => Ok(()),
            };
            if let Err(source) = detached
                && first_error.is_ok()
            {
                first_error = Err(ProbeError::Attach {
                    what: format!("network tracer program {name}"),
                    source,
                });
            }
        }
        first_error
    }

    /// The kernel's run statistics of every attached program, by name.
    pub fn stats(&self, ebpf: &Ebpf) -> Vec<(&'static str, ProgramStats)> {
        self.programs
            .iter()
            .filter_map(|&(name, _)| {
                let fd = ebpf.program(name)?.fd().ok()?;
                Some((name, program_stats(fd.as_fd()).ok()?))
            })
            .collect()
    }

    /// Detaches everything; what was counted stays in the maps and the ring buffer. Logs the
    /// programs' recursion misses first (a warning when there are any: events were not seen).
    pub fn stop(self, ebpf: &mut Ebpf) -> Result<(), ProbeError> {
        let stats = self.stats(ebpf);
        let line = stats
            .iter()
            .map(|(name, s)| {
                format!(
                    "{name} {} recursion misses, {} runs, {} ns",
                    s.recursion_misses, s.run_cnt, s.run_time_ns
                )
            })
            .collect::<Vec<_>>()
            .join("; ");
        if stats.iter().any(|(_, s)| s.recursion_misses != 0) {
            tracing::warn!("network tracer programs: {line}");
        } else {
            tracing::debug!("network tracer programs: {line}");
        }
        for (name, _) in self.programs {
            let program = ebpf
                .program_mut(name)
                .ok_or(ProbeError::MissingProgram(name))?;
            let what = || format!("network tracer program {name}");
            match program {
                Program::RawTracePoint(p) => p.unload().map_err(attach_err(what()))?,
                Program::BtfTracePoint(p) => p.unload().map_err(attach_err(what()))?,
                Program::CgroupSkb(p) => p.unload().map_err(attach_err(what()))?,
                _ => {}
            }
        }
        Ok(())
    }
}
