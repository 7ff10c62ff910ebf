//! A recording HTTP backend: a TCP server that stores the exact bytes each connection sends and
//! answers every complete request with a fixed reply, so proxy tests can assert what reached a
//! backend — nothing for a refused request, exactly one canonical request for an accepted one.
//!
//! One request per connection: the reply says `Connection: close` and the backend closes, so
//! the proxy never pools its connections (`keepalive::KeepAliveBackend` is the one that keeps
//! them). A request is complete when
//! its head has ended and then its Content-Length bytes, or its chunked body up to the last
//! chunk, have arrived (this module's own lenient reading, independent of netguard's parser).
//! The server runs on std threads and stops when dropped.

use std::{
    io::{self, Read, Write},
    net::{Shutdown, SocketAddr, TcpListener, TcpStream},
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use crate::{netns::NetNs, polled_server::PolledServer};

/// What the backend does once a request is complete.
#[derive(Clone, Debug)]
pub enum Reply {
    /// `HTTP/1.1 <status>` with this body, Content-Length framed.
    Status(u16, Vec<u8>),
    /// These bytes verbatim, then close.
    Raw(Vec<u8>),
    /// Headers (status line included, without the final CRLF), then `len` bytes of a
    /// repeating pattern written in 64 KiB pieces: for large responses.
    Stream { head: String, len: usize },
    /// Never answer; keep the connection until the peer closes or the backend stops.
    Hang,
    /// Close without answering.
    Close,
    /// `101 Switching Protocols`, then echo everything back.
    Upgrade,
}

/// The repeating pattern of [`Reply::Stream`] bodies: byte `i` is `i % 251`.
pub fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

#[derive(Debug)]
struct State {
    connections: Mutex<Vec<Arc<Mutex<Vec<u8>>>>>,
    reply: Mutex<Reply>,
}

/// A recording backend on `addr` (see the module docs).
#[derive(Debug)]
pub struct RecordingBackend {
    state: Arc<State>,
    server: PolledServer,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl RecordingBackend {
    /// On `127.0.0.1`, an ephemeral port.
    pub fn start(reply: Reply) -> RecordingBackend {
        Self::start_on("127.0.0.1:0".parse().expect("address"), reply)
    }

    pub fn start_on(addr: SocketAddr, reply: Reply) -> RecordingBackend {
        let listener =
            TcpListener::bind(addr).unwrap_or_else(|e| panic!("recording backend on {addr}: {e}"));
        Self::with_listener(listener, reply)
    }

    /// On `addr` inside a namespace.
    pub fn start_in(ns: &NetNs, addr: SocketAddr, reply: Reply) -> RecordingBackend {
        let listener = crate::listeners::tcp_listener(ns, addr)
            .unwrap_or_else(|e| panic!("recording backend on {addr} in {}: {e}", ns.name()));
        Self::with_listener(listener, reply)
    }

    fn with_listener(listener: TcpListener, reply: Reply) -> RecordingBackend {
        let state = Arc::new(State {
            connections: Mutex::new(Vec::new()),
            reply: Mutex::new(reply),
        });
        let server = {
            let state = state.clone();
            PolledServer::start(listener, Duration::from_millis(5), move |conn, stop| {
                let record = Arc::new(Mutex::new(Vec::new()));
                lock(&state.connections).push(record.clone());
                let reply = lock(&state.reply).clone();
                thread::spawn(move || serve(conn, &record, &reply, &stop));
            })
        };
        RecordingBackend { state, server }
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// Replies to connections accepted from now on.
    pub fn set_reply(&self, reply: Reply) {
        *lock(&self.state.reply) = reply;
    }

    /// The bytes received, one entry per connection, in accept order.
    pub fn received(&self) -> Vec<Vec<u8>> {
        lock(&self.state.connections)
            .iter()
            .map(|r| lock(r).clone())
            .collect()
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        lock(&self.state.connections).len()
    }

    /// Waits until `n` connections have each received a complete request (or `timeout`);
    /// returns what was received.
    pub fn wait_requests(&self, n: usize, timeout: Duration) -> Vec<Vec<u8>> {
        let deadline = Instant::now() + timeout;
        loop {
            let got = self.received();
            if got.iter().filter(|r| request_complete(r)).count() >= n || Instant::now() >= deadline
            {
                return got;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Forgets what was received so far.
    pub fn clear(&self) {
        lock(&self.state.connections).clear();
    }
}

fn serve(mut conn: TcpStream, record: &Mutex<Vec<u8>>, reply: &Reply, stop: &AtomicBool) {
    let _ = conn.set_read_timeout(Some(Duration::from_millis(100)));
    let give_up = Instant::now() + Duration::from_secs(30);
    let mut buf = [0u8; 64 * 1024];
    loop {
        if stop.load(Ordering::SeqCst) || Instant::now() > give_up {
            return;
        }
        match conn.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                let mut r = lock(record);
                r.extend_from_slice(&buf[..n]);
                if request_complete(&r) {
                    break;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return,
        }
    }
    let _ = answer(&mut conn, reply, stop);
}

fn answer(conn: &mut TcpStream, reply: &Reply, stop: &AtomicBool) -> io::Result<()> {
    match reply {
        Reply::Status(status, body) => {
            let head = format!(
                "HTTP/1.1 {status} Recorded\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            conn.write_all(head.as_bytes())?;
            conn.write_all(body)?;
        }
        Reply::Raw(bytes) => conn.write_all(bytes)?,
        Reply::Stream { head, len } => {
            conn.write_all(head.as_bytes())?;
            conn.write_all(b"\r\n")?;
            let body = pattern(*len);
            for piece in body.chunks(64 * 1024) {
                conn.write_all(piece)?;
            }
        }
        Reply::Hang => {
            let mut sink = [0u8; 1024];
            while !stop.load(Ordering::SeqCst) {
                match conn.read(&mut sink) {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                        ) => {}
                    Err(_) => break,
                }
            }
        }
        Reply::Close => {}
        Reply::Upgrade => {
            conn.write_all(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: upgrade\r\n\r\n",
            )?;
            let mut buf = [0u8; 4096];
            while !stop.load(Ordering::SeqCst) {
                match conn.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => conn.write_all(&buf[..n])?,
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                        ) => {}
                    Err(_) => break,
                }
            }
        }
    }
    let _ = conn.shutdown(Shutdown::Write);
    Ok(())
}

/// Whether `buf` holds one complete request (head, then its Content-Length or chunked body).
pub fn request_complete(buf: &[u8]) -> bool {
    let Some(head_end) = find(buf, b"\r\n\r\n").map(|i| i + 4) else {
        return false;
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let header = |name: &str| {
        head.split("\r\n")
            .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_owned()))
    };
    let body = &buf[head_end..];
    if let Some(len) = header("content-length:") {
        return len.parse::<usize>().is_ok_and(|n| body.len() >= n);
    }
    if header("transfer-encoding:").is_some_and(|v| v.contains("chunked")) {
        return chunked_len(body).is_some();
    }
    true
}

/// The length of a complete chunked body at the start of `body` (trailers not supported).
pub fn chunked_len(body: &[u8]) -> Option<usize> {
    let mut pos = 0;
    loop {
        let line_end = pos + find(&body[pos..], b"\r\n")?;
        let size_text = String::from_utf8_lossy(&body[pos..line_end]);
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        pos = line_end + 2;
        if size == 0 {
            return body[pos..].starts_with(b"\r\n").then_some(pos + 2);
        }
        pos += size + 2;
        if pos > body.len() {
            return None;
        }
    }
}

/// The data of a complete chunked body.
pub fn dechunk(body: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut pos = 0;
    loop {
        let line_end = pos + find(&body[pos..], b"\r\n")?;
        let size_text = String::from_utf8_lossy(&body[pos..line_end]);
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        pos = line_end + 2;
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(body.get(pos..pos + size)?);
        pos += size + 2;
    }
}

pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completeness() {
        assert!(!request_complete(b"GET / HTTP/1.1\r\nHost: a\r\n"));
        assert!(request_complete(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"));
        assert!(!request_complete(
            b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nab"
        ));
        assert!(request_complete(
            b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc"
        ));
        let chunked = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
        assert!(request_complete(chunked));
        assert!(!request_complete(&chunked[..chunked.len() - 2]));
        assert_eq!(
            dechunk(b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n").unwrap(),
            b"abcde"
        );
    }

    #[test]
    fn records_and_answers() {
        let backend = RecordingBackend::start(Reply::Status(200, b"hi".to_vec()));
        let mut c = TcpStream::connect(backend.addr()).unwrap();
        c.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
        let mut answer = Vec::new();
        c.read_to_end(&mut answer).unwrap();
        assert!(answer.starts_with(b"HTTP/1.1 200 Recorded\r\n"));
        assert!(answer.ends_with(b"\r\n\r\nhi"));
        assert_eq!(
            backend.wait_requests(1, Duration::from_secs(2)),
            [b"GET / HTTP/1.1\r\nHost: a\r\n\r\n".to_vec()]
        );
    }
}
