//! HTTP/2 on terminated TLS (ALPN `h2`): hyper's server runs the connection, and every stream is
//! checked, routed and forwarded to a backend over HTTP/1.1 the way the HTTP/1.1 path does it.
//!
//! Per stream:
//!
//! - **Limits**, with HTTP/1.1's definitions applied to the regular header fields (pseudo-header
//!   fields excluded): a field's *line* is `name: value` (`name.len() + 2 + value.len()`), the
//!   *section* is every line plus 2 bytes for its CRLF. One line above
//!   `max_header_line_bytes` or a section above `max_header_section_bytes`: 431; more than 256
//!   fields: 431; `method SP :path SP HTTP/1.1` above `max_header_line_bytes`: 414. hyper's
//!   `SETTINGS_MAX_HEADER_LIST_SIZE` is set above what these limits allow in RFC 9113's own
//!   accounting (32 bytes per field), so the check here is the one that answers; a list beyond
//!   even that gets hyper's bare 431.
//! - **Routing** by `:authority` (or `Host` when there is none; a `Host` beside `:authority` is
//!   ignored and the backend gets `Host: <:authority>`): unknown name 404, a name of another app
//!   than the connection's SNI 421, no live backend 503.
//! - **Body**: a `content-length` above `max_body_bytes` is 413 before any backend is
//!   contacted; a body without one is forwarded chunked and counted as it streams, and when it
//!   passes `max_body_bytes` the backend connection is dropped mid-request and the client gets
//!   413. Reads follow the HTTP/1.1 body deadline (`body_read_timeout_secs` plus
//!   `body_min_bytes_per_sec`): 408. Bodies stream in pieces under HTTP/2 flow control, never
//!   buffered whole.
//! - **Forwarding**: the backend request is the one [`forward::backend_head`] writes for the
//!   equivalent HTTP/1.1 request (X-Forwarded-For/Proto/Port, X-Request-ID, Host; `cookie`
//!   crumbs joined with `; `), sent with [`upstream::connect_and_send`] (same retries and
//!   ejection); backend failures are 502/503/504 with the same error pages and request id; the
//!   response head is parsed by [`response::parse_response`] (interim 1xx dropped, hop-by-hop
//!   fields removed) and its body relayed as it arrives. One router log line per stream, written
//!   when its response has been relayed.
//!
//! Per connection: at most [`MAX_CONCURRENT_STREAMS`] streams at once; a connection whose
//! first stream has not begun `header_read_timeout_secs` after accept (as for HTTP/1.1's first
//! head), or with no stream open for `keepalive_timeout_secs` later, gets a GOAWAY (open
//! streams would finish) and is dropped `client_write_timeout_secs` after it (this also bounds
//! a header block trickled in CONTINUATION frames, which hyper does not time); HTTP/2 PINGs every `keepalive_timeout_secs`
//! detect dead peers (no answer within `client_write_timeout_secs`: closed); a response the
//! client stops reading is abandoned (stream reset) when one piece waits longer than
//! `client_write_timeout_secs`. Memory: hyper/h2 buffers at most [`SEND_BUFFER`] of response
//! data per stream and the flow-control windows ([`STREAM_WINDOW`], [`CONNECTION_WINDOW`]) of
//! request data; each stream adds one 16 KiB backend read buffer and at most one 64 KiB response
//! head.

use std::{
    convert::Infallible,
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant, SystemTime},
};

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Request, Response, header, request::Parts};
use http_body_util::{BodyExt, Empty, Full, combinators::BoxBody};
use hyper::{
    body::{Body, Frame, Incoming},
    service::service_fn,
};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::TcpStream,
    sync::mpsc,
    time::timeout_at,
};

use super::{
    chunked::{self, ChunkedDecoder, Step},
    forward::{self, ClientInfo},
    framing::{
        BodyFraming, Fields, HeadLimits, MAX_FIELDS, Reject, RequestHead, Version, parse_authority,
        parse_content_length, valid_request_id,
    },
    log::Record,
    pages,
    request_id::new_request_id,
    response::{self, BadResponse, ResponseBody},
    state::{Settings, Shared, Snapshot},
    upstream::{self, ConnectError},
};

