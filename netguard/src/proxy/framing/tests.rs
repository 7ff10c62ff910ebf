use super::*;

const LIMITS: HeadLimits = HeadLimits {
    max_line: 8192,
    max_section: 32768,
    max_body: 1000,
};

/// A head from lines: each gets CRLF, then the empty line.
fn head(lines: &[&str]) -> Vec<u8> {
    let mut h = Vec::new();
    for l in lines {
        h.extend_from_slice(l.as_bytes());
        h.extend_from_slice(b"\r\n");
    }
    h.extend_from_slice(b"\r\n");
    h
}

/// Scans then parses, as the proxy does with a head that arrived whole.
fn check(raw: &[u8]) -> Result<RequestHead, Reject> {
    match scan_head(raw, &LIMITS)? {
        Scan::Complete { skip, len } => {
            assert_eq!(skip + len, raw.len(), "test heads have no bytes after them");
            parse_request(&raw[skip..skip + len], &LIMITS)
        }
        Scan::Partial { .. } => panic!("incomplete test head {:?}", String::from_utf8_lossy(raw)),
    }
}

fn status(raw: &[u8]) -> u16 {
    match check(raw) {
        Ok(_) => 200,
        Err(r) => r.status,
    }
}

#[test]
fn smuggling_and_malformed_framing_is_refused() {
    let cases: &[(&str, Vec<u8>, u16)] = &[
        // Content-Length together with Transfer-Encoding, in either order.
        (
            "cl_and_te",
            head(&[
                "POST / HTTP/1.1",
                "Host: a",
                "Content-Length: 5",
                "Transfer-Encoding: chunked",
            ]),
            400,
        ),
        (
            "te_and_cl",
            head(&[
                "POST / HTTP/1.1",
                "Host: a",
                "Transfer-Encoding: chunked",
                "Content-Length: 5",
            ]),
            400,
        ),
        (
            "te_and_cl_zero",
            head(&[
                "POST / HTTP/1.1",
                "Host: a",
                "Transfer-Encoding: chunked",
                "Content-Length: 0",
            ]),
            400,
        ),
        // Content-Length values.
        (
            "cl_plus",
            head(&["POST / HTTP/1.1", "Host: a", "Content-Length: +5"]),
            400,
        ),
        (
            "cl_minus",
            head(&["POST / HTTP/1.1", "Host: a", "Content-Length: -1"]),
            400,
        ),
        (
            "cl_hex",
            head(&["POST / HTTP/1.1", "Host: a", "Content-Length: 0x10"]),
            400,
        ),
        (
            "cl_underscore",
            head(&["POST / HTTP/1.1", "Host: a", "Content-Length: 1_0"]),
            400,
        ),
        (
            "cl_inner_space",
            head(&["POST / HTTP/1.1", "Host: a", "Content-Length: 1 0"]),
            400,
        ),
        (
            "cl_decimal",
            head(&["POST / HTTP/1.1", "Host: a", "Content-Length: 1.0"]),
            400,
        ),
        (
            "cl_empty",
            head(&["POST / HTTP/1.1", "Host: a", "Content-Length:"]),
            400,
        ),
        (
            "cl_tab",
            head(&["POST / HTTP/1.1", "Host: a", "Content-Length:\t5"]),
            400,
        ),
        (
            "cl_overflow",
            head(&[
                "POST / HTTP/1.1",
                "Host: a",
                "Content-Length: 18446744073709551616",
            ]),
            400,
        ),
        (
            "cl_overflow_long",
            head(&[
                "POST / HTTP/1.1",
                "Host: a",
                "Content-Length: 000000000000000000000000000000000000000000018446744073709551616",
            ]),
            400,
        ),
        (
            "cl_list",
            head(&["POST / HTTP/1.1", "Host: a", "Content-Length: 5, 5"]),
            400,
        ),
        (
            "cl_differing",
            head(&[
                "POST / HTTP/1.1",
                "Host: a",
                "Content-Length: 5",
                "Content-Length: 6",
            ]),
            400,
        ),
        (
            "cl_duplicate_equal",
            head(&[
                "POST / HTTP/1.1",
                "Host: a",
                "Content-Length: 5",
                "Content-Length: 5",
            ]),
            400,
        ),
        // Transfer-Encoding obfuscations.
        (
            "te_xchunked",
            head(&["POST / HTTP/1.1", "Host: a", "Transfer-Encoding: xchunked"]),
            400,
        ),
        (
            "te_chunked_x",
            head(&["POST / HTTP/1.1", "Host: a", "Transfer-Encoding: chunkedx"]),
            400,
        ),
        (
            "te_chunked_chunked",
            head(&[
                "POST / HTTP/1.1",
                "Host: a",
                "Transfer-Encoding: chunked, chunked",
            ]),
            400,
        ),
        (
            "te_trailing_comma",
            head(&["POST / HTTP/1.1", "Host: a", "Transfer-Encoding: chunked,"]),
            400,
        ),
        (
            "te_gzip_chunked",
            head(&[
                "POST / HTTP/1.1",
                "Host: a",
                "Transfer-Encoding: gzip, chunked",
            ]),
            400,
        ),
        (
            "te_identity",
            head(&["POST / HTTP/1.1", "Host: a", "Transfer-Encoding: identity"]),
            400,
        ),
        (
            "te_empty",
            head(&["POST / HTTP/1.1", "Host: a", "Transfer-Encoding:"]),
            400,
        ),
        (
            "te_tab_before",
            head(&["POST / HTTP/1.1", "Host: a", "Transfer-Encoding:\tchunked"]),
            400,
        ),
        (
            "te_tab_after",
            head(&["POST / HTTP/1.1", "Host: a", "Transfer-Encoding: chunked\t"]),
            400,
        ),
        (
            "te_vertical_tab",
            head(&[
                "POST / HTTP/1.1",
                "Host: a",
                "Transfer-Encoding: \x0bchunked",
            ]),
            400,
        ),
        (
            "te_nul",
            head(&["POST / HTTP/1.1", "Host: a", "Transfer-Encoding: chunked\0"]),
            400,
        ),
        (
            "te_form_feed",
            head(&[
                "POST / HTTP/1.1",
                "Host: a",
                "Transfer-Encoding: \x0cchunked",
            ]),
            400,
        ),
        (
            "te_obs_folded",
            head(&[
                "POST / HTTP/1.1",
                "Host: a",
                "Transfer-Encoding:",
                " chunked",
            ]),
            400,
        ),
        (
            "te_space_before_colon",
            head(&["POST / HTTP/1.1", "Host: a", "Transfer-Encoding : chunked"]),
            400,
        ),
        (
            "te_twice",
            head(&[
                "POST / HTTP/1.1",
                "Host: a",
                "Transfer-Encoding: chunked",
                "Transfer-Encoding: chunked",
            ]),
            400,
        ),
        (
            "te_http10",
            head(&["POST / HTTP/1.0", "Host: a", "Transfer-Encoding: chunked"]),
            400,
        ),
        // Head syntax.
        (
            "obs_fold",
            head(&["GET / HTTP/1.1", "Host: a", "X-A: b", " c"]),
            400,
        ),
        (
            "obs_fold_tab",
            head(&["GET / HTTP/1.1", "Host: a", "X-A: b", "\tc"]),
            400,
        ),
        (
            "fold_after_request_line",
            head(&["GET / HTTP/1.1", " Host: a"]),
            400,
        ),
        (
            "space_before_colon",
            head(&["GET / HTTP/1.1", "Host : a"]),
            400,
        ),
        (
            "tab_before_colon",
            head(&["GET / HTTP/1.1", "Host\t: a"]),
            400,
        ),
        (
            "ctl_in_name",
            head(&["GET / HTTP/1.1", "Host: a", "X\x01Y: b"]),
            400,
        ),
        (
            "nul_in_name",
            head(&["GET / HTTP/1.1", "Host: a", "X\0: b"]),
            400,
        ),
        (
            "ctl_in_value",
            head(&["GET / HTTP/1.1", "Host: a", "X: a\x01b"]),
            400,
        ),
        (
            "nul_in_value",
            head(&["GET / HTTP/1.1", "Host: a", "X: a\0b"]),
            400,
        ),
        (
            "del_in_value",
            head(&["GET / HTTP/1.1", "Host: a", "X: a\x7fb"]),
            400,
        ),
        (
            "escape_in_value",
            head(&["GET / HTTP/1.1", "Host: a", "X: \x1b[31m"]),
            400,
        ),
        (
            "empty_name",
            head(&["GET / HTTP/1.1", "Host: a", ": b"]),
            400,
        ),
        ("no_colon", head(&["GET / HTTP/1.1", "Host: a", "X-A"]), 400),
        (
            "bare_lf_line",
            b"GET / HTTP/1.1\nHost: a\r\n\r\n".to_vec(),
            400,
        ),
        (
            "bare_lf_end",
            b"GET / HTTP/1.1\r\nHost: a\n\r\n".to_vec(),
            400,
        ),
        (
            "bare_lf_final",
            b"GET / HTTP/1.1\r\nHost: a\r\n\n".to_vec(),
            400,
        ),
        (
            "bare_cr",
            b"GET / HTTP/1.1\r\nHost: a\rX-A: b\r\n\r\n".to_vec(),
            400,
        ),
        (
            "bare_cr_request_line",
            b"GET /\r HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(),
            400,
        ),
        // Request line.
        (
            "lowercase_method",
            head(&["get / HTTP/1.1", "Host: a"]),
            400,
        ),
        (
            "method_with_digit",
            head(&["G3T / HTTP/1.1", "Host: a"]),
            400,
        ),
        ("double_space", head(&["GET  / HTTP/1.1", "Host: a"]), 400),
        (
            "space_in_target",
            head(&["GET /a b HTTP/1.1", "Host: a"]),
            400,
        ),
        (
            "tab_in_target",
            head(&["GET /a\tb HTTP/1.1", "Host: a"]),
            400,
        ),
        ("leading_space", head(&[" GET / HTTP/1.1", "Host: a"]), 400),
        ("trailing_space", head(&["GET / HTTP/1.1 ", "Host: a"]), 400),
        ("http2", head(&["GET / HTTP/2.0", "Host: a"]), 400),
        ("http09", head(&["GET /"]), 400),
        (
            "lowercase_version",
            head(&["GET / http/1.1", "Host: a"]),
            400,
        ),
        ("h2_preface", b"PRI * HTTP/2.0\r\n\r\n".to_vec(), 400),
        ("asterisk_get", head(&["GET * HTTP/1.1", "Host: a"]), 400),
        (
            "authority_form",
            head(&["CONNECT a:443 HTTP/1.1", "Host: a:443"]),
            400,
        ),
        (
            "relative_target",
            head(&["GET a/b HTTP/1.1", "Host: a"]),
            400,
        ),
        (
            "other_scheme",
            head(&["GET ftp://a/ HTTP/1.1", "Host: a"]),
            400,
        ),
        (
            "absolute_userinfo",
            head(&["GET http://u:p@a/ HTTP/1.1", "Host: a"]),
            400,
        ),
        (
            "absolute_no_host_field",
            head(&["GET http://a/ HTTP/1.1"]),
            400,
        ),
        // Host.
        ("missing_host", head(&["GET / HTTP/1.1"]), 400),
        ("missing_host_http10", head(&["GET / HTTP/1.0"]), 400),
        (
            "duplicate_host",
            head(&["GET / HTTP/1.1", "Host: a", "Host: a"]),
            400,
        ),
        (
            "differing_host",
            head(&["GET / HTTP/1.1", "Host: a", "Host: b"]),
            400,
        ),
        (
            "host_userinfo",
            head(&["GET / HTTP/1.1", "Host: user@a"]),
            400,
        ),
        (
            "host_userinfo_password",
            head(&["GET / HTTP/1.1", "Host: u:p@a:80"]),
            400,
        ),
        ("host_empty", head(&["GET / HTTP/1.1", "Host:"]), 400),
        ("host_space", head(&["GET / HTTP/1.1", "Host: a b"]), 400),
        ("host_comma", head(&["GET / HTTP/1.1", "Host: a,b"]), 400),
        ("host_slash", head(&["GET / HTTP/1.1", "Host: a/b"]), 400),
        (
            "host_percent",
            head(&["GET / HTTP/1.1", "Host: a%2eb"]),
            400,
        ),
        (
            "host_empty_port",
            head(&["GET / HTTP/1.1", "Host: a:"]),
            400,
        ),
        (
            "host_port_range",
            head(&["GET / HTTP/1.1", "Host: a:65536"]),
            400,
        ),
        (
            "host_port_letters",
            head(&["GET / HTTP/1.1", "Host: a:8o"]),
            400,
        ),
        (
            "host_two_ports",
            head(&["GET / HTTP/1.1", "Host: a:80:80"]),
            400,
        ),
        (
            "host_bad_ipv6",
            head(&["GET / HTTP/1.1", "Host: [::g]"]),
            400,
        ),
        ("host_only_dot", head(&["GET / HTTP/1.1", "Host: ."]), 400),
        // Expect.
        (
            "expect_other",
            head(&[
                "POST / HTTP/1.1",
                "Host: a",
                "Expect: 200-ok",
                "Content-Length: 1",
            ]),
            417,
        ),
        // Body size announced.
        (
            "cl_above_max",
            head(&["POST / HTTP/1.1", "Host: a", "Content-Length: 1001"]),
            413,
        ),
        (
            "cl_u64_max",
            head(&[
                "POST / HTTP/1.1",
                "Host: a",
                "Content-Length: 18446744073709551615",
            ]),
            413,
        ),
    ];
    let mut names = std::collections::HashSet::new();
    for (name, raw, want) in cases {
        assert!(names.insert(name), "duplicate case name {name}");
        assert_eq!(
            status(raw),
            *want,
            "{name}: {:?}",
            String::from_utf8_lossy(raw)
        );
    }
}

