//! Listening sockets with `SO_REUSEPORT`, so a second `netguard run` can bind the same proxy and
//! DNS addresses while the first still serves, and take over as the first drains (README,
//! "Upgrading without a gap").
//!
//! Linux only lets sockets of the same effective user join a reuseport group, so another user's
//! process cannot take a share of the traffic. While two processes listen, new connections and
//! datagrams are spread between them; both run the same config, so either answers alike. When
//! the old listener closes, the connections queued on it are reset unless
//! `net.ipv4.tcp_migrate_req = 1` (Linux 5.14+), which moves them to the new listener.

use std::{io, net::SocketAddr};

use socket2::{Domain, Protocol, Socket, Type};

/// Pending connections per listener (what tokio and most servers use).
const BACKLOG: i32 = 1024;

fn socket(addr: SocketAddr, ty: Type, protocol: Protocol) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), ty, Some(protocol))?;
    // SO_REUSEADDR as std sets it: a restart is not refused while old connections linger.
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(socket)
}

/// A non-blocking TCP listener on `addr` with `SO_REUSEADDR` and `SO_REUSEPORT`.
pub fn tcp_listener(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let socket = socket(addr, Type::STREAM, Protocol::TCP)?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}

/// A non-blocking UDP socket on `addr` with `SO_REUSEADDR` and `SO_REUSEPORT`.
pub fn udp_socket(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
    Ok(socket(addr, Type::DGRAM, Protocol::UDP)?.into())
}

/// Whether the kernel moves connections queued on a closing listener to another listener of
/// its reuseport group (`net.ipv4.tcp_migrate_req`); `None` if unknown (older kernels).
pub fn migrates_queued_connections() -> Option<bool> {
    std::fs::read_to_string("/proc/sys/net/ipv4/tcp_migrate_req")
        .ok()
        .map(|v| v.trim() != "0")
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use super::*;

    #[test]
    fn two_listeners_share_a_port_and_the_survivor_takes_over() {
        let first = tcp_listener("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = first.local_addr().unwrap();
        let second = tcp_listener(addr).expect("second listener on the same port");
        drop(first);
        second.set_nonblocking(false).unwrap();
        let mut c = std::net::TcpStream::connect(addr).expect("the second one accepts");
        let (mut s, _) = second.accept().unwrap();
        c.write_all(b"x").unwrap();
        let mut b = [0u8; 1];
        s.read_exact(&mut b).unwrap();
        // A plain socket (no SO_REUSEPORT) on a taken port is still refused.
        assert!(std::net::TcpListener::bind(addr).is_err());
        let udp = udp_socket("127.0.0.1:0".parse().unwrap()).unwrap();
        let uaddr = udp.local_addr().unwrap();
        udp_socket(uaddr).expect("second UDP socket on the same port");
    }
}
