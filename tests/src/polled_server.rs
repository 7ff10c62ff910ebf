//! The accept loop of the harness's HTTP backends: a thread that polls a non-blocking listener
//! and hands each connection, in accept order, to the backend's handler. Polled rather than
//! blocking because a backend inside a namespace cannot be woken by a connect from the dropping
//! thread, which may be in another one. Stops (and joins) when dropped; handlers see the same
//! stop flag.

use std::{
    io,
    net::{SocketAddr, TcpListener, TcpStream},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::{self, JoinHandle},
    time::Duration,
};

#[derive(Debug)]
pub struct PolledServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl PolledServer {
    /// Accepts on `listener`, checking every `poll` while idle; `on_accept` gets each
    /// connection (blocking again) and the stop flag, and must not block the loop for long:
    /// it serves the connection on a thread of its own.
    pub fn start(
        listener: TcpListener,
        poll: Duration,
        mut on_accept: impl FnMut(TcpStream, Arc<AtomicBool>) + Send + 'static,
    ) -> PolledServer {
        let addr = listener.local_addr().expect("bound address");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let conn = match listener.accept() {
                        Ok((conn, _)) => conn,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            thread::sleep(poll);
                            continue;
                        }
                        Err(_) => continue,
                    };
                    let _ = conn.set_nonblocking(false);
                    on_accept(conn, stop.clone());
                }
            })
        };
        PolledServer {
            addr,
            stop,
            thread: Some(thread),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for PolledServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
