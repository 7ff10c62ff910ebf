//! One client connection: read a head, answer it (ourselves or through a backend), repeat while
//! the connection is kept alive.
//!
//! Requests on a connection are handled strictly one after another: the bytes of a pipelined
//! request wait in the input buffer until the response to the one before is complete, and then
//! pass every check again. A request's body is read only while it is forwarded; after any early
//! answer (400, 404, 408, 413, 414, 417, 421, 431, 503) with a body still unread, or whenever
//! framing cannot be trusted, the connection is closed (after a short lingering drain, so the
//! client reads the answer instead of a reset) — a request hidden in an unread body is never
//! parsed.
//!
//! # Memory per connection
//!
//! Bounded and independent of body sizes; bodies pass through fixed buffers in pieces and
//! chunked framing is decoded in place, never buffered whole. With the default limits:
//!
//! - the input buffer holds one head at most: [`head_capacity`] =
//!   `max_header_line_bytes + max_header_section_bytes + 4` = 40,964 bytes (at least
//!   [`MIN_BUFFER`]); request bodies are read through it, [`MIN_BUFFER`] at a time. It starts
//!   at [`FIRST_READ`] (1 KiB) and doubles only when a head needs more, and is freed whenever it
//!   is empty; an idle keep-alive connection waits for readability before taking it (plain
//!   TCP, see [`Idle`]), so it holds only its small task state (about 1 KiB: the state of a
//!   request in progress is boxed and freed with it);
//! - while a request body is forwarded: one output buffer of [`MIN_BUFFER`] (16 KiB) plus
//!   chunk framing;
//! - the backend response head: at most [`MAX_RESPONSE_HEAD`](super::response::MAX_RESPONSE_HEAD)
//!   (64 KiB) plus one 16 KiB read;
//! - while a response body is relayed: a 16 KiB read buffer (only when the body did not
//!   arrive with the head; then the head is written with the body's first bytes, in one
//!   write) and a 16 KiB (+ framing) output buffer.
//!
//! That is under 170 KiB per connection, plus the kernel's socket buffers and, for TLS,
//! rustls's record buffers (its default limit of 64 KiB of pending plaintext).

use std::{
    io,
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::TcpStream,
    time::timeout_at,
};

use super::{
    buffers::{self, Buf},
    chunked::{self, ChunkError, ChunkedDecoder, Step},
    forward::{self, ClientInfo},
    framing::{BodyFraming, Reject, RequestHead, Scan, head_capacity, parse_request, scan_head},
    log::Record,
    pages,
    request_id::new_request_id,
    response::{self, BadResponse, ClientFraming, ResponseBody, ResponseHead, client_framing},
    state::{Settings, Shared, Snapshot},
    upstream::{self, ConnectError, Sent},
};
use crate::config::Balance;

/// Smallest input buffer; also the size of one body read.
pub const MIN_BUFFER: usize = 16 * 1024;

/// How long a closing connection keeps draining what the client still sends, so that the
/// client reads our answer rather than a reset.
const LINGER: Duration = Duration::from_secs(2);

/// First allocation of the input buffer, on a fresh or idle connection (recycled per worker);
/// it doubles as needed up to the head limit.
const FIRST_READ: usize = buffers::INPUT;

/// The input buffer: unread client bytes live in `data[start..end]`. It grows on demand up to
/// `limit` and is released whenever it holds nothing, so an idle keep-alive connection keeps
/// only one small read's worth of memory.
struct InBuf {
    data: Vec<u8>,
    start: usize,
    end: usize,
    /// The most it may hold (one head at most, see [`head_capacity`]).
    limit: usize,
}

impl InBuf {
    fn new(limit: usize) -> Self {
        InBuf {
            data: Vec::new(),
            start: 0,
            end: 0,
            limit,
        }
    }

    fn filled(&self) -> &[u8] {
        &self.data[self.start..self.end]
    }

    fn is_empty(&self) -> bool {
        self.start == self.end
    }

    fn is_full(&self) -> bool {
        self.end - self.start >= self.limit
    }

