//! The API listener: actix-web's application behind connection handling of our own, so that
//! every resource a client can make us hold has a bound.
//!
//! actix-web's `HttpServer` bounds the request head (`client_request_timeout`) but nothing on
//! the way out: a client that stops reading a response holds its connection (and the response's
//! buffers) for as long as it likes. The listener here composes the same actix parts
//! (`actix-server` accepts, `actix-tls` does the handshake, `actix-http` speaks HTTP) with
//! [`StallLimit`] between TLS and HTTP, so a write that makes no progress for `writetimeout`
//! ends the connection. The other bounds are actix settings, set from one place:
//!
//! | bound | config (`http { … }`) | default |
//! |---|---|---|
//! | request head | `readtimeout` | 5 s |
//! | request body | `readtimeout` (applied by the POST handlers) | 5 s |
//! | a stalled response write | `writetimeout` | 5 s |
//! | idle keep-alive connection | `idletimeout` | `readtimeout` (as Go's `http.Server`) |
//! | requests per connection | `maxkeepaliverequests` | 1,000 |
//! | open connections (all workers) | `maxconnections` | 4,096 |
//! | TLS handshake | `readtimeout` | 5 s |
//! | graceful shutdown drain | `shutdowntimeout` | 5 s |

use std::cell::Cell;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use actix_http::{HttpService, KeepAlive, Protocol, Request};
use actix_server::ServerHandle;
use actix_service::boxed::{self, BoxServiceFactory};
use actix_service::{
    fn_service, map_config, IntoServiceFactory, Service, ServiceFactory, ServiceFactoryExt,
};
use actix_tls::accept::rustls_0_23::{Acceptor, TlsStream};
use actix_web::body::MessageBody;
use actix_web::dev::{AppConfig, Extensions, ServiceResponse};
use actix_web::http::ConnectionType;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Sleep;

/// The connection bounds of one listener (see the module table for defaults).
#[derive(Debug, Clone)]
pub struct Limits {
    /// Request head and TLS handshake deadline.
    pub read_timeout: Duration,
    /// Longest a response write may make no progress.
    pub write_timeout: Duration,
    /// Longest an idle keep-alive connection is kept.
    pub idle_timeout: Duration,
    /// Requests served on one connection before it is closed (0 = no limit).
    pub max_keepalive_requests: u32,
    /// Open connections, all workers together.
    pub max_connections: usize,
    /// How long a graceful stop waits for in-flight requests.
    pub shutdown_timeout: Duration,
    /// Worker threads (0 = one per core).
    pub workers: usize,
}

/// The listener's own metrics.
#[derive(Clone)]
pub struct ConnectionMetrics {
    /// Connections open now.
    pub open: prometheus::IntGauge,
    /// Connections ended by the write timeout.
    pub write_timeouts: prometheus::IntCounter,
}

/// A bound, not yet running listener.
pub struct Listener {
    /// The address bound.
    pub addr: SocketAddr,
    server: actix_server::Server,
}

impl Listener {
    /// Spawns the listener on the current runtime and returns its handle.
    pub fn spawn(self) -> ServerHandle {
        let handle = self.server.handle();
        tokio::spawn(self.server);
        handle
    }
}

