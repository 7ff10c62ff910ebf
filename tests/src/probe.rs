//! Probes run from inside a namespace: TCP connects (with a chosen source address and port),
//! TCP and UDP echo round trips, ping, neighbour (ARP) state, and packet captures.
//!
//! TCP connects use raw `socket`/`bind`/`connect` + `poll` on a thread that entered the
//! namespace: the outcome is exact (SYN-ACK → `Connected`, RST → `Refused`, nothing →
//! `TimedOut`) with no tool output to parse.

use std::{
    fmt,
    io::{self, Read, Write},
    mem,
    net::{IpAddr, SocketAddr, TcpStream, UdpSocket},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    path::PathBuf,
    process::Command,
    thread,
    time::{Duration, Instant},
};

use crate::{
    cmd::{self, COMMAND_TIMEOUT, Proc, TempDir},
    netns::NetNs,
};

/// A connect that gets no answer is declared timed out after this long; on a veth an answered
/// SYN takes well under a millisecond.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// What a TCP connect attempt saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProbeResult {
    /// The handshake completed (for [`tcp_echo`]: and the echo came back).
    Connected,
    /// A RST came back (`ECONNREFUSED`).
    Refused,
    /// Nothing came back within the timeout.
    TimedOut,
    /// Anything else: an ICMP error (`EHOSTUNREACH`, …), a failed bind, a broken echo.
    Failed(String),
}

impl fmt::Display for ProbeResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProbeResult::Connected => f.write_str("connected"),
            ProbeResult::Refused => f.write_str("refused (RST)"),
            ProbeResult::TimedOut => f.write_str("timed out"),
            ProbeResult::Failed(why) => write!(f, "failed: {why}"),
        }
    }
}

/// TCP connect from `ns` to `dst`, from source address `src` if given (the kernel picks the
/// port).
pub fn tcp_connect(
    ns: &NetNs,
    src: Option<IpAddr>,
    dst: SocketAddr,
    timeout: Duration,
) -> ProbeResult {
    tcp_connect_from(ns, src.map(|ip| SocketAddr::new(ip, 0)), dst, timeout)
}

/// TCP connect from `ns` to `dst`, bound to `src` (address and port) if given.
pub fn tcp_connect_from(
    ns: &NetNs,
    src: Option<SocketAddr>,
    dst: SocketAddr,
    timeout: Duration,
) -> ProbeResult {
    match ns.run(|| connect(src, dst, timeout)) {
        Ok(_stream) => ProbeResult::Connected,
        Err(r) => r,
    }
}

/// Connects like [`tcp_connect_from`], then sends a line and expects it echoed back (the
/// servers in [`crate::listeners`] echo). `Connected` means the whole round trip worked, which
/// also proves the client's ACK and data got through.
pub fn tcp_echo(
    ns: &NetNs,
    src: Option<SocketAddr>,
    dst: SocketAddr,
    timeout: Duration,
) -> ProbeResult {
    ns.run(|| {
        let mut stream = match connect(src, dst, timeout) {
            Ok(s) => s,
            Err(r) => return r,
        };
        let msg = format!("netguard-probe {src:?} -> {dst}\n");
        let result = (|| -> io::Result<Vec<u8>> {
            stream.set_read_timeout(Some(timeout))?;
            stream.set_write_timeout(Some(timeout))?;
            stream.write_all(msg.as_bytes())?;
            let mut back = vec![0u8; msg.len()];
            stream.read_exact(&mut back)?;
            Ok(back)
        })();
        match result {
            Ok(back) if back == msg.as_bytes() => ProbeResult::Connected,
            Ok(back) => ProbeResult::Failed(format!(
                "echo mismatch: {:?}",
                String::from_utf8_lossy(&back)
            )),
            Err(e) => ProbeResult::Failed(format!("connected, but the echo failed: {e}")),
        }
    })
}