#[test]
fn accepted_heads_have_canonical_parts() {
    let r = check(&head(&[
        "GET /p?q=1 HTTP/1.1",
        "Host: Shop.Example.COM.:8080",
        "Accept: */*",
    ]))
    .expect("valid");
    assert_eq!(r.method, "GET");
    assert_eq!(r.target, "/p?q=1");
    assert_eq!(r.version, Version::Http11);
    assert_eq!(r.authority, "Shop.Example.COM.:8080");
    assert_eq!(r.host, "shop.example.com");
    assert_eq!(r.body, BodyFraming::Empty);
    assert!(r.keep_alive);
    assert_eq!(
        r.fields.iter().collect::<Vec<_>>(),
        [Field {
            name: b"Accept",
            value: b"*/*"
        }]
    );

    let framing = |lines: &[&str]| check(&head(lines)).map(|r| r.body);
    assert_eq!(
        framing(&["POST / HTTP/1.1", "Host: a", "Content-Length: 5"]),
        Ok(BodyFraming::Length(5))
    );
    assert_eq!(
        framing(&["POST / HTTP/1.1", "Host: a", "content-length:   005  "]),
        Ok(BodyFraming::Length(5))
    );
    assert_eq!(
        framing(&["POST / HTTP/1.1", "Host: a", "Content-Length: 1000"]),
        Ok(BodyFraming::Length(1000))
    );
    assert_eq!(
        framing(&["POST / HTTP/1.1", "Host: a", "Content-Length: 0"]),
        Ok(BodyFraming::Length(0))
    );
    assert_eq!(
        framing(&["POST / HTTP/1.1", "Host: a", "Transfer-Encoding: chunked"]),
        Ok(BodyFraming::Chunked)
    );
    assert_eq!(
        framing(&["POST / HTTP/1.1", "Host: a", "transfer-encoding:  CHUNKED "]),
        Ok(BodyFraming::Chunked)
    );
    // A body without framing headers is empty, whatever the method.
    assert_eq!(
        framing(&["POST / HTTP/1.1", "Host: a"]),
        Ok(BodyFraming::Empty)
    );

    let r = check(&head(&["GET / HTTP/1.0", "Host: a"])).unwrap();
    assert_eq!(r.version, Version::Http10);
    assert!(!r.keep_alive);
    let r = check(&head(&[
        "GET / HTTP/1.1",
        "Host: a",
        "Connection: Keep-Alive, CLOSE",
    ]))
    .unwrap();
    assert!(!r.keep_alive);

    let r = check(&head(&[
        "GET http://B.example:8080?x HTTP/1.1",
        "Host: ignored",
    ]))
    .unwrap();
    assert_eq!(
        (r.target.as_str(), r.authority.as_str(), r.host.as_str()),
        ("/?x", "B.example:8080", "b.example")
    );
    let r = check(&head(&["OPTIONS * HTTP/1.1", "Host: a"])).unwrap();
    assert_eq!(r.target, "*");
    let r = check(&head(&["GET / HTTP/1.1", "Host: [2001:DB8::1]:443"])).unwrap();
    assert_eq!(r.host, "[2001:db8::1]");
    let r = check(&head(&["GET / HTTP/1.1", "Host: 192.0.2.1"])).unwrap();
    assert_eq!(r.host, "192.0.2.1");
    // Values may carry obs-text (bytes 0x80-0xFF) and inner tabs.
    assert!(check(&head(&["GET / HTTP/1.1", "Host: a", "X-A: caf\u{e9}\tb"])).is_ok());
}

