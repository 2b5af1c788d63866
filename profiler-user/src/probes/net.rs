//! Network tracing: the TCP raw tracepoints and the `cgroup_skb` counters on the cgroup2 root.

use std::{
    fs::{self, File},
    path::PathBuf,
};

use aya::{
    Ebpf,
    maps::Array,
    programs::{CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, ProgramError, RawTracePoint},
};
use profiler_common::{MAP_NET_CONFIG, NetConfig};

use super::ProbeError;

/// (program, raw tracepoint) pairs, attached in this order.
const TRACEPOINTS: [(&str, &str); 4] = [
    ("net_set_state", "inet_sock_set_state"),
    ("net_retransmit", "tcp_retransmit_skb"),
    ("net_receive_reset", "tcp_receive_reset"),
    ("net_send_reset", "tcp_send_reset"),
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

/// The attached network tracer; [`NetTracer::stop`] detaches it.
#[derive(Debug)]
pub struct NetTracer;

impl NetTracer {
    /// Writes `config` and attaches the four TCP raw tracepoints and the two traffic counters
    /// (on the cgroup2 root, as BPF links: they run beside any other program of any cgroup,
    /// and `BPF_LINK_CREATE` takes no attach flags).
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
        for (name, tracepoint) in TRACEPOINTS {
            let what = format!("raw tracepoint {tracepoint}");
            let program: &mut RawTracePoint = ebpf
                .program_mut(name)
                .ok_or(ProbeError::MissingProgram(name))?
                .try_into()
                .map_err(attach_err(what.clone()))?;
            program.load().map_err(attach_err(what.clone()))?;
            program.attach(tracepoint).map_err(attach_err(what))?;
        }
        let root = cgroup2_root()?;
        let cgroup = File::open(&root).map_err(|e| ProbeError::BadCgroup {
            path: root.clone(),
            reason: e.to_string(),
        })?;
        for (name, direction) in TRAFFIC {
            let what = format!("cgroup_skb {name} on {}", root.display());
            let program: &mut CgroupSkb = ebpf
                .program_mut(name)
                .ok_or(ProbeError::MissingProgram(name))?
                .try_into()
                .map_err(attach_err(what.clone()))?;
            program.load().map_err(attach_err(what.clone()))?;
            program
                .attach(&cgroup, direction, CgroupAttachMode::Single)
                .map_err(attach_err(what))?;
        }
        Ok(Self)
    }

    /// Detaches everything; what was counted stays in the maps and the ring buffer.
    pub fn stop(self, ebpf: &mut Ebpf) -> Result<(), ProbeError> {
        for (name, tracepoint) in TRACEPOINTS {
            let program: &mut RawTracePoint = ebpf
                .program_mut(name)
                .ok_or(ProbeError::MissingProgram(name))?
                .try_into()
                .map_err(attach_err(format!("raw tracepoint {tracepoint}")))?;
            program
                .unload()
                .map_err(attach_err(format!("raw tracepoint {tracepoint}")))?;
        }
        for (name, _) in TRAFFIC {
            let program: &mut CgroupSkb = ebpf
                .program_mut(name)
                .ok_or(ProbeError::MissingProgram(name))?
                .try_into()
                .map_err(attach_err(format!("cgroup_skb {name}")))?;
            program
                .unload()
                .map_err(attach_err(format!("cgroup_skb {name}")))?;
        }
        Ok(())
    }
}
