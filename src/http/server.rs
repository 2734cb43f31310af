//! Listeners (TCP, `unix:`, systemd's `LISTEN_FDS`), one task per connection on our own
//! multi-threaded executor, the TLS handshake inside that task, hyper's HTTP/1.1 codec with
//! our limits, I/O timeouts, the in-flight count, signals and graceful shutdown (the
//! server's own lifecycle, kept here). Knows nothing of restic paths or users: each request
//! goes to `handler::handle`.
//!
//! hyper frames the requests (docs/http.md): pipelined requests are answered in order, a
//! body is never taken for a request, ambiguous lengths are refused; a malformed or oversized
//! head gets hyper's 400 or 431 and the connection closes.

use crate::app::State;
use crate::cli::{Config, Listen};
use crate::counted::Counted;
use crate::handler;
use crate::http::body::Body;
use crate::lock::Lock as _;
use async_signal::{Signal, Signals};
use hyper::body::{Bytes, Frame, Incoming, SizeHint};
use hyper::header::{CONNECTION, HeaderValue};
use hyper::server::conn::http1;
use smol::channel::{Receiver, Sender};
use smol::future::FutureExt as _;
use smol::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use smol::net::TcpListener;
use smol::net::unix::UnixListener;
use smol::stream::StreamExt as _;
use smol::{Executor, Timer};
use smol_hyper::rt::{FuturesIo, SmolTimer};
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// A read or write that makes no progress for this long fails: a client that stalls
/// mid-body, stops reading a download, or idles on a keep-alive connection is dropped
/// (and its upload cleaned up).
const IO_TIMEOUT: Duration = Duration::from_secs(60);

/// A request head must arrive whole within this long (slowloris): the first of a connection
/// after it opens, each next one after the previous answer (docs/http.md).
const HEAD_TIMEOUT: Duration = Duration::from_secs(30);

/// The largest request head (request line and headers) we read: 431 beyond. restic's heads
/// are a few hundred bytes; 16 KiB leaves room for long proxy headers.
const MAX_HEAD: usize = 16 * 1024;

/// hyper's read buffer grows up to this: the largest piece of a body read at once, and what
/// one connection can make us buffer. Heads are limited to `MAX_HEAD` long before. 64 KiB
/// rather than 128: the same server CPU per GiB uploaded (twice the reads, but half the
/// buffer smol-hyper zeroes before each, and smaller overshoots of the 128 KiB upload
/// chunks), and 2 MiB less peak RSS with 8 uploads (8.49 -> 6.49 MiB, static build;
/// bench-results/2026-12-06/README.md).
const MAX_BUFFER: usize = 64 * 1024;

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
pub(crate) use crate::http::tls::Tls;
/// Built without the "tls" feature: there is never a TLS acceptor (the CLI refuses `--tls`).
#[cfg(not(feature = "tls"))]
pub(crate) enum Tls {}

/// Back-off after a failed accept (e.g. out of file descriptors), so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

enum Listener {
    Tcp(TcpListener),
    /// With the socket file we made (`None` for one passed by systemd).
    Unix(UnixListener, Option<SocketFile>),
}

/// The socket file a `unix:` listener made: removed at exit only if it is still that file
/// (another server may have replaced it meanwhile).
struct SocketFile {
    path: PathBuf,
    id: (u64, u64),
}

impl SocketFile {
    fn of(path: &Path) -> Option<SocketFile> {
        let m = std::fs::symlink_metadata(path).ok()?;
        Some(SocketFile {
            path: path.to_owned(),
            id: (m.dev(), m.ino()),
        })
    }

