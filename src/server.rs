//! Listeners (TCP, `unix:`, systemd's `LISTEN_FDS`), one task per connection on our own
//! multi-threaded executor, the TLS handshake inside that task, I/O timeouts, signals and
//! graceful shutdown, and the checks of every byte read before async-h1 parses it
//! (`framing.rs`). Knows nothing of restic paths or users: each request goes to
//! `handler::handle`.

use crate::cli::{Config, Listen};
use crate::framing::{Framing, Refused};
use crate::handler::{self, State};
use async_signal::{Signal, Signals};
use smol::future::FutureExt as _;
use smol::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use smol::net::TcpListener;
use smol::net::unix::UnixListener;
use smol::stream::StreamExt as _;
use smol::{Executor, Timer};
use std::future::Future;
use std::io;
use std::os::unix::fs::FileTypeExt;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

/// A read or write that makes no progress for this long fails: a client that stalls
/// mid-body, stops reading a download, or idles on a keep-alive connection is dropped
/// (and its upload cleaned up). async-h1 separately limits reading a request head to 60 s.
const IO_TIMEOUT: Duration = Duration::from_secs(60);

/// async-h1 hands a response to the connection 8 KiB at a time (its copy loop's buffer).
/// Past the first `WRITE_THROUGH` bytes of a response, those pieces are gathered into
/// `WRITE_BUFFER` bytes before they go to the socket (or TLS): a download makes one send per
/// 32 KiB instead of four, which halved its CPU per GiB. 64 KiB measured no better and costs
/// 256 KiB more with 8 downloads. Small answers go out exactly as written, and the buffer is
/// freed when the response is flushed, so an idle connection holds none.
const WRITE_THROUGH: usize = 16 * 1024;
const WRITE_BUFFER: usize = 32 * 1024;

/// On SIGINT/SIGTERM, requests in flight get this long to finish before we exit anyway.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// After refusing a request whose body we did not read, keep reading (and discarding) for at
/// most this long / this much, so that closing does not reset the connection before the
/// client has read our answer.
const LINGER_TIME: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 4 << 20;

/// A TLS handshake must be done within this long. It runs in the connection's own task, so
/// a client that connects and says nothing (or trickles) holds up no one else meanwhile.
#[cfg(feature = "tls")]
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[cfg(feature = "tls")]
pub(crate) use crate::tls::Tls;
/// Built without the "tls" feature: there is never a TLS acceptor (the CLI refuses `--tls`).
#[cfg(not(feature = "tls"))]
pub(crate) enum Tls {}

/// Back-off after a failed accept (e.g. out of file descriptors), so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener, Option<PathBuf>),
}

/// Runs the server until SIGINT/SIGTERM. The executor runs on one thread per core (this one
/// included), so uploads hash in parallel.
pub(crate) fn run(cfg: &Config, state: Arc<State>, tls: Option<Arc<Tls>>) -> Result<(), String> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let ex = Arc::new(Executor::new());
    let (stop, stopped) = smol::channel::bounded::<()>(1);
    let workers: Vec<_> = (1..threads)
        .map(|i| {
            let (ex, stopped) = (ex.clone(), stopped.clone());
            std::thread::Builder::new()
                .name(format!("rest-server-{i}"))
                .spawn(move || smol::block_on(ex.run(stopped.recv())))
        })
        .collect::<Result<_, _>>()
        .map_err(|e| format!("cannot start worker threads: {e}"))?;
    let result = smol::block_on(ex.run(serve(ex.clone(), cfg, state, tls)));
    drop(stop);
    for w in workers {
        let _ = w.join();
    }
    // Dropping the executor drops the connections still open, and with them the temp files
    // of uploads that did not finish in time.
    drop(ex);
    result
}

