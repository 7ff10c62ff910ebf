//! Bulk TCP transfers between two namespaces, measured at the receiver: a small iperf3 made of
//! threads, with every flow's sender and receiver pinned to a CPU (flow `i` on CPU `i mod n`),
//! so parallel flows load every CPU, and with the received bytes binned by arrival time.
//!
//! Every transfer is bounded: senders stop at the deadline, receivers at the deadline plus
//! [`DRAIN`], all sockets have timeouts, and [`BulkTransfer::wait`] joins every thread.

use std::{
    io::{self, Read, Write},
    net::{Shutdown, SocketAddr, TcpListener, TcpStream},
    sync::{
        Arc, Barrier, OnceLock,
        atomic::{AtomicU64, Ordering},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use crate::netns::{NetNs, in_netns};

/// How long receivers keep reading after the senders' deadline (data still in flight).
pub const DRAIN: Duration = Duration::from_secs(3);
/// Connect and accept time limit.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Width of one bin of [`Throughput`].
pub const BIN: Duration = Duration::from_millis(50);

const CHUNK: usize = 128 * 1024;
const SOCKET_TIMEOUT: Duration = Duration::from_millis(200);

struct Shared {
    bins: Vec<AtomicU64>,
}

impl Shared {
    fn add(&self, since_start: Duration, bytes: u64) {
        let i = (since_start.as_nanos() / BIN.as_nanos()) as usize;
        let i = i.min(self.bins.len() - 1);
        self.bins[i].fetch_add(bytes, Ordering::Relaxed);
    }
}

/// A running transfer; [`BulkTransfer::wait`] returns what the receivers got. Dropping it
/// without `wait` (a test failed meanwhile) still joins its threads, which end by themselves
/// within the duration plus [`DRAIN`].
pub struct BulkTransfer {
    start: Instant,
    duration: Duration,
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<u64>>,
    flows: usize,
}

impl BulkTransfer {
    /// Listens on `listen` (port 0: any) in `receiver`, connects `flows` TCP connections to it
    /// from `sender`, then sends as fast as possible on all of them for `duration`. Returns once
    /// the data is flowing; the clock ([`BulkTransfer::start_time`]) starts after every connection
    /// is established.
    pub fn start(
        sender: &NetNs,
        receiver: &NetNs,
        listen: SocketAddr,
        flows: usize,
        duration: Duration,
    ) -> io::Result<BulkTransfer> {
        assert!(flows > 0);
        let listener = in_netns(receiver.name(), || TcpListener::bind(listen))??;
        let addr = listener.local_addr()?;
        let senders: Vec<TcpStream> = in_netns(sender.name(), || {
            (0..flows)
                .map(|_| TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT))
                .collect::<io::Result<Vec<_>>>()
        })?
        .map_err(|e| io::Error::new(e.kind(), format!("connect to {addr}: {e}")))?;
        listener.set_nonblocking(true)?;
        let deadline = Instant::now() + CONNECT_TIMEOUT;
        let mut receivers = Vec::with_capacity(flows);
        while receivers.len() < flows {
            match listener.accept() {
                Ok((s, _)) => {
                    s.set_nonblocking(false)?;
                    receivers.push(s);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if Instant::now() >= deadline {
                        return Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            format!("accepted {} of {flows} flows on {addr}", receivers.len()),
                        ));
                    }
                    thread::sleep(Duration::from_millis(5));
                }
                Err(e) => return Err(e),
            }
        }
        let nbins = ((duration + DRAIN).as_nanos() / BIN.as_nanos()) as usize + 2;
        let shared = Arc::new(Shared {
            bins: (0..nbins).map(|_| AtomicU64::new(0)).collect(),
        });
        let cpus = thread::available_parallelism().map_or(1, |n| n.get());
        // Every thread pins itself, then all start together, at `start`.
        let barrier = Arc::new(Barrier::new(2 * flows + 1));
        let start_at = Arc::new(OnceLock::<Instant>::new());
        let mut threads = Vec::with_capacity(2 * flows);
        for (i, stream) in receivers.into_iter().enumerate() {
            let (shared, barrier, start_at) = (shared.clone(), barrier.clone(), start_at.clone());
            threads.push(thread::spawn(move || {
                pin_to_cpu(i % cpus);
                barrier.wait();
                let start = *start_at.get().expect("set before the barrier opens");
                receive(stream, &shared, start)
            }));
        }
        for (i, stream) in senders.into_iter().enumerate() {
            let (barrier, start_at) = (barrier.clone(), start_at.clone());
            threads.push(thread::spawn(move || {
                pin_to_cpu(i % cpus);
                barrier.wait();
                let start = *start_at.get().expect("set before the barrier opens");
                send(stream, start + duration)
            }));
        }
        let start = Instant::now();
        let _ = start_at.set(start);
        barrier.wait();
        Ok(BulkTransfer {
            start,
            duration,
            shared,
            threads,
            flows,
        })
    }

    /// When the senders started.
    pub fn start_time(&self) -> Instant {
        self.start
    }

    /// Waits for the senders' deadline and the receivers' drain, joins every thread.
    pub fn wait(mut self) -> Throughput {
        let mut sent = 0;
        for (i, t) in std::mem::take(&mut self.threads).into_iter().enumerate() {
            let n = match t.join() {
                Ok(n) => n,
                Err(panic) => std::panic::resume_unwind(panic),
            };
            if i >= self.flows {
                sent += n;
            }
        }
        Throughput {
            bins: self
                .shared
                .bins
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .collect(),
            duration: self.duration,
            flows: self.flows,
            sent,
        }
    }
}