    fn consume(&mut self, n: usize) {
        self.start += n.min(self.end - self.start);
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    fn set_limit(&mut self, limit: usize) {
        self.limit = self.limit.max(limit);
    }

    /// Frees the memory while nothing is buffered (between requests).
    fn release(&mut self) {
        if self.is_empty() && !self.data.is_empty() {
            buffers::recycle_input(std::mem::take(&mut self.data));
        }
    }

    /// At least `want` bytes (within the limit) of room for the next read.
    fn reserve(&mut self, want: usize) {
        let want = want.min(self.limit);
        if self.data.is_empty() && want <= FIRST_READ && self.limit >= FIRST_READ {
            self.data = buffers::input();
        } else if self.data.len() < want {
            self.data.resize(want, 0);
        }
    }

    /// Reads once into the free space (moving unread bytes to the front, or growing, first).
    async fn fill<S: AsyncRead + Unpin>(&mut self, io: &mut S) -> io::Result<usize> {
        if self.end == self.data.len() {
            if self.start > 0 {
                self.data.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            } else {
                let grown = (self.data.len() * 2).max(FIRST_READ).min(self.limit);
                self.reserve(grown);
            }
        }
        let n = io.read(&mut self.data[self.end..]).await?;
        self.end += n;
        Ok(n)
    }
}

impl Drop for InBuf {
    fn drop(&mut self) {
        buffers::recycle_input(std::mem::take(&mut self.data));
    }
}

/// What to do with the connection after a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    KeepAlive,
    /// Stop reading; drain briefly and close.
    Close,
    /// The connection is unusable (write failed, tunnel ended): drop it.
    Drop,
}

/// Per-request accounting for the router log.
struct Tally {
    status: u16,
    bytes_in: u64,
    bytes_out: u64,
    /// Index of the app in the snapshot the request was routed with.
    app: Option<usize>,
    backend: Option<SocketAddr>,
}

enum HeadOutcome {
    Head {
        head: Box<RequestHead>,
        started: Instant,
        bytes: u64,
    },
    Refused {
        reject: Reject,
        started: Instant,
        bytes: u64,
    },
    Closed,
}

/// Why a request body did not reach the backend whole.
enum BodyFailure {
    /// The client's fault: answer with this status (400, 408, 413) and close.
    Client(u16, &'static str),
    /// The client went away.
    ClientGone,
    /// Writing to the backend failed: 502 and close.
    Backend,
}

/// Why a response did not reach the client whole.
enum RelayFailure {
    /// The backend closed the connection before sending one byte of a response.
    Stale,
    /// No usable head from the backend: answer 502/504.
    Head(u16, &'static str),
    /// Failed after the head was sent: the connection can only be dropped.
    Broken,
}

/// How a connection waits for its client's next request while idle.
pub(crate) trait Idle {
    /// Resolves once bytes (or the end of the stream) can be read: until then an idle
    /// keep-alive connection holds no input buffer, as nginx's do.
    fn wait_readable(&self) -> impl Future<Output = io::Result<()>> + Send;
}

impl Idle for TcpStream {
    async fn wait_readable(&self) -> io::Result<()> {
        // The poll form uses the stream's own reader slot; `readable()` would queue a waiter
        // in the shared list of the socket's registration (a lock per request).
        std::future::poll_fn(|cx| self.poll_read_ready(cx)).await
    }
}

impl<T: Sync> Idle for tokio_rustls::server::TlsStream<T> {
    /// rustls may already hold decrypted bytes of the next request: read at once.
    async fn wait_readable(&self) -> io::Result<()> {
        Ok(())
    }
}

pub(crate) struct Conn<S> {
    io: S,
    buf: InBuf,
    peer: SocketAddr,
    local_port: u16,
    proto: &'static str,
    /// The SNI name of a TLS connection.
    sni: Option<String>,
    shared: Arc<Shared>,
}

impl<S: AsyncRead + AsyncWrite + Unpin + Idle> Conn<S> {
    pub(crate) fn new(
        io: S,
        peer: SocketAddr,
        local_port: u16,
        proto: &'static str,
        shared: Arc<Shared>,
    ) -> Self {
        Conn {
            io,
            buf: InBuf::new(MIN_BUFFER),
            peer,
            local_port,
            proto,
            sni: None,
            shared,
        }
    }

    /// A TLS connection whose client asked for `sni`: its requests must route to that app.
    pub(crate) fn with_sni(mut self, sni: Option<String>) -> Self {
        self.proto = "https";
        self.sni = sni;
        self
    }