/// Binds `addr` and serves the application made by `app` (an actix-web `App` passed through
/// [`mount`], once per worker) with `limits`, over TLS when `tls` is given (HTTP/2 and HTTP/1.1
/// by ALPN), plain HTTP/1.1 otherwise.
pub fn bind<F, B>(
    addr: &str,
    limits: &Limits,
    tls: Option<rustls::ServerConfig>,
    metrics: ConnectionMetrics,
    app: F,
) -> io::Result<Listener>
where
    F: Fn() -> MountedApp<B> + Send + Clone + 'static,
    B: MessageBody + 'static,
{
    let listener = listen_socket(addr)?;
    let local = listener.local_addr()?;
    let workers = if limits.workers == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        limits.workers
    };
    let per_worker = limits.max_connections.div_ceil(workers).max(1);
    let builder = actix_server::Server::build()
        .workers(workers)
        .max_concurrent_connections(per_worker)
        .shutdown_timeout(limits.shutdown_timeout.as_secs().max(1))
        .disable_signals();
    let limits = limits.clone();
    let builder = match tls {
        None => builder.listen("api", listener, move || {
            fn_service(plain_connection(limits.write_timeout, metrics.clone()))
                .and_then(http_service(&limits, &metrics, app()))
        })?,
        Some(mut config) => {
            config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
            builder.listen("api-tls", listener, move || {
                let mut acceptor = Acceptor::new(config.clone());
                acceptor.set_handshake_timeout(limits.read_timeout);
                acceptor
                    .map_init_err(|_| ())
                    .map_err(|e| tracing::debug!("TLS handshake failed: {e:?}"))
                    .and_then(fn_service(tls_connection(
                        limits.write_timeout,
                        metrics.clone(),
                    )))
                    .and_then(
                        http_service(&limits, &metrics, app())
                            .map_err(|e| tracing::debug!("connection ended: {e}")),
                    )
            })?
        }
    };
    Ok(Listener {
        addr: local,
        server: builder.run(),
    })
}

/// A listening socket with actix-web's backlog (the standard library's is 128).
fn listen_socket(addr: &str) -> io::Result<std::net::TcpListener> {
    let addr = std::net::ToSocketAddrs::to_socket_addrs(addr)?
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no address to bind"))?;
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(2048)?.into_std()
}

type Accepted<T> = (StallLimit<T>, Protocol, Option<SocketAddr>);

fn plain_connection(
    write_timeout: Duration,
    metrics: ConnectionMetrics,
) -> impl Fn(
    TcpStream,
) -> std::future::Ready<Result<Accepted<TcpStream>, actix_http::error::DispatchError>>
       + Clone {
    move |io: TcpStream| {
        let _ = io.set_nodelay(true);
        let peer = io.peer_addr().ok();
        std::future::ready(Ok((
            StallLimit::new(io, write_timeout, metrics.write_timeouts.clone()),
            Protocol::Http1,
            peer,
        )))
    }
}

fn tls_connection(
    write_timeout: Duration,
    metrics: ConnectionMetrics,
) -> impl Fn(TlsStream<TcpStream>) -> std::future::Ready<Result<Accepted<TlsStream<TcpStream>>, ()>>
       + Clone {
    move |io: TlsStream<TcpStream>| {
        let (tcp, session) = io.get_ref();
        let _ = tcp.set_nodelay(true);
        let peer = tcp.peer_addr().ok();
        let protocol = match session.alpn_protocol() {
            Some(b"h2") => Protocol::Http2,
            _ => Protocol::Http1,
        };
        let io = StallLimit::new(io, write_timeout, metrics.write_timeouts.clone());
        std::future::ready(Ok((io, protocol, peer)))
    }
}

/// The application as actix-http wants it: configured (actix-web's per-connection
/// `AppConfig` is not used by our routes) and boxed, so the connection chains can name it.
pub type MountedApp<B> =
    BoxServiceFactory<(), Request, actix_web::dev::Response<B>, actix_web::Error, ()>;

/// Prepares an actix-web `App` for [`bind`].
pub fn mount<I, S, B>(app: I) -> MountedApp<B>
where
    I: IntoServiceFactory<S, Request>,
    S: ServiceFactory<Request, Config = AppConfig, Error = actix_web::Error, InitError = ()>
        + 'static,
    S::Future: 'static,
    S::Response: Into<actix_web::dev::Response<B>> + 'static,
    S::Service: 'static,
    <S::Service as Service<Request>>::Future: 'static,
    B: MessageBody + 'static,
{
    boxed::factory(map_config(app.into_factory(), |_: ()| AppConfig::default()).map(Into::into))
}

