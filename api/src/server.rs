//! Serving the API (plain HTTP or HTTPS) with limits a client cannot get round: our own
//! accept loop over hyper's HTTP/1 connection, because `axum::serve` has no timeouts and
//! no connection limit.
//!
//! Each connection is in one of three phases, and each phase has its bound:
//! - **idle** (no request in progress: just accepted, or kept alive after a response):
//!   closed `header_read_timeout` after the accept, or `idle_timeout` after the last
//!   response; while the server is full it is also the first to go (below);
//! - **head** (the first bytes of a request arrived, its head is not complete): closed
//!   `header_read_timeout` after those first bytes;
//! - **busy** (a request is being answered): the request body must arrive in full within
//!   `body_timeout` of the head, or reading it fails (400) and the connection closes;
//!   the answer itself is not bounded (the order stream is long-lived on purpose).
//!
//! At most `max_connections` are open at once. When one more arrives, the connection that
//! has been idle longest is closed to make room (an idle HTTP/1.1 connection may be closed
//! at any time; clients open a new one), so a crowd of silent connections cannot keep
//! `/health` out; only when every connection is busy does the newcomer wait in the
//! listen backlog. Each accepted socket holds one file descriptor, plus one transiently
//! for the newcomer while room is made.
//!
//! On shutdown: stop accepting, close idle connections, let requests in flight finish
//! for up to `shutdown_grace`, then drop whatever is still open.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tower::ServiceExt;
use tracing::{debug, info, warn};

/// The bounds of the HTTP front (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServeLimits {
    /// Connections open at once.
    pub max_connections: usize,
    /// From the accept, or from the first byte of a request, to its complete head.
    pub header_read_timeout: Duration,
    /// From a request's head to the end of its body.
    pub body_timeout: Duration,
    /// From the end of a response to the first byte of the next request.
    pub idle_timeout: Duration,
    /// After shutdown begins, how long requests in flight may take before their
    /// connections are dropped.
    pub shutdown_grace: Duration,
}

/// Time a client has to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// While every connection is busy, how often the accept loop looks again for one that
/// went idle.
const ROOM_RETRY: Duration = Duration::from_millis(50);

/// Pause after a failed accept (usually out of file descriptors) instead of spinning.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

impl Default for ServeLimits {
    /// The defaults of the `[http]` configuration section.
    fn default() -> Self {
        Self {
            max_connections: 1024,
            header_read_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(60),
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// Serves `router` on `listener` (over TLS with `tls`) within `limits` until `shutdown`
/// completes, then stops as the module documentation says.
pub async fn serve_with(
    listener: TcpListener,
    router: Router,
    limits: ServeLimits,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    let scheme = if tls.is_some() { "HTTPS" } else { "HTTP" };
    info!(%addr, max_connections = limits.max_connections, "{scheme} API listening");
    let front = Arc::new(Front {
        router,
        limits,
        tls: tls.map(tokio_rustls::TlsAcceptor::from),
        registry: Registry::default(),
        permits: Arc::new(Semaphore::new(limits.max_connections.max(1))),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    let permit = match front.permits.clone().try_acquire_owned() {
                        Ok(permit) => permit,
                        Err(_) => match make_room(&front, shutdown.as_mut()).await {
                            Some(permit) => permit,
                            None => break,
                        },
                    };
                    let conn = front.registry.add();
                    tasks.spawn(run_connection(tcp, peer, conn, Arc::clone(&front), permit, stop_rx.clone()));
                }
                Err(error) => {
                    warn!(%error, "accepting an HTTP connection failed");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                }
            },
            Some(joined) = tasks.join_next(), if !tasks.is_empty() => log_if_panicked(joined),
        }
    }
    drop(listener);
    stop_tx.send_replace(true);
    let grace = limits.shutdown_grace;
    info!(%addr, open = tasks.len(), grace_s = grace.as_secs_f64(), "{scheme} API stopping: requests in flight may finish");
    let drained = tokio::time::timeout(grace, async {
        while let Some(joined) = tasks.join_next().await {
            log_if_panicked(joined);
        }
    })
    .await;
    if drained.is_err() {
        warn!(%addr, dropped = tasks.len(), grace_s = grace.as_secs_f64(), "connections still busy after the shutdown grace period are dropped");
        tasks.shutdown().await;
    }
    info!(%addr, "{scheme} API stopped");
    Ok(())
}

/// What every connection task shares.
struct Front {
    router: Router,
    limits: ServeLimits,
    tls: Option<tokio_rustls::TlsAcceptor>,
    registry: Registry,
    permits: Arc<Semaphore>,
}

/// The server is full: close the connection idle longest and wait for its permit (or, if
/// none is idle, for any). `None` when shutdown began meanwhile.
async fn make_room(
    front: &Front,
    mut shutdown: Pin<&mut impl Future<Output = ()>>,
) -> Option<OwnedSemaphorePermit> {
    loop {
        if let Some(evicted) = front.registry.evict_longest_idle() {
            debug!(
                conn = evicted,
                "HTTP connection limit reached: closing the longest idle connection"
            );
        }
        tokio::select! {
            permit = front.permits.clone().acquire_owned() => return permit.ok(),
            () = shutdown.as_mut() => return None,
            () = tokio::time::sleep(ROOM_RETRY) => {}
        }
    }
}

fn log_if_panicked(joined: Result<(), tokio::task::JoinError>) {
    if let Err(e) = joined
        && e.is_panic()
    {
        warn!(error = %e, "an HTTP connection task panicked");
    }
}

/// Where a connection is (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Idle { since: Instant, deadline: Instant },
    Head { deadline: Instant },
    Busy { requests: u32 },
}

