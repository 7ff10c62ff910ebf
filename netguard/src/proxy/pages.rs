//! The proxy's own answers: small HTML error pages naming the request id, and redirects.

/// The reason phrase the proxy writes for `status`.
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        414 => "URI Too Long",
        417 => "Expectation Failed",
        421 => "Misdirected Request",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}

/// What the page says under its title.
fn explanation(status: u16) -> &'static str {
    match status {
        400 => "The request could not be understood.",
        404 => "No application is served under this host name.",
        408 => "The request was not received in time.",
        413 => "The request body is larger than this server accepts.",
        414 => "The request line is longer than this server accepts.",
        417 => "The expectation in the request cannot be met.",
        421 => "This connection cannot serve this host name.",
        431 => "The request header fields are larger than this server accepts.",
        502 => "The application did not answer correctly.",
        503 => "The application has no running instance available.",
        504 => "The application did not answer in time.",
        _ => "The request could not be served.",
    }
}

/// A complete response: `status` with an HTML page naming `request_id`. `close` adds
/// `Connection: close`; `head_only` (a HEAD request) leaves the body out but keeps its length.
pub fn error_response(status: u16, request_id: &str, close: bool, head_only: bool) -> Vec<u8> {
    let title = format!("{status} {}", reason(status));
    let body = error_body(status, request_id);
    let mut out = format!(
        "HTTP/1.1 {title}\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\nX-Request-ID: {request_id}\r\nCache-Control: no-store\r\n{}\r\n",
        body.len(),
        if close { "Connection: close\r\n" } else { "" }
    )
    .into_bytes();
    if !head_only {
        out.extend_from_slice(body.as_bytes());
    }
    out
}

/// The HTML page of an error answer (HTTP/1.1 and HTTP/2 alike).
pub fn error_body(status: u16, request_id: &str) -> String {
    let title = format!("{status} {}", reason(status));
    format!(
        "<!DOCTYPE html>\n<html><head><title>{title}</title></head>\n<body><h1>{title}</h1>\n<p>{}</p>\n<p>Request ID: <code>{request_id}</code></p></body></html>\n",
        explanation(status)
    )
}

/// A 301 to `location` with an empty body.
pub fn redirect(location: &str, request_id: &str, close: bool) -> Vec<u8> {
    format!(
        "HTTP/1.1 301 Moved Permanently\r\nLocation: {location}\r\nContent-Length: 0\r\nX-Request-ID: {request_id}\r\n{}\r\n",
        if close { "Connection: close\r\n" } else { "" }
    )
    .into_bytes()
}

/// The interim answer to `Expect: 100-continue`.
pub const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_page_is_a_complete_response_naming_the_request_id() {
        let page = String::from_utf8(error_response(502, "r-1", true, false)).unwrap();
        let (head, body) = page.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 502 Bad Gateway\r\n"), "{head}");
        assert!(
            head.contains(&format!("Content-Length: {}", body.len())),
            "{head}"
        );
        assert!(head.contains("X-Request-ID: r-1") && head.ends_with("Connection: close"));
        assert!(
            body.contains("r-1") && body.contains("502 Bad Gateway"),
            "{body}"
        );
        let head_only = error_response(404, "r-2", false, true);
        assert!(head_only.ends_with(b"\r\n\r\n"));
        assert!(!String::from_utf8(head_only).unwrap().contains("Connection"));
    }
}
