//! Backend response heads: parsed with httparse, framing decided per RFC 9112 §6.3, and the
//! head the client gets written from canonical parts.
//!
//! Backends are ours but not trusted to frame correctly: a response whose framing is ambiguous
//! (differing Content-Length values, a malformed one) is a 502, never passed on.

use std::io::Write as _;

use super::framing::{Fields, Version, parse_content_length};

/// Largest response head read from a backend; a longer one is a 502.
pub const MAX_RESPONSE_HEAD: usize = 64 * 1024;

/// Most fields in a response head.
const MAX_RESPONSE_FIELDS: usize = 256;

/// How the backend delimits its response body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseBody {
    /// HEAD requests, 1xx, 204, 304.
    None,
    Length(u64),
    Chunked,
    /// No length: the body ends when the backend closes.
    UntilClose,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    pub status: u16,
    /// Empty when it is the status's standard phrase (most responses: no allocation).
    pub reason: String,
    /// End-to-end fields (hop-by-hop ones, Content-Length and Transfer-Encoding removed; for a
    /// 101 the Upgrade field is kept).
    pub fields: Fields,
    pub body: ResponseBody,
    /// The validated Content-Length of a body-less response (HEAD, 304), passed on as metadata.
    pub content_length: Option<u64>,
    /// The backend keeps the connection open after this response: HTTP/1.1 without
    /// `Connection: close`, or HTTP/1.0 with `Connection: keep-alive`.
    pub keep_alive: bool,
}

/// Why a backend response cannot be passed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BadResponse {
    #[error("malformed response head")]
    Syntax,
    #[error("response head too large")]
    TooLarge,
    #[error("ambiguous response framing")]
    Framing,
}

/// Parses a response head at the start of `buf`: `Ok(None)` needs more bytes; otherwise the
/// head and its length in bytes.
pub fn parse_response(
    buf: &[u8],
    request_is_head: bool,
) -> Result<Option<(ResponseHead, usize)>, BadResponse> {
    if buf.is_empty() {
        return Ok(None);
    }
    // Uninitialized and on the stack: this runs for every response.
    let mut headers =
        [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_RESPONSE_FIELDS];
    let mut resp = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut resp,
        buf,
        &mut headers,
    );
    let len = match parsed {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() >= MAX_RESPONSE_HEAD => {
            return Err(BadResponse::TooLarge);
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(BadResponse::TooLarge),
        Err(_) => return Err(BadResponse::Syntax),
    };
    if len > MAX_RESPONSE_HEAD {
        return Err(BadResponse::TooLarge);
    }
    let status = resp.code.ok_or(BadResponse::Syntax)?;
    if !(100..=999).contains(&status) {
        return Err(BadResponse::Syntax);
    }
    let reason = resp
        .reason
        .filter(|r| {
            r.bytes()
                .all(|b| b == b' ' || b == b'\t' || b.is_ascii_graphic())
        })
        .unwrap_or("");
    let reason = if reason == super::pages::reason(status) {
        String::new()
    } else {
        reason.to_owned()
    };

    let headers = &*resp.headers;
    // Tokens of the Connection fields, compared case-insensitively.
    let connection = || {
        headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("connection"))
            .flat_map(|h| h.value.split(|&b| b == b',').map(trim))
    };
    let named = |token: &str| connection().any(|t| t.eq_ignore_ascii_case(token.as_bytes()));
    let mut content_length = None;
    let mut lengths_differ = false;
    let mut chunked = None;
    let mut fields = Fields::with_capacity(headers.len(), len);
    for h in headers {
        let is = |name: &str| h.name.eq_ignore_ascii_case(name);
        if is("content-length") {
            let n = parse_content_length(h.value).map_err(|_| BadResponse::Framing)?;
            lengths_differ |= content_length.is_some_and(|first| first != n);
            content_length = content_length.or(Some(n));
        } else if is("transfer-encoding") {
            // Chunked is the final coding or the body runs to close (RFC 9112 §6.3).
            let last = h.value.rsplit(|&b| b == b',').next().unwrap_or_default();
            chunked = Some(trim(last).eq_ignore_ascii_case(b"chunked"));
        } else if is("connection") {
            // Hop-by-hop; its tokens are read from `headers` where they matter.
        } else if (is("upgrade") && status == 101)
            || !["keep-alive", "proxy-connection", "te", "trailer", "upgrade"]
                .iter()
                .any(|hop| is(hop))
        {
            fields.push(h.name.as_bytes(), h.value);
        }
    }
    // Fields named in Connection are hop-by-hop, except the Upgrade of a 101 we pass on.
    if connection().next().is_some() {
        fields.retain(|f| {
            (status == 101 && f.is("upgrade"))
                || !connection().any(|t| f.name.eq_ignore_ascii_case(t))
        });
    }
    if lengths_differ {
        return Err(BadResponse::Framing);
    }
    let body = if request_is_head || (100..200).contains(&status) || status == 204 || status == 304
    {
        ResponseBody::None
    } else if let Some(is_chunked) = chunked {
        if is_chunked {
            ResponseBody::Chunked
        } else {
            ResponseBody::UntilClose
        }
    } else if let Some(n) = content_length {
        ResponseBody::Length(n)
    } else {
        ResponseBody::UntilClose
    };
    let keep_alive = if resp.version == Some(1) {
        !named("close")
    } else {
        named("keep-alive")
    };
    let content_length = match body {
        ResponseBody::None if chunked.is_none() && status != 204 && status >= 200 => content_length,
        _ => None,
    };
    Ok(Some((
        ResponseHead {
            status,
            reason,
            fields,
            body,
            content_length,
            keep_alive,
        },
        len,
    )))
}

