//! Request heads: where one ends ([`scan_head`], incremental and bounded) and what it means
//! ([`parse_request`], raw bytes → canonical parts and body framing, or the status to answer).
//!
//! Both are pure functions so every rule below is a table-driven unit test.
//!
//! # Sizes
//!
//! - **Header line bytes**: one field line (`Name: value`) without its CRLF. At most
//!   `max_line` (default 8,192); one more is 431.
//! - **Header section bytes**: every field line *with* its CRLF, from the first field line to
//!   the CRLF ending the last one; neither the request line nor the empty line that ends the
//!   head counts. At most `max_section` (default 32,768); one more is 431. At most
//!   [`MAX_FIELDS`] field lines.
//! - **Request line**: at most `max_line` bytes without its CRLF; longer is 414.
//!
//! So a complete head is at most [`head_capacity`] bytes, the size of the buffer the proxy reads
//! heads into. Over-long lines are refused as soon as they pass the limit, not when they end.
//!
//! # Framing rules (anything else: 400 and the connection closes)
//!
//! - Lines end in CRLF; a bare LF or a CR not followed by LF is refused (httparse alone would
//!   accept bare LF). Empty lines before the request line are skipped (RFC 9112 §2.2).
//! - No obs-fold, no whitespace before a colon, no control characters in names or values
//!   (httparse's token rules; obs-text, bytes 0x80–0xFF, is allowed in values).
//! - Methods are uppercase letters; HTTP/1.0 and HTTP/1.1 only; the target is origin-form,
//!   absolute-form (`http://authority/path`, whose authority replaces Host), or `*` for OPTIONS.
//! - Exactly one `Host`, a valid `host[:port]` without userinfo.
//! - `Content-Length` at most once, 1*DIGIT with only spaces around it, no overflow. Bigger than
//!   `max_body`: 413.
//! - `Transfer-Encoding` at most once, exactly `chunked` (any case) with only spaces around it;
//!   never with `Content-Length`; never on HTTP/1.0.
//! - Neither header: the body is empty and the next byte starts the next request.
//! - `Expect` other than `100-continue`: 417.

use std::net::Ipv6Addr;

/// Size limits of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadLimits {
    /// Request line and each field line, CRLF excluded.
    pub max_line: usize,
    /// All field lines with their CRLFs.
    pub max_section: usize,
    /// Request body, decoded.
    pub max_body: u64,
}

/// Most field lines in one head.
pub const MAX_FIELDS: usize = 256;

/// The longest complete head within `limits`: request line, section, two CRLFs.
pub fn head_capacity(limits: &HeadLimits) -> usize {
    limits.max_line + 2 + limits.max_section + 2
}

/// A refused request: the status to answer and a short reason for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reject {
    pub status: u16,
    pub reason: &'static str,
}

const fn bad(reason: &'static str) -> Reject {
    Reject {
        status: 400,
        reason,
    }
}

const fn too_large(reason: &'static str) -> Reject {
    Reject {
        status: 431,
        reason,
    }
}

const URI_TOO_LONG: Reject = Reject {
    status: 414,
    reason: "request line too long",
};

/// Result of [`scan_head`]. `skip` counts empty lines' bytes before the request line, which the
/// caller drops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scan {
    Partial {
        skip: usize,
    },
    /// The head is `buf[skip..skip + len]`, its final CRLF CRLF included.
    Complete {
        skip: usize,
        len: usize,
    },
}

/// Finds the end of the head at the start of `buf`, enforcing line endings and size limits on
/// whatever part has arrived. Never refuses a prefix of a head it would accept.
pub fn scan_head(buf: &[u8], limits: &HeadLimits) -> Result<Scan, Reject> {
    let mut start = 0;
    while buf[start..].starts_with(b"\r\n") {
        start += 2;
    }
    let mut pos = start;
    let mut line_no = 0usize;
    let mut section = 0usize;
    loop {
        let rest = &buf[pos..];
        let Some(k) = rest.iter().position(|&b| b == b'\r' || b == b'\n') else {
            check_partial(line_no, rest.len(), section, limits)?;
            return Ok(Scan::Partial { skip: start });
        };
        if rest[k] == b'\n' {
            return Err(bad("bare LF in head"));
        }
        match rest.get(k + 1) {
            None => {
                check_partial(line_no, k, section, limits)?;
                return Ok(Scan::Partial { skip: start });
            }
            Some(b'\n') => {}
            Some(_) => return Err(bad("bare CR in head")),
        }
        if line_no == 0 {
            if k > limits.max_line {
                return Err(URI_TOO_LONG);
            }
        } else if k == 0 {
            return Ok(Scan::Complete {
                skip: start,
                len: pos + 2 - start,
            });
        } else {
            if k > limits.max_line {
                return Err(too_large("header line too long"));
            }
            section += k + 2;
            if section > limits.max_section {
                return Err(too_large("header section too large"));
            }
            if line_no > MAX_FIELDS {
                return Err(too_large("too many header fields"));
            }
        }
        pos += k + 2;
        line_no += 1;
    }
}