/// actix-http's service for one connection type, with our limits and the app mounted.
fn http_service<T, B>(
    limits: &Limits,
    metrics: &ConnectionMetrics,
    app: MountedApp<B>,
) -> HttpService<T, MountedApp<B>, B>
where
    T: AsyncRead + AsyncWrite + Unpin + 'static,
    B: MessageBody + 'static,
{
    let max_requests = limits.max_keepalive_requests;
    let open = metrics.open.clone();
    HttpService::build()
        .keep_alive(KeepAlive::Timeout(limits.idle_timeout))
        .client_request_timeout(limits.read_timeout)
        .client_disconnect_timeout(Duration::from_secs(1))
        .on_connect_ext(move |_io: &T, ext: &mut Extensions| {
            ext.insert(RequestBudget(Cell::new(max_requests)));
            // Connection data lives as long as the connection: the gauge counts it until it ends.
            ext.insert(crate::metrics::GaugeGuard::inc(&open));
        })
        .finish(app)
}

/// What is left of a connection's `maxkeepaliverequests` (connection data, one per connection).
struct RequestBudget(Cell<u32>);

/// Spends one request of the connection's budget; the response that spends the last one says
/// `Connection: close`, and actix closes the connection after it. A budget of 0 is no limit.
pub fn spend_request_budget<B>(res: &mut ServiceResponse<B>) {
    let Some(budget) = res.request().conn_data::<RequestBudget>() else {
        return;
    };
    match budget.0.get() {
        0 => {}
        1 => {
            budget.0.set(u32::MAX);
            res.response_mut()
                .head_mut()
                .set_connection_type(ConnectionType::Close);
        }
        left => budget.0.set(left - 1),
    }
}

/// An I/O stream whose writes fail with [`io::ErrorKind::TimedOut`] once they have made no
/// progress for the limit: a peer that stops reading is disconnected instead of holding the
/// connection and its buffers. Reads are untouched (actix bounds them).
///
/// Go's `http.Server` puts `WriteTimeout` on the whole response; a bound on each stall instead
/// never cuts a large PACK that a client is reading, and still frees the connection of a client
/// that stopped.
pub struct StallLimit<T> {
    inner: T,
    limit: Duration,
    stalled: Option<Pin<Box<Sleep>>>,
    timeouts: prometheus::IntCounter,
}

impl<T> StallLimit<T> {
    /// Wraps `inner`; `timeouts` counts the stalls that end the stream.
    pub fn new(inner: T, limit: Duration, timeouts: prometheus::IntCounter) -> StallLimit<T> {
        StallLimit {
            inner,
            limit,
            stalled: None,
            timeouts,
        }
    }

    /// Passes a ready result through and forgets the stall; on `Pending` starts (or checks) the
    /// stall clock.
    fn watch<R>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<R>>) -> Poll<io::Result<R>> {
        if poll.is_ready() {
            self.stalled = None;
            return poll;
        }
        let limit = self.limit;
        let clock = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        ready!(clock.as_mut().poll(cx));
        self.timeouts.inc();
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "the peer read nothing for the write timeout",
        )))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for StallLimit<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for StallLimit<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.watch(cx, poll)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_flush(cx);
        this.watch(cx, poll)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.watch(cx, poll)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.watch(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    fn counter() -> prometheus::IntCounter {
        prometheus::IntCounter::new("stalls", "test").expect("valid metric")
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_the_peer_never_reads_fails_at_the_limit() {
        let (near, _far) = tokio::io::duplex(16);
        let stalls = counter();
        let mut io = StallLimit::new(near, Duration::from_secs(5), stalls.clone());
        let started = tokio::time::Instant::now();
        let err = io
            .write_all(&[0u8; 64])
            .await
            .expect_err("the peer reads nothing");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(5));
        assert_eq!(stalls.get(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_reader_that_keeps_reading_is_never_cut() {
        use tokio::io::AsyncReadExt;
        let (near, mut far) = tokio::io::duplex(16);
        let mut io = StallLimit::new(near, Duration::from_secs(5), counter());
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            let mut buf = [0u8; 16];
            loop {
                // Each read comes 4 s after the last: slower in total than the limit, but no
                // single stall reaches it.
                tokio::time::sleep(Duration::from_secs(4)).await;
                match far.read(&mut buf).await {
                    Ok(0) | Err(_) => break got,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
            }
        });
        io.write_all(&[7u8; 160]).await.expect("progress each 4 s");
        io.shutdown().await.expect("shutdown");
        drop(io);
        assert_eq!(reader.await.expect("reader").len(), 160);
    }
}