/// Streams open at once on one connection.
pub const MAX_CONCURRENT_STREAMS: u32 = 128;
/// Request data a client may send on one stream before the proxy has forwarded it.
pub const STREAM_WINDOW: u32 = 256 * 1024;
/// The same over all streams of a connection.
pub const CONNECTION_WINDOW: u32 = 1024 * 1024;
/// Response data hyper buffers per stream.
pub const SEND_BUFFER: usize = 64 * 1024;

/// Size of one backend read.
const READ_SIZE: usize = 16 * 1024;

type ResponseBodyBox = BoxBody<Bytes, io::Error>;

/// Bytes of a header list in RFC 9113's accounting (name + value + 32 per field) that the
/// proxy's own limits can let through, pseudo-header fields included.
pub fn header_list_size(limits: &HeadLimits) -> u32 {
    let pseudo = 4 * 32 + limits.max_line;
    let size = limits.max_section + pseudo + 32 * (MAX_FIELDS + 1);
    u32::try_from(size).unwrap_or(u32::MAX)
}

/// Checks one HTTP/2 request head and gives its HTTP/1.1 equivalent (see the module docs).
/// `end_stream`: the HEADERS frame ended the stream (no body at all).
pub fn request_head(
    parts: &Parts,
    end_stream: bool,
    limits: &HeadLimits,
) -> Result<RequestHead, Reject> {
    let too_large = |reason| Reject {
        status: 431,
        reason,
    };
    let bad = |reason| Reject {
        status: 400,
        reason,
    };
    if parts.headers.len() > MAX_FIELDS {
        return Err(too_large("too many header fields"));
    }
    let mut section = 0usize;
    for (name, value) in &parts.headers {
        let line = name.as_str().len() + 2 + value.len();
        if line > limits.max_line {
            return Err(too_large("header line too long"));
        }
        section += line + 2;
    }
    if section > limits.max_section {
        return Err(too_large("header section too large"));
    }

    let method = parts.method.as_str();
    let target = match parts.uri.path_and_query().map(|p| p.as_str()) {
        Some(t) if t.starts_with('/') => t,
        Some("*") if parts.method == Method::OPTIONS => "*",
        _ => return Err(bad("no :path")),
    };
    if method.len() + 1 + target.len() + " HTTP/1.1".len() > limits.max_line {
        return Err(Reject {
            status: 414,
            reason: "request line too long",
        });
    }
    let (authority, host) = match parts.uri.authority() {
        Some(a) => parse_authority(a.as_str().as_bytes())?,
        None => {
            let mut hosts = parts.headers.get_all(header::HOST).iter();
            match (hosts.next(), hosts.next()) {
                (Some(h), None) => parse_authority(h.as_bytes())?,
                (None, _) => return Err(bad("missing :authority and Host")),
                (Some(_), Some(_)) => return Err(bad("duplicate Host")),
            }
        }
    };

    let mut lengths = parts.headers.get_all(header::CONTENT_LENGTH).iter();
    let body = match (lengths.next(), lengths.next()) {
        (None, _) if end_stream => BodyFraming::Empty,
        (None, _) => BodyFraming::Chunked,
        (Some(v), None) => BodyFraming::Length(parse_content_length(v.as_bytes())?),
        (Some(_), Some(_)) => return Err(bad("duplicate Content-Length")),
    };
    if let BodyFraming::Length(n) = body
        && n > limits.max_body
    {
        return Err(Reject {
            status: 413,
            reason: "Content-Length above max_body_bytes",
        });
    }

    let mut fields = Fields::with_capacity(parts.headers.len(), 0);
    let mut cookies: Vec<&[u8]> = Vec::new();
    for (name, value) in &parts.headers {
        match name.as_str() {
            "host" | "content-length" | "transfer-encoding" | "connection" | "keep-alive"
            | "proxy-connection" | "te" | "trailer" | "upgrade" | "expect" | "x-request-id" => {}
            "cookie" => cookies.push(value.as_bytes()),
            other => fields.push(other.as_bytes(), value.as_bytes()),
        }
    }
    // HTTP/2 splits cookies into crumbs; HTTP/1.1 wants one field (RFC 9113 §8.2.3).
    if !cookies.is_empty() {
        fields.push(b"cookie", &cookies.join(&b"; "[..]));
    }
    let mut ids = parts.headers.get_all("x-request-id").iter();
    let request_id = match (ids.next(), ids.next()) {
        (Some(v), None) if valid_request_id(v.as_bytes()) => v.to_str().ok().map(str::to_owned),
        _ => None,
    };
    Ok(RequestHead {
        method: method.to_owned(),
        target: target.to_owned(),
        version: Version::Http11,
        authority,
        host,
        fields,
        body,
        keep_alive: true,
        expect_continue: false,
        upgrade: None,
        request_id,
    })
}