/// Limits on a line of which `len` bytes (CR excluded) have arrived.
fn check_partial(
    line_no: usize,
    len: usize,
    section: usize,
    limits: &HeadLimits,
) -> Result<(), Reject> {
    if line_no == 0 {
        if len > limits.max_line {
            return Err(URI_TOO_LONG);
        }
    } else if len > 0 {
        if len > limits.max_line {
            return Err(too_large("header line too long"));
        }
        if section + len + 2 > limits.max_section {
            return Err(too_large("header section too large"));
        }
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    Http10,
    Http11,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// No Content-Length, no Transfer-Encoding.
    Empty,
    Length(u64),
    Chunked,
}

impl BodyFraming {
    pub fn is_empty(&self) -> bool {
        matches!(self, BodyFraming::Empty | BodyFraming::Length(0))
    }
}

pub use super::fields::{Field, Fields};

/// A validated request head in canonical parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    pub method: String,
    /// Origin-form (`/path?query`) or `*`.
    pub target: String,
    pub version: Version,
    /// `host[:port]` as received: forwarded as `Host`.
    pub authority: String,
    /// The routing name: lowercase, no port, no trailing dot.
    pub host: String,
    /// End-to-end fields in order: without Host, Content-Length, Transfer-Encoding, Connection
    /// and the fields it names, Keep-Alive, Proxy-Connection, TE, Trailer, Upgrade, Expect and
    /// X-Request-ID.
    pub fields: Fields,
    pub body: BodyFraming,
    /// HTTP/1.1 without `Connection: close`. (HTTP/1.0 connections are not kept.)
    pub keep_alive: bool,
    pub expect_continue: bool,
    /// The `Upgrade` value of an HTTP/1.1 request with `Connection: upgrade` and no body.
    pub upgrade: Option<Vec<u8>>,
    /// A client-sent `X-Request-ID` made of `[A-Za-z0-9._:/+=-]`, at most 128 bytes.
    pub request_id: Option<String>,
}

impl RequestHead {
    pub fn is_head(&self) -> bool {
        self.method == "HEAD"
    }
}

/// How the parser treats a request field, by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Host,
    ContentLength,
    TransferEncoding,
    Connection,
    Upgrade,
    Expect,
    RequestId,
    /// Hop-by-hop (RFC 9110 §7.6.1): never forwarded as received.
    HopByHop,
    /// End-to-end: forwarded.
    Other,
}

fn kind(name: &[u8]) -> Kind {
    const NAMED: [(&str, Kind); 11] = [
        ("host", Kind::Host),
        ("content-length", Kind::ContentLength),
        ("transfer-encoding", Kind::TransferEncoding),
        ("connection", Kind::Connection),
        ("upgrade", Kind::Upgrade),
        ("expect", Kind::Expect),
        ("x-request-id", Kind::RequestId),
        ("keep-alive", Kind::HopByHop),
        ("proxy-connection", Kind::HopByHop),
        ("te", Kind::HopByHop),
        ("trailer", Kind::HopByHop),
    ];
    NAMED
        .iter()
        .find(|(n, _)| n.len() == name.len() && name.eq_ignore_ascii_case(n.as_bytes()))
        .map_or(Kind::Other, |&(_, k)| k)
}

/// The first of a field's occurrences and how many there were: framing fields must occur once.
#[derive(Default)]
struct Seen<'a> {
    first: Option<&'a [u8]>,
    count: usize,
}

impl<'a> Seen<'a> {
    fn add(&mut self, value: &'a [u8]) {
        self.first = self.first.or(Some(value));
        self.count += 1;
    }

    /// The value, if the field occurred exactly once.
    fn one(&self) -> Option<&'a [u8]> {
        self.first.filter(|_| self.count == 1)
    }
}