/// One connection's phase, shared by its socket wrapper, its requests and its task.
#[derive(Debug)]
struct Conn {
    id: u64,
    phase: Mutex<Phase>,
    /// The phase changed (the deadline may have moved).
    changed: Notify,
    /// Asked to close if still idle.
    evict: Notify,
}

impl Conn {
    fn phase(&self) -> MutexGuard<'_, Phase> {
        // a poisoned lock only means a panic elsewhere; the phase is still a valid value
        self.phase.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set(&self, phase: Phase) {
        *self.phase() = phase;
        self.changed.notify_waiters();
    }

    fn is_idle(&self) -> bool {
        matches!(*self.phase(), Phase::Idle { .. })
    }

    /// Bytes arrived: an idle connection starts a request head.
    fn bytes_read(&self, header_read_timeout: Duration) {
        let mut phase = self.phase();
        if let Phase::Idle { .. } = *phase {
            *phase = Phase::Head {
                deadline: Instant::now() + header_read_timeout,
            };
            drop(phase);
            self.changed.notify_waiters();
        }
    }

    fn request_started(&self) {
        let mut phase = self.phase();
        *phase = match *phase {
            Phase::Busy { requests } => Phase::Busy {
                requests: requests + 1,
            },
            _ => Phase::Busy { requests: 1 },
        };
        drop(phase);
        self.changed.notify_waiters();
    }

    fn request_ended(&self, idle_timeout: Duration) {
        let mut phase = self.phase();
        *phase = match *phase {
            Phase::Busy { requests } if requests > 1 => Phase::Busy {
                requests: requests - 1,
            },
            _ => {
                let now = Instant::now();
                Phase::Idle {
                    since: now,
                    deadline: now + idle_timeout,
                }
            }
        };
        drop(phase);
        self.changed.notify_waiters();
    }

    /// Completes when the current phase's deadline passes; says which one it was.
    async fn expired(&self) -> &'static str {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let (deadline, what) = match *self.phase() {
                Phase::Idle { deadline, .. } => (Some(deadline), "idle timeout"),
                Phase::Head { deadline } => (Some(deadline), "header read timeout"),
                Phase::Busy { .. } => (None, ""),
            };
            match deadline {
                Some(deadline) => tokio::select! {
                    () = tokio::time::sleep_until(deadline) => return what,
                    () = changed => {}
                },
                None => changed.await,
            }
        }
    }
}

/// The open connections, for eviction.
#[derive(Default)]
struct Registry {
    next: AtomicU64,
    open: Mutex<HashMap<u64, Arc<Conn>>>,
}