impl Drop for BulkTransfer {
    fn drop(&mut self) {
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Sends until `until`; returns the bytes written.
fn send(mut stream: TcpStream, until: Instant) -> u64 {
    let _ = stream.set_write_timeout(Some(SOCKET_TIMEOUT));
    let buf = vec![0x5au8; CHUNK];
    let mut sent = 0u64;
    while Instant::now() < until {
        match stream.write(&buf) {
            Ok(0) => break,
            Ok(n) => sent += n as u64,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) => {}
            Err(_) => break,
        }
    }
    let _ = stream.shutdown(Shutdown::Write);
    sent
}

/// Reads until EOF or the transfer's hard end; adds every read to its arrival bin.
fn receive(mut stream: TcpStream, shared: &Shared, start: Instant) -> u64 {
    let hard_end = start + BIN * (shared.bins.len() as u32 - 2);
    let _ = stream.set_read_timeout(Some(SOCKET_TIMEOUT));
    let mut buf = vec![0u8; CHUNK];
    let mut got = 0u64;
    while Instant::now() < hard_end {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                got += n as u64;
                shared.add(start.elapsed(), n as u64);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) => {}
            Err(_) => break,
        }
    }
    got
}

/// Pins the calling thread to `cpu` (best effort: a failure leaves it unpinned).
pub fn pin_to_cpu(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET writes inside it;
    // sched_setaffinity(0, …) affects the calling thread only.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// What the receivers got, in [`BIN`]-wide bins from the senders' start.
#[derive(Clone, Debug)]
pub struct Throughput {
    pub bins: Vec<u64>,
    pub duration: Duration,
    pub flows: usize,
    /// Bytes the senders wrote into their sockets.
    pub sent: u64,
}

impl Throughput {
    fn index(t: Duration) -> usize {
        (t.as_nanos() / BIN.as_nanos()) as usize
    }

    /// Bytes received in `[from, to)` (rounded to bins).
    pub fn bytes(&self, from: Duration, to: Duration) -> u64 {
        let (a, b) = (Self::index(from), Self::index(to).min(self.bins.len()));
        self.bins.get(a..b).map_or(0, |s| s.iter().sum())
    }

    /// Bytes per second received in `[from, to)`.
    pub fn rate(&self, from: Duration, to: Duration) -> f64 {
        let (a, b) = (Self::index(from), Self::index(to).min(self.bins.len()));
        let secs = (b.saturating_sub(a) as f64) * BIN.as_secs_f64();
        self.bytes(from, to) as f64 / secs
    }

    pub fn total(&self) -> u64 {
        self.bins.iter().sum()
    }

    /// The start of the first bin in which anything arrived.
    pub fn first_arrival(&self) -> Option<Duration> {
        self.bins
            .iter()
            .position(|&b| b > 0)
            .map(|i| BIN * i as u32)
    }

    /// The end of the first bin by which `bytes` had been received in total.
    pub fn time_to(&self, bytes: u64) -> Option<Duration> {
        let mut sum = 0;
        for (i, b) in self.bins.iter().enumerate() {
            sum += b;
            if sum >= bytes {
                return Some(BIN * (i as u32 + 1));
            }
        }
        None
    }

    /// Received bytes up to the end of each bin: `(end of bin, cumulative bytes)`.
    pub fn cumulative(&self) -> Vec<(Duration, u64)> {
        let mut sum = 0;
        self.bins
            .iter()
            .enumerate()
            .map(|(i, b)| {
                sum += b;
                (BIN * (i as u32 + 1), sum)
            })
            .collect()
    }

    /// Rates per `step` up to the senders' deadline, in MB/s, for messages.
    pub fn profile(&self, step: Duration) -> String {
        let mut out = Vec::new();
        let mut t = Duration::ZERO;
        while t < self.duration {
            let end = (t + step).min(self.duration);
            out.push(format!("{:.2}", self.rate(t, end) / 1e6));
            t = end;
        }
        format!("[{}] MB/s per {step:?}", out.join(", "))
    }
}