    /// Serves requests until the connection ends. `accepted` starts the first head's deadline.
    pub(crate) async fn run(mut self, accepted: Instant) {
        let mut first = Some(accepted);
        let mut snap = self.shared.snapshot();
        loop {
            if let Some(latest) = self.shared.latest(&snap) {
                snap = latest;
            }
            let s = &snap.settings;
            self.buf.set_limit(head_capacity(&s.limits).max(MIN_BUFFER));
            self.buf.release();
            let next = match self.read_head(s, first.take()).await {
                HeadOutcome::Closed => return,
                HeadOutcome::Refused {
                    reject,
                    started,
                    bytes,
                } => {
                    let id = new_request_id();
                    let mut tally = Tally::new(bytes);
                    let page = pages::error_response(reject.status, &id, true, false);
                    tally.status = reject.status;
                    let _ = self.send(&page, s, &mut tally).await;
                    tracing::debug!(client = %self.peer, status = reject.status, reason = reject.reason, "request refused");
                    self.log(&tally, None, "-", "-", started, &id);
                    Next::Close
                }
                HeadOutcome::Head {
                    mut head,
                    started,
                    bytes,
                } => {
                    // Draining: this response is the connection's last.
                    if self.shared.is_draining() {
                        head.keep_alive = false;
                    }
                    // The routes in force when the head arrived, not when the wait began.
                    let latest = self.shared.latest(&snap);
                    let snap = latest.as_ref().unwrap_or(&snap);
                    // Boxed: the exchange's state (a large future) exists only while a request
                    // is in progress, not in every idle connection's task.
                    Box::pin(self.exchange(snap, &head, started, bytes)).await
                }
            };
            match next {
                Next::KeepAlive => continue,
                Next::Close => {
                    self.linger().await;
                    return;
                }
                Next::Drop => return,
            }
        }
    }

    async fn read_head(&mut self, s: &Settings, accepted: Option<Instant>) -> HeadOutcome {
        let mut started = accepted;
        let mut bytes = 0u64;
        let mut draining = self.shared.draining();
        loop {
            if started.is_none() && !self.buf.is_empty() {
                started = Some(Instant::now());
            }
            match scan_head(self.buf.filled(), &s.limits) {
                Ok(Scan::Complete { skip, len }) => {
                    self.buf.consume(skip);
                    let parsed = parse_request(&self.buf.filled()[..len], &s.limits);
                    self.buf.consume(len);
                    let started = started.unwrap_or_else(Instant::now);
                    bytes += (skip + len) as u64;
                    return match parsed {
                        Ok(head) => HeadOutcome::Head {
                            head: Box::new(head),
                            started,
                            bytes,
                        },
                        Err(reject) => HeadOutcome::Refused {
                            reject,
                            started,
                            bytes,
                        },
                    };
                }
                Ok(Scan::Partial { skip }) => {
                    self.buf.consume(skip);
                    bytes += skip as u64;
                }
                Err(reject) => {
                    return HeadOutcome::Refused {
                        reject,
                        started: started.unwrap_or_else(Instant::now),
                        bytes: bytes + self.buf.filled().len() as u64,
                    };
                }
            }
            if self.buf.is_full() {
                return HeadOutcome::Refused {
                    reject: Reject {
                        status: 431,
                        reason: "head larger than the buffer",
                    },
                    started: started.unwrap_or_else(Instant::now),
                    bytes: bytes + self.buf.filled().len() as u64,
                };
            }
            let deadline = match started {
                Some(t) => t + s.header_timeout,
                None => Instant::now() + s.keepalive_timeout,
            };
            let idle = started.is_none() && self.buf.is_empty();
            let (io, buf) = (&mut self.io, &mut self.buf);
            let fill = timeout_at(deadline.into(), async move {
                if idle {
                    io.wait_readable().await?;
                }
                buf.fill(io).await
            });
            let filled = if started.is_none() {
                // Idle between requests: a drain closes the connection now.
                let drained = tokio::select! {
                    filled = fill => Some(filled),
                    _ = draining.wait_for(|d| *d) => None,
                };
                match drained {
                    Some(filled) => filled,
                    // Unless a request already arrived (sent before the client could know):
                    // that one is served, with `Connection: close`.
                    None => match tokio::time::timeout(Duration::ZERO, self.buf.fill(&mut self.io))
                        .await
                    {
                        Ok(Ok(n)) if n > 0 => Ok(Ok(n)),
                        _ => return HeadOutcome::Closed,
                    },
                }
            } else {
                fill.await
            };
            match filled {
                Ok(Ok(n)) if n > 0 => {}
                Ok(_) => return HeadOutcome::Closed,
                Err(_) if self.buf.is_empty() => return HeadOutcome::Closed,
                Err(_) => {
                    return HeadOutcome::Refused {
                        reject: Reject {
                            status: 408,
                            reason: "head not received in time",
                        },
                        started: started.unwrap_or_else(Instant::now),
                        bytes: bytes + self.buf.filled().len() as u64,
                    };
                }
            }
        }
    }

