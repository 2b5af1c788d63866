//! `GET /`: the node overview as one self-contained HTML page (no external assets): CPU by
//! cgroup, top syscalls, calls by cgroup, guarded sandboxes, recent violations, and the
//! always-on window's flamegraph inline.

use std::{collections::HashMap, fmt::Write as _, sync::Arc};

use hyper::{Response, StatusCode};

use super::{
    Shared,
    board::LiveEvent,
    cpu::{CpuRequest, CpuTotals, WindowFlame},
    http::{Body, cpu_totals, respond, syscall_view},
    node::NodeView,
};
use crate::syscalls::syscall_name;

/// Escapes text for HTML.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font-family:sans-serif;margin:1.5em;color:#222}\
table{border-collapse:collapse;margin-bottom:1.5em}td,th{border:1px solid #ccc;padding:2px 8px;\
text-align:left}th{background:#eee}td.n{text-align:right}h2{margin-top:1.2em}\
.flame svg{width:100%;height:auto}.grid{display:flex;flex-wrap:wrap;gap:0 2.5em}";

/// Renders the page.
pub async fn handle(shared: &Arc<Shared>) -> Response<Body> {
    let cpu = cpu_totals(shared).await;
    let flame = window_flame(shared).await;
    let extra = cpu
        .as_ref()
        .map(|c| c.by_cgroup.keys().copied().collect())
        .unwrap_or_default();
    let view = syscall_view(shared, extra).await.unwrap_or_default();
    let mut by_syscall: HashMap<u32, (u64, u64)> = HashMap::new();
    let mut by_cgroup: HashMap<u64, u64> = HashMap::new();
    for ((cgroup, nr), t) in &view.totals {
        let e = by_syscall.entry(*nr).or_default();
        e.0 += t.count;
        e.1 += t.errors;
        *by_cgroup.entry(*cgroup).or_default() += t.count;
    }
    let mut syscalls: Vec<_> = by_syscall.into_iter().collect();
    syscalls.sort_by_key(|s| std::cmp::Reverse(s.1.0));
    let mut cgroups: Vec<_> = by_cgroup.into_iter().collect();
    cgroups.sort_by_key(|c| std::cmp::Reverse(c.1));

    let mut html = String::new();
    let _ = write!(
        html,
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>flamewarden — node \
         overview</title><style>{STYLE}</style></head><body><h1>flamewarden node overview</h1>\
         <div class=\"grid\"><div>"
    );
    cpu_table(&mut html, cpu.as_ref(), &view.names);
    html.push_str("</div><div>");
    html.push_str("<h2>Top syscalls</h2><table id=\"syscalls\"><tr><th>syscall</th><th>calls</th><th>errors</th></tr>");
    for (nr, (count, errors)) in syscalls.iter().take(15) {
        let _ = write!(
            html,
            "<tr><td>{}</td><td class=n>{count}</td><td class=n>{errors}</td></tr>",
            escape(&syscall_name(*nr))
        );
    }
    html.push_str("</table></div><div><h2>Syscalls by cgroup</h2><table id=\"cgroups\"><tr><th>cgroup</th><th>calls</th></tr>");
    for (id, count) in cgroups.iter().take(15) {
        let name = view
            .names
            .get(id)
            .cloned()
            .unwrap_or_else(|| format!("cgroup-{id}"));
        let _ = write!(
            html,
            "<tr><td>{}</td><td class=n>{count}</td></tr>",
            escape(&name)
        );
    }
    html.push_str("</table></div><div>");
    tcp_table(&mut html, &view);
    html.push_str("</div>");
    {
        let board = shared.board.lock().unwrap();
        html.push_str("<div><h2>Guarded sandboxes</h2><table id=\"sandboxes\"><tr><th>cgroup</th><th>glob</th><th>guard</th><th>violations</th></tr>");
        for s in &board.sandboxes {
            let _ = write!(
                html,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td class=n>{}</td></tr>",
                escape(&s.path.display().to_string()),
                escape(&s.glob),
                s.guard,
                s.violations
            );
        }
        html.push_str("</table></div><div><h2>Sandbox verdicts</h2><table id=\"verdicts\"><tr><th>status</th><th>source</th><th>count</th></tr>");
        for ((status, source), n) in &board.verdicts {
            let _ = write!(
                html,
                "<tr><td>{}</td><td>{}</td><td class=n>{n}</td></tr>",
                escape(status),
                escape(source)
            );
        }
        html.push_str("</table></div><div><h2>Violations</h2><table id=\"violations\"><tr><th>rule</th><th>action</th><th>count</th></tr>");
        for ((rule, action), n) in &board.violations {
            let _ = write!(
                html,
                "<tr><td>{}</td><td>{}</td><td class=n>{n}</td></tr>",
                escape(rule),
                escape(action)
            );
        }
        html.push_str("</table></div></div><h2>Latest violations</h2><table id=\"events\"><tr><th>cgroup</th><th>pid</th><th>comm</th><th>call</th><th>rule</th><th>action</th><th>argument</th></tr>");
        let violations = board.recent.iter().rev().filter_map(|e| match &**e {
            LiveEvent::Violation(r) => Some(r),
            _ => None,
        });
        for r in violations.take(20) {
            let v = &r.violation;
            let _ = write!(
                html,
                "<tr><td>{}</td><td class=n>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(&r.cgroup),
                v.pid,
                escape(&v.comm),
                v.syscall,
                v.rule,
                v.action,
                escape(&v.argument)
            );
        }
        html.push_str("</table><h2>Latest sandbox verdicts</h2><table id=\"recent-verdicts\"><tr><th>source</th><th>sandbox or policy</th><th>status</th><th>exit</th><th>signal</th><th>wall ms</th><th>violations</th></tr>");
        for v in board.recent_verdicts.iter().rev().take(20) {
            let opt = |x: Option<i32>| x.map(|x| x.to_string()).unwrap_or_default();
            let _ = write!(
                html,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td class=n>{}</td><td class=n>{}</td>\
                 <td class=n>{}</td><td class=n>{}</td></tr>",
                escape(&v.source),
                escape(&v.what),
                escape(&v.status),
                opt(v.exit_code),
                opt(v.signal),
                v.wall_time_ms
                    .map(|t| format!("{t:.1}"))
                    .unwrap_or_default(),
                v.violations
            );
        }
        html.push_str("</table>");
    }
    window_section(&mut html, flame.as_deref(), cpu.as_ref());
    if let Some(latest) = &*shared.latest.lock().unwrap() {
        let _ = write!(
            html,
            "<h2>Latest on-demand profile</h2><p>Target: {}</p><table id=\"hot-on-demand\">\
             <tr><th>function</th><th>self %</th></tr>",
            escape(&latest.target)
        );
        hot_rows(&mut html, &latest.hot);
        html.push_str("</table>");
    }
    html.push_str("</body></html>");
    respond(StatusCode::OK, "text/html; charset=utf-8", html)
}

fn hot_rows(html: &mut String, hot: &[(String, f64)]) {
    for (name, pct) in hot {
        let _ = write!(
            html,
            "<tr><td>{}</td><td class=n>{pct:.1}</td></tr>",
            escape(name)
        );
    }
}

/// TCP by cgroup: connects, failures, mean connect latency, retransmits.
fn tcp_table(html: &mut String, view: &NodeView) {
    html.push_str(
        "<h2>TCP connects by cgroup</h2><table id=\"tcp\"><tr><th>cgroup</th><th>connects</th>\
         <th>failed</th><th>mean connect µs</th><th>retransmits</th></tr>",
    );
    let mut rows: Vec<_> = view.tcp.iter().collect();
    rows.sort_by_key(|(_, t)| std::cmp::Reverse(t.attempts()));
    for (id, t) in rows.into_iter().take(15) {
        let established = t.connects.get("established").copied().unwrap_or(0);
        let name = view
            .names
            .get(id)
            .cloned()
            .unwrap_or_else(|| format!("cgroup-{id}"));
        let _ = write!(
            html,
            "<tr><td>{}</td><td class=n>{}</td><td class=n>{}</td><td class=n>{:.0}</td>\
             <td class=n>{}</td></tr>",
            escape(&name),
            t.attempts(),
            t.attempts() - established,
            t.connect_ns as f64 / 1e3 / established.max(1) as f64,
            t.retransmits
        );
    }
    html.push_str("</table>");
}

/// CPU by cgroup: samples since the start, as CPU seconds.
fn cpu_table(html: &mut String, cpu: Option<&CpuTotals>, names: &HashMap<u64, String>) {
    html.push_str("<h2>CPU by cgroup</h2>");
    let Some(cpu) = cpu else {
        html.push_str("<p>Always-on profiling is off (<code>cpu_sampling_hz = 0</code>).</p>");
        return;
    };
    html.push_str("<table id=\"cpu\"><tr><th>cgroup</th><th>samples</th><th>CPU s</th></tr>");
    let mut rows: Vec<(&u64, &u64)> = cpu.by_cgroup.iter().collect();
    rows.sort_by_key(|(_, n)| std::cmp::Reverse(**n));
    for (id, n) in rows.into_iter().take(15) {
        let name = names
            .get(id)
            .cloned()
            .unwrap_or_else(|| format!("cgroup-{id}"));
        let _ = write!(
            html,
            "<tr><td>{}</td><td class=n>{n}</td><td class=n>{:.1}</td></tr>",
            escape(&name),
            *n as f64 / cpu.frequency_hz.max(1) as f64
        );
    }
    html.push_str("</table>");
}

/// The always-on window: hottest functions and the interactive flamegraph, inline.
fn window_section(html: &mut String, flame: Option<&WindowFlame>, cpu: Option<&CpuTotals>) {
    html.push_str("<h2>CPU flamegraph (always on)</h2>");
    let (Some(flame), Some(cpu)) = (flame, cpu) else {
        html.push_str("<p>Always-on profiling is off.</p>");
        return;
    };
    let _ = write!(
        html,
        "<p>The last {:.0} s of the whole node at {} Hz per CPU: {} samples. \
         <code>GET /api/v1/profile?source=window&amp;seconds=N</code> serves it as pprof.</p>",
        flame.span_ms as f64 / 1e3,
        cpu.frequency_hz,
        flame.samples
    );
    html.push_str("<table id=\"hot\"><tr><th>function</th><th>self %</th></tr>");
    hot_rows(html, &flame.hot);
    html.push_str("</table><div class=\"flame\">");
    if let Some(svg) = &flame.svg {
        // Inline the <svg> element itself, without the XML prolog and doctype.
        html.push_str(svg.find("<svg").map_or("", |i| &svg[i..]));
    }
    html.push_str("</div>");
}

/// The window's flamegraph from the CPU thread.
async fn window_flame(shared: &Shared) -> Option<Arc<WindowFlame>> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    shared.cpu.as_ref()?.send(CpuRequest::Flame(tx)).ok()?;
    tokio::time::timeout(std::time::Duration::from_secs(30), rx)
        .await
        .ok()?
        .ok()
}

#[cfg(test)]
mod tests {
    use super::escape;

    #[test]
    fn html_special_characters_are_escaped() {
        assert_eq!(
            escape("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }
}
