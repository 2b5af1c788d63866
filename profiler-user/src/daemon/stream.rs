//! `GET /api/v1/events` as server-sent events (`Accept: text/event-stream` or `?stream=1`):
//! the recent events first, then every new violation and verdict as it is read,
//! one `data:` line of JSON each; a comment every 15 s keeps proxies from closing the stream.

use std::{
    convert::Infallible,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http_body_util::BodyExt as _;
use hyper::{
    Response, StatusCode,
    body::{Frame, SizeHint},
    header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue},
};
use tokio::sync::{broadcast, mpsc};

use super::{Shared, board::LiveEvent, http::Body};

/// A comment this often when nothing happens.
const KEEPALIVE: Duration = Duration::from_secs(15);

/// A body fed by a channel: ends when the sender is dropped.
struct ChannelBody(mpsc::Receiver<Bytes>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|b| Ok(Frame::data(b))))
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

/// One event in the text/event-stream format.
pub fn frame(event: &LiveEvent) -> Bytes {
    let json = serde_json::to_string(event).unwrap_or_else(|_| "{}".into());
    let kind = match event {
        LiveEvent::Violation(_) => "violation",
        LiveEvent::Verdict(_) => "verdict",
        LiveEvent::SlowCall(_) => "slow_call",
    };
    Bytes::from(format!("event: {kind}\ndata: {json}\n\n"))
}

/// Whether a request asks for the stream.
pub fn wants_stream(accept: Option<&str>, query: &str) -> bool {
    accept.is_some_and(|a| a.contains("text/event-stream"))
        || super::http::query_pairs(query)
            .iter()
            .any(|(k, v)| k == "stream" && (v == "1" || v == "true"))
}

/// The streaming response.
pub fn respond(shared: &Arc<Shared>) -> Response<Body> {
    let (mut live, recent) = {
        let board = shared.board.lock().unwrap();
        (board.live.subscribe(), board.recent.clone())
    };
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    tokio::spawn(async move {
        if tx
            .send(Bytes::from_static(b": flamewarden events\n\n"))
            .await
            .is_err()
        {
            return;
        }
        for event in recent {
            if tx.send(frame(&event)).await.is_err() {
                return;
            }
        }
        loop {
            let chunk = match tokio::time::timeout(KEEPALIVE, live.recv()).await {
                Ok(Ok(event)) => frame(&event),
                Ok(Err(broadcast::error::RecvError::Lagged(n))) => {
                    Bytes::from(format!("event: lost\ndata: {{\"missed\":{n}}}\n\n"))
                }
                Ok(Err(broadcast::error::RecvError::Closed)) => return,
                Err(_) => Bytes::from_static(b": keepalive\n\n"),
            };
            // The client went away.
            if tx.send(chunk).await.is_err() {
                return;
            }
        }
    });
    let mut response = Response::new(ChannelBody(rx).boxed());
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stream_is_asked_for_by_header_or_query() {
        assert!(wants_stream(Some("text/event-stream"), ""));
        assert!(wants_stream(None, "stream=1"));
        assert!(!wants_stream(Some("application/json"), "stream=0"));
    }
}