#[test]
fn hop_by_hop_fields_are_not_forwarded() {
    let r = check(&head(&[
        "GET / HTTP/1.1",
        "Host: a",
        "Connection: keep-alive, X-Secret",
        "Keep-Alive: timeout=5",
        "Proxy-Connection: keep-alive",
        "TE: trailers",
        "Trailer: X-Sum",
        "Upgrade: websocket",
        "X-Secret: 1",
        "X-Request-ID: abc-123",
        "Expect: 100-continue",
        "X-Kept: yes",
    ]))
    .unwrap();
    let names: Vec<&[u8]> = r.fields.iter().map(|f| f.name).collect();
    assert_eq!(names, [&b"X-Kept"[..]]);
    assert_eq!(r.request_id.as_deref(), Some("abc-123"));
    // No body: Expect means nothing; no `Connection: upgrade`: no upgrade.
    assert!(!r.expect_continue);
    assert_eq!(r.upgrade, None);

    let r = check(&head(&[
        "GET /ws HTTP/1.1",
        "Host: a",
        "Connection: Upgrade",
        "Upgrade: websocket",
    ]))
    .unwrap();
    assert_eq!(r.upgrade.as_deref(), Some(&b"websocket"[..]));

    let r = check(&head(&[
        "POST / HTTP/1.1",
        "Host: a",
        "Expect: 100-Continue",
        "Content-Length: 3",
        "X-Request-ID: \"quoted\"",
    ]))
    .unwrap();
    assert!(r.expect_continue);
    assert_eq!(r.request_id, None);
}