/// One HTTP/2 connection's shared state.
struct ConnCtx {
    peer: SocketAddr,
    local_port: u16,
    sni: Option<String>,
    shared: Arc<Shared>,
    base: Instant,
    /// Milliseconds since `base` when a stream last began or ended.
    last: AtomicU64,
    active: AtomicUsize,
    /// Streams begun so far.
    streams: AtomicU64,
}

impl ConnCtx {
    fn touch(&self) {
        let ms = u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(ms, Ordering::Relaxed);
    }

    fn idle_since(&self) -> Instant {
        self.base + Duration::from_millis(self.last.load(Ordering::Relaxed))
    }
}

/// A stream in progress: counted while it lives.
struct Active(Arc<ConnCtx>);

impl Active {
    fn new(ctx: Arc<ConnCtx>) -> Active {
        ctx.active.fetch_add(1, Ordering::Relaxed);
        ctx.streams.fetch_add(1, Ordering::Relaxed);
        ctx.touch();
        Active(ctx)
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
        self.0.touch();
    }
}

/// Serves an HTTP/2 connection until it ends. `accepted`: when the TCP connection was
/// accepted; the first stream must begin within `header_read_timeout_secs` of it.
pub(crate) async fn serve<S>(
    io: S,
    peer: SocketAddr,
    local_port: u16,
    sni: Option<String>,
    shared: Arc<Shared>,
    accepted: Instant,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let s = shared.snapshot().settings.clone();
    let ctx = Arc::new(ConnCtx {
        peer,
        local_port,
        sni,
        shared,
        base: Instant::now(),
        last: AtomicU64::new(0),
        active: AtomicUsize::new(0),
        streams: AtomicU64::new(0),
    });
    // Until the first stream: the first-request deadline of HTTP/1.1; then keep-alive idle.
    let deadline = |ctx: &ConnCtx| {
        if ctx.streams.load(Ordering::Relaxed) == 0 {
            accepted + s.header_timeout
        } else {
            ctx.idle_since() + s.keepalive_timeout
        }
    };
    let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .max_header_list_size(header_list_size(&s.limits))
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_send_buf_size(SEND_BUFFER)
        .keep_alive_interval(s.keepalive_timeout)
        .keep_alive_timeout(s.write_timeout);
    let streams = ctx.clone();
    let service = service_fn(move |req| {
        let ctx = streams.clone();
        async move { Ok::<_, Infallible>(handle(req, ctx).await) }
    });
    let conn = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    let mut hard_stop: Option<Instant> = None;
    let mut draining = ctx.shared.draining();
    loop {
        let idle_end = deadline(&ctx);
        let wake =
            hard_stop.unwrap_or_else(|| idle_end.max(Instant::now() + Duration::from_secs(1)));
        tokio::select! {
            _ = conn.as_mut() => return,
            _ = tokio::time::sleep_until(wake.into()) => {}
            // A drain sends GOAWAY at once: streams in flight finish, no new ones start.
            _ = draining.wait_for(|d| *d), if hard_stop.is_none() => {}
        }
        let now = Instant::now();
        match hard_stop {
            Some(at) if now >= at => return,
            Some(_) => {}
            None if ctx.shared.is_draining() => {
                conn.as_mut().graceful_shutdown();
                // The daemon's drain_timeout bounds the streams still running.
                hard_stop = Some(now + Duration::from_secs(24 * 3600));
            }
            None => {
                if ctx.active.load(Ordering::Relaxed) == 0 && now >= deadline(&ctx) {
                    conn.as_mut().graceful_shutdown();
                    hard_stop = Some(now + s.write_timeout);
                }
            }
        }
    }
}

/// One stream from its head to its router log line.
struct Exchange {
    ctx: Arc<ConnCtx>,
    method: String,
    path: String,
    id: String,
    started: Instant,
    head_only: bool,
    status: u16,
    bytes_in: u64,
    bytes_out: u64,
    app: Option<String>,
    backend: Option<SocketAddr>,
    /// The request body while it has not been forwarded.
    request: Option<Incoming>,
    _active: Active,
}