/// Validates a complete head (as [`scan_head`] delimited it: no leading empty lines, ending in
/// CRLF CRLF) and returns its canonical parts.
pub fn parse_request(head: &[u8], limits: &HeadLimits) -> Result<RequestHead, Reject> {
    let text = head
        .strip_suffix(b"\r\n\r\n")
        .ok_or(bad("incomplete head"))?;
    let field_lines = || {
        text.split(|&b| b == b'\n')
            .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
            .skip(1)
    };
    if field_lines().any(|l| l.first().is_some_and(|&b| b == b' ' || b == b'\t')) {
        return Err(bad("obs-fold"));
    }
    let count = field_lines().count();
    if count > MAX_FIELDS {
        return Err(too_large("too many header fields"));
    }

    // Uninitialized and on the stack: this runs for every request.
    let mut headers =
        [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_FIELDS];
    let mut req = httparse::Request::new(&mut []);
    match req.parse_with_uninit_headers(head, &mut headers[..count]) {
        Ok(httparse::Status::Complete(n)) if n == head.len() => {}
        Ok(_) => return Err(bad("incomplete head")),
        Err(e) => return Err(bad(httparse_reason(e))),
    }
    let method = req.method.ok_or(bad("no method"))?;
    if !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(bad("method is not uppercase letters"));
    }
    let version = match req.version {
        Some(0) => Version::Http10,
        Some(1) => Version::Http11,
        _ => return Err(bad("HTTP version")),
    };
    let raw_target = req.path.ok_or(bad("no request target"))?;

    // httparse trims whitespace around values; the framing rules need the raw text, so the
    // values are taken from the lines themselves (httparse has checked their characters).
    let mut fields = Fields::with_capacity(count, text.len());
    let mut hosts = Seen::default();
    let mut lengths = Seen::default();
    let mut encodings = Seen::default();
    let mut request_ids = Seen::default();
    // Tokens of the Connection fields, compared case-insensitively.
    let mut connection: Vec<&[u8]> = Vec::new();
    let mut upgrade = None;
    let mut expect_continue = false;
    for line in field_lines() {
        let colon = line
            .iter()
            .position(|&b| b == b':')
            .ok_or(bad("field without colon"))?;
        let name = &line[..colon];
        let raw_value = &line[colon + 1..];
        let value = trim_ows(raw_value);
        match kind(name) {
            Kind::Host => hosts.add(value),
            Kind::ContentLength => lengths.add(raw_value),
            Kind::TransferEncoding => encodings.add(raw_value),
            Kind::Connection => connection.extend(
                value
                    .split(|&b| b == b',')
                    .map(trim_ows)
                    .filter(|t| !t.is_empty()),
            ),
            Kind::Upgrade => upgrade = Some(value.to_vec()),
            Kind::Expect => {
                if value.eq_ignore_ascii_case(b"100-continue") {
                    expect_continue = true;
                } else {
                    return Err(Reject {
                        status: 417,
                        reason: "unsupported Expect",
                    });
                }
            }
            Kind::RequestId => request_ids.add(value),
            Kind::HopByHop => {}
            Kind::Other => fields.push(name, value),
        }
    }
    let named = |token: &[u8]| connection.iter().any(|t| t.eq_ignore_ascii_case(token));
    // Fields the client named in Connection are hop-by-hop too.
    if !connection.is_empty() {
        fields.retain(|f| !named(f.name));
    }

    let (target, authority) = parse_target(method, raw_target)?;
    let host_value = match (hosts.one(), hosts.count) {
        (Some(one), _) => one,
        (None, 0) => return Err(bad("missing Host")),
        (None, _) => return Err(bad("duplicate Host")),
    };
    let (authority, host) = match authority {
        // Absolute-form: its authority wins over Host (RFC 9112 §3.2.2), which must still be valid.
        Some(a) => {
            parse_authority(host_value)?;
            a
        }
        None => parse_authority(host_value)?,
    };

    let body = match (encodings.count, lengths.one()) {
        (0, _) if lengths.count == 0 => BodyFraming::Empty,
        (0, Some(one)) => BodyFraming::Length(parse_content_length(one)?),
        (0, None) => return Err(bad("duplicate Content-Length")),
        _ if lengths.count > 0 => return Err(bad("Content-Length with Transfer-Encoding")),
        (1, _) if version == Version::Http10 => {
            return Err(bad("Transfer-Encoding on HTTP/1.0"));
        }
        _ => match encodings.one() {
            Some(one) if trim_sp(one).eq_ignore_ascii_case(b"chunked") => BodyFraming::Chunked,
            Some(_) => return Err(bad("Transfer-Encoding other than chunked")),
            None => return Err(bad("duplicate Transfer-Encoding")),
        },
    };
    if let BodyFraming::Length(n) = body
        && n > limits.max_body
    {
        return Err(Reject {
            status: 413,
            reason: "Content-Length above max_body_bytes",
        });
    }

    let keep_alive = version == Version::Http11 && !named(b"close");
    let upgrade = upgrade
        .filter(|_| version == Version::Http11 && body == BodyFraming::Empty && named(b"upgrade"));
    let request_id = request_ids
        .one()
        .filter(|id| valid_request_id(id))
        .and_then(|id| std::str::from_utf8(id).ok())
        .map(str::to_owned);
    Ok(RequestHead {
        method: method.to_owned(),
        target,
        version,
        authority,
        host,
        fields,
        body,
        keep_alive,
        expect_continue: expect_continue && !body.is_empty(),
        upgrade,
        request_id,
    })
}