async fn serve(
    ex: Arc<Executor<'static>>,
    cfg: &Config,
    state: Arc<State>,
    tls: Option<Arc<Tls>>,
) -> Result<(), String> {
    // Handlers first: "start server on" tells systemd and scripts we are up, and a SIGHUP
    // (systemctl reload) arriving after that line must reload, not kill.
    let mut signals = Signals::new([Signal::Int, Signal::Term, Signal::Hup])
        .map_err(|e| format!("cannot install signal handlers: {e}"))?;
    let listener = bind(&cfg.listen)?;
    if let Some(q) = state.quota.clone() {
        let root = state.repos.root().to_owned();
        smol::unblock(move || {
            let t = Instant::now();
            let used = q.tally(&root);
            let ms = t.elapsed().as_millis();
            match q.limit() {
                Some(limit) => {
                    log::info!("Quota: {used} of {limit} bytes used (counted in {ms} ms)")
                }
                None => log::info!("Usage: {used} bytes (counted in {ms} ms)"),
            }
        })
        .detach();
    }

    enum Event {
        Tcp(io::Result<(smol::net::TcpStream, std::net::SocketAddr)>),
        Unix(io::Result<smol::net::unix::UnixStream>),
        Signal(Option<io::Result<Signal>>),
    }
    loop {
        let accepted = async {
            match &listener {
                Listener::Tcp(l) => Event::Tcp(l.accept().await),
                Listener::Unix(l, _) => Event::Unix(l.accept().await.map(|(s, _)| s)),
            }
        };
        let event = accepted
            .or(async { Event::Signal(signals.next().await) })
            .await;
        match event {
            Event::Tcp(Ok((stream, peer))) => {
                let _ = stream.set_nodelay(true);
                spawn(&ex, stream, peer.ip().to_string(), &state, &tls);
            }
            Event::Unix(Ok(stream)) => spawn(&ex, stream, "unix".into(), &state, &tls),
            Event::Tcp(Err(e)) | Event::Unix(Err(e)) => {
                log::warn!("accept failed: {e}");
                Timer::after(ACCEPT_BACKOFF).await;
            }
            Event::Signal(Some(Ok(Signal::Hup))) => {
                log::info!("SIGHUP: reloading");
                state.reload();
                #[cfg(feature = "tls")]
                if let Some(tls) = &tls {
                    tls.reload();
                }
            }
            Event::Signal(Some(Ok(sig))) => {
                log::info!("{sig:?} received: shutting down");
                break;
            }
            Event::Signal(other) => {
                return Err(format!("signal handling failed: {other:?}"));
            }
        }
    }

    // Stop accepting, then give requests in flight a bounded time to finish.
    if let Listener::Unix(_, Some(path)) = &listener {
        let _ = std::fs::remove_file(path);
    }
    drop(listener);
    state.stopping.store(true, Ordering::Relaxed);
    let deadline = Instant::now() + SHUTDOWN_GRACE;
    while state.in_flight.load(Ordering::Relaxed) > 0 {
        if Instant::now() >= deadline {
            log::warn!("requests still in flight after {SHUTDOWN_GRACE:?}: exiting anyway");
            break;
        }
        let second_signal =
            async { matches!(signals.next().await, Some(Ok(Signal::Int | Signal::Term))) };
        if second_signal
            .or(async {
                Timer::after(Duration::from_millis(20)).await;
                false
            })
            .await
        {
            log::warn!("second signal: exiting without waiting for requests in flight");
            break;
        }
    }
    Ok(())
}