impl Registry {
    fn open(&self) -> MutexGuard<'_, HashMap<u64, Arc<Conn>>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new connection, idle since now; it must still get its deadline (`start`).
    fn add(&self) -> Arc<Conn> {
        let now = Instant::now();
        let conn = Arc::new(Conn {
            id: self.next.fetch_add(1, Ordering::Relaxed),
            phase: Mutex::new(Phase::Idle {
                since: now,
                deadline: now,
            }),
            changed: Notify::new(),
            evict: Notify::new(),
        });
        self.open().insert(conn.id, Arc::clone(&conn));
        conn
    }

    fn remove(&self, id: u64) {
        self.open().remove(&id);
    }

    /// Asks the connection idle longest to close; its id, if there was one.
    fn evict_longest_idle(&self) -> Option<u64> {
        let open = self.open();
        let oldest = open
            .values()
            .filter_map(|c| match *c.phase() {
                Phase::Idle { since, .. } => Some((since, c)),
                _ => None,
            })
            .min_by_key(|(since, _)| *since)
            .map(|(_, c)| Arc::clone(c))?;
        drop(open);
        oldest.evict.notify_one();
        Some(oldest.id)
    }
}

/// Takes the connection out of the registry however its task ends (aborted included).
struct Registered<'a> {
    front: &'a Front,
    id: u64,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.front.registry.remove(self.id);
    }
}

/// One accepted socket: the TLS handshake if configured, then HTTP/1.1 until the client
/// leaves, a bound is crossed, it is evicted, or shutdown ends it.
async fn run_connection(
    tcp: TcpStream,
    peer: SocketAddr,
    conn: Arc<Conn>,
    front: Arc<Front>,
    _permit: OwnedSemaphorePermit,
    stop: watch::Receiver<bool>,
) {
    let _registered = Registered {
        front: &front,
        id: conn.id,
    };
    let now = Instant::now();
    conn.set(Phase::Idle {
        since: now,
        deadline: now + front.limits.header_read_timeout,
    });
    let Some(acceptor) = front.tls.clone() else {
        serve_http(tcp, peer, &conn, &front, stop).await;
        return;
    };
    let handshake = tokio::select! {
        handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)) => handshake,
        () = conn.evict.notified() => return,
        () = stopped(stop.clone()) => return,
    };
    match handshake {
        Ok(Ok(tls)) => serve_http(tls, peer, &conn, &front, stop).await,
        Ok(Err(e)) => debug!(%peer, error = %e, "TLS handshake failed"),
        Err(_) => debug!(%peer, "TLS handshake timed out"),
    }
}

async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// HTTP/1.1 on an established stream (plain or TLS), within the connection's bounds.
async fn serve_http<I>(
    io: I,
    peer: SocketAddr,
    conn: &Arc<Conn>,
    front: &Front,
    stop: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let limits = front.limits;
    let io = TokioIo::new(Tracked {
        inner: io,
        conn: Arc::clone(conn),
        header_read_timeout: limits.header_read_timeout,
    });
    let router = front.router.clone();
    let svc_conn = Arc::clone(conn);
    let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        let guard = InFlight::start(Arc::clone(&svc_conn), limits.idle_timeout);
        let req = req.map(|body| TimedBody::new(body, limits.body_timeout));
        let router = router.clone();
        async move {
            let resp = match router.oneshot(req).await {
                Ok(resp) => resp,
                Err(never) => match never {},
            };
            Ok::<_, Infallible>(resp.map(|body| TrackedBody {
                inner: body,
                _guard: guard,
            }))
        }
    });
    let http = hyper::server::conn::http1::Builder::new()
        // our own phase deadlines replace hyper's header timer (which needs a timer)
        .header_read_timeout(None::<Duration>)
        .serve_connection(io, service);
    tokio::pin!(http);
    let mut draining = false;
    loop {
        tokio::select! {
            served = http.as_mut() => {
                if let Err(e) = served {
                    debug!(%peer, error = %e, "HTTP connection ended with an error");
                }
                return;
            }
            why = conn.expired() => {
                debug!(%peer, reason = why, "closing an HTTP connection");
                return;
            }
            () = conn.evict.notified() => if conn.is_idle() {
                return;
            },
            () = stopped(stop.clone()), if !draining => {
                draining = true;
                if conn.is_idle() {
                    return;
                }
                // finish the request in flight, then close
                http.as_mut().graceful_shutdown();
            }
        }
    }
}