fn trim(v: &[u8]) -> &[u8] {
    let ows = |b: &u8| *b == b' ' || *b == b'\t';
    let start = v.iter().position(|b| !ows(b)).unwrap_or(v.len());
    let end = v.iter().rposition(|b| !ows(b)).map_or(start, |e| e + 1);
    &v[start..end]
}

/// How the client gets the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientFraming {
    None,
    Length(u64),
    /// Re-encoded as chunked (HTTP/1.1 clients).
    Chunked,
    /// Raw bytes, then the connection closes (HTTP/1.0 clients, unknown length).
    UntilClose,
}

/// How a response body reaches a client speaking `version`.
pub fn client_framing(body: ResponseBody, version: Version) -> ClientFraming {
    match (body, version) {
        (ResponseBody::None, _) => ClientFraming::None,
        (ResponseBody::Length(n), _) => ClientFraming::Length(n),
        (ResponseBody::Chunked | ResponseBody::UntilClose, Version::Http11) => {
            ClientFraming::Chunked
        }
        (ResponseBody::Chunked | ResponseBody::UntilClose, Version::Http10) => {
            ClientFraming::UntilClose
        }
    }
}

/// The head sent to the client: status line, end-to-end fields, our framing and connection
/// fields, then `extra` fields.
pub fn client_head(
    head: &ResponseHead,
    framing: ClientFraming,
    keep_alive: bool,
    extra: &[(&str, &str)],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    let reason = if head.reason.is_empty() {
        super::pages::reason(head.status)
    } else {
        &head.reason
    };
    // Writing to a Vec cannot fail; `write!` formats in place (this runs for every response).
    let _ = write!(out, "HTTP/1.1 {} {reason}\r\n", head.status);
    for f in head.fields.iter() {
        out.extend_from_slice(f.name);
        out.extend_from_slice(b": ");
        out.extend_from_slice(f.value);
        out.extend_from_slice(b"\r\n");
    }
    match framing {
        ClientFraming::Length(n) => {
            let _ = write!(out, "Content-Length: {n}\r\n");
        }
        ClientFraming::Chunked => out.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
        ClientFraming::None => {
            if let Some(n) = head.content_length {
                let _ = write!(out, "Content-Length: {n}\r\n");
            }
        }
        ClientFraming::UntilClose => {}
    }
    for (name, value) in extra {
        let _ = write!(out, "{name}: {value}\r\n");
    }
    if head.status == 101 {
        out.extend_from_slice(b"Connection: upgrade\r\n");
    } else if !keep_alive {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &[u8]) -> Result<Option<(ResponseHead, usize)>, BadResponse> {
        parse_response(raw, false)
    }

    fn body_of(raw: &str) -> ResponseBody {
        parse(raw.as_bytes()).unwrap().unwrap().0.body
    }

    #[test]
    fn framing_per_rfc9112_6_3() {
        use ResponseBody::*;
        let cases = [
            ("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", Length(5)),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
                Length(5),
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                Chunked,
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
                Chunked,
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
                Chunked,
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
                UntilClose,
            ),
            ("HTTP/1.1 200 OK\r\n\r\n", UntilClose),
            ("HTTP/1.0 200 OK\r\n\r\n", UntilClose),
            ("HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n", None),
            (
                "HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n",
                None,
            ),
            ("HTTP/1.1 100 Continue\r\n\r\n", None),
            (
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
                None,
            ),
        ];
        for (raw, want) in cases {
            assert_eq!(body_of(raw), want, "{raw:?}");
        }
        let (head, _) = parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", true)
            .unwrap()
            .unwrap();
        assert_eq!(head.body, None);
        assert_eq!(head.content_length, Some(5));
    }

    #[test]
    fn whether_the_backend_keeps_the_connection() {
        let keeps = |raw: &str| parse(raw.as_bytes()).unwrap().unwrap().0.keep_alive;
        assert!(keeps("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"));
        assert!(!keeps(
            "HTTP/1.1 200 OK\r\nConnection: x, Close\r\nContent-Length: 0\r\n\r\n"
        ));
        assert!(!keeps("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n"));
        assert!(keeps(
            "HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n"
        ));
    }

    #[test]
    fn ambiguous_or_malformed_responses_are_refused() {
        for raw in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 5,5\r\n\r\n",
        ] {
            assert_eq!(parse(raw), Err(BadResponse::Framing), "{raw:?}");
        }
        assert_eq!(parse(b"HTTP/1.1 2000 OK\r\n\r\n"), Err(BadResponse::Syntax));
        assert_eq!(parse(b"SSH-2.0-OpenSSH\r\n\r\n"), Err(BadResponse::Syntax));
        assert_eq!(parse(b"HTTP/1.1 200 OK\r\nContent-"), Ok(Option::None));
        let huge = format!("HTTP/1.1 200 OK\r\nX: {}", "a".repeat(MAX_RESPONSE_HEAD));
        assert_eq!(parse(huge.as_bytes()), Err(BadResponse::TooLarge));
    }

    #[test]
    fn hop_by_hop_fields_are_dropped_and_the_head_is_rebuilt() {
        let raw = b"HTTP/1.1 200 Fine\r\nConnection: close, X-Internal\r\nKeep-Alive: timeout=5\r\nX-Internal: 1\r\nTransfer-Encoding: chunked\r\nContent-Type: text/plain\r\n\r\n";
        let (head, len) = parse(raw).unwrap().unwrap();
        assert_eq!(len, raw.len());
        let framing = client_framing(head.body, Version::Http11);
        assert_eq!(framing, ClientFraming::Chunked);
        let out = client_head(&head, framing, true, &[]);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 200 Fine\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n"
        );
        assert_eq!(
            client_framing(head.body, Version::Http10),
            ClientFraming::UntilClose
        );
        let (head, _) = parse(b"HTTP/1.1 404\r\nContent-Length: 0\r\n\r\n")
            .unwrap()
            .unwrap();
        let out = client_head(
            &head,
            ClientFraming::Length(0),
            false,
            &[("X-Request-ID", "r1")],
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nX-Request-ID: r1\r\nConnection: close\r\n\r\n"
        );
        // The standard phrase is not stored (no allocation) and comes back the same.
        let (head, _) = parse(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(head.reason.is_empty());
        let out = client_head(&head, ClientFraming::Length(0), true, &[]);
        assert!(out.starts_with(b"HTTP/1.1 200 OK\r\n"));
    }
}
