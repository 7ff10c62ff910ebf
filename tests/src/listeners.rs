//! Echo servers inside a namespace, on plain threads. The sockets are created by a thread that
//! entered the namespace ([`crate::in_netns`]); the serving threads then run anywhere. Dropping a
//! server closes its listener and every open connection and joins its threads.

use std::{
    io::{self, Read, Write},
    net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::{self, JoinHandle},
    time::Duration,
};

use crate::{
    netns::{NetNs, in_netns},
    sandbox::{CLIENT_TCP_PORT, CLIENT_UDP_PORT, EDGE_TCP_PORTS, EDGE_UDP_PORT},
};

const POLL: Duration = Duration::from_millis(20);
/// A connection idle this long is closed by the server.
const IDLE: Duration = Duration::from_secs(5);

/// A `TcpListener` bound inside `ns`.
pub fn tcp_listener(ns: &NetNs, addr: SocketAddr) -> io::Result<TcpListener> {
    in_netns(ns.name(), || TcpListener::bind(addr))?
}

/// A `UdpSocket` bound inside `ns`.
pub fn udp_socket(ns: &NetNs, addr: SocketAddr) -> io::Result<UdpSocket> {
    in_netns(ns.name(), || UdpSocket::bind(addr))?
}

/// TCP echo server: accepts, echoes every byte back until EOF or [`IDLE`].
pub struct TcpEchoServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    accepted: Arc<AtomicU64>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
    thread: Option<JoinHandle<()>>,
}

impl TcpEchoServer {
    pub fn start(ns: &NetNs, addr: SocketAddr) -> io::Result<TcpEchoServer> {
        let listener = tcp_listener(ns, addr)?;
        let addr = listener.local_addr()?;
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicU64::new(0));
        let conns: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let thread = {
            let (stop, accepted, conns) = (stop.clone(), accepted.clone(), conns.clone());
            thread::Builder::new()
                .name(format!("ngt-tcp-{addr}"))
                .spawn(move || {
                    let mut workers = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        match listener.accept() {
                            Ok((stream, _)) => {
                                accepted.fetch_add(1, Ordering::Relaxed);
                                if let Ok(clone) = stream.try_clone() {
                                    conns.lock().unwrap_or_else(|p| p.into_inner()).push(clone);
                                }
                                workers.push(thread::spawn(move || echo(stream)));
                            }
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => thread::sleep(POLL),
                            Err(_) => thread::sleep(POLL),
                        }
                    }
                    for w in workers {
                        let _ = w.join();
                    }
                })?
        };
        Ok(TcpEchoServer {
            addr,
            stop,
            accepted,
            conns,
            thread: Some(thread),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }
}

fn echo(mut stream: TcpStream) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(IDLE));
    let _ = stream.set_write_timeout(Some(IDLE));
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if stream.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
        }
    }
}

impl Drop for TcpEchoServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for c in self
            .conns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            let _ = c.shutdown(Shutdown::Both);
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// UDP echo server: sends every datagram back to its sender.
pub struct UdpEchoServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    received: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl UdpEchoServer {
    pub fn start(ns: &NetNs, addr: SocketAddr) -> io::Result<UdpEchoServer> {
        let socket = udp_socket(ns, addr)?;
        let addr = socket.local_addr()?;
        socket.set_read_timeout(Some(POLL))?;
        let stop = Arc::new(AtomicBool::new(false));
        let received = Arc::new(AtomicU64::new(0));
        let thread = {
            let (stop, received) = (stop.clone(), received.clone());
            thread::Builder::new()
                .name(format!("ngt-udp-{addr}"))
                .spawn(move || {
                    let mut buf = [0u8; 65536];
                    while !stop.load(Ordering::Relaxed) {
                        if let Ok((n, peer)) = socket.recv_from(&mut buf) {
                            received.fetch_add(1, Ordering::Relaxed);
                            let _ = socket.send_to(&buf[..n], peer);
                        }
                    }
                })?
        };
        Ok(UdpEchoServer {
            addr,
            stop,
            received,
            thread: Some(thread),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Datagrams received so far.
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }
}

impl Drop for UdpEchoServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A set of echo servers in one namespace, all on the wildcard address.
pub struct Services {
    pub tcp: Vec<TcpEchoServer>,
    pub udp: Vec<UdpEchoServer>,
}

impl Services {
    /// TCP echo on each of `tcp_ports` and UDP echo on each of `udp_ports`, on 0.0.0.0.
    pub fn start(ns: &NetNs, tcp_ports: &[u16], udp_ports: &[u16]) -> Services {
        let any = |port| SocketAddr::from(([0, 0, 0, 0], port));
        let tcp = tcp_ports
            .iter()
            .map(|&p| {
                TcpEchoServer::start(ns, any(p))
                    .unwrap_or_else(|e| panic!("TCP listener :{p} in {}: {e}", ns.name()))
            })
            .collect();
        let udp = udp_ports
            .iter()
            .map(|&p| {
                UdpEchoServer::start(ns, any(p))
                    .unwrap_or_else(|e| panic!("UDP echo :{p} in {}: {e}", ns.name()))
            })
            .collect();
        Services { tcp, udp }
    }

    /// The edge's standard services: TCP 80, 443, 22, 8080 and UDP 53.
    pub fn edge(ns: &NetNs) -> Services {
        Self::start(ns, &EDGE_TCP_PORTS, &[EDGE_UDP_PORT])
    }

    /// The client's services the edge connects out to: TCP 9000 and UDP 5353.
    pub fn client(ns: &NetNs) -> Services {
        Self::start(ns, &[CLIENT_TCP_PORT], &[CLIENT_UDP_PORT])
    }

    /// The TCP server on `port`.
    pub fn tcp(&self, port: u16) -> &TcpEchoServer {
        self.tcp
            .iter()
            .find(|s| s.addr.port() == port)
            .unwrap_or_else(|| panic!("no TCP service on {port}"))
    }

    /// The UDP server on `port`.
    pub fn udp(&self, port: u16) -> &UdpEchoServer {
        self.udp
            .iter()
            .find(|s| s.addr.port() == port)
            .unwrap_or_else(|| panic!("no UDP service on {port}"))
    }
}