    /// Answers one request; logs it.
    async fn exchange(
        &mut self,
        snap: &Snapshot,
        head: &RequestHead,
        started: Instant,
        head_bytes: u64,
    ) -> Next {
        let id = head.request_id.clone().unwrap_or_else(new_request_id);
        let mut tally = Tally::new(head_bytes);
        let next = self.route(snap, head, &id, &mut tally).await;
        let app = tally.app.and_then(|i| snap.apps.get(i));
        let app = app.map(|a| a.name.as_str());
        self.log(&tally, app, &head.method, &head.target, started, &id);
        next
    }

    async fn route(
        &mut self,
        snap: &Snapshot,
        head: &RequestHead,
        id: &str,
        tally: &mut Tally,
    ) -> Next {
        let s = &snap.settings;
        // An early answer leaves any body unread: then the connection closes.
        let close_early = !head.keep_alive || !head.body.is_empty();
        let Some((index, app)) = snap
            .routes
            .lookup(&head.host)
            .and_then(|&i| Some((i, snap.apps.get(i)?)))
        else {
            return self.answer(404, id, close_early, head, s, tally).await;
        };
        tally.app = Some(index);
        if self.proto == "https" {
            let sni_app = self
                .sni
                .as_deref()
                .and_then(|name| snap.sites.lookup(name))
                .map(|site| site.app);
            if sni_app != Some(index) {
                return self.answer(421, id, close_early, head, s, tally).await;
            }
        }
        // A passthrough app's backends speak TLS only: plain HTTP is sent there.
        let to_https = app.force_https || app.tls == Some(crate::config::TlsMode::Passthrough);
        if self.proto == "http" && to_https {
            let host = head
                .authority
                .rsplit_once(':')
                .filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit()))
                .map_or(head.authority.as_str(), |(h, _)| h);
            let port = if s.https_port == 443 {
                String::new()
            } else {
                format!(":{}", s.https_port)
            };
            let path = if head.target == "*" {
                "/"
            } else {
                &head.target
            };
            let page = pages::redirect(&format!("https://{host}{port}{path}"), id, close_early);
            tally.status = 301;
            return match self.send(&page, s, tally).await {
                Ok(()) if close_early => Next::Close,
                Ok(()) => Next::KeepAlive,
                Err(_) => Next::Drop,
            };
        }
        let candidates = upstream::ordered(
            app,
            &self.shared.health,
            &self.shared.load,
            s.balance,
            Instant::now(),
        );
        if candidates.is_empty() {
            return self.answer(503, id, close_early, head, s, tally).await;
        }
        // What of a chunked body has already arrived is checked before any byte goes to a
        // backend, so a malformed body that arrived with its head never reaches one.
        if head.body == BodyFraming::Chunked {
            let mut probe = ChunkedDecoder::new(s.limits.max_body);
            let mut input = self.buf.filled();
            loop {
                match probe.decode(input) {
                    Err(e) => {
                        let status = chunk_status(e);
                        return self.answer(status, id, true, head, s, tally).await;
                    }
                    Ok((_, Step::Done | Step::NeedMore)) => break,
                    Ok((used, Step::Data(_))) => input = &input[used..],
                }
            }
        }