    fn remove(&self) {
        let now = std::fs::symlink_metadata(&self.path).map(|m| (m.dev(), m.ino()));
        if now.is_ok_and(|id| id == self.id) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Whether `path` is a socket nothing listens on (a connect to it fails): one left behind by
/// a crash. A socket that answers is another server's, and anything else there is not ours
/// to remove: errors.
fn stale_socket(path: &Path) -> Result<bool, String> {
    match std::fs::symlink_metadata(path) {
        Err(_) => return Ok(false),
        Ok(m) if !m.file_type().is_socket() => {
            return Err(format!(
                "cannot listen on unix:{}: something that is not a socket is in its place",
                path.display()
            ));
        }
        Ok(_) => {}
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Err(format!(
            "cannot listen on unix:{}: address already in use (another server listens on it)",
            path.display()
        )),
        Err(_) => Ok(true),
    }
}

/// Refuses, before anything is written, a `unix:` address another server listens on (a
/// configuration error: exit status 2). Without systemd's socket, that is.
pub(crate) fn check_listen(listen: &Listen) -> Result<(), String> {
    match listen {
        Listen::Unix(path) if std::env::var_os("LISTEN_FDS").is_none() => {
            stale_socket(path).map(|_| ())
        }
        _ => Ok(()),
    }
}

/// Runs the server until SIGINT/SIGTERM. The executor runs on one thread per core (this one
/// included), so uploads hash in parallel.
pub(crate) fn run(cfg: &Config, state: Arc<State>, tls: Option<Arc<Tls>>) -> Result<(), String> {
    let server = Arc::new(Server {
        state,
        in_flight: AtomicUsize::new(0),
        with_hyper: Arc::default(),
        stopping: AtomicBool::new(false),
        idle: IdleClock::new(),
    });
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
    let result = smol::block_on(ex.run(serve(ex.clone(), cfg, server, tls)));
    drop(stop);
    for w in workers {
        let _ = w.join();
    }
    // Dropping the executor drops the connections still open, and with them the temp files
    // of uploads that did not finish in time.
    drop(ex);
    result
}

/// What the connections share: the application's state, and the server's own bookkeeping
/// of its lifecycle.
struct Server {
    state: Arc<State>,
    /// Requests between "head parsed" and "response written"; shutdown waits for zero.
    in_flight: AtomicUsize,
    /// Connections hyper has (with its buffers) at the moment.
    with_hyper: Arc<AtomicUsize>,
    /// Set on SIGINT/SIGTERM: answers carry `Connection: close`.
    stopping: AtomicBool,
    /// Tells connections idle after an answer when to let hyper go.
    idle: IdleClock,
}

/// A clock that ticks every [`LET_GO_AFTER`] and wakes the connections that were idle after
/// an answer during the tick, so that each can tell whether it has been idle for a whole
/// tick (then hyper lets go of it). One clock for all connections, rather than a timer
/// armed and dropped for each answer: that cost ~10 % of the rate of small requests on a
/// keep-alive connection (static build, bench-results/2026-12-06/README.md). It sleeps while
/// no connection waits for it, so an idle server is not woken twice a second.
struct IdleClock {
    ticks: AtomicU64,
    /// Connections to wake at the next tick (each at most once per tick).
    waiting: Mutex<Vec<Waker>>,
    /// Wakes the sleeping clock when a connection starts waiting for it.
    nudge: (Sender<()>, Receiver<()>),
}

impl IdleClock {
    fn new() -> IdleClock {
        IdleClock {
            ticks: AtomicU64::new(0),
            waiting: Mutex::new(Vec::new()),
            nudge: smol::channel::bounded(1),
        }
    }

    fn now(&self) -> u64 {
        self.ticks.load(Ordering::Relaxed)
    }

    /// Has `waker` woken at the next tick.
    fn wake_at_next_tick(&self, waker: &Waker) {
        let mut waiting = self.waiting.locked();
        if waiting.is_empty() {
            // Full if a nudge is pending already: one is enough.
            let _ = self.nudge.0.try_send(());
        }
        waiting.push(waker.clone());
    }

    /// Ticks while connections wait for it (a task of the executor, for ever).
    async fn run(&self) {
        loop {
            if self.waiting.locked().is_empty() {
                // A nudge sent meanwhile is in the channel: no wake-up is missed.
                let _ = self.nudge.1.recv().await;
            }
            Timer::after(LET_GO_AFTER).await;
            self.ticks.fetch_add(1, Ordering::Relaxed);
            let waiting = std::mem::take(&mut *self.waiting.locked());
            for w in waiting {
                w.wake();
            }
        }
    }
}

async fn serve(
    ex: Arc<Executor<'static>>,
    cfg: &Config,
    server: Arc<Server>,
    tls: Option<Arc<Tls>>,
) -> Result<(), String> {
    // Handlers first: "start server on" tells systemd and scripts we are up, and a SIGHUP
    // (systemctl reload) arriving after that line must reload, not kill.
    let mut signals = Signals::new([Signal::Int, Signal::Term, Signal::Hup])
        .map_err(|e| format!("cannot install signal handlers: {e}"))?;
    let listener = bind(&cfg.listen)?;
    let clock = server.clone();
    ex.spawn(async move { clock.idle.run().await }).detach();

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
                spawn(&ex, stream, peer.ip().to_string(), &server, &tls);
            }
            Event::Unix(Ok(stream)) => spawn(&ex, stream, "unix".into(), &server, &tls),
            Event::Tcp(Err(e)) | Event::Unix(Err(e)) => {
                log::warn!("accept failed: {e}");
                Timer::after(ACCEPT_BACKOFF).await;
            }
            Event::Signal(Some(Ok(Signal::Hup))) => {
                log::info!("SIGHUP: reloading");
                server.state.reload();
                #[cfg(feature = "tls")]
                if let Some(tls) = &tls
                    && let Some(fingerprint) = tls.reload()
                {
                    *server.state.tls_fingerprint.locked() = Some(fingerprint);
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
    if let Listener::Unix(_, Some(ours)) = &listener {
        ours.remove();
    }
    drop(listener);
    server.stopping.store(true, Ordering::Relaxed);
    let deadline = Instant::now() + SHUTDOWN_GRACE;
    while server.in_flight.load(Ordering::Relaxed) > 0 {
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
            // anything that is not a socket, nor one a server still listens on
            // (`check_listen` refused that at start-up; this is the same check, later).
            if stale_socket(path)? {
                let _ = std::fs::remove_file(path);
            }
            let l = UnixListener::bind(path)
                .map_err(|e| format!("cannot listen on unix:{}: {e}", path.display()))?;
            let ours = SocketFile::of(path);
            log::info!("start server on unix:{}", path.display());
            Ok(Listener::Unix(l, ours))
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
    server: &Arc<Server>,
    tls: &Option<Arc<Tls>>,
) where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    #[cfg(feature = "tls")]
    if let Some(tls) = tls {
        ex.spawn(tls_connection(tls.clone(), stream, peer, server.clone()))
            .detach();
        return;
    }
    #[cfg(not(feature = "tls"))]
    let _ = tls;
    ex.spawn(connection(stream, peer, server.clone(), true))
        .detach();
}

/// Completes the TLS handshake (bounded by `HANDSHAKE_TIMEOUT`), then serves as usual.
#[cfg(feature = "tls")]
async fn tls_connection<S>(tls: Arc<Tls>, stream: S, peer: String, server: Arc<Server>)
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let handshake = async { Some(tls.handshake(stream).await) };
    let timeout = async {
        Timer::after(HANDSHAKE_TIMEOUT).await;
        None
    };
    match handshake.or(timeout).await {
        Some(Ok(stream)) => {
            log::debug!("TLS connection from {peer}: {}", stream.describe());
            // One TLS record per write: hyper gathers each response into one buffer.
            connection(stream, peer, server, false).await;
        }
        Some(Err(e)) => log::debug!("TLS handshake with {peer} failed: {e}"),
        None => log::debug!("TLS handshake with {peer}: no handshake within {HANDSHAKE_TIMEOUT:?}"),
    }
}

/// Serves one connection: requests one after another (pipelined ones in order) until the
/// client or we close it. `writev`: the stream takes vectored writes well (a socket, not TLS).
///
/// hyper has the connection only while a request is coming or being answered. It allocates
/// its read and write buffers (8 KiB each) as soon as it is handed a connection and keeps
/// them until it lets go, so a connection that has sent nothing yet, or that has been idle
/// for 0.5-1 s after an answer ([`LET_GO_AFTER`]; at once when [`CROWDED`]), waits for its
/// next byte without them (~2.6 instead of ~22 KiB each, static build; BENCHMARKS.md). A
/// connection silent for [`HEAD_TIMEOUT`] (since it opened, or since its last answer) is
/// closed.
async fn connection<S>(stream: S, peer: String, server: Arc<Server>, writev: bool)
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let peer: Arc<str> = peer.into();
    let activity = Arc::new(Activity::default());
    let service = {
        let (server, peer, activity) = (server.clone(), peer.clone(), activity.clone());
        hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
            let (server, peer, activity) = (server.clone(), peer.clone(), activity.clone());
            let in_flight = InFlight::new(server.clone(), activity.clone());
            let req = req.map(|body| Inbound {
                body,
                ended: false,
                activity: activity.clone(),
            });
            // Boxed: hyper can hand a connection back only if its service's futures are Unpin.
            Box::pin(async move {
                let mut res = handler::handle(&server.state, &peer, req).await;
                if server.stopping.load(Ordering::Relaxed) {
                    res.headers_mut()
                        .insert(CONNECTION, HeaderValue::from_static("close"));
                }
                if res.headers().get(CONNECTION).is_some_and(|v| v == "close") {
                    activity.linger.store(true, Ordering::Relaxed);
                }
                // In flight until the body is sent (or the connection dies).
                Ok::<_, Infallible>(res.map(|body| Tracked {
                    body,
                    in_flight,
                    waited: false,
                }))
            })
        })
    };
    let mut http = http1::Builder::new();
    http.timer(SmolTimer::new())
        .header_read_timeout(HEAD_TIMEOUT)
        .max_header_size(MAX_HEAD)
        .max_buf_size(MAX_BUFFER)
        .writev(writev)
        // A client that shuts down its sending side after a request still gets the answer.
        .half_close(true);
    let mut io = IdleTimeouts::new(stream, activity.clone());
    let mut silent_since = Instant::now();
    loop {
        match io.wait_for_byte(silent_since + HEAD_TIMEOUT).await {
            Ok(true) => {}
            Ok(false) => return, // closed between requests
            Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                log::debug!("connection from {peer}: no request within {HEAD_TIMEOUT:?}");
                return;
            }
            Err(e) => {
                log::debug!("connection from {peer}: {e}");
                return;
            }
        }
        activity.new_turn();
        // The head that follows must be whole by the same deadline: a new hyper would give
        // it 30 s of its own, and a client could stretch its head to nearly a minute by
        // sending its first byte late.
        io.new_turn(silent_since + HEAD_TIMEOUT);
        let turn = Counted::new(server.with_hyper.clone());
        let mut conn = http.serve_connection(FuturesIo::new(io), service.clone());
        // hyper's turn ends when it is done with the connection, or when the connection has
        // been idle after an answer for a whole tick of the idle clock (0.5-1 s), or at all
        // while more than CROWDED connections hold hyper: then hyper is asked to let go,
        // which it does at once when it is idle indeed.
        let clock = &server.idle;
        // When the connection turned idle: the clock's tick and the time.
        let mut idle: Option<(u64, Instant)> = None;
        // The tick during which the clock was last asked to wake this connection (at its end).
        let mut woken_after: Option<u64> = None;
        let mut asked = false;
        let served = std::future::poll_fn(|cx| {
            if let Poll::Ready(done) = conn.poll_without_shutdown(cx) {
                return Poll::Ready(Served::Ended(done));
            }
            if asked || !activity.idle() {
                idle = None;
                return Poll::Pending;
            }
            let tick = clock.now();
            let (idle_tick, since) = *idle.get_or_insert_with(|| (tick, Instant::now()));
            let crowded = server.with_hyper.load(Ordering::Relaxed) > CROWDED;
            if tick < idle_tick + 2 && !crowded {
                if woken_after != Some(tick) {
                    clock.wake_at_next_tick(cx.waker());
                    woken_after = Some(tick);
                }
                return Poll::Pending;
            }
            asked = true;
            Pin::new(&mut conn).graceful_shutdown();
            match conn.poll_without_shutdown(cx) {
                Poll::Ready(Ok(())) => Poll::Ready(Served::Idle(since)),
                Poll::Ready(Err(e)) => Poll::Ready(Served::Ended(Err(e))),
                // Not idle after all (cannot happen, see Activity::idle): hyper closes the
                // connection after the answer in progress, and it is not handed on.
                Poll::Pending => Poll::Pending,
            }
        })
        .await;
        let parts = conn.into_parts();
        drop(turn);
        match served {
            Served::Idle(since) => {
                io = parts.io.into_inner();
                // Bytes of the next request that hyper had read (a head not yet whole) go to
                // the next hyper first.
                io.unread(&parts.read_buf);
                silent_since = since;
                log::debug!("connection from {peer}: idle, hyper let go of it");
            }
            Served::Ended(Ok(())) => {
                let stream = parts.io.into_inner().inner;
                if activity.linger.load(Ordering::Relaxed) {
                    linger(stream).await;
                } else {
                    close(stream).await;
                }
                return;
            }
            // Malformed heads were answered by hyper (400/431) before it gave up.
            Served::Ended(Err(e)) => {
                log::debug!("connection from {peer}: {e}");
                return;
            }
        }
    }
}