/// A non-blocking TCP socket of `dst`'s family.
fn stream_socket(dst: SocketAddr) -> Result<OwnedFd, ProbeResult> {
    let domain = if dst.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: plain socket(2); the result is checked and owned right away.
    let raw = unsafe {
        libc::socket(
            domain,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if raw < 0 {
        return Err(ProbeResult::Failed(format!(
            "socket: {}",
            io::Error::last_os_error()
        )));
    }
    // SAFETY: `raw` is a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// The socket work behind the TCP probes; runs on a thread inside the namespace.
fn connect(
    src: Option<SocketAddr>,
    dst: SocketAddr,
    timeout: Duration,
) -> Result<TcpStream, ProbeResult> {
    let failed =
        |what: &str| ProbeResult::Failed(format!("{what}: {}", io::Error::last_os_error()));
    let fd = stream_socket(dst)?;
    let one: libc::c_int = 1;
    // SAFETY: SO_REUSEADDR takes a c_int; pointer and length describe `one`. It lets a probe
    // bind a fixed source port again while an earlier connection from it is in TIME_WAIT.
    unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_REUSEADDR,
            (&raw const one).cast(),
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if let Some(src) = src {
        let (sa, len) = sockaddr(&src);
        // SAFETY: `sa` is a properly initialised sockaddr of length `len`.
        if unsafe { libc::bind(fd.as_raw_fd(), (&raw const sa).cast(), len) } != 0 {
            return Err(failed(&format!("bind {src}")));
        }
    }
    let (sa, len) = sockaddr(&dst);
    // SAFETY: as above.
    if unsafe { libc::connect(fd.as_raw_fd(), (&raw const sa).cast(), len) } != 0 {
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EINPROGRESS) {
            return Err(classify(err.raw_os_error().unwrap_or(0)));
        }
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLOUT,
            revents: 0,
        };
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let ms = left.as_millis().min(i32::MAX as u128) as libc::c_int;
            // SAFETY: one valid pollfd.
            let n = unsafe { libc::poll(&mut pfd, 1, ms) };
            if n > 0 {
                break;
            }
            if n == 0 {
                // Closing a socket in SYN_SENT sends nothing, so a timed-out probe leaves no trace.
                return Err(ProbeResult::TimedOut);
            }
            if io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                return Err(failed("poll"));
            }
        }
        let mut so_error: libc::c_int = 0;
        let mut optlen = mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: SO_ERROR writes one c_int into `so_error`.
        let rc = unsafe {
            libc::getsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_ERROR,
                (&raw mut so_error).cast(),
                &mut optlen,
            )
        };
        if rc != 0 {
            return Err(failed("getsockopt(SO_ERROR)"));
        }
        if so_error != 0 {
            return Err(classify(so_error));
        }
    }
    let stream = TcpStream::from(fd);
    stream
        .set_nonblocking(false)
        .map_err(|e| ProbeResult::Failed(format!("set_nonblocking: {e}")))?;
    Ok(stream)
}

fn classify(errno: i32) -> ProbeResult {
    match errno {
        libc::ECONNREFUSED => ProbeResult::Refused,
        libc::ETIMEDOUT => ProbeResult::TimedOut,
        _ => ProbeResult::Failed(io::Error::from_raw_os_error(errno).to_string()),
    }
}

fn sockaddr(addr: &SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain data; all-zero is a valid (AF_UNSPEC) value.
    let mut storage: libc::sockaddr_storage = unsafe { mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and suitably aligned for sockaddr_in.
            unsafe { (&raw mut storage).cast::<libc::sockaddr_in>().write(sin) };
            mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: as above, for sockaddr_in6.
            unsafe { (&raw mut storage).cast::<libc::sockaddr_in6>().write(sin6) };
            mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

/// Sends `payload` from `ns` to `dst` over UDP and reports whether any reply came back within
/// `timeout`. The datagram is repeated three times across the timeout, so one loss does not
/// decide the outcome either way.
pub fn udp_probe(ns: &NetNs, dst: SocketAddr, payload: &[u8], timeout: Duration) -> bool {
    udp_request(ns, None, dst, payload, timeout).is_some()
}

/// [`udp_probe`] from a chosen source address (any port).
pub fn udp_probe_from(
    ns: &NetNs,
    src: IpAddr,
    dst: SocketAddr,
    payload: &[u8],
    timeout: Duration,
) -> bool {
    udp_request(ns, Some(SocketAddr::new(src, 0)), dst, payload, timeout).is_some()
}

/// Sends `payload` to `dst` from a socket bound to `src` (default: any address, any port) and
/// returns the first datagram that comes back from `dst`.
pub fn udp_request(
    ns: &NetNs,
    src: Option<SocketAddr>,
    dst: SocketAddr,
    payload: &[u8],
    timeout: Duration,
) -> Option<Vec<u8>> {
    let bind = src.unwrap_or_else(|| {
        if dst.is_ipv4() {
            "0.0.0.0:0".parse().unwrap()
        } else {
            "[::]:0".parse().unwrap()
        }
    });
    let socket = crate::listeners::udp_socket(ns, bind)
        .unwrap_or_else(|e| panic!("UDP bind {bind} in {}: {e}", ns.name()));
    udp_exchange(&socket, dst, payload, timeout)
}

/// Sends `payload` to `dst` on an existing socket (three times across `timeout`) and returns the
/// first datagram from `dst`.
pub fn udp_exchange(
    socket: &UdpSocket,
    dst: SocketAddr,
    payload: &[u8],
    timeout: Duration,
) -> Option<Vec<u8>> {
    const SENDS: u32 = 3;
    let start = Instant::now();
    let mut buf = vec![0u8; 65536];
    for i in 0..SENDS {
        let _ = socket.send_to(payload, dst);
        let until = start + timeout * (i + 1) / SENDS;
        if let Some(n) = recv_from_until(socket, dst, &mut buf, until) {
            return Some(buf[..n].to_vec());
        }
    }
    None
}

/// Receives on `socket` until `until`; returns the length of the first datagram from `from`.
fn recv_from_until(
    socket: &UdpSocket,
    from: SocketAddr,
    buf: &mut [u8],
    until: Instant,
) -> Option<usize> {
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        socket.set_read_timeout(Some(left)).ok()?;
        match socket.recv_from(buf) {
            Ok((n, peer)) if peer == from => return Some(n),
            Ok(_) => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return None;
            }
            // An ICMP error reported on the socket (e.g. port unreachable): no reply.
            Err(_) => continue,
        }
    }
}