        let client = ClientInfo {
            addr: self.peer.ip(),
            proto: self.proto,
            port: self.local_port,
            trusted: s.is_trusted(self.peer.ip()),
        };
        // A tunnel never goes back to the pool, so its request asks for no reuse either.
        let reuse = s.pool.enabled() && head.upgrade.is_none();
        let backend_head = forward::backend_head_for(head, &client, id, reuse);
        let pool = reuse.then_some((self.shared.pool(), &s.pool));
        let mut sent = upstream::send(
            &candidates,
            &backend_head,
            s.connect_timeout,
            s.eject_for,
            &self.shared.health,
            pool,
        )
        .await;
        // Without a body nothing was consumed from the client, so the request can be sent again.
        let resendable = matches!(head.body, BodyFraming::Empty | BodyFraming::Length(0));
        let mut retried = false;
        let mut continued = false;
        loop {
            let Sent {
                stream: mut backend,
                addr,
                reused,
            } = match sent {
                Ok(ok) => ok,
                Err((e, last)) => {
                    tally.backend = last;
                    let status = match e {
                        ConnectError::TimedOut => 504,
                        ConnectError::Failed(_) => 502,
                    };
                    return self.answer(status, id, close_early, head, s, tally).await;
                }
            };
            tally.backend = Some(addr);
            // Only least-connections reads the counts: round-robin skips the shared update.
            let _in_flight =
                (s.balance == Balance::LeastConnections).then(|| self.shared.load.track(addr));

            if head.expect_continue && !continued {
                continued = true;
                if self.send(pages::CONTINUE, s, tally).await.is_err() {
                    return Next::Drop;
                }
            }
            match self.pump_body(&mut backend, head.body, s, tally).await {
                Ok(()) => {}
                Err(BodyFailure::ClientGone) => {
                    tally.status = 499;
                    return Next::Drop;
                }
                Err(BodyFailure::Client(status, reason)) => {
                    tracing::debug!(client = %self.peer, status, reason, "request body refused");
                    drop(backend);
                    return self.answer(status, id, true, head, s, tally).await;
                }
                Err(BodyFailure::Backend) => {
                    return self.answer(502, id, true, head, s, tally).await;
                }
            }

            let failure = match self.relay_response(&mut backend, head, s, tally).await {
                Ok((next, reusable)) => {
                    if reuse && reusable {
                        self.shared
                            .pool()
                            .put(addr, backend, Instant::now(), &s.pool);
                    }
                    return next;
                }
                Err(f) => f,
            };
            match failure {
                // The backend closed an idle connection as we reused it: not one byte of a
                // response came, so it never answered this request. Once, on a fresh
                // connection (the same backend first).
                RelayFailure::Stale if reused && resendable && !retried => {
                    tracing::debug!(backend = %addr, "pooled backend connection was closed; resending on a fresh one");
                    retried = true;
                    let order: Vec<SocketAddr> = std::iter::once(addr)
                        .chain(candidates.iter().copied().filter(|&c| c != addr))
                        .collect();
                    sent = upstream::send(
                        &order,
                        &backend_head,
                        s.connect_timeout,
                        s.eject_for,
                        &self.shared.health,
                        None,
                    )
                    .await;
                }
                RelayFailure::Stale => {
                    tracing::warn!(backend = %addr, reused, "backend closed without a response");
                    return self.answer(502, id, !head.keep_alive, head, s, tally).await;
                }
                RelayFailure::Head(status, reason) => {
                    tracing::warn!(backend = %addr, status, reason, "bad backend response");
                    return self
                        .answer(status, id, !head.keep_alive, head, s, tally)
                        .await;
                }
                RelayFailure::Broken => return Next::Drop,
            }
        }
    }

    /// Copies the request body to the backend, re-encoding chunked bodies.
    async fn pump_body(
        &mut self,
        backend: &mut TcpStream,
        framing: BodyFraming,
        s: &Settings,
        tally: &mut Tally,
    ) -> Result<(), BodyFailure> {
        let started = Instant::now();
        let mut received = 0u64;
        match framing {
            BodyFraming::Empty => return Ok(()),
            BodyFraming::Length(n) => {
                let mut left = n;
                while left > 0 {
                    if self.buf.is_empty() {
                        self.read_body(started, received, s).await?;
                    }
                    let input = self.buf.filled();
                    let take = usize::try_from(left).unwrap_or(usize::MAX).min(input.len());
                    write_backend(backend, &input[..take], s).await?;
                    self.buf.consume(take);
                    left -= take as u64;
                    received += take as u64;
                    tally.bytes_in += take as u64;
                }
            }
            BodyFraming::Chunked => {
                let mut out = Vec::with_capacity(MIN_BUFFER + 32);
                let mut decoder = ChunkedDecoder::new(s.limits.max_body);
                loop {
                    if self.buf.is_empty() {
                        if !out.is_empty() {
                            write_backend(backend, &out, s).await?;
                            out.clear();
                        }
                        self.read_body(started, received, s).await?;
                    }
                    let input = self.buf.filled();
                    let (used, step) = decoder
                        .decode(input)
                        .map_err(|e| BodyFailure::Client(chunk_status(e), "chunked body"))?;
                    match &step {
                        Step::Data(range) => {
                            out.extend_from_slice(chunked::chunk_header(range.len()).as_bytes());
                            out.extend_from_slice(&input[range.clone()]);
                            out.extend_from_slice(chunked::CHUNK_END);
                        }
                        Step::NeedMore => {}
                        Step::Done => out.extend_from_slice(chunked::LAST_CHUNK),
                    }
                    self.buf.consume(used);
                    received += used as u64;
                    tally.bytes_in += used as u64;
                    if step == Step::Done {
                        write_backend(backend, &out, s).await?;
                        break;
                    }
                    if out.len() >= MIN_BUFFER {
                        write_backend(backend, &out, s).await?;
                        out.clear();
                    }
                }
            }
        }
        Ok(())
    }