/// Beyond this many connections holding hyper's buffers at once, one that turns idle after
/// an answer lets go at once rather than after a tick of the idle clock: a burst of
/// connections (5000 opened and left idle after one request each) then holds few buffers
/// at any time, while the few connections of ordinary clients (restic opens about 5) keep
/// their hyper between requests.
const CROWDED: usize = 64;

/// The tick of the idle clock: a connection idle after an answer for a whole tick (so for
/// 0.5-1 s) is taken from hyper, which frees its buffers; its next request gets a new hyper.
/// Long enough that a client sending requests one after another (restic during a backup)
/// keeps its hyper; short enough that connections left idle do not hold their buffers for
/// long (5000 idle connections: 46 MiB at 1-2 s, 36 MiB at 0.5-1 s, before [`CROWDED`];
/// bench-results/2026-12-06/README.md).
const LET_GO_AFTER: Duration = Duration::from_millis(500);

/// How hyper's turn on a connection ended.
enum Served {
    /// The connection went idle after an answer and hyper let go of it; idle since then.
    Idle(Instant),
    /// hyper is done with it: the client closed it or asked to, an answer said
    /// `Connection: close`, or hyper refused what arrived (and answered 400/431).
    Ended(hyper::Result<()>),
}

/// What a connection's task knows of its requests and its I/O, to tell when hyper can let go
/// of it: written by the service and the I/O wrapper, which hyper polls in the same task.
#[derive(Default)]
struct Activity {
    /// Requests whose answer is not yet wholly sent.
    open: AtomicUsize,
    /// Answers sent during hyper's current turn.
    answered: AtomicUsize,
    /// A request body was not read to its end during this turn: hyper may still be reading
    /// or discarding it, and the rest of it must never reach a new hyper as a request.
    body_left: AtomicBool,
    /// hyper's last read found nothing to read.
    read_waiting: AtomicBool,
    /// hyper has written since it last flushed (it flushes only with its buffer empty).
    unflushed: AtomicBool,
    /// An answer said `Connection: close` (a refused upload whose body we never read, or
    /// shutdown): the connection then reads what the client still sends for a while before
    /// closing, so the answer is not lost to a reset.
    linger: AtomicBool,
}

