//! A raw HTTP/1.1 client for proxy tests: write exact bytes, read back complete responses
//! (Content-Length, chunked, or up to the close), and tell whether the server closed. Also a
//! time-limited `curl` runner.

use std::{
    io::{self, Read, Write},
    net::{SocketAddr, TcpStream},
    process::Command,
    time::{Duration, Instant},
};

use crate::{
    NetNs, cmd,
    recording::{chunked_len, dechunk, find},
};

/// One response as received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    /// Status line and fields, CRLFs included, without the final empty line.
    pub head: String,
    /// The body, de-chunked.
    pub body: Vec<u8>,
    /// Whether the body was chunked on the wire.
    pub chunked: bool,
}

impl Response {
    /// The first field named `name` (any case), trimmed.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.split("\r\n").skip(1).find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.eq_ignore_ascii_case(name).then_some(v.trim())
        })
    }

    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Parses the complete responses at the start of `raw`; with `eof`, a last response without
/// length runs to the end. Returns them and the bytes used.
pub fn parse_responses(raw: &[u8], eof: bool) -> (Vec<Response>, usize) {
    parse_some(raw, eof, usize::MAX)
}

/// [`parse_responses`], at most `max` of them.
fn parse_some(raw: &[u8], eof: bool, max: usize) -> (Vec<Response>, usize) {
    let mut out = Vec::new();
    let mut pos = 0;
    while out.len() < max
        && let Some(end) = find(&raw[pos..], b"\r\n\r\n")
    {
        let head = String::from_utf8_lossy(&raw[pos..pos + end]).into_owned();
        let status: u16 = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let body_start = pos + end + 4;
        let mut r = Response {
            status,
            head,
            body: Vec::new(),
            chunked: false,
        };
        let length = r
            .header("content-length")
            .and_then(|v| v.parse::<usize>().ok());
        let chunked = r
            .header("transfer-encoding")
            .is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
        let body_end = if (100..200).contains(&status) || status == 204 || status == 304 {
            body_start
        } else if chunked {
            match chunked_len(&raw[body_start..]) {
                Some(n) => {
                    r.body = dechunk(&raw[body_start..]).unwrap_or_default();
                    r.chunked = true;
                    body_start + n
                }
                None => break,
            }
        } else if let Some(n) = length {
            if raw.len() < body_start + n {
                break;
            }
            r.body = raw[body_start..body_start + n].to_vec();
            body_start + n
        } else if eof {
            r.body = raw[body_start..].to_vec();
            raw.len()
        } else {
            break;
        };
        out.push(r);
        pos = body_end;
    }
    (out, pos)
}

/// A client connection that keeps what it has read.
#[derive(Debug)]
pub struct Client {
    stream: TcpStream,
    received: Vec<u8>,
    used: usize,
    eof: bool,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        Client {
            stream,
            received: Vec::new(),
            used: 0,
            eof: false,
        }
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.stream.local_addr().expect("local address")
    }

    /// Writes all of `bytes`; `false` if the server had closed.
    pub fn write(&mut self, bytes: &[u8]) -> bool {
        self.stream.write_all(bytes).is_ok()
    }

    fn read_some(&mut self, deadline: Instant) -> bool {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || self.eof {
            return false;
        }
        let _ = self.stream.set_read_timeout(Some(left));
        let mut buf = [0u8; 64 * 1024];
        match self.stream.read(&mut buf) {
            Ok(0) => {
                self.eof = true;
                false
            }
            Ok(n) => {
                self.received.extend_from_slice(&buf[..n]);
                true
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                false
            }
            Err(_) => {
                // A reset after the answer: the answer still counts.
                self.eof = true;
                false
            }
        }
    }

    /// Reads until `n` more complete responses have arrived, the server closes, or `timeout`.
    pub fn responses(&mut self, n: usize, timeout: Duration) -> Vec<Response> {
        let deadline = Instant::now() + timeout;
        loop {
            let (got, used) = parse_some(&self.received[self.used..], self.eof, n);
            if got.len() >= n || self.eof || Instant::now() >= deadline {
                self.used += used;
                return got;
            }
            self.read_some(deadline);
        }
    }

    /// One response; panics if none arrives within `timeout`.
    pub fn response(&mut self, timeout: Duration) -> Response {
        let mut r = self.responses(1, timeout);
        assert!(
            !r.is_empty(),
            "no complete response within {timeout:?}; received {:?}",
            String::from_utf8_lossy(&self.received[self.used..])
        );
        r.remove(0)
    }

    /// Whether the server closes the connection within `timeout` (reading and keeping whatever
    /// it still sends).
    pub fn closed_within(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while !self.eof && Instant::now() < deadline {
            self.read_some(deadline);
        }
        self.eof
    }

    /// Bytes received and not yet returned as responses.
    pub fn unread(&self) -> &[u8] {
        &self.received[self.used..]
    }
}

/// Connects, writes `bytes`, and reads until the server closes or `timeout`: every response
/// and whether the server closed.
pub fn exchange(addr: SocketAddr, bytes: &[u8], timeout: Duration) -> (Vec<Response>, bool) {
    let mut c = Client::connect(addr);
    c.write(bytes);
    let closed = c.closed_within(timeout);
    let (responses, _) = parse_responses(&c.received, closed);
    (responses, closed)
}

/// `curl -sS -i --max-time 20 ARGS…` with a time limit; the responses it printed (interim
/// ones included), its exit status and stderr.
pub fn curl(args: &[&str]) -> (Vec<Response>, Option<i32>, String) {
    let mut c = Command::new("curl");
    c.args(["-sS", "-i", "--max-time", "20"]).args(args);
    let out = cmd::run(&mut c, Duration::from_secs(30)).unwrap_or_else(|e| panic!("curl: {e}"));
    let (responses, _) = parse_responses(&out.stdout, true);
    (responses, out.status.code(), cmd::lossy(&out.stderr))
}

/// curl from inside `ns` to the sandbox's edge address, `http://EDGE_ADDR<path>` with
/// `Host: host` (`-sS -i --max-time 10`, 20 s limit): the responses it printed.
pub fn curl_to_edge(ns: &NetNs, host: &str, path: &str) -> Vec<Response> {
    let url = format!("http://{}{path}", crate::sandbox::EDGE_ADDR);
    let out = ns.output_timeout(
        &[
            "curl",
            "-sS",
            "-i",
            "--max-time",
            "10",
            "-H",
            &format!("Host: {host}"),
            &url,
        ],
        Duration::from_secs(20),
    );
    parse_responses(&out.stdout, true).0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_length_chunked_and_close_delimited() {
        let raw = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhiHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\nHTTP/1.0 200 OK\r\n\r\nrest";
        let (r, _) = parse_responses(raw, false);
        assert_eq!(r.len(), 3);
        assert_eq!((r[0].status, r[1].body.as_slice()), (100, &b"hi"[..]));
        assert_eq!((r[2].body.as_slice(), r[2].chunked), (&b"abc"[..], true));
        let (r, used) = parse_responses(raw, true);
        assert_eq!(r.len(), 4);
        assert_eq!(r[3].body, b"rest");
        assert_eq!(used, raw.len());
        assert_eq!(r[1].header("CONTENT-length"), Some("2"));
    }
}