    /// One read of body bytes within the body deadline: `body_timeout` of slack plus one
    /// second per `body_min_rate` bytes received so far (or `body_timeout` per read if the
    /// rate is 0).
    async fn read_body(
        &mut self,
        started: Instant,
        received: u64,
        s: &Settings,
    ) -> Result<(), BodyFailure> {
        let deadline = if s.body_min_rate == 0 {
            Instant::now() + s.body_timeout
        } else {
            let earned = Duration::from_secs_f64(received as f64 / s.body_min_rate as f64);
            started + s.body_timeout + earned
        };
        self.buf.reserve(MIN_BUFFER);
        match timeout_at(deadline.into(), self.buf.fill(&mut self.io)).await {
            Ok(Ok(n)) if n > 0 => Ok(()),
            Ok(_) => Err(BodyFailure::ClientGone),
            Err(_) => Err(BodyFailure::Client(408, "request body too slow")),
        }
    }

    /// Reads the backend's response head and streams the response to the client. Also says
    /// whether the backend connection can serve another request: the response was read to its
    /// framed end with nothing after it, and the backend did not ask to close.
    async fn relay_response(
        &mut self,
        backend: &mut TcpStream,
        head: &RequestHead,
        s: &Settings,
        tally: &mut Tally,
    ) -> Result<(Next, bool), RelayFailure> {
        let mut bbuf = Buf::with_capacity(MIN_BUFFER);
        let mut interim = false;
        let deadline = Instant::now() + s.response_timeout;
        let (resp, len) = loop {
            match response::parse_response(&bbuf, head.is_head()) {
                Ok(Some((resp, len)))
                    if (100..200).contains(&resp.status) && resp.status != 101 =>
                {
                    // Interim responses (100 Continue, 103 Early Hints) are not passed on.
                    bbuf.drain(..len);
                    interim = true;
                    continue;
                }
                Ok(Some(found)) => break found,
                Ok(None) => {}
                Err(BadResponse::TooLarge) => {
                    return Err(RelayFailure::Head(502, "response head too large"));
                }
                Err(_) => return Err(RelayFailure::Head(502, "malformed response head")),
            }
            // parse_response refuses heads past MAX_RESPONSE_HEAD, so this stays bounded.
            bbuf.reserve(MIN_BUFFER);
            match timeout_at(deadline.into(), backend.read_buf(&mut *bbuf)).await {
                Ok(Ok(0)) | Ok(Err(_)) if bbuf.is_empty() && !interim => {
                    return Err(RelayFailure::Stale);
                }
                Ok(Ok(0)) | Ok(Err(_)) => {
                    return Err(RelayFailure::Head(502, "backend closed without a response"));
                }
                Ok(Ok(_)) => {}
                Err(_) => return Err(RelayFailure::Head(504, "backend response timed out")),
            }
        };
        bbuf.drain(..len);
        tally.status = resp.status;

        if resp.status == 101 {
            if head.upgrade.is_none() {
                return Err(RelayFailure::Head(502, "101 without an upgrade request"));
            }
            return Ok((
                self.tunnel(backend, &resp, bbuf.into_vec(), s, tally)
                    .await?,
                false,
            ));
        }

        let framing = client_framing(resp.body, head.version);
        // A drain that began while the backend worked makes this response the last as well.
        let keep_alive =
            head.keep_alive && framing != ClientFraming::UntilClose && !self.shared.is_draining();
        let out = response::client_head(&resp, framing, keep_alive, &[]);
        let clean = self
            .relay_body(backend, resp.body, framing, out, bbuf, s, tally)
            .await?;
        let reusable = clean && resp.keep_alive && resp.body != ResponseBody::UntilClose;
        let next = if keep_alive {
            Next::KeepAlive
        } else {
            Next::Close
        };
        Ok((next, reusable))
    }