impl Exchange {
    fn log(&self) {
        self.ctx.shared.finished(&Record {
            time: SystemTime::now(),
            app: self.app.as_deref(),
            method: &self.method,
            path: &self.path,
            status: self.status,
            bytes_in: self.bytes_in,
            bytes_out: self.bytes_out,
            duration: self.started.elapsed(),
            client: self.ctx.peer,
            backend: self.backend,
            request_id: &self.id,
        });
    }

    /// One of the proxy's error pages; logs the exchange.
    fn page(mut self, status: u16) -> Response<ResponseBodyBox> {
        let body = pages::error_body(status, &self.id);
        self.status = status;
        self.bytes_out = body.len() as u64 + 160;
        self.log();
        if let Some(request) = self.request.take()
            && !request.is_end_stream()
        {
            tokio::spawn(drain(request));
        }
        let length = body.len();
        let mut resp = Response::new(if self.head_only {
            empty()
        } else {
            full(body.into())
        });
        *resp.status_mut() =
            http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
        if let Ok(v) = HeaderValue::from_str(&self.id) {
            h.insert("x-request-id", v);
        }
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        resp
    }
}

fn empty() -> ResponseBodyBox {
    Empty::new().map_err(|never| match never {}).boxed()
}

fn full(bytes: Bytes) -> ResponseBodyBox {
    Full::new(bytes).map_err(|never| match never {}).boxed()
}

/// How long the rest of a refused request's body is read and discarded.
const LINGER: Duration = Duration::from_secs(2);
/// At most this much of it.
const LINGER_BYTES: u64 = 16 * 1024 * 1024;

/// Reads and discards what is left of a request body the proxy answered early, for at most
/// [`LINGER`] and [`LINGER_BYTES`], then drops it (which resets the stream if it is still
/// open). Dropping it at once would reset the stream before the answer is sent, and some
/// clients (curl 7.88) report a reset that arrives while they upload as an error, losing the
/// answer — the HTTP/2 counterpart of HTTP/1.1's lingering close.
async fn drain(mut body: Incoming) {
    let deadline = tokio::time::Instant::now() + LINGER;
    let mut seen = 0u64;
    while let Ok(Some(Ok(frame))) = tokio::time::timeout_at(deadline, body.frame()).await {
        seen += frame.data_ref().map_or(0, |d| d.len() as u64);
        if seen > LINGER_BYTES {
            break;
        }
    }
}

async fn handle(req: Request<Incoming>, ctx: Arc<ConnCtx>) -> Response<ResponseBodyBox> {
    let started = Instant::now();
    let active = Active::new(ctx.clone());
    let snap = ctx.shared.snapshot();
    let (parts, body) = req.into_parts();
    let head_bytes = parts.method.as_str().len()
        + parts.uri.path_and_query().map_or(0, |p| p.as_str().len())
        + 12
        + parts
            .headers
            .iter()
            .map(|(n, v)| n.as_str().len() + v.len() + 4)
            .sum::<usize>();
    let parsed = request_head(&parts, body.is_end_stream(), &snap.settings.limits);
    let client_id = parsed.as_ref().ok().and_then(|h| h.request_id.clone());
    let ex = Exchange {
        method: parts.method.as_str().to_owned(),
        path: parts
            .uri
            .path_and_query()
            .map_or_else(|| "-".to_owned(), |p| p.as_str().to_owned()),
        id: client_id.unwrap_or_else(new_request_id),
        started,
        head_only: parts.method == Method::HEAD,
        status: 0,
        bytes_in: head_bytes as u64,
        bytes_out: 0,
        app: None,
        backend: None,
        request: Some(body),
        ctx,
        _active: active,
    };
    match parsed {
        Err(reject) => {
            tracing::debug!(client = %ex.ctx.peer, status = reject.status, reason = reject.reason, "h2 request refused");
            ex.page(reject.status)
        }
        Ok(head) => proxy(ex, &snap, head).await,
    }
}

/// Why a request body did not reach the backend whole.
enum BodyFailure {
    Client(u16),
    ClientGone,
    Backend,
}

