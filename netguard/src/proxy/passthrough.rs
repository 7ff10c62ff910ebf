//! The HTTPS listener: read the ClientHello, then either forward the TLS stream untouched to an
//! app with `tls = "passthrough"`, or terminate TLS here.
//!
//! The ClientHello is read (not peeked) into a buffer of at most [`sni::MAX_HELLO`] bytes,
//! within the TLS handshake timeout (`proxy.header_read_timeout_secs`, counted from accept), and
//! parsed by [`sni::client_hello`]. Then, with the routes in force at that moment:
//!
//! - its SNI names a passthrough app (same exact/wildcard rules as Host routing): a fresh TCP
//!   connection to one of the app's backends (round-robin, the same ejection and
//!   next-backend-on-connect-failure rules as HTTP) receives the buffered bytes and then
//!   everything else both ways, byte for byte, until both sides close or nothing moves for
//!   `proxy.tunnel_idle_timeout_secs`. The backend holds the certificate and the client sees
//!   it. No HTTP limit, header, timeout other than these, or router log line applies: netguard
//!   never sees the plaintext. If no backend takes the connection it is closed (there is no
//!   certificate to send an error page with).
//! - anything else (a terminated app, an unknown name, no SNI, not TLS at all): the buffered
//!   bytes are replayed into rustls, which answers as before — a handshake failure when no
//!   certificate covers the name. So a passthrough app cannot be reached without SNI.
//!
//! After termination, ALPN decides the protocol: `h2` goes to [`super::h2`], anything else
//! (`http/1.1` or no ALPN) to the HTTP/1.1 connection loop.

use std::{
    io,
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf},
    net::TcpStream,
    time::timeout_at,
};
use tokio_rustls::TlsAcceptor;

use super::{
    conn, h2,
    sni::{self, Hello},
    state::{App, Shared},
    tunnel,
    upstream::{self, Health},
};
use crate::config::TlsMode;

/// Serves one connection accepted on the HTTPS listener.
pub(crate) async fn serve_tls(
    mut stream: TcpStream,
    peer: SocketAddr,
    local_port: u16,
    shared: Arc<Shared>,
    acceptor: TlsAcceptor,
    accepted: Instant,
) {
    let deadline = accepted + shared.snapshot().settings.header_timeout;
    let mut hello = Vec::with_capacity(2048);
    let sni = loop {
        match sni::client_hello(&hello) {
            Hello::Complete { sni } => break sni,
            // rustls sends the alert.
            Hello::Invalid => break None,
            Hello::Incomplete => {}
        }
        hello.reserve(4096);
        match timeout_at(deadline.into(), stream.read_buf(&mut hello)).await {
            Ok(Ok(n)) if n > 0 => {}
            _ => return,
        }
    };

    let snap = shared.snapshot();
    let passthrough = sni
        .as_deref()
        .and_then(|name| snap.routes.lookup(name))
        .and_then(|&i| snap.apps.get(i))
        .filter(|app| app.tls == Some(TlsMode::Passthrough));
    if let Some(app) = passthrough {
        let s = &snap.settings;
        forward(
            stream,
            hello,
            app,
            &shared.health,
            s.connect_timeout,
            s.eject_for,
            s.tunnel_idle_timeout,
            peer,
        )
        .await;
        return;
    }
    drop(snap);

    let replay = Replay {
        prefix: hello,
        pos: 0,
        inner: stream,
    };
    let Ok(Ok(tls)) = timeout_at(deadline.into(), acceptor.accept(replay)).await else {
        return;
    };
    let sni = tls.get_ref().1.server_name().map(str::to_owned);
    if tls.get_ref().1.alpn_protocol() == Some(b"h2") {
        h2::serve(tls, peer, local_port, sni, shared, accepted).await;
    } else {
        conn::Conn::new(tls, peer, local_port, "https", shared)
            .with_sni(sni)
            .run(accepted)
            .await;
    }
}

/// Passthrough: the ClientHello and then everything else, both ways, to a backend of `app`.
#[allow(clippy::too_many_arguments)]
async fn forward(
    mut client: TcpStream,
    hello: Vec<u8>,
    app: &App,
    health: &Health,
    connect_timeout: Duration,
    eject_for: Duration,
    idle: Duration,
    peer: SocketAddr,
) {
    let candidates = upstream::candidates(app, health, Instant::now());
    // The ClientHello goes out as the first bytes, through the same connect, retry and
    // ejection as a proxied request's head.
    let Ok((mut backend, addr)) =
        upstream::connect_and_send(&candidates, &hello, connect_timeout, eject_for, health).await
    else {
        tracing::debug!(client = %peer, app = %app.name, "passthrough: no backend took the connection");
        return;
    };
    let hello_len = hello.len() as u64;
    drop(hello);
    let copied = tunnel::run(&mut client, &mut backend, idle, tunnel::Close::Both).await;
    tracing::debug!(
        client = %peer,
        app = %app.name,
        backend = %addr,
        bytes_in = copied.up + hello_len,
        bytes_out = copied.down,
        ended = ?copied.ended,
        "passthrough connection ended"
    );
}

/// A stream whose first reads return bytes already read from it.
pub(crate) struct Replay<S> {
    prefix: Vec<u8>,
    pos: usize,
    inner: S,
}

impl<S: AsyncRead + Unpin> AsyncRead for Replay<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.pos < self.prefix.len() {
            let n = (self.prefix.len() - self.pos).min(buf.remaining());
            let start = self.pos;
            buf.put_slice(&self.prefix[start..start + n]);
            self.pos += n;
            if self.pos == self.prefix.len() {
                self.prefix = Vec::new();
                self.pos = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Replay<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt, duplex};

    use super::*;

    #[tokio::test]
    async fn replay_returns_the_prefix_then_the_stream() {
        let (mut near, far) = duplex(64);
        near.write_all(b" world").await.unwrap();
        drop(near);
        let mut r = Replay {
            prefix: b"hello".to_vec(),
            pos: 0,
            inner: far,
        };
        let mut small = [0u8; 3];
        r.read_exact(&mut small).await.unwrap();
        assert_eq!(&small, b"hel");
        let mut rest = String::new();
        r.read_to_string(&mut rest).await.unwrap();
        assert_eq!(rest, "lo world");
    }
}