    /// Streams the body after `out` (the response head, not yet sent): whatever of the body
    /// already arrived with the head goes out in the same write; the head is sent on its own
    /// only before waiting on the backend for more.
    #[allow(clippy::too_many_arguments)]
    async fn relay_body(
        &mut self,
        backend: &mut TcpStream,
        body: ResponseBody,
        framing: ClientFraming,
        mut out: Vec<u8>,
        mut pending: Buf,
        s: &Settings,
        tally: &mut Tally,
    ) -> Result<bool, RelayFailure> {
        let chunk_out = framing == ClientFraming::Chunked;
        // Allocated at the first read from the backend: most small bodies come with the head.
        let mut read = Vec::new();
        // Bytes of the body so far in `pending` (the rest of the first read), then reads.
        let mut decoder = ChunkedDecoder::new(u64::MAX);
        let mut left = match body {
            ResponseBody::None => {
                self.send(&out, s, tally)
                    .await
                    .map_err(|_| RelayFailure::Broken)?;
                // Bytes after a body-less response mean the backend's framing cannot be trusted.
                return Ok(pending.is_empty());
            }
            ResponseBody::Length(n) => n,
            _ => u64::MAX,
        };
        loop {
            let fresh = if pending.is_empty() {
                if left == 0 {
                    break;
                }
                // The client sees what we have before we wait on the backend.
                if !out.is_empty() {
                    self.send(&out, s, tally)
                        .await
                        .map_err(|_| RelayFailure::Broken)?;
                    out.clear();
                }
                if read.is_empty() {
                    read = vec![0u8; MIN_BUFFER];
                }
                let n =
                    match tokio::time::timeout(s.response_timeout, backend.read(&mut read)).await {
                        Ok(Ok(n)) => n,
                        _ => return Err(RelayFailure::Broken),
                    };
                if n == 0 {
                    if body == ResponseBody::UntilClose {
                        break;
                    }
                    // The backend ended a sized or chunked body early.
                    return Err(RelayFailure::Broken);
                }
                Some(n)
            } else {
                None
            };
            let input: &[u8] = match fresh {
                Some(n) => &read[..n],
                None => &pending,
            };
            let mut finished = false;
            let mut broken = false;
            let mut extra = false;
            match body {
                ResponseBody::Length(_) => {
                    let take = usize::try_from(left).unwrap_or(usize::MAX).min(input.len());
                    out.extend_from_slice(&input[..take]);
                    left -= take as u64;
                    finished = left == 0;
                    extra = take < input.len();
                }
                ResponseBody::Chunked => {
                    let mut rest = input;
                    while !rest.is_empty() {
                        let Ok((used, step)) = decoder.decode(rest) else {
                            // Pass on the valid data before it, then drop the connection.
                            broken = true;
                            break;
                        };
                        match step {
                            Step::Data(range) => push_piece(&mut out, &rest[range], chunk_out),
                            Step::NeedMore => {}
                            Step::Done => {
                                finished = true;
                                extra = used < rest.len();
                                break;
                            }
                        }
                        rest = &rest[used..];
                    }
                }
                ResponseBody::UntilClose => push_piece(&mut out, input, chunk_out),
                ResponseBody::None => {}
            }
            if finished && chunk_out {
                out.extend_from_slice(chunked::LAST_CHUNK);
            }
            // Bytes after the end of a sized or chunked body are dropped with the connection.
            pending.clear();
            if !out.is_empty() {
                self.send(&out, s, tally)
                    .await
                    .map_err(|_| RelayFailure::Broken)?;
                out.clear();
            }
            if broken {
                return Err(RelayFailure::Broken);
            }
            if finished {
                return Ok(!extra);
            }
        }
        if chunk_out {
            out.extend_from_slice(chunked::LAST_CHUNK);
        }
        if !out.is_empty() {
            self.send(&out, s, tally)
                .await
                .map_err(|_| RelayFailure::Broken)?;
        }
        // Ended by the backend's close (or an empty sized body): nothing to reuse or to trust.
        Ok(body != ResponseBody::UntilClose)
    }