/// Waits up to `timeout` for any datagram on `socket`; returns it and its sender.
pub fn udp_receive(socket: &UdpSocket, timeout: Duration) -> Option<(Vec<u8>, SocketAddr)> {
    let until = Instant::now() + timeout;
    let mut buf = vec![0u8; 65536];
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        socket.set_read_timeout(Some(left)).ok()?;
        match socket.recv_from(&mut buf) {
            Ok((n, peer)) => return Some((buf[..n].to_vec(), peer)),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return None;
            }
            Err(_) => continue,
        }
    }
}

/// `ping -c count` from `ns`; true if at least one reply came back.
pub fn ping(ns: &NetNs, dst: IpAddr, count: u32, timeout: Duration) -> bool {
    let secs = timeout.as_secs().max(1).to_string();
    let out = ns.output_timeout(
        &[
            "ping",
            "-n",
            "-q",
            "-c",
            &count.to_string(),
            "-i",
            "0.2",
            "-W",
            "1",
            "-w",
            &secs,
            &dst.to_string(),
        ],
        timeout + Duration::from_secs(5),
    );
    out.status.success()
}

/// One entry of `ip neigh`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Neighbour {
    /// `REACHABLE`, `STALE`, `DELAY`, `PROBE`, `INCOMPLETE`, `FAILED`, `PERMANENT`, …
    pub state: String,
    pub lladdr: Option<String>,
}

impl Neighbour {
    /// Whether the entry holds a usable link-layer address (resolution succeeded).
    pub fn is_resolved(&self) -> bool {
        self.lladdr.is_some()
            && matches!(
                self.state.as_str(),
                "REACHABLE" | "STALE" | "DELAY" | "PROBE" | "PERMANENT"
            )
    }
}

/// The neighbour entry for `addr` on `iface` in `ns`, if there is one.
pub fn neighbour(ns: &NetNs, iface: &str, addr: IpAddr) -> Option<Neighbour> {
    let out = crate::veth::ip(ns, &["neigh", "show", &addr.to_string(), "dev", iface]);
    parse_neigh(&out)
}

fn parse_neigh(out: &str) -> Option<Neighbour> {
    let line = out.lines().find(|l| !l.trim().is_empty())?;
    let words: Vec<&str> = line.split_whitespace().collect();
    let lladdr = words
        .iter()
        .position(|w| *w == "lladdr")
        .and_then(|i| words.get(i + 1))
        .map(|s| s.to_string());
    let state = words
        .iter()
        .rev()
        .find(|w| w.chars().all(|c| c.is_ascii_uppercase()))
        .map(|s| s.to_string())?;
    Some(Neighbour { state, lladdr })
}

/// Removes all neighbour entries on `iface` in `ns`.
pub fn flush_neighbours(ns: &NetNs, iface: &str) {
    crate::veth::ip(ns, &["neigh", "flush", "dev", iface]);
}

