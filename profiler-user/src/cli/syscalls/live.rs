//! The live view: the table redrawn every second, the latest slow calls under it.

use std::{io::Write as _, time::Duration};

use aya::Ebpf;

use super::{Sinks, names::NameCache};
use crate::{
    collect::syscalls::snapshot_syscalls,
    syscalls::{GroupBy, build_table, render_table},
};

/// Draws the table: over the terminal (`tty`), or after the previous one.
pub(super) fn draw_live(
    ebpf: &Ebpf,
    by: GroupBy,
    names: &mut NameCache,
    elapsed: Duration,
    description: &str,
    tty: bool,
    sinks: &Sinks,
) -> anyhow::Result<()> {
    let snapshot = snapshot_syscalls(ebpf)?;
    names.refresh(&snapshot);
    let table = build_table(&snapshot, by, &names.names);
    let mut screen = format!(
        "{}flamewarden syscalls: {description}, {:.0} s (Ctrl-C to stop)\n\n",
        if tty { "\x1b[H\x1b[2J" } else { "\n" },
        elapsed.as_secs_f64()
    );
    // Header (2), column titles, TOTAL, hidden-rows and 3 footer lines, and the recent calls.
    let reserved = 8 + if sinks.recent.is_empty() {
        0
    } else {
        sinks.recent.len() + 2
    };
    let rows = if tty {
        terminal_rows().saturating_sub(reserved).max(5)
    } else {
        25
    };
    screen.push_str(&render_table(&table, Some(rows)));
    if !sinks.recent.is_empty() {
        screen.push_str("\nslowest calls, newest last:\n");
        for line in &sinks.recent {
            screen.push_str(line.lines().next().unwrap_or_default());
            screen.push('\n');
        }
    }
    let mut out = std::io::stdout().lock();
    out.write_all(screen.as_bytes())?;
    out.flush()?;
    Ok(())
}

/// Lines of the terminal on standard output (24 when unknown).
fn terminal_rows() -> usize {
    // SAFETY: an all-zero winsize is a valid value for the kernel to overwrite.
    let mut size: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ writes one winsize through the valid pointer.
    let rc = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut size) };
    if rc == 0 && size.ws_row > 0 {
        usize::from(size.ws_row)
    } else {
        24
    }
}