fn bind(listen: &Listen) -> Result<Listener, String> {
    let mut fds = listenfd::ListenFd::from_env();
    if fds.len() > 0 {
        let bad =
            |e: io::Error| format!("cannot use the socket passed by systemd (LISTEN_FDS): {e}");
        if let Ok(Some(l)) = fds.take_tcp_listener(0) {
            let l = TcpListener::try_from(l).map_err(bad)?;
            log::info!("start server on {} (socket from systemd)", addr_of(&l));
            return Ok(Listener::Tcp(l));
        }
        let l = fds.take_unix_listener(0).map_err(bad)?;
        let l = l.ok_or_else(|| bad(io::Error::other("fd 3 is neither TCP nor unix")))?;
        let l = UnixListener::try_from(l).map_err(bad)?;
        log::info!("start server on unix socket from systemd");
        return Ok(Listener::Unix(l, None));
    }
    match listen {
        Listen::Unix(path) => {
            // A socket left behind by a crash would make bind fail: replace it, but never
            // anything that is not a socket.
            if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket()) {
                let _ = std::fs::remove_file(path);
            }
            let l = UnixListener::bind(path)
                .map_err(|e| format!("cannot listen on unix:{}: {e}", path.display()))?;
            log::info!("start server on unix:{}", path.display());
            Ok(Listener::Unix(l, Some(path.clone())))
        }
        Listen::Tcp(addr) => {
            let l = match addr.strip_prefix(':') {
                // ":port" means every interface: IPv6 and IPv4 if the host has IPv6.
                Some(port) => smol::block_on(TcpListener::bind(format!("[::]:{port}")))
                    .or_else(|_| smol::block_on(TcpListener::bind(format!("0.0.0.0:{port}")))),
                None => smol::block_on(TcpListener::bind(addr.as_str())),
            }
            .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
            log::info!("start server on {}", addr_of(&l));
            Ok(Listener::Tcp(l))
        }
    }
}

fn addr_of(l: &TcpListener) -> String {
    l.local_addr()
        .map_or_else(|_| "?".into(), |a| a.to_string())
}

/// Starts the task of one connection.
fn spawn<S>(
    ex: &Executor<'static>,
    stream: S,
    peer: String,
    state: &Arc<State>,
    tls: &Option<Arc<Tls>>,
) where
    S: AsyncRead + AsyncWrite + Clone + Send + Sync + Unpin + 'static,
{
    #[cfg(feature = "tls")]
    if let Some(tls) = tls {
        ex.spawn(tls_connection(tls.clone(), stream, peer, state.clone()))
            .detach();
        return;
    }
    #[cfg(not(feature = "tls"))]
    let _ = tls;
    ex.spawn(connection(stream, peer, state.clone())).detach();
}

/// Completes the TLS handshake (bounded by `HANDSHAKE_TIMEOUT`), then serves as usual.
#[cfg(feature = "tls")]
async fn tls_connection<S>(tls: Arc<Tls>, stream: S, peer: String, state: Arc<State>)
where
    S: AsyncRead + AsyncWrite + Clone + Send + Sync + Unpin + 'static,
{
    let handshake = async { Some(tls.handshake(stream).await) };
    let timeout = async {
        Timer::after(HANDSHAKE_TIMEOUT).await;
        None
    };
    match handshake.or(timeout).await {
        Some(Ok(stream)) => {
            log::debug!("TLS connection from {peer}: {}", stream.describe());
            connection(stream, peer, state).await;
        }
        Some(Err(e)) => log::debug!("TLS handshake with {peer} failed: {e}"),
        None => log::debug!("TLS handshake with {peer}: no handshake within {HANDSHAKE_TIMEOUT:?}"),
    }
}