async fn proxy(mut ex: Exchange, snap: &Snapshot, head: RequestHead) -> Response<ResponseBodyBox> {
    let s = &snap.settings;
    let Some((index, app)) = snap
        .routes
        .lookup(&head.host)
        .and_then(|&i| Some((i, snap.apps.get(i)?)))
    else {
        return ex.page(404);
    };
    ex.app = Some(app.name.clone());
    let sni_app = ex
        .ctx
        .sni
        .as_deref()
        .and_then(|name| snap.sites.lookup(name))
        .map(|site| site.app);
    if sni_app != Some(index) {
        return ex.page(421);
    }
    let shared = ex.ctx.shared.clone();
    let candidates = upstream::candidates(app, &shared.health, Instant::now());
    if candidates.is_empty() {
        return ex.page(503);
    }
    let peer = ex.ctx.peer;
    let client = ClientInfo {
        addr: peer.ip(),
        proto: "https",
        port: ex.ctx.local_port,
        trusted: s.is_trusted(peer.ip()),
    };
    let backend_head = forward::backend_head(&head, &client, &ex.id);
    let (mut backend, addr) = match upstream::connect_and_send(
        &candidates,
        &backend_head,
        s.connect_timeout,
        s.eject_for,
        &shared.health,
    )
    .await
    {
        Ok(ok) => ok,
        Err((e, last)) => {
            ex.backend = last;
            return ex.page(match e {
                ConnectError::TimedOut => 504,
                ConnectError::Failed(_) => 502,
            });
        }
    };
    ex.backend = Some(addr);

    let pumped = match ex.request.as_mut() {
        Some(body) => pump_body(body, &mut backend, head.body, s, &mut ex.bytes_in).await,
        None => Ok(()),
    };
    match pumped {
        Ok(()) => {}
        Err(BodyFailure::Client(status)) => {
            // Dropping the connection aborts the backend's request.
            drop(backend);
            return ex.page(status);
        }
        Err(BodyFailure::ClientGone) => {
            drop(backend);
            ex.status = 499;
            ex.log();
            let mut resp = Response::new(empty());
            *resp.status_mut() = http::StatusCode::BAD_REQUEST;
            return resp;
        }
        Err(BodyFailure::Backend) => return ex.page(502),
    }

    let mut pending: Vec<u8> = Vec::with_capacity(READ_SIZE);
    let deadline = Instant::now() + s.response_timeout;
    let (resp, len) = loop {
        match response::parse_response(&pending, ex.head_only) {
            Ok(Some((resp, len))) if (100..200).contains(&resp.status) && resp.status != 101 => {
                pending.drain(..len);
                continue;
            }
            Ok(Some(found)) => break found,
            Ok(None) => {}
            Err(e @ (BadResponse::TooLarge | BadResponse::Syntax | BadResponse::Framing)) => {
                tracing::warn!(backend = %addr, error = %e, "bad backend response");
                return ex.page(502);
            }
        }
        pending.reserve(READ_SIZE);
        match timeout_at(deadline.into(), backend.read_buf(&mut pending)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return ex.page(502),
            Ok(Ok(_)) => {}
            Err(_) => return ex.page(504),
        }
    };
    pending.drain(..len);
    if resp.status == 101 {
        tracing::warn!(backend = %addr, "101 without an upgrade request");
        return ex.page(502);
    }

    let mut out = Response::new(empty());
    *out.status_mut() =
        http::StatusCode::from_u16(resp.status).unwrap_or(http::StatusCode::BAD_GATEWAY);
    let headers = out.headers_mut();
    let mut head_size = 12usize;
    for f in resp.fields.iter() {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(f.name),
            HeaderValue::from_bytes(f.value),
        ) {
            head_size += f.name.len() + f.value.len() + 4;
            headers.append(name, value);
        }
    }
    let length = match resp.body {
        ResponseBody::Length(n) => Some(n),
        ResponseBody::None => resp.content_length,
        _ => None,
    };
    if let Some(n) = length {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
    }
    ex.status = resp.status;
    ex.bytes_out = head_size as u64;
    if resp.body == ResponseBody::None || resp.body == ResponseBody::Length(0) {
        ex.log();
        return out;
    }
    let (tx, rx) = mpsc::channel(2);
    let timeouts = (s.response_timeout, s.write_timeout);
    tokio::spawn(relay(backend, pending, resp.body, tx, timeouts, ex));
    *out.body_mut() = ChannelBody { rx }.boxed();
    out
}