fn httparse_reason(e: httparse::Error) -> &'static str {
    match e {
        httparse::Error::HeaderName => "invalid header name",
        httparse::Error::HeaderValue => "invalid header value",
        httparse::Error::NewLine => "invalid line ending",
        httparse::Error::Status => "invalid status",
        httparse::Error::Token => "invalid token in request line",
        httparse::Error::TooManyHeaders => "too many header fields",
        httparse::Error::Version => "invalid HTTP version",
    }
}

/// `(origin-form target, authority from an absolute-form target)`.
fn parse_target(method: &str, target: &str) -> Result<(String, Option<(String, String)>), Reject> {
    if target.starts_with('/') {
        return Ok((target.to_owned(), None));
    }
    if target == "*" {
        return if method == "OPTIONS" {
            Ok((target.to_owned(), None))
        } else {
            Err(bad("asterisk-form outside OPTIONS"))
        };
    }
    let lower = target.to_ascii_lowercase();
    let rest = if lower.starts_with("http://") {
        &target[7..]
    } else if lower.starts_with("https://") {
        &target[8..]
    } else {
        return Err(bad("request target form"));
    };
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = parse_authority(&rest.as_bytes()[..end])?;
    let path = &rest[end..];
    let origin = if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("/{path}")
    };
    Ok((origin, Some(authority)))
}

/// `host[:port]` → `(authority, routing name)`. Reg-names are `[A-Za-z0-9._~-]`; IPv6 literals
/// in brackets; no userinfo, no percent-encoding, no empty port.
pub fn parse_authority(value: &[u8]) -> Result<(String, String), Reject> {
    if value.contains(&b'@') {
        return Err(bad("userinfo in Host"));
    }
    let text = std::str::from_utf8(value).map_err(|_| bad("invalid Host"))?;
    let (host, port) = if let Some(inner) = text.strip_prefix('[') {
        let close = inner.find(']').ok_or(bad("invalid Host"))?;
        inner[..close]
            .parse::<Ipv6Addr>()
            .map_err(|_| bad("invalid Host"))?;
        let after = &inner[close + 1..];
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p),
            None if after.is_empty() => None,
            None => return Err(bad("invalid Host")),
        };
        (&text[..close + 2], port)
    } else {
        match text.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (text, None),
        }
    };
    let reg_name_ok = host.starts_with('[')
        || (!host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._~-".contains(&b)));
    if !reg_name_ok {
        return Err(bad("invalid Host"));
    }
    if let Some(p) = port
        && (p.is_empty()
            || p.len() > 5
            || !p.bytes().all(|b| b.is_ascii_digit())
            || p.parse::<u32>().map_or(true, |n| n > 65535))
    {
        return Err(bad("invalid port in Host"));
    }
    let name = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
    if name.is_empty() {
        return Err(bad("invalid Host"));
    }
    Ok((text.to_owned(), name))
}

/// A Content-Length value as received (spaces around it allowed, nothing else).
pub fn parse_content_length(raw: &[u8]) -> Result<u64, Reject> {
    let digits = trim_sp(raw);
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Err(bad("malformed Content-Length"));
    }
    digits.iter().try_fold(0u64, |n, &d| {
        n.checked_mul(10)
            .and_then(|n| n.checked_add(u64::from(d - b'0')))
            .ok_or(bad("Content-Length overflow"))
    })
}

fn trim_sp(v: &[u8]) -> &[u8] {
    let start = v.iter().position(|&b| b != b' ').unwrap_or(v.len());
    let end = v.iter().rposition(|&b| b != b' ').map_or(start, |e| e + 1);
    &v[start..end]
}

fn trim_ows(v: &[u8]) -> &[u8] {
    let ows = |b: &u8| *b == b' ' || *b == b'\t';
    let start = v.iter().position(|b| !ows(b)).unwrap_or(v.len());
    let end = v.iter().rposition(|b| !ows(b)).map_or(start, |e| e + 1);
    &v[start..end]
}

pub(crate) fn valid_request_id(v: &[u8]) -> bool {
    !v.is_empty()
        && v.len() <= 128
        && v.iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"._:/+=-".contains(&b))
}

#[cfg(test)]
mod tests;