/// Serves one connection: requests one after another until the client or we close it.
async fn connection<S>(stream: S, peer: String, state: Arc<State>)
where
    S: AsyncRead + AsyncWrite + Clone + Send + Sync + Unpin + 'static,
{
    let conn = Arc::new(Conn {
        stop_reading: AtomicBool::new(false),
        framing: Mutex::new(Framing::new()),
    });
    let busy = Arc::new(AtomicBool::new(false));
    let io = Timed::new(stream.clone(), conn.clone());
    let peer: Arc<str> = peer.into();
    let endpoint = {
        let peer = peer.clone();
        let (state, conn, busy) = (state.clone(), conn.clone(), busy.clone());
        move |req| {
            let (state, peer, conn) = (state.clone(), peer.clone(), conn.clone());
            state.in_flight.fetch_add(1, Ordering::Relaxed);
            busy.store(true, Ordering::Relaxed);
            async move {
                let res = handler::handle(&state, &peer, req).await;
                if res
                    .header("Connection")
                    .is_some_and(|c| c.as_str() == "close")
                {
                    // Stop async-h1 from draining an unread body: reads now see EOF.
                    conn.stop_reading.store(true, Ordering::Relaxed);
                }
                Ok(res)
            }
        }
    };
    let mut server = async_h1::server::Server::new(io, endpoint);
    loop {
        // async-h1 reads the next request head now (the last body is consumed).
        conn.framing().expect_head();
        let result = server.accept_one().await;
        // The response is written (or failed): the request is no longer in flight.
        if busy.swap(false, Ordering::Relaxed) {
            state.in_flight.fetch_sub(1, Ordering::Relaxed);
        }
        match result {
            Ok(async_h1::server::ConnectionStatus::KeepAlive)
                if !state.stopping.load(Ordering::Relaxed) => {}
            Ok(_) => break,
            Err(e) => {
                log::debug!("connection from {peer}: {e}");
                let refused = conn.framing().refused().filter(|r| r.in_head());
                if let Some(why) = refused {
                    // async-h1 got no request, so it answers nothing: we do.
                    refuse_head(&mut Timed::new(stream.clone(), conn.clone()), why).await;
                    conn.stop_reading.store(true, Ordering::Relaxed);
                }
                break;
            }
        }
    }
    if conn.stop_reading.load(Ordering::Relaxed) {
        linger(stream).await;
    }
}

/// Answers 400 to a request head that [`Framing`] refused (before async-h1 parsed it), and
/// says why in the body.
async fn refuse_head<S: AsyncWrite + Unpin>(io: &mut S, why: Refused) {
    let body = format!("{why}\n");
    let answer = format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain; charset=utf-8\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    if io.write_all(answer.as_bytes()).await.is_ok() {
        let _ = io.flush().await;
    }
}