#[test]
fn content_length_parsing() {
    let ok: &[(&[u8], u64)] = &[
        (b"0", 0),
        (b"5", 5),
        (b" 5 ", 5),
        (b"007", 7),
        (b"18446744073709551615", u64::MAX),
    ];
    for (raw, want) in ok {
        assert_eq!(parse_content_length(raw), Ok(*want), "{raw:?}");
    }
    for raw in [
        &b""[..],
        b" ",
        b"+5",
        b"-5",
        b"0x10",
        b"1_0",
        b"1 0",
        b"5,5",
        b"\t5",
        b"5\t",
        b"\x0b5",
        b"5\0",
        b"1e3",
        b"\xd9\xa5", // Arabic-Indic digit five
        b"18446744073709551616",
        b"99999999999999999999999",
    ] {
        assert!(parse_content_length(raw).is_err(), "{raw:?}");
    }
}

/// `Name: value` with the value padded so the line is exactly `len` bytes.
fn line_of(name: &str, len: usize) -> String {
    let prefix = format!("{name}: ");
    assert!(len > prefix.len());
    format!("{prefix}{}", "v".repeat(len - prefix.len()))
}

/// A head whose header section is exactly `section` bytes (lines with CRLFs), Host first.
fn head_with_section(section: usize) -> Vec<u8> {
    let host = "Host: a";
    let mut lines = vec!["GET / HTTP/1.1".to_owned(), host.to_owned()];
    let mut left = section - (host.len() + 2);
    let mut i = 0;
    while left > 0 {
        let len = (left - 2).min(8000);
        // Never leave a remainder too short for a line of its own.
        let len = if left - (len + 2) > 0 && left - (len + 2) < 12 {
            len - 12
        } else {
            len
        };
        lines.push(line_of(&format!("X-Pad-{i}"), len));
        left -= len + 2;
        i += 1;
    }
    let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
    let h = head(&refs);
    assert_eq!(h.len(), "GET / HTTP/1.1\r\n".len() + section + 2);
    h
}