/// Copies the request body to the backend (chunked when it has no length), within the body
/// deadline and `max_body_bytes`.
async fn pump_body(
    body: &mut Incoming,
    backend: &mut TcpStream,
    framing: BodyFraming,
    s: &Settings,
    bytes_in: &mut u64,
) -> Result<(), BodyFailure> {
    if framing == BodyFraming::Empty {
        return Ok(());
    }
    let chunked = framing == BodyFraming::Chunked;
    let started = Instant::now();
    let mut total = 0u64;
    let mut out = Vec::with_capacity(READ_SIZE + 32);
    loop {
        let deadline = if s.body_min_rate == 0 {
            Instant::now() + s.body_timeout
        } else {
            started
                + s.body_timeout
                + Duration::from_secs_f64(total as f64 / s.body_min_rate as f64)
        };
        let frame = match timeout_at(deadline.into(), body.frame()).await {
            Err(_) => return Err(BodyFailure::Client(408)),
            Ok(None) => break,
            Ok(Some(Err(_))) => return Err(BodyFailure::ClientGone),
            Ok(Some(Ok(frame))) => frame,
        };
        // Trailers are not forwarded.
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if data.is_empty() {
            continue;
        }
        total += data.len() as u64;
        *bytes_in += data.len() as u64;
        if total > s.limits.max_body {
            return Err(BodyFailure::Client(413));
        }
        out.clear();
        if chunked {
            out.extend_from_slice(chunked::chunk_header(data.len()).as_bytes());
            out.extend_from_slice(&data);
            out.extend_from_slice(chunked::CHUNK_END);
        } else {
            out.extend_from_slice(&data);
        }
        write_backend(backend, &out, s.response_timeout).await?;
    }
    if chunked {
        write_backend(backend, chunked::LAST_CHUNK, s.response_timeout).await?;
    }
    Ok(())
}

async fn write_backend(
    backend: &mut TcpStream,
    bytes: &[u8],
    timeout: Duration,
) -> Result<(), BodyFailure> {
    match tokio::time::timeout(timeout, backend.write_all(bytes)).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(BodyFailure::Backend),
    }
}

/// Streams a response body from the backend into the client's stream, then logs the exchange.
/// A broken backend body or a client that stops reading resets the stream.
async fn relay(
    mut backend: TcpStream,
    mut pending: Vec<u8>,
    body: ResponseBody,
    tx: mpsc::Sender<Result<Bytes, io::Error>>,
    (response_timeout, write_timeout): (Duration, Duration),
    mut ex: Exchange,
) {
    let mut decoder = ChunkedDecoder::new(u64::MAX);
    let mut left = match body {
        ResponseBody::Length(n) => n,
        _ => u64::MAX,
    };
    let mut read = vec![0u8; READ_SIZE];
    let outcome: Result<(), &str> = async {
        loop {
            let input: Vec<u8> = if !pending.is_empty() {
                std::mem::take(&mut pending)
            } else {
                let n = match tokio::time::timeout(response_timeout, backend.read(&mut read)).await
                {
                    Ok(Ok(n)) => n,
                    Ok(Err(_)) => return Err("backend read failed"),
                    Err(_) => return Err("backend body timed out"),
                };
                if n == 0 {
                    return if body == ResponseBody::UntilClose {
                        Ok(())
                    } else {
                        Err("backend ended the body early")
                    };
                }
                read[..n].to_vec()
            };
            let mut data = Vec::with_capacity(input.len());
            let mut finished = false;
            match body {
                ResponseBody::Length(_) => {
                    let take = usize::try_from(left).unwrap_or(usize::MAX).min(input.len());
                    data.extend_from_slice(&input[..take]);
                    left -= take as u64;
                    finished = left == 0;
                }
                ResponseBody::Chunked => {
                    let mut rest = &input[..];
                    while !rest.is_empty() {
                        let (used, step) = decoder
                            .decode(rest)
                            .map_err(|_| "malformed chunked body from the backend")?;
                        match step {
                            Step::Data(range) => data.extend_from_slice(&rest[range]),
                            Step::NeedMore => {}
                            Step::Done => {
                                finished = true;
                                break;
                            }
                        }
                        rest = &rest[used..];
                    }
                }
                ResponseBody::UntilClose => data = input,
                ResponseBody::None => finished = true,
            }
            if !data.is_empty() {
                let n = data.len() as u64;
                match tokio::time::timeout(write_timeout, tx.send(Ok(Bytes::from(data)))).await {
                    Ok(Ok(())) => ex.bytes_out += n,
                    Ok(Err(_)) => return Err("client went away"),
                    Err(_) => return Err("client stopped reading"),
                }
            }
            if finished {
                return Ok(());
            }
        }
    }
    .await;
    if let Err(reason) = outcome {
        tracing::debug!(client = %ex.ctx.peer, reason, "h2 response ended early");
        let _ = tx.try_send(Err(io::Error::other(reason)));
    }
    drop(tx);
    ex.log();
}

