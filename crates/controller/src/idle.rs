//! Connections that hold a file descriptor without doing anything. A client that completes the
//! TLS handshake and then sends nothing (no HTTP/2 preface, no request) is closed after
//! `first_request_timeout`; one with no request open for `idle_connection_timeout` is closed
//! too, whatever else it sends (HTTP/2 pings do not keep it). A connection with a request open (an agent's
//! stream) is never closed as idle: the stream's own pings and HTTP/2 keepalive judge it.
//!
//! [`Activity`] is shared by a connection ([`Watch`], inside [`crate::tls::TlsConn`]) and the
//! requests on it ([`TrackLayer`], which counts open requests until their response ends).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

use crate::tls::Peer;

/// How long connections may do nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// From the handshake to the first request.
    pub first_request: Duration,
    /// With no request open: since the last request ended.
    pub idle: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            first_request: Duration::from_secs(10),
            idle: Duration::from_secs(300),
        }
    }
}

/// What happens on one connection.
#[derive(Debug)]
pub struct Activity {
    epoch: Instant,
    /// Requests whose response has not ended.
    open: AtomicUsize,
    /// Requests ever started.
    started: AtomicUsize,
    /// When the last request ended (ms since `epoch`).
    ended_ms: AtomicU64,
}

impl Activity {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            epoch: Instant::now(),
            open: AtomicUsize::new(0),
            started: AtomicUsize::new(0),
            ended_ms: AtomicU64::new(0),
        })
    }

    fn start(self: &Arc<Self>) -> RequestGuard {
        self.open.fetch_add(1, Ordering::SeqCst);
        self.started.fetch_add(1, Ordering::SeqCst);
        RequestGuard(self.clone())
    }
}

/// Held for as long as a request's response is being sent.
#[derive(Debug)]
pub struct RequestGuard(Arc<Activity>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        let a = &self.0;
        a.ended_ms
            .store(a.epoch.elapsed().as_millis() as u64, Ordering::SeqCst);
        a.open.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The connection's side: decides when it has been idle too long.
#[derive(Debug)]
pub struct Watch {
    activity: Arc<Activity>,
    limits: Limits,
    timer: Pin<Box<Sleep>>,
}

impl Watch {
    /// A watch for a connection that was just accepted, and the activity its requests share.
    pub fn new(limits: Limits) -> (Self, Arc<Activity>) {
        let activity = Activity::new();
        let now = Instant::now();
        let watch = Self {
            activity: activity.clone(),
            limits,
            timer: Box::pin(tokio::time::sleep_until(now + limits.first_request)),
        };
        (watch, activity)
    }

    fn deadline(&self) -> Instant {
        let a = &self.activity;
        if a.started.load(Ordering::SeqCst) == 0 {
            return a.epoch + self.limits.first_request;
        }
        if a.open.load(Ordering::SeqCst) > 0 {
            // Looked at again later: the request may have ended by then.
            return Instant::now() + self.limits.idle;
        }
        a.epoch + Duration::from_millis(a.ended_ms.load(Ordering::SeqCst)) + self.limits.idle
    }

    /// Whether the connection should be closed now; otherwise the timer is armed with `cx`.
    pub fn poll_expired(&mut self, cx: &mut Context<'_>) -> bool {
        loop {
            let deadline = self.deadline();
            if Instant::now() >= deadline {
                return true;
            }
            self.timer.as_mut().reset(deadline);
            if self.timer.as_mut().poll(cx).is_pending() {
                return false;
            }
        }
    }

    /// Why it was closed, for the error hyper sees.
    pub fn error(&self) -> std::io::Error {
        let what = if self.activity.started.load(Ordering::SeqCst) == 0 {
            format!(
                "no request within {} s of the handshake",
                self.limits.first_request.as_secs()
            )
        } else {
            format!("idle for {} s", self.limits.idle.as_secs())
        };
        std::io::Error::new(std::io::ErrorKind::TimedOut, what)
    }
}

/// Counts each request as open until its response body ends.
#[derive(Debug, Clone, Copy, Default)]
pub struct TrackLayer;

impl<S> tower::Layer<S> for TrackLayer {
    type Service = Track<S>;
    fn layer(&self, inner: S) -> Track<S> {
        Track { inner }
    }
}

/// The service [`TrackLayer`] makes.
#[derive(Debug, Clone)]
pub struct Track<S> {
    inner: S,
}

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for Track<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Tracked<ResBody>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let guard = request
            .extensions()
            .get::<Peer>()
            .and_then(|p| p.activity.as_ref())
            .map(Activity::start);
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            Ok(response.map(|body| Tracked {
                body,
                _guard: guard,
            }))
        })
    }
}

/// A response body that keeps its request counted as open until it is dropped.
#[derive(Debug)]
pub struct Tracked<B> {
    body: B,
    _guard: Option<RequestGuard>,
}

impl<B: http_body::Body + Unpin> http_body::Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        first_request: Duration::from_secs(10),
        idle: Duration::from_secs(60),
    };

    #[tokio::test(start_paused = true)]
    async fn a_connection_without_a_request_expires_after_the_first_request_limit() {
        let (watch, _) = Watch::new(LIMITS);
        let start = Instant::now();
        assert_eq!(watch.deadline(), start + LIMITS.first_request);
    }

    #[tokio::test(start_paused = true)]
    async fn an_open_request_keeps_it_and_the_idle_time_counts_from_its_end() {
        let (watch, activity) = Watch::new(LIMITS);
        let guard = activity.start();
        // Nothing read for far longer than the idle time: the request is open.
        tokio::time::advance(LIMITS.idle * 10).await;
        assert!(watch.deadline() > Instant::now());
        tokio::time::advance(Duration::from_secs(5)).await;
        drop(guard);
        let ended = Instant::now();
        assert!(watch.deadline() >= ended + LIMITS.idle - Duration::from_millis(1));
        assert!(watch.deadline() <= ended + LIMITS.idle);
    }
}