    /// After a 101: the response head, then bytes both ways until either side closes.
    async fn tunnel(
        &mut self,
        backend: &mut TcpStream,
        resp: &ResponseHead,
        pending: Vec<u8>,
        s: &Settings,
        tally: &mut Tally,
    ) -> Result<Next, RelayFailure> {
        let out = response::client_head(resp, ClientFraming::None, true, &[]);
        self.send(&out, s, tally)
            .await
            .map_err(|_| RelayFailure::Broken)?;
        if !pending.is_empty() {
            self.send(&pending, s, tally)
                .await
                .map_err(|_| RelayFailure::Broken)?;
        }
        if !self.buf.is_empty() {
            let early = self.buf.filled().to_vec();
            self.buf.consume(early.len());
            tally.bytes_in += early.len() as u64;
            backend
                .write_all(&early)
                .await
                .map_err(|_| RelayFailure::Broken)?;
        }
        let copied = super::tunnel::run(
            &mut self.io,
            backend,
            s.tunnel_idle_timeout,
            super::tunnel::Close::Either,
        )
        .await;
        tally.bytes_in += copied.up;
        tally.bytes_out += copied.down;
        Ok(Next::Drop)
    }

    /// Sends one of our own pages.
    async fn answer(
        &mut self,
        status: u16,
        id: &str,
        close: bool,
        head: &RequestHead,
        s: &Settings,
        tally: &mut Tally,
    ) -> Next {
        let page = pages::error_response(status, id, close, head.is_head());
        tally.status = status;
        match self.send(&page, s, tally).await {
            Err(_) => Next::Drop,
            Ok(()) if close => Next::Close,
            Ok(()) => Next::KeepAlive,
        }
    }

    /// Writes to the client within the write timeout.
    async fn send(&mut self, bytes: &[u8], s: &Settings, tally: &mut Tally) -> io::Result<()> {
        let write = async {
            self.io.write_all(bytes).await?;
            self.io.flush().await
        };
        match tokio::time::timeout(s.write_timeout, write).await {
            Ok(Ok(())) => {
                tally.bytes_out += bytes.len() as u64;
                Ok(())
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Err(io::ErrorKind::TimedOut.into()),
        }
    }

    /// Half-closes and discards what the client still sends, for at most [`LINGER`].
    async fn linger(&mut self) {
        let _ = self.io.shutdown().await;
        let deadline = Instant::now() + LINGER;
        // On the heap: an array here would sit in every connection's future, idle or not.
        let mut sink = vec![0u8; 4096];
        while let Ok(Ok(n)) = timeout_at(deadline.into(), self.io.read(&mut sink)).await {
            if n == 0 {
                break;
            }
        }
    }

    fn log(
        &self,
        tally: &Tally,
        app: Option<&str>,
        method: &str,
        path: &str,
        started: Instant,
        id: &str,
    ) {
        self.shared.finished(&Record {
            time: SystemTime::now(),
            app,
            method,
            path,
            status: tally.status,
            bytes_in: tally.bytes_in,
            bytes_out: tally.bytes_out,
            duration: started.elapsed(),
            client: self.peer,
            backend: tally.backend,
            request_id: id,
        });
    }
}

impl Tally {
    fn new(bytes_in: u64) -> Self {
        Tally {
            status: 0,
            bytes_in,
            bytes_out: 0,
            app: None,
            backend: None,
        }
    }
}

fn push_piece(out: &mut Vec<u8>, data: &[u8], chunk: bool) {
    if data.is_empty() {
        return;
    }
    if chunk {
        out.extend_from_slice(chunked::chunk_header(data.len()).as_bytes());
        out.extend_from_slice(data);
        out.extend_from_slice(chunked::CHUNK_END);
    } else {
        out.extend_from_slice(data);
    }
}

fn chunk_status(e: ChunkError) -> u16 {
    match e {
        ChunkError::TooLarge => 413,
        _ => 400,
    }
}

async fn write_backend(
    backend: &mut TcpStream,
    bytes: &[u8],
    s: &Settings,
) -> Result<(), BodyFailure> {
    match tokio::time::timeout(s.response_timeout, backend.write_all(bytes)).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(BodyFailure::Backend),
    }
}