/// A response body fed by [`relay`].
struct ChannelBody {
    rx: mpsc::Receiver<Result<Bytes, io::Error>>,
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        self.rx
            .poll_recv(cx)
            .map(|next| next.map(|piece| piece.map(Frame::data)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: HeadLimits = HeadLimits {
        max_line: 100,
        max_section: 300,
        max_body: 1000,
    };

    fn parts(build: http::request::Builder) -> Parts {
        build.body(()).unwrap().into_parts().0
    }

    fn get(uri: &str) -> http::request::Builder {
        Request::builder().method("GET").uri(uri)
    }

    #[test]
    fn routing_name_forwarded_fields_and_body_framing() {
        let p = parts(
            get("https://Shop.Example.com:8443/a?b=1")
                .header("host", "ignored.example")
                .header("cookie", "a=1")
                .header("cookie", "b=2")
                .header("x-request-id", "abc-1")
                .header("te", "trailers")
                .header("user-agent", "t"),
        );
        let head = request_head(&p, true, &LIMITS).unwrap();
        assert_eq!(head.authority, "Shop.Example.com:8443");
        assert_eq!(head.host, "shop.example.com");
        assert_eq!(head.target, "/a?b=1");
        assert_eq!(head.body, BodyFraming::Empty);
        assert_eq!(head.request_id.as_deref(), Some("abc-1"));
        let names: Vec<&[u8]> = head.fields.iter().map(|f| f.name).collect();
        assert_eq!(names, [&b"user-agent"[..], b"cookie"]);
        assert_eq!(head.fields.get(1).map(|f| f.value), Some(&b"a=1; b=2"[..]));

        let head = request_head(
            &parts(get("/x").header("host", "a.example")),
            false,
            &LIMITS,
        )
        .unwrap();
        assert_eq!(
            (head.host.as_str(), head.body),
            ("a.example", BodyFraming::Chunked),
            "no :authority: Host; a body without length is chunked"
        );
        let with_length = parts(
            Request::builder()
                .method("POST")
                .uri("https://a.example/")
                .header("content-length", "1000"),
        );
        assert_eq!(
            request_head(&with_length, false, &LIMITS).unwrap().body,
            BodyFraming::Length(1000)
        );
    }

    #[test]
    fn refusals() {
        let status = |p: Parts| {
            request_head(&p, true, &LIMITS)
                .map(|_| ())
                .unwrap_err()
                .status
        };
        assert_eq!(status(parts(get("/"))), 400, "no authority at all");
        assert_eq!(status(parts(get("https://u@a.example/"))), 400, "userinfo");
        let big = parts(
            Request::builder()
                .method("POST")
                .uri("https://a.example/")
                .header("content-length", "1001"),
        );
        assert_eq!(status(big), 413);
        // One line: name (1) + ": " + value = max_line passes, one more byte is 431.
        let line = |n: usize| parts(get("https://a.example/").header("x", "v".repeat(n - 3)));
        assert!(request_head(&line(100), true, &LIMITS).is_ok());
        assert_eq!(status(line(101)), 431);
        // The section: three lines of 98 + 2 = 300 pass; one byte more is 431.
        let section = |extra: usize| {
            let mut b = get("https://a.example/");
            for (i, n) in [98, 98, 98 + extra].into_iter().enumerate() {
                b = b.header(format!("x{i}"), "v".repeat(n - 4));
            }
            parts(b)
        };
        assert!(request_head(&section(0), true, &LIMITS).is_ok());
        assert_eq!(status(section(1)), 431);
        let long_path = format!("https://a.example/{}", "p".repeat(100));
        assert_eq!(status(parts(get(&long_path))), 414);
    }

    #[test]
    fn hypers_header_list_limit_is_above_ours() {
        let limits = HeadLimits {
            max_line: 8192,
            max_section: 32768,
            max_body: 0,
        };
        // The worst case for RFC 9113's accounting: the most fields, each as small as it gets.
        let worst = 4 * (32 + 10) + 8192 + MAX_FIELDS * (32 + 3);
        assert!(header_list_size(&limits) as usize >= worst.max(32768 + 4 * 32));
    }
}
