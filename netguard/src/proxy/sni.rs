//! The server name of a TLS ClientHello, read from the raw bytes the client sent first, so the
//! TLS listener can pick passthrough or termination before any TLS state exists.
//!
//! Parsing is rustls's own ([`rustls::server::Acceptor`]), fed from scratch with every new
//! piece of input: a pure function of the bytes, with no hand-written TLS parser. A ClientHello
//! larger than [`MAX_HELLO`] is refused (real ones are under 2 KiB; one with a post-quantum key
//! share is about 1.8 KiB).

use rustls::server::Acceptor;

/// Most bytes read while waiting for a complete ClientHello (it may span records).
pub const MAX_HELLO: usize = 16 * 1024 + 5;

/// What the first bytes of a TLS connection say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hello {
    /// Not a complete ClientHello yet.
    Incomplete,
    /// A complete ClientHello; its SNI host name, if it sent one.
    Complete { sni: Option<String> },
    /// Not TLS, or a malformed or oversized ClientHello.
    Invalid,
}

/// Parses the ClientHello at the start of `bytes`.
pub fn client_hello(bytes: &[u8]) -> Hello {
    if bytes.len() > MAX_HELLO {
        return Hello::Invalid;
    }
    let mut acceptor = Acceptor::default();
    let mut input = bytes;
    while !input.is_empty() {
        match acceptor.read_tls(&mut input) {
            Ok(0) | Err(_) => return Hello::Invalid,
            Ok(_) => {}
        }
    }
    match acceptor.accept() {
        Ok(None) => Hello::Incomplete,
        Ok(Some(accepted)) => Hello::Complete {
            sni: accepted.client_hello().server_name().map(str::to_owned),
        },
        Err(_) => Hello::Invalid,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Arc;

    use rustls::{ClientConfig, ClientConnection, RootCertStore, pki_types::ServerName};

    use super::*;

    /// The ClientHello a real rustls client sends for `name` (no SNI for an IP address or when
    /// `sni` is false).
    pub(crate) fn captured_hello(name: &str, sni: bool) -> Vec<u8> {
        let mut config =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(RootCertStore::empty())
                .with_no_client_auth();
        config.enable_sni = sni;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let server = ServerName::try_from(name.to_owned()).unwrap();
        let mut client = ClientConnection::new(Arc::new(config), server).unwrap();
        let mut out = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut out).unwrap();
        }
        out
    }

    #[test]
    fn sni_from_a_captured_client_hello() {
        let hello = captured_hello("Shop.Example.com", true);
        assert_eq!(
            client_hello(&hello),
            Hello::Complete {
                sni: Some("shop.example.com".into())
            },
            "rustls lowercases the name"
        );
        // Every proper prefix is incomplete, never invalid: the reader just waits for more.
        for cut in [0, 1, 5, 6, hello.len() / 2, hello.len() - 1] {
            assert_eq!(
                client_hello(&hello[..cut]),
                Hello::Incomplete,
                "cut at {cut}"
            );
        }
        // Bytes after the hello (a client may pipeline) do not change the answer.
        let mut more = hello.clone();
        more.extend_from_slice(&[0x17, 0x03, 0x03, 0x00, 0x01, 0x00]);
        assert!(matches!(client_hello(&more), Hello::Complete { .. }));
    }

    #[test]
    fn no_sni_and_not_tls() {
        assert_eq!(
            client_hello(&captured_hello("shop.example.com", false)),
            Hello::Complete { sni: None }
        );
        assert_eq!(
            client_hello(&captured_hello("192.0.2.1", true)),
            Hello::Complete { sni: None },
            "an IP address is never sent as SNI"
        );
        assert_eq!(
            client_hello(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"),
            Hello::Invalid
        );
        // A handshake record that is not a ClientHello.
        assert_eq!(
            client_hello(&[0x16, 0x03, 0x01, 0x00, 0x04, 0x02, 0x00, 0x00, 0x00]),
            Hello::Invalid
        );
        // A record header announcing more than a hello may hold, and too many bytes.
        let mut huge = vec![0x16, 0x03, 0x01, 0xff, 0xff];
        huge.resize(MAX_HELLO + 1, 0);
        assert_eq!(client_hello(&huge), Hello::Invalid);
    }
}