/// Every proper prefix of an accepted head scans as partial, never refused. (Heads over 4 kB:
/// every prefix in the first and last 4 kB and every 61st in between, to keep this O(n²) check
/// fast in debug builds.)
fn assert_prefixes_partial(raw: &[u8]) {
    let n = raw.len();
    let ends = (0..n).filter(|&e| n <= 4096 || e < 4096 || e + 4096 >= n || e % 61 == 0);
    for end in ends {
        match scan_head(&raw[..end], &LIMITS) {
            Ok(Scan::Partial { .. }) => {}
            other => panic!("prefix of {end}/{} bytes: {other:?}", raw.len()),
        }
    }
}

#[test]
fn header_line_boundary_8192() {
    let at = head(&["GET / HTTP/1.1", "Host: a", &line_of("X-Long", 8192)]);
    assert!(check(&at).is_ok());
    assert_prefixes_partial(&at);
    let over = head(&["GET / HTTP/1.1", "Host: a", &line_of("X-Long", 8193)]);
    assert_eq!(check(&over), Err(too_large("header line too long")));
    // Refused as soon as the 8,193rd byte of the line arrives, before its CRLF.
    let line_start = "GET / HTTP/1.1\r\nHost: a\r\n".len();
    assert!(scan_head(&over[..line_start + 8192], &LIMITS).is_ok());
    assert_eq!(
        scan_head(&over[..line_start + 8193], &LIMITS),
        Err(too_large("header line too long"))
    );
    // Host itself is a header line like the others.
    let host = format!("Host: {}", "a".repeat(8193 - 6));
    assert_eq!(status(&head(&["GET / HTTP/1.1", &host])), 431);
}

