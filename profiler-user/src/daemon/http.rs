//! The HTTP side: one hyper HTTP/1 connection task per client, routes, bearer-token check.

use std::{convert::Infallible, sync::Arc, time::Duration};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, combinators::BoxBody};
use hyper::{
    Method, Request, Response, StatusCode,
    body::Incoming,
    header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue},
    server::conn::http1,
    service::service_fn,
};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use super::{
    Shared,
    board::LiveEvent,
    cpu::{CpuRequest, CpuTotals},
    metrics::{CpuExposition, Exposition, render, top_cgroups, top_processes},
    node::NodeRequest,
    own, page, profile, stream,
    tcp_metrics::TcpExposition,
};

/// A response body: whole, or streamed (server-sent events).
pub type Body = BoxBody<Bytes, Infallible>;

/// A response with `status`, `content_type` and `body`.
pub fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Body> {
    let mut response = Response::new(Full::new(body.into()).boxed());
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// A plain-text error.
pub fn error(status: StatusCode, message: impl Into<String>) -> Response<Body> {
    let mut text = message.into();
    text.push('\n');
    respond(status, "text/plain; charset=utf-8", text)
}

/// Accepts connections until the task is dropped.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                tracing::warn!("accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let shared = Arc::clone(&shared);
                async move { Ok::<_, Infallible>(route(&shared, req).await) }
            });
            if let Err(e) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!("connection: {e}");
            }
        });
    }
}

fn authorized(shared: &Shared, req: &Request<Incoming>) -> bool {
    let config = shared.config();
    let Some(token) = &config.bearer_token else {
        return true;
    };
    req.headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|given| constant_time_eq(given.trim().as_bytes(), token.as_bytes()))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn route(shared: &Arc<Shared>, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_owned();
    if req.method() != Method::GET {
        return error(StatusCode::METHOD_NOT_ALLOWED, "only GET");
    }
    match path.as_str() {
        "/healthz" => return respond(StatusCode::OK, "text/plain", "ok\n"),
        "/readyz" => {
            return if shared.is_ready() {
                respond(StatusCode::OK, "text/plain", "ready\n")
            } else {
                error(StatusCode::SERVICE_UNAVAILABLE, "starting")
            };
        }
        _ => {}
    }
    if !authorized(shared, &req) {
        let mut response = error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
        response.headers_mut().insert(
            hyper::header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer"),
        );
        return response;
    }
    let query = req.uri().query().unwrap_or("").to_owned();
    match path.as_str() {
        "/metrics" => metrics(shared).await,
        "/api/v1/events"
            if stream::wants_stream(
                req.headers()
                    .get(hyper::header::ACCEPT)
                    .and_then(|v| v.to_str().ok()),
                &query,
            ) =>
        {
            stream::respond(shared)
        }
        "/api/v1/events" => {
            let board = shared.board.lock().unwrap();
            let events: Vec<&LiveEvent> = board.recent.iter().map(|e| &**e).collect();
            let text = serde_json::to_string_pretty(&events).unwrap_or_else(|_| "[]".into());
            respond(StatusCode::OK, "application/json", text)
        }
        "/api/v1/sandboxes" => {
            let board = shared.board.lock().unwrap();
            let body = serde_json::json!({
                "guarded": &board.sandboxes,
                "verdicts": &board.recent_verdicts,
            });
            let text = serde_json::to_string_pretty(&body).unwrap_or_else(|_| "{}".into());
            respond(StatusCode::OK, "application/json", text)
        }
        "/api/v1/profile" => profile::handle(shared, &query).await,
        "/" => page::handle(shared).await,
        _ => error(StatusCode::NOT_FOUND, format!("no such endpoint: {path}")),
    }
}

/// The syscall statistics from the node thread, with the paths of the cgroups `extra` too.
pub async fn syscall_view(shared: &Shared, extra: Vec<u64>) -> Option<super::node::NodeView> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    shared.node.send(NodeRequest::Syscalls(extra, tx)).ok()?;
    tokio::time::timeout(Duration::from_secs(10), rx)
        .await
        .ok()?
        .ok()
}

/// The CPU totals from the CPU thread, when always-on profiling is on.
pub async fn cpu_totals(shared: &Shared) -> Option<CpuTotals> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    shared.cpu.as_ref()?.send(CpuRequest::Totals(tx)).ok()?;
    tokio::time::timeout(Duration::from_secs(10), rx)
        .await
        .ok()?
        .ok()
}

async fn metrics(shared: &Arc<Shared>) -> Response<Body> {
    let cpu = cpu_totals(shared).await;
    let extra = cpu
        .as_ref()
        .map(|c| c.by_cgroup.keys().copied().collect())
        .unwrap_or_default();
    let Some(view) = syscall_view(shared, extra).await else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the collector does not answer",
        );
    };
    let own_ids = shared.own_ids.clone();
    let own = tokio::task::spawn_blocking(move || own::self_stats(&own_ids))
        .await
        .unwrap_or_default();
    let config = shared.config();
    let mut exposition = Exposition {
        syscalls: top_cgroups(&view, config.top_cgroups),
        tcp: TcpExposition::new(&view, config.top_cgroups),
        processes: top_processes(&view, config.top_cgroups),
        cpu: cpu
            .map(|c| CpuExposition::new(&c, &view.names, config.top_cgroups))
            .unwrap_or_default(),
        syscall_events_lost: view.counters.events_lost,
        syscall_map_full: view.counters.stats_full,
        syscall_errno_map_full: view.counters.errno_full,
        config_reloads: shared.reloads.load(std::sync::atomic::Ordering::Relaxed),
        config_reload_errors: shared
            .reload_errors
            .load(std::sync::atomic::Ordering::Relaxed),
        own,
        ..Exposition::default()
    };
    {
        let board = shared.board.lock().unwrap();
        exposition.violations = board.violations.clone();
        exposition.guard_events_lost = board.events_lost;
        exposition.sandboxes = board.sandboxes.len() as u64;
        exposition.guard_attach_errors = board.attach_errors;
        exposition.verdicts = board.verdicts.clone();
        exposition.verdicts_malformed = board.verdicts_malformed;
    }
    respond(
        StatusCode::OK,
        "text/plain; version=0.0.4; charset=utf-8",
        render(exposition),
    )
}

/// Decodes `%XX` and `+` in a query component.
pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = |c: u8| (c as char).to_digit(16);
                match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    (Some(hi), Some(lo)) => {
                        out.push((hi * 16 + lo) as u8);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The `key=value` pairs of a query string, decoded.
pub fn query_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_percent_decoded() {
        let pairs = query_pairs("seconds=2&cgroup=%2Fsys%2Ffs%2Fcgroup%2Fa+b&format=svg");
        assert_eq!(pairs[1], ("cgroup".into(), "/sys/fs/cgroup/a b".into()));
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%4"), "%4");
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"ab", b"abc"));
    }
}
