//! What the app does at the edge, for every request whatever its route: a
//! deadline on the request body, and the headers every answer carries.
//!
//! Timeouts on the request head, idle connections and the connection cap
//! belong to the listener (`agentryd`'s server builder); actix has none for
//! bodies, so a body is timed here, by wrapping its stream.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::HttpMessage;
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::error::PayloadError;
use actix_web::http::header::{self, HeaderMap, HeaderValue};
use actix_web::web::Bytes;
use futures_util::Stream;
use tokio::time::{Instant, Sleep};

/// Settings of the edge: how the app meets its listeners. No handler reads
/// them.
#[derive(Debug, Clone, Copy)]
pub struct Edge {
    /// How long a request body may take to arrive, counted from the end of
    /// its head (a large upload gets more: see [`MIN_BODY_RATE`]). Past it
    /// the request is answered 408 `request_timeout` and the connection
    /// closed.
    pub body_timeout: Duration,
    /// Whether `/metrics` is served beside the API; when it has a listener
    /// of its own ([`crate::metrics_app`]) the API answers 404 for it.
    pub metrics_on_api: bool,
}

impl Default for Edge {
    fn default() -> Self {
        Self {
            body_timeout: Duration::from_secs(30),
            metrics_on_api: true,
        }
    }
}

/// Each byte received buys the body this much more time beyond
/// [`Edge::body_timeout`], so a bundle upload of a gigabyte on a slow link
/// is not cut off while a JSON body (at most 64 KiB) gets a second at most:
/// a client that trickles gains nothing unless it keeps sending 64 KiB/s.
pub const MIN_BODY_RATE: u64 = 64 * 1024;

/// Shared between the wrapped body and the middleware that wrapped it.
#[derive(Default)]
struct BodyState {
    timed_out: Cell<bool>,
    finished: Cell<bool>,
    /// The connection's own body stream.
    inner: RefCell<Option<Payload>>,
}

impl std::fmt::Debug for BodyState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BodyState")
            .field("timed_out", &self.timed_out)
            .field("finished", &self.finished)
            .finish_non_exhaustive()
    }
}

/// The body of one request, under its deadline.
#[derive(Debug)]
pub(crate) struct TimedBody(Rc<BodyState>);

impl TimedBody {
    /// Puts the request's body, if it has one, under a deadline.
    pub(crate) fn install(request: &mut ServiceRequest, timeout: Duration) -> Option<Self> {
        let inner = request.take_payload();
        if matches!(inner, Payload::None) {
            return None;
        }
        let state = Rc::new(BodyState {
            inner: RefCell::new(Some(inner)),
            ..BodyState::default()
        });
        let started = Instant::now();
        let stream = DeadlineStream {
            state: Rc::clone(&state),
            sleep: Box::pin(tokio::time::sleep_until(started + timeout)),
            started,
            timeout,
            received: 0,
        };
        request.set_payload(Payload::Stream {
            payload: Box::pin(stream),
        });
        Some(Self(state))
    }

    /// Whether the deadline passed before the body was all in.
    pub(crate) fn timed_out(&self) -> bool {
        self.0.timed_out.get()
    }

    /// For a body the handler did not read to its end (or that timed
    /// out): the answer closes the connection, which a half-read body
    /// leaves in no state to carry another request.
    pub(crate) fn close_unless_finished<B>(&self, response: &mut ServiceResponse<B>) {
        if self.0.finished.get() {
            return;
        }
        response
            .response_mut()
            .head_mut()
            .set_connection_type(actix_web::http::ConnectionType::Close);
    }
}

struct DeadlineStream {
    state: Rc<BodyState>,
    sleep: Pin<Box<Sleep>>,
    started: Instant,
    timeout: Duration,
    received: u64,
}

impl Stream for DeadlineStream {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        let polled = match this.state.inner.borrow_mut().as_mut() {
            Some(inner) => Pin::new(inner).poll_next(cx),
            None => Poll::Ready(None),
        };
        match polled {
            Poll::Ready(Some(Ok(chunk))) => {
                this.received += chunk.len() as u64;
                let earned = Duration::from_secs_f64(this.received as f64 / MIN_BODY_RATE as f64);
                this.sleep
                    .as_mut()
                    .reset(this.started + this.timeout + earned);
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(None) => {
                this.state.finished.set(true);
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(error))) => Poll::Ready(Some(Err(error))),
            Poll::Pending => match this.sleep.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    this.state.timed_out.set(true);
                    Poll::Ready(Some(Err(PayloadError::Io(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "the request body did not arrive in time",
                    )))))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

/// The headers every answer carries: `nosniff`; `no-store` unless the
/// route set its own cache policy (the JWKS is public and cacheable, and
/// nothing else is: bootstraps, logins, keys, secrets and tokens all go out
/// in bodies); and, on the TLS listener only, HSTS (over plain HTTP the
/// header means nothing, RFC 6797 §8.1).
pub(crate) fn secure_headers(headers: &mut HeaderMap, over_tls: bool) {
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    if over_tls {
        headers.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000"),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;
    use futures_util::StreamExt;

    #[actix_web::test]
    async fn a_body_that_stops_short_times_out_and_one_that_ends_does_not() {
        let (mut sender, inner) = actix_http::h1::Payload::create(false);
        let mut request = TestRequest::post().to_srv_request();
        request.set_payload(Payload::H1 { payload: inner });
        let body = TimedBody::install(&mut request, Duration::from_millis(50)).unwrap();
        let mut payload = request.take_payload();
        sender.feed_data(Bytes::from_static(b"{\"na"));
        assert_eq!(payload.next().await.unwrap().unwrap(), "{\"na");
        // Nothing more arrives: the deadline passes.
        let error = payload.next().await.unwrap().unwrap_err();
        assert!(error.to_string().contains("in time"), "{error}");
        assert!(body.timed_out());

        let (mut sender, inner) = actix_http::h1::Payload::create(false);
        let mut request = TestRequest::post().to_srv_request();
        request.set_payload(Payload::H1 { payload: inner });
        let body = TimedBody::install(&mut request, Duration::from_secs(30)).unwrap();
        let mut payload = request.take_payload();
        sender.feed_data(Bytes::from_static(b"{}"));
        sender.feed_eof();
        assert_eq!(payload.next().await.unwrap().unwrap(), "{}");
        assert!(payload.next().await.is_none());
        assert!(!body.timed_out());
        assert!(body.0.finished.get());
    }
}
