//! The request a backend receives: written from the canonical parts of a validated head, never
//! copied from the client's bytes.
//!
//! # Forwarded headers
//!
//! - `X-Forwarded-For`: the client's address. If the client's address is in
//!   `proxy.trusted_proxies`, it is appended to the values the client sent (`a, b, client`);
//!   otherwise whatever the client sent is dropped and the field is the client's address alone.
//! - `X-Forwarded-Proto` (`http`/`https`) and `X-Forwarded-Port` (the port the client connected
//!   to): ours, unless a trusted client sent them.
//! - `X-Forwarded-Host`, `Forwarded` and `X-Real-IP` pass only from trusted clients.
//! - `X-Request-ID`: the client's if it sent one valid id (see
//!   [`RequestHead::request_id`]), else generated.
//! - `Host` passes through as received (or the authority of an absolute-form target).
//!
//! Framing is ours: `Content-Length` for a sized body, `Transfer-Encoding: chunked` (re-encoded)
//! for a chunked one, nothing for an empty one. No `Connection` field when the backend
//! connection may be kept for the next request (HTTP/1.1's default is persistent; see
//! `proxy::pool`), `Connection: close` when it may not, or `Connection: upgrade` with the
//! client's `Upgrade` value.

use std::{io::Write as _, net::IpAddr};

use super::framing::{BodyFraming, Field, RequestHead};

/// Who sent the request and where it arrived.
#[derive(Debug, Clone, Copy)]
pub struct ClientInfo {
    pub addr: IpAddr,
    /// `"http"` or `"https"`.
    pub proto: &'static str,
    /// The local port the client connected to.
    pub port: u16,
    /// The client is a proxy in `trusted_proxies`: its X-Forwarded-* are kept.
    pub trusted: bool,
}

fn is_forwarding_field(f: &Field<'_>) -> bool {
    f.name
        .get(..12)
        .is_some_and(|p| p.eq_ignore_ascii_case(b"x-forwarded-"))
        || f.is("forwarded")
        || f.is("x-real-ip")
}

fn push_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// The request head sent to a backend connection that is closed after the response.
pub fn backend_head(head: &RequestHead, client: &ClientInfo, request_id: &str) -> Vec<u8> {
    backend_head_for(head, client, request_id, false)
}

