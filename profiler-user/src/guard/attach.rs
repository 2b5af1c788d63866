//! The guard's cgroup-BPF network layer from a policy: the map entries a [`NetworkLayer`]
//! becomes (pure), and `guard attach` / `guard detach` on a cgroup someone else created.

use std::path::{Path, PathBuf};

use profiler_common::{
    GUARD_ALLOW_FIXED_BITS, GuardAllowKey, GuardPolicy, NET_ALLOW_LIST, NET_AUDIT, NET_DENY_ALL,
    NET_DENY_RAW,
};

use crate::{
    policy::{CompiledPolicy, Mode, NetworkLayer, compiled::AF_INET},
    probes::guard::{self as probes, AttachOutcome, GuardAttachError, GuardMaps},
};

/// The map entries of one sandbox's network policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetworkEntries {
    /// The value for the sandbox's cgroup id in the policy map.
    pub policy: GuardPolicy,
    /// Allow-list keys with their prefix length in bits.
    pub allow: Vec<(u32, GuardAllowKey)>,
}

/// The entries for cgroup `cgroup_id` under `network` in `mode`. A restricted network also
/// denies raw and packet sockets, which would bypass the address hooks.
pub fn network_entries(network: &NetworkLayer, mode: Mode, cgroup_id: u64) -> NetworkEntries {
    let mut flags = 0;
    if network.deny_all {
        flags |= NET_DENY_ALL;
    } else if !network.allow.is_empty() {
        flags |= NET_ALLOW_LIST;
    }
    if network.is_restricted() {
        flags |= NET_DENY_RAW;
    }
    if mode == Mode::Audit {
        flags |= NET_AUDIT;
    }
    let allow = if network.deny_all {
        Vec::new()
    } else {
        network
            .allow
            .iter()
            .map(|rule| {
                let host_bits: u8 = if rule.family == AF_INET { 32 } else { 128 };
                let key = GuardAllowKey {
                    cgroup_id: cgroup_id.to_ne_bytes(),
                    port: rule.port.to_be_bytes(),
                    family: rule.family as u8,
                    protocol: rule.protocol,
                    addr: rule.addr,
                };
                (
                    GUARD_ALLOW_FIXED_BITS + u32::from(rule.prefix_len.min(host_bits)),
                    key,
                )
            })
            .collect()
    };
    NetworkEntries {
        policy: GuardPolicy { flags, _pad: 0 },
        allow,
    }
}

/// What `guard attach` did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttachReport {
    /// The cgroup's id.
    pub cgroup_id: u64,
    /// Where its programs, links and maps are pinned.
    pub pin_dir: PathBuf,
    /// Attached now, or adopted from an earlier attach.
    pub outcome: AttachOutcome,
    /// The policy value written for the cgroup.
    pub entries: NetworkEntries,
}

/// Attaches (or adopts) the network programs on `cgroup` and writes `policy`'s network layer
/// for the cgroup itself; its descendants inherit it unless they get their own.
pub fn attach(cgroup: &Path, policy: &CompiledPolicy) -> Result<AttachReport, GuardAttachError> {
    let (cgroup_id, pin_dir, outcome) = probes::attach(cgroup, probes::SysHooks::Pinned)?;
    let entries = network_entries(&policy.network, policy.mode, cgroup_id);
    let written = GuardMaps::open(&pin_dir)
        .and_then(|mut maps| maps.set_policy(cgroup_id, entries.policy, &entries.allow));
    if let Err(e) = written {
        // A fresh attachment without its policy would only confuse the next attach.
        if outcome == AttachOutcome::Attached {
            let _ = probes::detach(cgroup_id);
        }
        return Err(e);
    }
    Ok(AttachReport {
        cgroup_id,
        pin_dir,
        outcome,
        entries,
    })
}

/// Detaches the programs from `cgroup` and removes the pins; returns the cgroup id and whether
/// anything was attached.
pub fn detach(cgroup: &Path) -> Result<(u64, bool), GuardAttachError> {
    let cgroup_id = probes::cgroup_id(cgroup)?;
    Ok((cgroup_id, probes::detach(cgroup_id)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{NetAllow, compiled::IPPROTO_TCP};

    #[test]
    fn deny_all_denies_raw_sockets_and_has_no_allow_list() {
        let network = NetworkLayer {
            deny_all: true,
            allow: Vec::new(),
        };
        let entries = network_entries(&network, Mode::Enforce, 7);
        assert_eq!(entries.policy.flags, NET_DENY_ALL | NET_DENY_RAW);
        assert!(entries.allow.is_empty());
    }

    #[test]
    fn allow_rule_becomes_a_prefix_keyed_by_cgroup_port_and_protocol() {
        let mut addr = [0; 16];
        addr[..4].copy_from_slice(&[10, 1, 0, 0]);
        let rule = NetAllow {
            family: AF_INET,
            addr,
            prefix_len: 16,
            port: 443,
            protocol: IPPROTO_TCP,
        };
        let network = NetworkLayer {
            deny_all: false,
            allow: vec![rule],
        };
        let entries = network_entries(&network, Mode::Audit, 42);
        assert_eq!(
            entries.policy.flags,
            NET_ALLOW_LIST | NET_DENY_RAW | NET_AUDIT
        );
        let (bits, key) = entries.allow[0];
        assert_eq!(bits, GUARD_ALLOW_FIXED_BITS + 16);
        assert_eq!(key.cgroup_id, 42u64.to_ne_bytes());
        assert_eq!(key.port, [1, 187]);
        assert_eq!(key.family, 2);
        assert_eq!(key.protocol, IPPROTO_TCP);
        assert_eq!(key.addr, addr);
    }

    #[test]
    fn unrestricted_network_sets_no_flags() {
        let network = NetworkLayer {
            deny_all: false,
            allow: Vec::new(),
        };
        assert_eq!(network_entries(&network, Mode::Enforce, 1).policy.flags, 0);
    }
}
