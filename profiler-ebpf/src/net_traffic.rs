//! Per-cgroup IP traffic from `cgroup_skb` ingress and egress: bytes and packets by cgroup,
//! direction and family, in per-CPU slots (a map insert only when a slot's cgroup differs).

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::generated::{bpf_skb_ancestor_cgroup_id, bpf_skb_cgroup_id},
    programs::SkBuffContext,
};
use profiler_common::{
    AF_INET, AF_INET6, FILTER_CGROUPS, FILTER_NONE, FILTER_TGIDS, MAX_CGROUP_LEVEL, NetStat,
    NetTraffic, NetTrafficKey, traffic_index, traffic_slot,
};

use crate::{
    maps::{TARGET_CGROUPS, TARGET_FILTER},
    net::count,
    net_maps::{NET_TRAFFIC, NET_TRAFFIC_SLOTS},
};

const ETH_P_IP_BE: u32 = 0x0008;
const ETH_P_IPV6_BE: u32 = 0xdd86;

/// `cgroup_skb` ingress/egress: adds the packet to its socket cgroup's traffic; always lets
/// it pass.
#[inline(always)]
pub fn count_traffic(ctx: &SkBuffContext, direction: u32) {
    let Some(filter) = TARGET_FILTER.get(0) else {
        return;
    };
    let mode = filter.mode;
    if mode & FILTER_NONE != 0 {
        return;
    }
    let skb = ctx.skb.skb;
    // SAFETY: the context pointer of this cgroup_skb program.
    let cgroup_id = unsafe { bpf_skb_cgroup_id(skb) };
    // Cgroup targets only: filter here; with process targets every cgroup is counted and user
    // space keeps those of the target processes.
    if mode & FILTER_CGROUPS != 0 && mode & FILTER_TGIDS == 0 && !skb_targeted(ctx, cgroup_id) {
        return;
    }
    // SAFETY: readable fields of the context.
    let (protocol, len, segs) = unsafe { ((*skb).protocol, (*skb).len, (*skb).gso_segs) };
    let family = match protocol {
        ETH_P_IP_BE => u32::from(AF_INET),
        ETH_P_IPV6_BE => u32::from(AF_INET6),
        _ => 0,
    };
    let bytes = u64::from(len);
    let packets = if segs == 0 { 1 } else { u64::from(segs) };
    if let Some(slot) = NET_TRAFFIC_SLOTS.get_ptr_mut(traffic_slot(cgroup_id)) {
        // SAFETY: per-CPU value; only this CPU writes it.
        let owner = unsafe { ((*slot).taken != 0).then_some((*slot).cgroup_id) };
        if owner.is_none_or(|owner| owner == cgroup_id) {
            // SAFETY: as above.
            unsafe {
                if owner.is_none() {
                    (*slot).cgroup_id = cgroup_id;
                    (*slot).taken = 1;
                }
                if let Some(t) = (*slot).traffic.get_mut(traffic_index(direction, family)) {
                    t.bytes += bytes;
                    t.packets += packets;
                }
            }
            return;
        }
    }
    let key = NetTrafficKey {
        cgroup_id,
        direction,
        family,
    };
    match NET_TRAFFIC.get_ptr_mut(key) {
        // SAFETY: per-CPU value, only this CPU writes it.
        Some(t) => unsafe {
            (*t).bytes += bytes;
            (*t).packets += packets;
        },
        None => {
            let t = NetTraffic { bytes, packets };
            if NET_TRAFFIC.insert(key, t, u64::from(BPF_NOEXIST)).is_err() {
                // Another packet of this key on this CPU cannot have raced us: full.
                count(NetStat::TrafficFull);
            }
        }
    }
}

#[inline(always)]
fn skb_targeted(ctx: &SkBuffContext, cgroup_id: u64) -> bool {
    // SAFETY: the value is a plain u32 copied out at once.
    if unsafe { TARGET_CGROUPS.get(cgroup_id) }.is_some() {
        return true;
    }
    let max_level = TARGET_FILTER.get(0).map_or(0, |f| f.max_cgroup_level);
    let mut level = 1;
    while level <= MAX_CGROUP_LEVEL {
        if level > max_level {
            break;
        }
        // SAFETY: the context pointer of this cgroup_skb program.
        let ancestor = unsafe { bpf_skb_ancestor_cgroup_id(ctx.skb.skb, level as i32) };
        if ancestor == 0 || ancestor == cgroup_id {
            break;
        }
        // SAFETY: as above.
        if unsafe { TARGET_CGROUPS.get(ancestor) }.is_some() {
            return true;
        }
        level += 1;
    }
    false
}