impl Activity {
    fn new_turn(&self) {
        self.answered.store(0, Ordering::Relaxed);
        self.body_left.store(false, Ordering::Relaxed);
    }

    /// Whether hyper is still reading the first request head of its turn.
    fn first_head(&self) -> bool {
        self.answered.load(Ordering::Relaxed) == 0 && self.open.load(Ordering::Relaxed) == 0
    }

    /// Whether hyper is between requests: it has answered a request in this turn, read every
    /// request body to its end, has no answer in progress, has written out all it had, and
    /// waits for bytes. In that state hyper lets go at once when asked, with no byte of the
    /// connection left unaccounted for; in any other it would finish the exchange in
    /// progress and close the connection.
    fn idle(&self) -> bool {
        self.answered.load(Ordering::Relaxed) > 0
            && self.open.load(Ordering::Relaxed) == 0
            && !self.body_left.load(Ordering::Relaxed)
            && self.read_waiting.load(Ordering::Relaxed)
            && !self.unflushed.load(Ordering::Relaxed)
    }
}

/// A request body as the handler gets it: hyper's, and it tells the connection if it was
/// dropped before its end.
pub(crate) struct Inbound {
    body: Incoming,
    ended: bool,
    activity: Arc<Activity>,
}

impl hyper::body::Body for Inbound {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<hyper::Result<Frame<Bytes>>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        if let Poll::Ready(None) = polled {
            self.ended = true;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for Inbound {
    fn drop(&mut self) {
        if !self.ended && !hyper::body::Body::is_end_stream(&self.body) {
            self.activity.body_left.store(true, Ordering::Relaxed);
        }
    }
}

/// Counts a request as in flight (shutdown waits for none) from its head until its answer
/// is sent or abandoned, on the server and on its connection.
struct InFlight(Arc<Server>, Arc<Activity>);

impl InFlight {
    fn new(server: Arc<Server>, activity: Arc<Activity>) -> InFlight {
        server.in_flight.fetch_add(1, Ordering::Relaxed);
        activity.open.fetch_add(1, Ordering::Relaxed);
        InFlight(server, activity)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.1.open.fetch_sub(1, Ordering::Relaxed);
        self.1.answered.fetch_add(1, Ordering::Relaxed);
    }
}

/// A response body that keeps its request counted as in flight, and wakes its connection
/// once more when it ends after having made hyper wait.
///
/// Why the wake: hyper 1.13's dispatcher polls the body, and if it was not ready, flushes and
/// polls it a second time before yielding. When the body ends in that second poll (a file
/// chunk or listing chunk read on a blocking thread that finished in between), the flush
/// ends the response and finds the next pipelined request already buffered, but hyper then
/// yields without parsing it and without a wake-up: no more bytes arrive from a client
/// that has sent everything, so the connection hangs with requests unanswered (seen as
/// "3 answers instead of 5" in the pipelined framing test, under load). The extra wake
/// makes hyper poll again and read the buffered request. A body that never waited (small
/// answers, whole in memory) cannot hit this and costs nothing.
struct Tracked {
    body: Body,
    #[allow(dead_code)] // held for its Drop
    in_flight: InFlight,
    /// The body has answered `Pending` at least once.
    waited: bool,
}

impl hyper::body::Body for Tracked {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<io::Result<Frame<Bytes>>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        match &polled {
            Poll::Pending => self.waited = true,
            Poll::Ready(None) => {
                if self.waited {
                    cx.waker().wake_by_ref();
                }
            }
            Poll::Ready(Some(_)) => {
                if self.waited && self.body.is_end_stream() {
                    cx.waker().wake_by_ref();
                }
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Closes our side, bounded in time (on TLS it writes close_notify, which waits forever on a
/// client that has stopped reading).
async fn close<S: AsyncWrite + Unpin>(mut stream: S) {
    let _ = stream
        .close()
        .or(async {
            Timer::after(LINGER_TIME).await;
            Ok(())
        })
        .await;
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

/// A connection with an inactivity timeout on every read and write.
///
/// A write counts as progress only once it has moved [`MIN_WRITE_PROGRESS`] bytes since it
/// first had to wait, or when hyper has written out all it had (it flushes only then). A
/// client that stops reading a download still takes a few bytes now and then: Linux keeps
/// probing its full receive window at growing intervals (up to 2 minutes), and each probe
/// may squeeze in some more. Counting those as progress kept such a download open for
/// ~120 s instead of 60.
struct IdleTimeouts<S> {
    inner: S,
    /// Bytes read from the connection that hyper has not seen yet: the byte
    /// [`IdleTimeouts::wait_for_byte`] read, or what the last hyper had read of a request
    /// when it let go. Reads return these first.
    replay: Bytes,
    /// Where hyper's reads and writes stand (for [`Activity::idle`]).
    activity: Arc<Activity>,
    /// When the first request head of hyper's turn must be whole.
    head_deadline: Option<Instant>,
    /// Armed while a read waits: at `head_deadline` for the first head of a turn, else
    /// [`IO_TIMEOUT`] from when the read started waiting.
    read_timer: Option<Timer>,
    write_timer: Option<Timer>,
    /// Bytes written since `write_timer` was armed.
    written_while_armed: usize,
}

/// How much a waiting write must move to count as progress: a client must take 64 KiB per
/// minute (~1 KiB/s) to keep a download going.
const MIN_WRITE_PROGRESS: usize = 64 * 1024;

impl<S> IdleTimeouts<S> {
    fn new(inner: S, activity: Arc<Activity>) -> Self {
        IdleTimeouts {
            inner,
            replay: Bytes::new(),
            activity,
            head_deadline: None,
            read_timer: None,
            write_timer: None,
            written_while_armed: 0,
        }
    }

    /// Starts hyper's turn: its first head must be whole by `head_deadline`. A read timer
    /// armed in an earlier turn (or a wait between turns) is gone.
    fn new_turn(&mut self, head_deadline: Instant) {
        self.head_deadline = Some(head_deadline);
        self.read_timer = None;
    }

    /// Has `bytes` read before anything else (copied: they may be a piece of hyper's
    /// buffer, which is then freed).
    fn unread(&mut self, bytes: &[u8]) {
        if !bytes.is_empty() {
            self.replay = Bytes::copy_from_slice(bytes);
        }
    }

    /// Resolves a poll of a write against the write timer.
    fn written(
        &mut self,
        cx: &mut Context<'_>,
        poll: Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        match poll {
            Poll::Ready(Ok(n)) if self.write_timer.is_some() => {
                self.written_while_armed += n;
                if self.written_while_armed >= MIN_WRITE_PROGRESS {
                    self.disarm_write();
                }
                Poll::Ready(Ok(n))
            }
            Poll::Ready(r) => Poll::Ready(r),
            Poll::Pending => waiting(&mut self.write_timer, cx),
        }
    }

    fn disarm_write(&mut self) {
        self.write_timer = None;
        self.written_while_armed = 0;
    }
}

/// A poll that is waiting: arms the inactivity timer (once), and fails with `TimedOut` when
/// it fires.
fn waiting<T>(timer: &mut Option<Timer>, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
    waiting_until(timer, cx, || Instant::now() + IO_TIMEOUT)
}

/// A poll that is waiting: arms the timer (once) at `deadline`, and fails with `TimedOut`
/// when it fires.
fn waiting_until<T>(
    timer: &mut Option<Timer>,
    cx: &mut Context<'_>,
    deadline: impl FnOnce() -> Instant,
) -> Poll<io::Result<T>> {
    let t = timer.get_or_insert_with(|| Timer::at(deadline()));
    match Pin::new(t).poll(cx) {
        Poll::Ready(_) => {
            *timer = None;
            Poll::Ready(Err(io::ErrorKind::TimedOut.into()))
        }
        Poll::Pending => Poll::Pending,
    }
}

impl<S: AsyncRead + Unpin> IdleTimeouts<S> {
    /// Waits, until `deadline` at the latest (then `TimedOut`), for a byte to arrive unless
    /// one is there already; false if the client closed the connection instead.
    async fn wait_for_byte(&mut self, deadline: Instant) -> io::Result<bool> {
        if !self.replay.is_empty() {
            return Ok(true);
        }
        let mut byte = [0u8; 1];
        let arrived = async { self.inner.read(&mut byte).await.map(Some) };
        let timeout = async {
            Timer::at(deadline).await;
            Ok(None)
        };
        match arrived.or(timeout).await? {
            Some(0) => Ok(false),
            Some(_) => {
                self.replay = Bytes::copy_from_slice(&byte);
                Ok(true)
            }
            None => Err(io::ErrorKind::TimedOut.into()),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for IdleTimeouts<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if !this.replay.is_empty() && !buf.is_empty() {
            let n = this.replay.len().min(buf.len());
            buf[..n].copy_from_slice(&this.replay[..n]);
            this.replay = this.replay.slice(n..);
            // With whatever else has arrived: hyper then parses the head as if it had read
            // it in one go (after a 1-byte read it would grow its buffer to 16 KiB).
            let more = match this.replay.is_empty() && n < buf.len() {
                true => match Pin::new(&mut this.inner).poll_read(cx, &mut buf[n..]) {
                    Poll::Ready(Ok(more)) => more,
                    // Nothing yet, or an error: the next read reports it again or sees the
                    // connection's end, and hyper gives up on an unfinished head either way.
                    Poll::Ready(Err(_)) | Poll::Pending => 0,
                },
                false => 0,
            };
            this.read_timer = None;
            this.activity.read_waiting.store(false, Ordering::Relaxed);
            return Poll::Ready(Ok(n + more));
        }
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            // Any byte read is progress.
            Poll::Ready(r) => {
                this.read_timer = None;
                this.activity.read_waiting.store(false, Ordering::Relaxed);
                Poll::Ready(r)
            }
            Poll::Pending => {
                this.activity.read_waiting.store(true, Ordering::Relaxed);
                match this.head_deadline {
                    Some(d) if this.activity.first_head() => {
                        waiting_until(&mut this.read_timer, cx, || d)
                    }
                    _ => waiting(&mut this.read_timer, cx),
                }
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for IdleTimeouts<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.activity.unflushed.store(true, Ordering::Relaxed);
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.written(cx, poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.activity.unflushed.store(true, Ordering::Relaxed);
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.written(cx, poll)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.inner).poll_flush(cx) {
            // hyper flushes once it has written all it buffered: caught up.
            Poll::Ready(r) => {
                self.disarm_write();
                if r.is_ok() {
                    self.activity.unflushed.store(false, Ordering::Relaxed);
                }
                Poll::Ready(r)
            }
            Poll::Pending => waiting(&mut self.write_timer, cx),
        }
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}
