//! A keep-alive HTTP/1.1 backend that counts the connections it accepts and records the
//! requests each one carried, for the proxy's backend connection pooling, drain and handover
//! tests.
//!
//! Every complete request (head plus Content-Length body; this module's own lenient reading via
//! [`crate::recording::request_complete`]) is answered `200` with the body `c<i>r<j>`: the
//! accepting connection's index and the request's index on it, both from 0, so a test sees
//! which backend connection served a response. The proxy sends one request at a time, so the
//! bytes up to a complete request are that request. A target starting with `/slow` is answered
//! after [`SLOW`]. Runs on std threads; stops when dropped.

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

use crate::{netns::NetNs, polled_server::PolledServer, recording::request_complete};

/// How long a `/slow…` request waits for its answer.
pub const SLOW: Duration = Duration::from_secs(2);

/// How the backend treats a connection after answering.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdlePolicy {
    /// Keep it open for more requests (until the peer closes or the backend stops).
    Keep,
    /// Close it after this much idle time, as a backend's keep-alive timeout does.
    CloseAfter(Duration),
    /// Answer the first request; on the second, close without answering — the backend's idle
    /// close crossing a request on the wire.
    DropSecond,
}

type Requests = Arc<Mutex<Vec<Vec<Vec<u8>>>>>;

#[derive(Debug)]
pub struct KeepAliveBackend {
    /// Per accepted connection, the requests it carried (complete or not).
    requests: Requests,
    server: PolledServer,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl KeepAliveBackend {
    /// On `127.0.0.1`, an ephemeral port.
    pub fn start(policy: IdlePolicy) -> KeepAliveBackend {
        let listener = TcpListener::bind("127.0.0.1:0").expect("keep-alive backend bind");
        Self::with_listener(listener, policy)
    }

    /// On `addr` inside a namespace.
    pub fn start_in(ns: &NetNs, addr: SocketAddr, policy: IdlePolicy) -> KeepAliveBackend {
        let listener = crate::listeners::tcp_listener(ns, addr)
            .unwrap_or_else(|e| panic!("keep-alive backend on {addr} in {}: {e}", ns.name()));
        Self::with_listener(listener, policy)
    }

    fn with_listener(listener: TcpListener, policy: IdlePolicy) -> KeepAliveBackend {
        let requests: Requests = Arc::default();
        let server = {
            let requests = requests.clone();
            PolledServer::start(listener, Duration::from_millis(2), move |conn, stop| {
                let index = {
                    let mut r = lock(&requests);
                    r.push(Vec::new());
                    r.len() - 1
                };
                let requests = requests.clone();
                thread::spawn(move || serve(conn, index, &requests, policy, &stop));
            })
        };
        KeepAliveBackend { requests, server }
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        lock(&self.requests).len()
    }

    /// Per connection, the requests it carried.
    pub fn requests(&self) -> Vec<Vec<Vec<u8>>> {
        lock(&self.requests).clone()
    }
}

fn serve(
    mut conn: TcpStream,
    index: usize,
    requests: &Mutex<Vec<Vec<Vec<u8>>>>,
    policy: IdlePolicy,
    stop: &AtomicBool,
) {
    let _ = conn.set_read_timeout(Some(Duration::from_millis(50)));
    let mut buf = Vec::new();
    let mut read = [0u8; 16 * 1024];
    let mut answered = 0usize;
    let mut idle_since = Instant::now();
    while !stop.load(Ordering::SeqCst) {
        if let IdlePolicy::CloseAfter(idle) = policy
            && buf.is_empty()
            && idle_since.elapsed() >= idle
        {
            break;
        }
        match conn.read(&mut read) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&read[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                continue;
            }
            Err(_) => break,
        }
        if !request_complete(&buf) {
            continue;
        }
        let request = std::mem::take(&mut buf);
        let slow = request.starts_with(b"GET /slow") || request.starts_with(b"POST /slow");
        if let Some(c) = lock(requests).get_mut(index) {
            c.push(request);
        }
        if policy == IdlePolicy::DropSecond && answered == 1 {
            break;
        }
        if slow {
            thread::sleep(SLOW);
        }
        let body = format!("c{index}r{answered}");
        let response = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        if conn.write_all(response.as_bytes()).is_err() {
            break;
        }
        answered += 1;
        idle_since = Instant::now();
    }
    let _ = conn.shutdown(Shutdown::Both);
}