/// The socket, telling the connection when a request's first bytes arrive.
struct Tracked<I> {
    inner: I,
    conn: Arc<Conn>,
    header_read_timeout: Duration,
}

impl<I: AsyncRead + Unpin> AsyncRead for Tracked<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.conn.bytes_read(self.header_read_timeout);
        }
        polled
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Tracked<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// A request being answered: the connection is busy until its response body is done
/// (or dropped).
struct InFlight {
    conn: Arc<Conn>,
    idle_timeout: Duration,
}

impl InFlight {
    fn start(conn: Arc<Conn>, idle_timeout: Duration) -> Self {
        conn.request_started();
        Self { conn, idle_timeout }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.conn.request_ended(self.idle_timeout);
    }
}

/// A response body that keeps its request in flight until it is dropped.
struct TrackedBody {
    inner: axum::body::Body,
    _guard: InFlight,
}

impl Body for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The request body did not arrive within `http.body_timeout_s` of its head.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {0:?} (http.body_timeout_s)")]
pub struct BodyTimeout(Duration);

/// A request body that fails once its deadline passes.
struct TimedBody {
    inner: Incoming,
    deadline: Pin<Box<tokio::time::Sleep>>,
    timeout: Duration,
}

impl TimedBody {
    fn new(inner: Incoming, timeout: Duration) -> Self {
        Self {
            inner,
            deadline: Box::pin(tokio::time::sleep(timeout)),
            timeout,
        }
    }
}