#[test]
fn header_section_boundary_32768() {
    let at = head_with_section(32768);
    assert!(check(&at).is_ok(), "32,768 section bytes pass");
    assert_prefixes_partial(&at);
    let over = head_with_section(32769);
    assert_eq!(check(&over), Err(too_large("header section too large")));
    // A complete head at the limit is exactly the capacity the proxy buffers.
    let max_line = format!("GET /{} HTTP/1.1", "a".repeat(8192 - 14));
    let mut full = max_line.into_bytes();
    full.extend_from_slice(&at["GET / HTTP/1.1".len()..]);
    assert_eq!(full.len(), head_capacity(&LIMITS));
    assert!(check(&full).is_ok());
}

#[test]
fn request_line_boundary() {
    let at = format!("GET /{} HTTP/1.1", "a".repeat(8192 - 14));
    assert_eq!(at.len(), 8192);
    assert!(check(&head(&[&at, "Host: a"])).is_ok());
    let over = format!("GET /{} HTTP/1.1", "a".repeat(8193 - 14));
    assert_eq!(status(&head(&[&over, "Host: a"])), 414);
    assert_eq!(scan_head(over.as_bytes(), &LIMITS), Err(URI_TOO_LONG));
}

#[test]
fn field_count_limit() {
    let mut lines = vec!["GET / HTTP/1.1".to_owned(), "Host: a".to_owned()];
    lines.extend((1..MAX_FIELDS).map(|i| format!("X-{i}: v")));
    let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
    assert!(check(&head(&refs)).is_ok());
    lines.push("X-Last: v".into());
    let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
    assert_eq!(status(&head(&refs)), 431);
}

#[test]
fn scan_finds_the_end_and_skips_leading_empty_lines() {
    let raw = b"\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\nGET /next";
    assert_eq!(
        scan_head(raw, &LIMITS),
        Ok(Scan::Complete { skip: 4, len: 27 })
    );
    assert_eq!(scan_head(b"\r\n", &LIMITS), Ok(Scan::Partial { skip: 2 }));
    assert_eq!(scan_head(b"\r\n\r", &LIMITS), Ok(Scan::Partial { skip: 2 }));
    assert_eq!(scan_head(b"", &LIMITS), Ok(Scan::Partial { skip: 0 }));
    // A body-less request followed by another: the first head ends at its empty line.
    let two = b"GET /a HTTP/1.1\r\nHost: a\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\n\r\n";
    assert_eq!(
        scan_head(two, &LIMITS),
        Ok(Scan::Complete { skip: 0, len: 28 })
    );
    for (name, raw) in [
        ("simple", head(&["GET / HTTP/1.1", "Host: a"])),
        (
            "post",
            head(&["POST /x HTTP/1.1", "Host: a", "Content-Length: 5", "X-A: b"]),
        ),
    ] {
        let _ = name;
        assert_prefixes_partial(&raw);
    }
}