/// Half-closes and reads what the client is still sending, for a bounded time, so the
/// answer we wrote reaches it instead of a connection reset.
async fn linger<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S) {
    // The close is inside the time limit too: on TLS it writes close_notify, which waits
    // forever on a client that has stopped reading.
    let drain = async {
        let _ = stream.close().await;
        let mut buf = vec![0u8; 64 * 1024];
        let mut total = 0;
        while total < LINGER_BYTES {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    };
    drain
        .or(async {
            Timer::after(LINGER_TIME).await;
        })
        .await;
}

/// What the clones of one connection's [`Timed`] share (async-h1 reads through one clone per
/// request and writes through another).
struct Conn {
    /// Reads end (EOF) once we have decided to close.
    stop_reading: AtomicBool,
    /// Where the request stream is; what async-h1 must not see (`framing.rs`).
    framing: Mutex<Framing>,
}

impl Conn {
    fn framing(&self) -> MutexGuard<'_, Framing> {
        self.framing.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A connection with an inactivity timeout on every read and write, a switch that makes
/// reads end (EOF) once we have decided to close, the checks of [`Framing`] on every byte
/// read before async-h1 parses it, and the write gathering of large responses
/// (`WRITE_BUFFER`).
struct Timed<S> {
    inner: S,
    conn: Arc<Conn>,
    read_timer: Option<Timer>,
    write_timer: Option<Timer>,
    /// Gathered response bytes; `wbuf[wpos..]` is not yet sent.
    wbuf: Vec<u8>,
    wpos: usize,
    /// Bytes accepted since the last flush, i.e. of the response being written.
    unflushed: usize,
}

impl<S: Clone> Clone for Timed<S> {
    fn clone(&self) -> Self {
        Timed::new(self.inner.clone(), self.conn.clone())
    }
}

impl<S> Timed<S> {
    fn new(inner: S, conn: Arc<Conn>) -> Self {
        Timed {
            inner,
            conn,
            read_timer: None,
            write_timer: None,
            wbuf: Vec::new(),
            wpos: 0,
            unflushed: 0,
        }
    }
}

impl<S: AsyncWrite + Unpin> Timed<S> {
    /// Sends everything gathered so far.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.wpos < self.wbuf.len() {
            let poll = Pin::new(&mut self.inner).poll_write(cx, &self.wbuf[self.wpos..]);
            match ready!(with_timeout(&mut self.write_timer, cx, poll)) {
                Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Ok(n) => self.wpos += n,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        self.wbuf.clear();
        self.wpos = 0;
        Poll::Ready(Ok(()))
    }
}

/// Resolves a poll of the inner stream against an inactivity timer: progress disarms the
/// timer; waiting arms it (once) and fails with `TimedOut` when it fires.
fn with_timeout<T>(
    timer: &mut Option<Timer>,
    cx: &mut Context<'_>,
    poll: Poll<io::Result<T>>,
) -> Poll<io::Result<T>> {
    match poll {
        Poll::Ready(r) => {
            *timer = None;
            Poll::Ready(r)
        }
        Poll::Pending => {
            let t = timer.get_or_insert_with(|| Timer::after(IO_TIMEOUT));
            match Pin::new(t).poll(cx) {
                Poll::Ready(_) => {
                    *timer = None;
                    Poll::Ready(Err(io::ErrorKind::TimedOut.into()))
                }
                Poll::Pending => Poll::Pending,
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Timed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        if self.conn.stop_reading.load(Ordering::Relaxed) || buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let this = &mut *self;
        loop {
            let (held, refused) = {
                let framing = this.conn.framing();
                (framing.held_cr, framing.refused())
            };
            // Refused (after handing on what preceded it): no more reads, not even waiting.
            if let Some(why) = refused {
                return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, why)));
            }
            // A CR held back from the last read goes first (`Framing::scan`).
            let start = usize::from(held);
            if held {
                if buf.len() == 1 {
                    // A lone CR would be what hangs the decoder; async-h1 always reads 8 KiB.
                    let e = "a 1-byte read at the end of a chunked body";
                    return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, e)));
                }
                buf[0] = b'\r';
            }
            let poll = Pin::new(&mut this.inner).poll_read(cx, &mut buf[start..]);
            let n = ready!(with_timeout(&mut this.read_timer, cx, poll))?;
            let mut framing = this.conn.framing();
            if held {
                framing.held_cr = false;
                if n == 0 {
                    let e = "connection closed inside the last line of a chunked body";
                    return Poll::Ready(Err(io::Error::new(io::ErrorKind::UnexpectedEof, e)));
                }
            }
            match framing.scan(&buf[start..start + n]) {
                // Nothing to hand on but a held CR, and no EOF: read on.
                Ok(0) if start == 0 && n > 0 => continue,
                Ok(keep) => return Poll::Ready(Ok(start + keep)),
                Err(why) => {
                    return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, why)));
                }
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Timed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.wbuf.is_empty() && this.unflushed + buf.len() <= WRITE_THROUGH {
            let poll = Pin::new(&mut this.inner).poll_write(cx, buf);
            let written = with_timeout(&mut this.write_timer, cx, poll);
            if let Poll::Ready(Ok(n)) = written {
                this.unflushed += n;
            }
            return written;
        }
        if this.wbuf.len() + buf.len() > WRITE_BUFFER {
            ready!(this.poll_drain(cx))?;
        }
        if this.wbuf.capacity() == 0 {
            this.wbuf.reserve_exact(WRITE_BUFFER);
        }
        let n = buf.len().min(WRITE_BUFFER - this.wbuf.len());
        this.wbuf.extend_from_slice(&buf[..n]);
        this.unflushed += n;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        ready!(this.poll_drain(cx))?;
        // The response is out: the next one starts unbuffered, and the buffer is freed.
        this.unflushed = 0;
        this.wbuf = Vec::new();
        let poll = Pin::new(&mut this.inner).poll_flush(cx);
        with_timeout(&mut this.write_timer, cx, poll)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_close(cx)
    }
}