/// The request head sent to the backend; `reuse`: the connection may serve later requests.
pub fn backend_head_for(
    head: &RequestHead,
    client: &ClientInfo,
    request_id: &str,
    reuse: bool,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(head.method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(head.target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    push_field(&mut out, b"Host", head.authority.as_bytes());
    let mut xff: Vec<&[u8]> = Vec::new();
    let mut proto: Option<&[u8]> = None;
    let mut port: Option<&[u8]> = None;
    for f in head.fields.iter() {
        if !is_forwarding_field(&f) {
            push_field(&mut out, f.name, f.value);
        } else if client.trusted {
            if f.is("x-forwarded-for") {
                xff.push(f.value);
            } else if f.is("x-forwarded-proto") {
                proto = proto.or(Some(f.value));
            } else if f.is("x-forwarded-port") {
                port = port.or(Some(f.value));
            } else {
                push_field(&mut out, f.name, f.value);
            }
        }
    }
    out.extend_from_slice(b"X-Forwarded-For: ");
    for value in xff {
        out.extend_from_slice(value);
        out.extend_from_slice(b", ");
    }
    // Writing to a Vec cannot fail.
    let _ = write!(out, "{}\r\n", client.addr);
    push_field(
        &mut out,
        b"X-Forwarded-Proto",
        proto.unwrap_or(client.proto.as_bytes()),
    );
    match port {
        Some(port) => push_field(&mut out, b"X-Forwarded-Port", port),
        None => {
            let _ = write!(out, "X-Forwarded-Port: {}\r\n", client.port);
        }
    }
    push_field(&mut out, b"X-Request-ID", request_id.as_bytes());
    match head.body {
        BodyFraming::Empty => {}
        BodyFraming::Length(n) => {
            let _ = write!(out, "Content-Length: {n}\r\n");
        }
        BodyFraming::Chunked => push_field(&mut out, b"Transfer-Encoding", b"chunked"),
    }
    match &head.upgrade {
        Some(protocol) => {
            push_field(&mut out, b"Connection", b"upgrade");
            push_field(&mut out, b"Upgrade", protocol);
        }
        None if reuse => {}
        None => push_field(&mut out, b"Connection", b"close"),
    }
    out.extend_from_slice(b"\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::framing::{HeadLimits, Scan, parse_request, scan_head};

    fn parsed(raw: &str) -> RequestHead {
        let limits = HeadLimits {
            max_line: 8192,
            max_section: 32768,
            max_body: 1 << 20,
        };
        let Ok(Scan::Complete { skip, len }) = scan_head(raw.as_bytes(), &limits) else {
            panic!("incomplete")
        };
        parse_request(&raw.as_bytes()[skip..skip + len], &limits).expect("valid")
    }

    fn client(trusted: bool) -> ClientInfo {
        ClientInfo {
            addr: "192.0.2.99".parse().unwrap(),
            proto: "http",
            port: 80,
            trusted,
        }
    }

    const SPOOFING: &str = "POST /submit?x=1 HTTP/1.1\r\nHost: shop.example.com\r\nX-Forwarded-For: 10.0.0.1\r\nX-Forwarded-For: 10.0.0.2\r\nX-Forwarded-Proto: https\r\nx-forwarded-port: 443\r\nX-Forwarded-Host: evil\r\nForwarded: for=1.2.3.4\r\nX-Real-IP: 1.2.3.4\r\nUser-Agent: t\r\nContent-Length: 3\r\nConnection: keep-alive\r\n\r\n";

    #[test]
    fn untrusted_clients_cannot_set_forwarded_fields() {
        let out = backend_head(&parsed(SPOOFING), &client(false), "rid");
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "POST /submit?x=1 HTTP/1.1\r\nHost: shop.example.com\r\nUser-Agent: t\r\n\
             X-Forwarded-For: 192.0.2.99\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Port: 80\r\n\
             X-Request-ID: rid\r\nContent-Length: 3\r\nConnection: close\r\n\r\n"
        );
    }

    #[test]
    fn trusted_proxies_are_appended_to() {
        let out = backend_head(&parsed(SPOOFING), &client(true), "rid");
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "POST /submit?x=1 HTTP/1.1\r\nHost: shop.example.com\r\nX-Forwarded-Host: evil\r\n\
             Forwarded: for=1.2.3.4\r\nX-Real-IP: 1.2.3.4\r\nUser-Agent: t\r\n\
             X-Forwarded-For: 10.0.0.1, 10.0.0.2, 192.0.2.99\r\nX-Forwarded-Proto: https\r\n\
             X-Forwarded-Port: 443\r\nX-Request-ID: rid\r\nContent-Length: 3\r\nConnection: close\r\n\r\n"
        );
    }

    #[test]
    fn framing_and_upgrade_are_ours() {
        let chunked = parsed(
            "PUT / HTTP/1.1\r\nHost: a\r\ntransfer-encoding:  chunked \r\nTE: trailers\r\n\r\n",
        );
        let out = String::from_utf8(backend_head(&chunked, &client(false), "r")).unwrap();
        assert!(
            out.ends_with(
                "X-Request-ID: r\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
            ),
            "{out}"
        );
        assert!(!out.contains("TE:"), "{out}");
        let ws = parsed(
            "GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: k\r\n\r\n",
        );
        let out = String::from_utf8(backend_head(&ws, &client(false), "r")).unwrap();
        assert!(out.contains("Sec-WebSocket-Key: k\r\n"), "{out}");
        assert!(
            out.ends_with("Connection: upgrade\r\nUpgrade: websocket\r\n\r\n"),
            "{out}"
        );
        let reused =
            String::from_utf8(backend_head_for(&chunked, &client(false), "r", true)).unwrap();
        assert!(
            reused.ends_with("X-Request-ID: r\r\nTransfer-Encoding: chunked\r\n\r\n"),
            "{reused}"
        );
        let v10 = parsed("GET / HTTP/1.0\r\nHost: a\r\n\r\n");
        let out = String::from_utf8(backend_head(&v10, &client(false), "r")).unwrap();
        assert!(out.starts_with("GET / HTTP/1.1\r\nHost: a\r\n"), "{out}");
    }
}
