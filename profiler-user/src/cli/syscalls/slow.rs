//! Slow-call events to [`SlowCall`]s: stacks read from the stack map, symbolized through the
//! mappings seen so far, times turned into wall-clock time.

use aya::Ebpf;
use profiler_common::SlowSyscallEvent;

use super::{Sinks, names::NameCache};
use crate::{
    collect::{
        mappings::MappingTracker,
        syscalls::{SlowCallReader, read_stacks},
    },
    symbolize::{AddressSpaces, Symbolizer},
    syscalls::SlowCall,
};

/// Turns slow-call events into [`SlowCall`]s with symbolized stacks.
pub(super) struct SlowCalls {
    /// Mapping records since the start, when stacks are symbolized.
    pub(super) tracker: Option<MappingTracker>,
    /// Address spaces of the traced processes, kept up to date from the tracker.
    pub(super) spaces: AddressSpaces,
    /// The symbolizer and its caches.
    pub(super) symbolizer: Symbolizer,
    /// The ring buffer of slow calls.
    pub(super) reader: SlowCallReader,
    /// `CLOCK_REALTIME - CLOCK_MONOTONIC`, ns.
    pub(super) clock_offset_ns: i64,
    /// Process and cgroup names.
    pub(super) names: NameCache,
    /// Every slow call so far.
    pub(super) calls: Vec<SlowCall>,
}

impl SlowCalls {
    /// Symbolizes, prints (or keeps, in live mode) and stores `events`.
    pub(super) fn handle(
        &mut self,
        ebpf: &Ebpf,
        events: Vec<SlowSyscallEvent>,
        sinks: &mut Sinks,
    ) -> anyhow::Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        if let Some(tracker) = &self.tracker {
            tracker.drain(&mut self.spaces);
        }
        let ids: Vec<i64> = events.iter().map(|e| e.user_stack_id).collect();
        let stacks = read_stacks(ebpf, &ids)?;
        for event in events {
            let frames = stacks
                .get(&event.user_stack_id)
                .map(|ips| {
                    self.symbolizer
                        .symbolize_user(&self.spaces, event.tgid, ips)
                })
                .unwrap_or_default();
            let cgroup = self.names.cgroup(event.cgroup_id);
            let time = (event.exit_ns as i64)
                .saturating_add(self.clock_offset_ns)
                .max(0) as u64;
            let call = SlowCall::from_event(&event, time, cgroup, &frames);
            self.names
                .names
                .processes
                .entry(call.pid)
                .or_insert_with(|| call.comm.clone());
            sinks.event(&call.to_text())?;
            self.calls.push(call);
        }
        Ok(())
    }
}