impl Body for TimedBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        match self.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyTimeout(self.timeout))))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::{get, post};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Long enough to never fire in a test that is not about it.
    const NEVER: Duration = Duration::from_secs(600);
    /// Bound on waiting for an event that must come.
    const WAIT: Duration = Duration::from_secs(5);

    fn limits() -> ServeLimits {
        ServeLimits {
            max_connections: 64,
            header_read_timeout: NEVER,
            body_timeout: NEVER,
            idle_timeout: NEVER,
            shutdown_grace: NEVER,
        }
    }

    struct Running {
        addr: SocketAddr,
        /// Notified when a request enters the `/forever` handler.
        entered: Arc<Notify>,
        stop: Option<tokio::sync::oneshot::Sender<()>>,
        task: tokio::task::JoinHandle<std::io::Result<()>>,
    }

    async fn start(limits: ServeLimits) -> Running {
        let entered = Arc::new(Notify::new());
        let signal = Arc::clone(&entered);
        let router = Router::new()
            .route("/health", get(|| async { "ok" }))
            .route("/echo", post(|body: String| async move { body }))
            .route(
                "/forever",
                get(move || async move {
                    signal.notify_one();
                    std::future::pending::<()>().await;
                    "never"
                }),
            );
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(serve_with(listener, router, limits, None, async {
            let _ = stopped.await;
        }));
        Running {
            addr,
            entered,
            stop: Some(stop),
            task,
        }
    }

    async fn connect(r: &Running) -> TcpStream {
        TcpStream::connect(r.addr).await.expect("connect")
    }

    /// Reads until the server closes the connection; what it sent before.
    async fn until_closed(stream: &mut TcpStream) -> String {
        let mut out = Vec::new();
        tokio::time::timeout(WAIT, stream.read_to_end(&mut out))
            .await
            .expect("the server closes the connection")
            .expect("read");
        String::from_utf8_lossy(&out).into_owned()
    }

    /// Sends a keep-alive `GET /health` and reads its whole answer.
    async fn health(stream: &mut TcpStream) -> String {
        stream
            .write_all(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .expect("write");
        let mut out = Vec::new();
        let mut buf = [0u8; 1024];
        while !String::from_utf8_lossy(&out).ends_with("\r\n\r\nok") {
            let n = tokio::time::timeout(WAIT, stream.read(&mut buf))
                .await
                .expect("an answer")
                .expect("read");
            assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&out));
            out.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    #[tokio::test]
    async fn a_connection_that_sends_nothing_is_closed_after_the_header_read_timeout() {
        let r = start(ServeLimits {
            header_read_timeout: Duration::from_millis(300),
            ..limits()
        })
        .await;
        let mut silent = connect(&r).await;
        let opened = Instant::now();
        assert_eq!(until_closed(&mut silent).await, "");
        assert!(opened.elapsed() >= Duration::from_millis(250));
    }

    #[tokio::test]
    async fn a_request_head_that_never_ends_is_closed_after_the_header_read_timeout() {
        let r = start(ServeLimits {
            header_read_timeout: Duration::from_millis(300),
            ..limits()
        })
        .await;
        let mut slow = connect(&r).await;
        slow.write_all(b"GET /health HTTP/1.1\r\nHost: t\r\n")
            .await
            .expect("write");
        assert_eq!(until_closed(&mut slow).await, "");
    }

    #[tokio::test]
    async fn a_kept_alive_connection_is_closed_after_the_idle_timeout() {
        let r = start(ServeLimits {
            idle_timeout: Duration::from_millis(300),
            ..limits()
        })
        .await;
        let mut kept = connect(&r).await;
        assert!(health(&mut kept).await.starts_with("HTTP/1.1 200"));
        assert!(health(&mut kept).await.starts_with("HTTP/1.1 200"));
        let answered = Instant::now();
        assert_eq!(until_closed(&mut kept).await, "");
        assert!(answered.elapsed() >= Duration::from_millis(250));
    }

    #[tokio::test]
    async fn a_body_that_never_arrives_fails_after_the_body_timeout_and_closes() {
        let r = start(ServeLimits {
            body_timeout: Duration::from_millis(300),
            ..limits()
        })
        .await;
        let mut slow = connect(&r).await;
        slow.write_all(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nabc")
            .await
            .expect("write");
        let answer = until_closed(&mut slow).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
        // a complete body in time is still answered
        let mut quick = connect(&r).await;
        quick
            .write_all(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc")
            .await
            .expect("write");
        let answer = until_closed(&mut quick).await;
        assert!(
            answer.starts_with("HTTP/1.1 200") && answer.ends_with("abc"),
            "{answer}"
        );
    }

    #[tokio::test]
    async fn at_the_cap_the_longest_idle_connection_makes_room() {
        let r = start(ServeLimits {
            max_connections: 2,
            ..limits()
        })
        .await;
        let mut first = connect(&r).await;
        health(&mut first).await;
        let mut second = connect(&r).await;
        health(&mut second).await;
        let mut third = connect(&r).await;
        assert!(health(&mut third).await.starts_with("HTTP/1.1 200"));
        assert_eq!(until_closed(&mut first).await, "", "the longest idle one");
        assert!(health(&mut second).await.starts_with("HTTP/1.1 200"));
    }

    #[tokio::test]
    async fn shutdown_closes_idle_connections_and_drops_busy_ones_after_the_grace_period() {
        let mut r = start(ServeLimits {
            shutdown_grace: Duration::from_millis(300),
            ..limits()
        })
        .await;
        let mut idle = connect(&r).await;
        health(&mut idle).await;
        let mut busy = connect(&r).await;
        busy.write_all(b"GET /forever HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .expect("write");
        tokio::time::timeout(WAIT, r.entered.notified())
            .await
            .expect("the request reaches its handler");
        let stopping = Instant::now();
        let _ = r.stop.take().map(|s| s.send(()));
        assert_eq!(until_closed(&mut idle).await, "");
        assert_eq!(until_closed(&mut busy).await, "");
        assert!(
            stopping.elapsed() >= Duration::from_millis(250),
            "not before the grace period"
        );
        let served = tokio::time::timeout(WAIT, &mut r.task)
            .await
            .expect("serve returns within the grace period")
            .expect("join");
        assert!(served.is_ok(), "{served:?}");
    }
}