/// Polls [`neighbour`] until the entry is resolved or `timeout` passes; returns the last entry.
pub fn wait_neighbour(
    ns: &NetNs,
    iface: &str,
    addr: IpAddr,
    timeout: Duration,
) -> Option<Neighbour> {
    let deadline = Instant::now() + timeout;
    loop {
        let n = neighbour(ns, iface, addr);
        if n.as_ref().is_some_and(Neighbour::is_resolved) || Instant::now() >= deadline {
            return n;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// `tcpdump -i IFACE -nn -U -w FILE` running in a namespace. [`Capture::finish`] stops it and
/// gives the file to filter afterwards; dropping it unfinished just stops it.
pub struct Capture {
    proc: Proc,
    file: PathBuf,
    dir: TempDir,
}

impl Capture {
    /// Starts capturing every packet on `iface` and waits (up to 10 s) until tcpdump listens.
    pub fn start(ns: &NetNs, iface: &str) -> Capture {
        let dir = TempDir::new().expect("temp dir for a capture");
        let file = dir.join("capture.pcap");
        let log = dir.join("tcpdump.log");
        let file_arg = file.to_string_lossy().into_owned();
        // `--immediate-mode`: without it libpcap hands packets over in TPACKET_V3 blocks after
        // a timeout, and packets still in a block when SIGINT arrives are never written.
        // `-Z root`: tcpdump would otherwise switch to its own user and may then be unable to
        // write into our temp dir.
        let mut proc = ns.spawn(
            &[
                "tcpdump",
                "--immediate-mode",
                "-i",
                iface,
                "-nn",
                "-U",
                "-Z",
                "root",
                "-w",
                &file_arg,
            ],
            &log,
        );
        if let Err(e) = proc.wait_for_log("listening on", Duration::from_secs(10)) {
            panic!("tcpdump on {iface} in {}: {e}", ns.name());
        }
        Capture { proc, file, dir }
    }

    /// Stops tcpdump (SIGINT flushes the file) and returns the capture.
    pub fn finish(mut self) -> Captured {
        // Let packets already on the wire land in the file.
        thread::sleep(Duration::from_millis(200));
        self.proc.stop(libc::SIGINT, Duration::from_secs(5));
        Captured {
            file: self.file,
            _dir: self.dir,
        }
    }
}

/// A finished capture file.
pub struct Captured {
    file: PathBuf,
    _dir: TempDir,
}

impl Captured {
    /// `tcpdump -r FILE -nn FILTER`, one line per matching packet.
    pub fn lines(&self, filter: &str) -> Vec<String> {
        let file = self.file.to_string_lossy().into_owned();
        let out = cmd::run(
            Command::new("tcpdump").args(["-r", &file, "-nn", filter]),
            COMMAND_TIMEOUT,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            out.status.success(),
            "tcpdump -r {file} {filter:?} failed: {}",
            cmd::lossy(&out.stderr)
        );
        cmd::lossy(&out.stdout)
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(String::from)
            .collect()
    }

    /// Number of packets matching the pcap `filter`.
    pub fn count(&self, filter: &str) -> usize {
        self.lines(filter).len()
    }

    /// TCP packets with RST set, sent by `from`.
    pub fn rsts_from(&self, from: IpAddr) -> Vec<String> {
        self.lines(&format!(
            "src host {from} and tcp and tcp[tcpflags] & tcp-rst != 0"
        ))
    }

    /// ICMP (v4) packets sent by `from`.
    pub fn icmp_from(&self, from: IpAddr) -> Vec<String> {
        self.lines(&format!("src host {from} and icmp"))
    }

    pub fn path(&self) -> &std::path::Path {
        &self.file
    }
}

/// What one target of [`BackgroundProbes`] saw, in total.
#[derive(Clone, Debug, Default)]
pub struct ProbeTally {
    pub src: Option<IpAddr>,
    pub dst: Option<SocketAddr>,
    /// Connects started.
    pub attempts: u64,
    /// Connects that got no answer within the timeout.
    pub timed_out: u64,
    /// When (since [`BackgroundProbes::start`]) each connect that timed out was started.
    pub timed_out_at: Vec<Duration>,
    /// When (since [`BackgroundProbes::start`]) each connect that completed was started.
    pub connected: Vec<Duration>,
    /// Every other outcome (RST, ICMP error, failed socket call), with its start time.
    pub other: Vec<(Duration, ProbeResult)>,
}

impl fmt::Display for ProbeTally {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let src = self.src.map_or("-".to_string(), |s| s.to_string());
        let dst = self.dst.map_or("-".to_string(), |d| d.to_string());
        write!(
            f,
            "{src} → {dst}: {} attempts, {} timed out, {} connected {:?}, {} other {:?}",
            self.attempts,
            self.timed_out,
            self.connected.len(),
            self.connected,
            self.other.len(),
            self.other
        )
    }
}

/// TCP connects running continuously in the background from a namespace, one thread per
/// target: a new non-blocking connect every `interval`, each given `timeout` to be answered, so
/// several SYNs are in flight at once and a gap in a filter longer than `interval` meets at
/// least one of them. [`BackgroundProbes::stop`] (or the drop) ends them; attempts still in
/// flight then get their full timeout first.
pub struct BackgroundProbes {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    attempts: std::sync::Arc<std::sync::atomic::AtomicU64>,
    connected: std::sync::Arc<std::sync::atomic::AtomicU64>,
    threads: Vec<thread::JoinHandle<ProbeTally>>,
}

impl BackgroundProbes {
    /// Starts probing `targets` (source address, if any, and destination) from `ns`.
    pub fn start(
        ns: &NetNs,
        targets: &[(Option<IpAddr>, SocketAddr)],
        interval: Duration,
        timeout: Duration,
    ) -> BackgroundProbes {
        use std::sync::{
            Arc,
            atomic::{AtomicBool, AtomicU64},
        };
        let stop = Arc::new(AtomicBool::new(false));
        let attempts = Arc::new(AtomicU64::new(0));
        let connected = Arc::new(AtomicU64::new(0));
        let started = Instant::now();
        let threads = targets
            .iter()
            .map(|&(src, dst)| {
                let name = ns.name().to_string();
                let shared = (stop.clone(), attempts.clone(), connected.clone());
                thread::Builder::new()
                    .name(format!("ngt-probe-{dst}"))
                    .spawn(move || {
                        let (stop, attempts, connected) = shared;
                        let counters = Counters {
                            stop: &stop,
                            attempts: &attempts,
                            connected: &connected,
                        };
                        crate::netns::in_netns(&name, || {
                            probe_loop(src, dst, interval, timeout, started, &counters)
                        })
                        .unwrap_or_else(|e| ProbeTally {
                            src,
                            dst: Some(dst),
                            other: vec![(
                                Duration::ZERO,
                                ProbeResult::Failed(format!("entering netns {name}: {e}")),
                            )],
                            ..ProbeTally::default()
                        })
                    })
                    .expect("spawn a probe thread")
            })
            .collect();
        BackgroundProbes {
            stop,
            attempts,
            connected,
            threads,
        }
    }

    /// Connects started so far, over all targets.
    pub fn attempts_so_far(&self) -> u64 {
        self.attempts.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Connects completed so far, over all targets.
    pub fn connected_so_far(&self) -> u64 {
        self.connected.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Stops starting new connects, lets those in flight finish or time out, and returns one
    /// tally per target, in the order given.
    pub fn stop(mut self) -> Vec<ProbeTally> {
        self.finish()
    }

    fn finish(&mut self) -> Vec<ProbeTally> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.threads
            .drain(..)
            .map(|t| match t.join() {
                Ok(tally) => tally,
                Err(panic) => std::panic::resume_unwind(panic),
            })
            .collect()
    }
}

impl Drop for BackgroundProbes {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

struct Counters<'a> {
    stop: &'a std::sync::atomic::AtomicBool,
    attempts: &'a std::sync::atomic::AtomicU64,
    connected: &'a std::sync::atomic::AtomicU64,
}

/// The body of one [`BackgroundProbes`] thread; runs inside the namespace.
fn probe_loop(
    src: Option<IpAddr>,
    dst: SocketAddr,
    interval: Duration,
    timeout: Duration,
    started: Instant,
    counters: &Counters<'_>,
) -> ProbeTally {
    use std::sync::atomic::Ordering::Relaxed;
    let mut tally = ProbeTally {
        src,
        dst: Some(dst),
        ..ProbeTally::default()
    };
    let mut pending: Vec<(OwnedFd, Instant)> = Vec::new();
    let mut next = Instant::now();
    loop {
        let stopping = counters.stop.load(Relaxed);
        if stopping && pending.is_empty() {
            return tally;
        }
        let now = Instant::now();
        if !stopping && now >= next {
            next = (next + interval).max(now);
            tally.attempts += 1;
            counters.attempts.fetch_add(1, Relaxed);
            let at = now - started;
            match start_connect(src, dst) {
                Ok(Some(fd)) => pending.push((fd, now)),
                Ok(None) => {
                    counters.connected.fetch_add(1, Relaxed);
                    tally.connected.push(at);
                }
                Err(r) => tally.other.push((at, r)),
            }
        }
        let wait = if stopping {
            Duration::from_millis(10)
        } else {
            next.saturating_duration_since(Instant::now())
        };
        let mut pfds: Vec<libc::pollfd> = pending
            .iter()
            .map(|(fd, _)| libc::pollfd {
                fd: fd.as_raw_fd(),
                events: libc::POLLOUT,
                revents: 0,
            })
            .collect();
        // SAFETY: `pfds` is a valid array of `pfds.len()` pollfds (poll with none just sleeps).
        let n = unsafe {
            libc::poll(
                pfds.as_mut_ptr(),
                pfds.len() as libc::nfds_t,
                wait.as_millis().min(1000) as libc::c_int,
            )
        };
        let now = Instant::now();
        let mut keep = Vec::with_capacity(pending.len());
        for ((fd, at), pfd) in pending.drain(..).zip(&pfds) {
            let since = at - started;
            if n > 0 && pfd.revents != 0 {
                match so_error(&fd) {
                    Ok(0) => {
                        counters.connected.fetch_add(1, Relaxed);
                        tally.connected.push(since);
                    }
                    Ok(errno) => tally.other.push((since, classify(errno))),
                    Err(e) => tally
                        .other
                        .push((since, ProbeResult::Failed(format!("SO_ERROR: {e}")))),
                }
            } else if now.duration_since(at) >= timeout {
                // Closing a socket in SYN_SENT sends nothing.
                tally.timed_out += 1;
                tally.timed_out_at.push(since);
            } else {
                keep.push((fd, at));
            }
        }
        pending = keep;
    }
}

/// A non-blocking connect: `Ok(Some(fd))` in progress, `Ok(None)` connected at once.
fn start_connect(src: Option<IpAddr>, dst: SocketAddr) -> Result<Option<OwnedFd>, ProbeResult> {
    let failed =
        |what: &str| ProbeResult::Failed(format!("{what}: {}", io::Error::last_os_error()));
    let fd = stream_socket(dst)?;
    if let Some(src) = src {
        let (sa, len) = sockaddr(&SocketAddr::new(src, 0));
        // SAFETY: `sa` is a properly initialised sockaddr of length `len`.
        if unsafe { libc::bind(fd.as_raw_fd(), (&raw const sa).cast(), len) } != 0 {
            return Err(failed(&format!("bind {src}")));
        }
    }
    let (sa, len) = sockaddr(&dst);
    // SAFETY: as above.
    if unsafe { libc::connect(fd.as_raw_fd(), (&raw const sa).cast(), len) } == 0 {
        return Ok(None);
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EINPROGRESS) => Ok(Some(fd)),
        other => Err(classify(other.unwrap_or(0))),
    }
}

fn so_error(fd: &OwnedFd) -> io::Result<i32> {
    let mut so_error: libc::c_int = 0;
    let mut optlen = mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: SO_ERROR writes one c_int into `so_error`.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ERROR,
            (&raw mut so_error).cast(),
            &mut optlen,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(so_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_neighbour_lines() {
        let n = parse_neigh("203.0.113.10 lladdr 02:6e:67:00:00:02 REACHABLE\n").unwrap();
        assert_eq!(n.state, "REACHABLE");
        assert_eq!(n.lladdr.as_deref(), Some("02:6e:67:00:00:02"));
        assert!(n.is_resolved());
        let n = parse_neigh("203.0.113.10  FAILED\n").unwrap();
        assert_eq!(n.state, "FAILED");
        assert!(!n.is_resolved());
        let n = parse_neigh("203.0.113.10 lladdr 02:6e:67:00:00:02 router STALE\n").unwrap();
        assert_eq!(n.state, "STALE");
        assert_eq!(parse_neigh(""), None);
    }

    #[test]
    fn sockaddr_v4_layout() {
        let (sa, len) = sockaddr(&"192.0.2.1:80".parse().unwrap());
        assert_eq!(len as usize, mem::size_of::<libc::sockaddr_in>());
        // SAFETY: `sockaddr` wrote a sockaddr_in.
        let sin = unsafe { (&raw const sa).cast::<libc::sockaddr_in>().read() };
        assert_eq!(sin.sin_family as i32, libc::AF_INET);
        assert_eq!(u16::from_be(sin.sin_port), 80);
        assert_eq!(sin.sin_addr.s_addr.to_ne_bytes(), [192, 0, 2, 1]);
    }
}
