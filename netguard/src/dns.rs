//! The authoritative DNS responder for `private-network.internal.`.
//!
//! [`answer`] is pure: one query message in, one response out, decided by
//! [`Directory::resolve`](crate::private_net::Directory::resolve) for the querier's address.
//! [`spawn`] serves it on UDP and TCP (RFC 7766 framing) for the daemon; the directory behind
//! [`SharedDirectory`] is swapped on reload without touching the sockets.
//!
//! What a querier gets:
//! - a name of its own network: NOERROR, AA, the A records with the network's TTL;
//! - the same name with another type (AAAA, TXT, …): NOERROR, AA, no answer (NODATA);
//! - an unknown name in its network: NXDOMAIN, AA;
//!   (both negative answers carry the zone's SOA in the authority section, RFC 2308, so a
//!   caching resolver keeps them for the TTL only);
//! - a name of another network, a name outside the zone, or any name when the querier is not a
//!   member of a private network: REFUSED, not AA.
//!
//! The id and the question are echoed, RD is copied, RA is never set. Messages that do not
//! decode, responses, and queries whose header cannot be trusted get no answer (UDP) or close
//! the connection (TCP). A UDP answer is at most 512 bytes, or what the query's EDNS allows
//! (up to [`EDNS_PAYLOAD`]); a larger one is sent without records and with TC set, so the
//! client retries over TCP.

use std::{
    collections::BTreeSet,
    io,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::{Arc, RwLock},
    time::Duration,
};

use hickory_proto::{
    op::{Edns, Message, MessageType, OpCode, Query, ResponseCode},
    rr::{
        DNSClass, Name, RData, Record, RecordType,
        rdata::{A, SOA},
    },
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream, UdpSocket},
    task::{JoinHandle, JoinSet},
    time::timeout,
};

use crate::private_net::{Answer, Directory, QueryType};

/// The directory the responder reads; the daemon replaces the inner `Arc` on reload.
pub type SharedDirectory = Arc<RwLock<Arc<Directory>>>;

/// The zone's labels, lowercase, without the root.
const ZONE_LABELS: [&[u8]; 2] = [b"private-network", b"internal"];

/// Largest UDP answer without EDNS (RFC 1035 §4.2.1).
pub const UDP_PAYLOAD: usize = 512;
/// The UDP payload size this responder advertises and honours at most (the DNS flag day 2020
/// value: no IP fragmentation on any common path).
pub const EDNS_PAYLOAD: u16 = 1232;
/// A TCP connection with no complete query for this long is closed.
pub const TCP_IDLE: Duration = Duration::from_secs(10);
/// Longest query accepted over TCP (a real query is well under 512 bytes).
pub const MAX_TCP_QUERY: usize = 4096;
/// Open TCP connections per listener; further connections are closed at once.
pub const MAX_TCP_CONNECTIONS: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("binding DNS {proto} {addr}: {source}")]
    Bind {
        proto: &'static str,
        addr: SocketAddr,
        source: io::Error,
    },
}

/// How the answer travels, which bounds its size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// 512 bytes, or the query's EDNS payload size (at most [`EDNS_PAYLOAD`]).
    Udp,
    /// 65,535 bytes (the length prefix).
    Tcp,
}

/// Binds UDP and TCP on every address (synchronously, so a bind failure is reported at start),
/// then serves on the current tokio runtime until the returned handles are aborted (or the
/// runtime shuts down). Aborting a TCP handle also closes that listener's open connections.
/// Duplicate addresses are bound once. Must be called from within a tokio runtime.
pub fn spawn(
    listens: &[SocketAddr],
    directory: SharedDirectory,
) -> Result<Vec<JoinHandle<()>>, DnsError> {
    let addrs: BTreeSet<SocketAddr> = listens.iter().copied().collect();
    // Bind everything before spawning anything: a failure leaves nothing running.
    let mut bound = Vec::with_capacity(addrs.len());
    for &addr in &addrs {
        let udp = bind_udp(addr).map_err(|source| DnsError::Bind {
            proto: "udp",
            addr,
            source,
        })?;
        let tcp = bind_tcp(addr).map_err(|source| DnsError::Bind {
            proto: "tcp",
            addr,
            source,
        })?;
        bound.push((addr, udp, tcp));
    }
    let mut handles = Vec::with_capacity(bound.len() * 2);
    for (addr, udp, tcp) in bound {
        tracing::info!(%addr, "private-network DNS listening (udp, tcp)");
        handles.push(tokio::spawn(serve_udp(udp, directory.clone())));
        handles.push(tokio::spawn(serve_tcp(tcp, directory.clone())));
    }
    Ok(handles)
}

// SO_REUSEPORT: an upgraded daemon binds while the old one still answers.
fn bind_udp(addr: SocketAddr) -> io::Result<UdpSocket> {
    UdpSocket::from_std(crate::reuseport::udp_socket(addr)?)
}

fn bind_tcp(addr: SocketAddr) -> io::Result<TcpListener> {
    TcpListener::from_std(crate::reuseport::tcp_listener(addr)?)
}

/// The querier's IPv4 address; IPv4-mapped IPv6 is unmapped. Any other IPv6 peer gets
/// `0.0.0.0`, which is never a member (so it is refused).
fn querier(peer: SocketAddr) -> Ipv4Addr {
    match peer.ip() {
        IpAddr::V4(v4) => v4,
        IpAddr::V6(v6) => v6.to_ipv4_mapped().unwrap_or(Ipv4Addr::UNSPECIFIED),
    }
}

fn current(directory: &SharedDirectory) -> Arc<Directory> {
    directory
        .read()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .clone()
}

async fn serve_udp(socket: UdpSocket, directory: SharedDirectory) {
    // Room for any datagram, so a long one is seen whole (and then refused by the decoder)
    // rather than cut.
    let mut buf = vec![0u8; 65_535];
    loop {
        let (len, peer) = match socket.recv_from(&mut buf).await {
            Ok(received) => received,
            Err(e) => {
                tracing::debug!(error = %e, "DNS udp receive");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let Some(query) = buf.get(..len) else {
            continue;
        };
        let directory = current(&directory);
        if let Some(response) = answer_over(query, querier(peer), &directory, Transport::Udp)
            && let Err(e) = socket.send_to(&response, peer).await
        {
            tracing::debug!(%peer, error = %e, "DNS udp send");
        }
    }
}

async fn serve_tcp(listener: TcpListener, directory: SharedDirectory) {
    // Owned here, so aborting this task drops (and aborts) every connection task too.
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    if connections.len() >= MAX_TCP_CONNECTIONS {
                        tracing::debug!(%peer, "DNS tcp: too many connections, closing");
                        continue;
                    }
                    connections.spawn(serve_connection(stream, peer, directory.clone()));
                }
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::debug!(error = %e, "DNS tcp accept");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// Length-prefixed queries, one after another, until EOF, a bad message, [`TCP_IDLE`] without
/// a complete query, or a client that does not read its answers.
async fn serve_connection(mut stream: TcpStream, peer: SocketAddr, directory: SharedDirectory) {
    let querier = querier(peer);
    let mut buf = vec![0u8; MAX_TCP_QUERY];
    loop {
        let read = async {
            let len = usize::from(stream.read_u16().await?);
            if len == 0 || len > MAX_TCP_QUERY {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("query length {len}"),
                ));
            }
            let query = buf
                .get_mut(..len)
                .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidData))?;
            stream.read_exact(query).await?;
            Ok::<usize, io::Error>(len)
        };
        let len = match timeout(TCP_IDLE, read).await {
            Ok(Ok(len)) => len,
            Ok(Err(e)) => {
                if e.kind() != io::ErrorKind::UnexpectedEof {
                    tracing::debug!(%peer, error = %e, "DNS tcp read");
                }
                return;
            }
            Err(_) => return, // idle
        };
        let Some(query) = buf.get(..len) else { return };
        let directory = current(&directory);
        let Some(response) = answer_over(query, querier, &directory, Transport::Tcp) else {
            return;
        };
        let Ok(prefix) = u16::try_from(response.len()) else {
            return;
        };
        let mut framed = Vec::with_capacity(2 + response.len());
        framed.extend_from_slice(&prefix.to_be_bytes());
        framed.extend_from_slice(&response);
        match timeout(TCP_IDLE, stream.write_all(&framed)).await {
            Ok(Ok(())) => {}
            _ => return,
        }
    }
}

/// One query message in (wire bytes), one response out (wire bytes), for `querier`, sized for
/// UDP. `None`: the input is not a query worth answering (undecodable, or a response).
pub fn answer(query: &[u8], querier: Ipv4Addr, directory: &Directory) -> Option<Vec<u8>> {
    answer_over(query, querier, directory, Transport::Udp)
}

/// [`answer`] for a given transport (TCP answers are never truncated).
pub fn answer_over(
    query: &[u8],
    querier: Ipv4Addr,
    directory: &Directory,
    transport: Transport,
) -> Option<Vec<u8>> {
    let request = Message::from_vec(query).ok()?;
    if request.metadata.message_type != MessageType::Query {
        return None;
    }
    let mut response = Message::response(request.metadata.id, request.metadata.op_code);
    response.metadata.recursion_desired = request.metadata.recursion_desired;
    response.metadata.recursion_available = false;
    response.add_queries(request.queries.iter().cloned());
    if let Some(client) = &request.edns {
        let mut edns = Edns::new();
        edns.set_max_payload(EDNS_PAYLOAD).set_version(0);
        response.set_edns(edns);
        if client.version() > 0 {
            response.metadata.response_code = ResponseCode::BADVERS;
            return encode(response, limit(&request, transport));
        }
    }
    match (request.metadata.op_code, request.queries.as_slice()) {
        (OpCode::Query, [question]) => {
            respond(&mut response, question, querier, directory);
        }
        (OpCode::Query, _) => response.metadata.response_code = ResponseCode::FormErr,
        _ => response.metadata.response_code = ResponseCode::NotImp,
    }
    encode(response, limit(&request, transport))
}

/// Fills `response` for one question.
fn respond(response: &mut Message, question: &Query, querier: Ipv4Addr, directory: &Directory) {
    let name = question.name();
    let class_ok = matches!(question.query_class(), DNSClass::IN | DNSClass::ANY);
    if !class_ok || !in_zone(name) {
        response.metadata.response_code = ResponseCode::Refused;
        return;
    }
    let qtype = match question.query_type() {
        RecordType::A | RecordType::ANY => QueryType::A,
        _ => QueryType::Other,
    };
    let ttl = directory.ttl(querier);
    match directory.resolve(&lookup_text(name), qtype, querier) {
        Answer::A(addresses) => {
            response.metadata.authoritative = true;
            for address in addresses {
                response.add_answer(Record::from_rdata(name.clone(), ttl, RData::A(A(address))));
            }
        }
        Answer::NoData => {
            response.metadata.authoritative = true;
            add_soa(response, ttl);
        }
        Answer::NxDomain => {
            response.metadata.authoritative = true;
            response.metadata.response_code = ResponseCode::NXDomain;
            add_soa(response, ttl);
        }
        Answer::Refused => response.metadata.response_code = ResponseCode::Refused,
    }
}

/// Whether `name` is the zone or below it, compared label by label (ASCII case-insensitive).
fn in_zone(name: &Name) -> bool {
    let labels: Vec<&[u8]> = name.iter().collect();
    labels.len() >= ZONE_LABELS.len()
        && labels[labels.len() - ZONE_LABELS.len()..]
            .iter()
            .zip(ZONE_LABELS)
            .all(|(label, zone)| label.eq_ignore_ascii_case(zone))
}

/// The name as text for [`Directory::resolve`]. A label with any byte outside letters, digits,
/// `-` and `_` (a dot inside a label, an escape, binary) cannot be one of ours: it becomes `*`,
/// which matches nothing, so such a name is NXDOMAIN in the querier's network rather than being
/// re-split into other labels.
fn lookup_text(name: &Name) -> String {
    let mut text = String::new();
    for label in name.iter() {
        let plain = !label.is_empty()
            && label
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_');
        match std::str::from_utf8(label) {
            Ok(label) if plain => text.push_str(label),
            _ => text.push('*'),
        }
        text.push('.');
    }
    text
}

/// The zone's SOA, for negative answers: its minimum (and TTL) is the querier's TTL, so a
/// negative answer is cached no longer than a positive one.
fn add_soa(response: &mut Message, ttl: u32) {
    let (Ok(zone), Ok(mname), Ok(rname)) = (
        Name::from_ascii(crate::private_net::ZONE),
        Name::from_ascii(format!("ns.{}", crate::private_net::ZONE)),
        Name::from_ascii(format!("hostmaster.{}", crate::private_net::ZONE)),
    ) else {
        return;
    };
    let soa = SOA::new(mname, rname, 1, 3600, 600, 86_400, ttl);
    response.add_authority(Record::from_rdata(zone, ttl, RData::SOA(soa)));
}

fn limit(request: &Message, transport: Transport) -> usize {
    match transport {
        Transport::Tcp => usize::from(u16::MAX),
        Transport::Udp => match &request.edns {
            Some(edns) => usize::from(edns.max_payload().min(EDNS_PAYLOAD)).max(UDP_PAYLOAD),
            None => UDP_PAYLOAD,
        },
    }
}

/// Encodes `response`; if it is longer than `limit`, sends the header, question and OPT only,
/// with TC set.
fn encode(mut response: Message, limit: usize) -> Option<Vec<u8>> {
    let bytes = match response.to_vec() {
        Ok(bytes) => bytes,
        Err(e) => {
            tracing::debug!(error = %e, "DNS: encoding an answer");
            return None;
        }
    };
    if bytes.len() <= limit {
        return Some(bytes);
    }
    response.answers.clear();
    response.authorities.clear();
    response.additionals.clear();
    response.metadata.truncation = true;
    response.to_vec().ok().filter(|b| b.len() <= limit)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::private_net::{PnContainer, PrivateNetwork, ZONE};

    const PN_A: &str = "pn-ad0fd6a1-d05e-40ea-bf63-c4f8a75a9d8c";
    const PN_B: &str = "pn-1b2c3d4e-0000-4000-8000-000000000001";
    const AP_1: &str = "ap-a71da13f-7c70-4c00-a644-eee8558d8053";
    const AP_2: &str = "ap-00000000-1111-4222-8333-444444444444";
    const AP_BIG: &str = "ap-22222222-3333-4444-8555-666666666666";

    fn c(app: &str, kind: &str, index: u32, address: Ipv4Addr) -> PnContainer {
        PnContainer {
            app: app.into(),
            kind: kind.into(),
            index,
            address,
            public_address: None,
        }
    }

    fn a(last: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 240, 0, last)
    }

    /// Network A: app 1 (web 1–2, worker 1–2), and an app with 60 workers (for truncation).
    /// Network B: one container. 127.0.0.1 is a member of A, for the socket tests.
    fn directory() -> Directory {
        let mut a_containers = vec![
            c(AP_1, "web", 1, a(2)),
            c(AP_1, "web", 2, a(3)),
            c(AP_1, "worker", 1, a(4)),
            c(AP_1, "worker", 2, a(5)),
            c(AP_1, "clock", 1, Ipv4Addr::LOCALHOST),
        ];
        for i in 1..=60u8 {
            a_containers.push(c(AP_BIG, "worker", u32::from(i), a(100 + i)));
        }
        Directory::new(&[
            PrivateNetwork {
                id: PN_A.into(),
                interfaces: Vec::new(),
                gateway: None,
                dns_listen: None,
                dns_ttl_secs: 7,
                container: a_containers,
            },
            PrivateNetwork {
                id: PN_B.into(),
                interfaces: Vec::new(),
                gateway: None,
                dns_listen: None,
                dns_ttl_secs: 30,
                container: vec![c(AP_2, "web", 1, a(20))],
            },
        ])
    }

    fn query(name: &str, qtype: RecordType) -> Message {
        let mut m = Message::query();
        m.metadata.id = 0x1234;
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(Name::from_ascii(name).expect("name"), qtype));
        m
    }

    fn ask(m: &Message, querier: Ipv4Addr) -> Message {
        let wire = m.to_vec().expect("encode");
        let out = answer(&wire, querier, &directory()).expect("an answer");
        Message::from_vec(&out).expect("decodable answer")
    }

    fn addresses(m: &Message) -> Vec<Ipv4Addr> {
        m.answers
            .iter()
            .map(|r| match &r.data {
                RData::A(A(ip)) => *ip,
                other => panic!("not an A record: {other:?}"),
            })
            .collect()
    }

    fn check_header(r: &Message, code: ResponseCode, authoritative: bool) {
        assert_eq!(r.metadata.id, 0x1234);
        assert_eq!(r.metadata.message_type, MessageType::Response);
        assert_eq!(r.metadata.response_code, code, "{r}");
        assert_eq!(r.metadata.authoritative, authoritative, "{r}");
        assert!(r.metadata.recursion_desired, "RD copied");
        assert!(!r.metadata.recursion_available);
        assert!(!r.metadata.truncation);
        assert_eq!(r.queries.len(), 1, "question echoed");
    }

    #[test]
    fn the_three_name_forms() {
        for (name, want) in [
            (format!("{AP_1}.{PN_A}.{ZONE}"), vec![a(2), a(3)]),
            (format!("worker.{AP_1}.{PN_A}.{ZONE}"), vec![a(4), a(5)]),
            (format!("2.worker.{AP_1}.{PN_A}.{ZONE}"), vec![a(5)]),
        ] {
            let r = ask(&query(&name, RecordType::A), a(2));
            check_header(&r, ResponseCode::NoError, true);
            assert_eq!(addresses(&r), want, "{name}");
            assert_eq!(r.queries[0].name().to_ascii(), name);
            for record in &r.answers {
                assert_eq!(record.ttl, 7, "network A's dns_ttl_secs");
                assert_eq!(record.name.to_ascii(), name);
            }
        }
    }

    #[test]
    fn case_is_echoed_and_ignored() {
        let name = format!(
            "1.WEB.{}.{PN_A}.Private-Network.Internal.",
            AP_1.to_uppercase()
        );
        let r = ask(&query(&name, RecordType::A), a(3));
        check_header(&r, ResponseCode::NoError, true);
        assert_eq!(addresses(&r), vec![a(2)]);
        assert_eq!(r.queries[0].name().to_ascii(), name, "0x20 case preserved");
        assert_eq!(r.answers[0].name.to_ascii(), name);
    }

    #[test]
    fn unknown_names_are_nxdomain_with_soa() {
        for name in [
            format!("3.worker.{AP_1}.{PN_A}.{ZONE}"),
            format!("clockwork.{AP_1}.{PN_A}.{ZONE}"),
            format!("ap-00000000-0000-4000-8000-000000000000.{PN_A}.{ZONE}"),
            format!("x.y.z.{AP_1}.{PN_A}.{ZONE}"),
        ] {
            let r = ask(&query(&name, RecordType::A), a(2));
            check_header(&r, ResponseCode::NXDomain, true);
            assert!(r.answers.is_empty());
            assert_eq!(r.authorities.len(), 1, "{r}");
            match &r.authorities[0].data {
                RData::SOA(soa) => assert_eq!(soa.minimum, 7),
                other => panic!("not a SOA: {other:?}"),
            }
        }
    }

    #[test]
    fn other_types_of_a_known_name_are_nodata() {
        for qtype in [RecordType::AAAA, RecordType::TXT, RecordType::MX] {
            let r = ask(&query(&format!("worker.{AP_1}.{PN_A}.{ZONE}"), qtype), a(2));
            check_header(&r, ResponseCode::NoError, true);
            assert!(r.answers.is_empty(), "{qtype}: {r}");
            assert_eq!(r.authorities.len(), 1, "SOA for negative caching");
        }
        // ANY gets the addresses.
        let r = ask(
            &query(&format!("worker.{AP_1}.{PN_A}.{ZONE}"), RecordType::ANY),
            a(2),
        );
        assert_eq!(addresses(&r), vec![a(4), a(5)]);
    }

    #[test]
    fn other_networks_outsiders_and_zones_are_refused() {
        let a_name = format!("{AP_1}.{PN_A}.{ZONE}");
        for (name, querier, why) in [
            (a_name.as_str(), a(20), "B asks for A's name"),
            (a_name.as_str(), Ipv4Addr::new(192, 0, 2, 1), "not a member"),
            (a_name.as_str(), a(99), "unknown private address"),
            ("example.com.", a(2), "another zone"),
            ("internal.", a(2), "above the zone"),
            ("xprivate-network.internal.", a(2), "a lookalike zone"),
        ] {
            let r = ask(&query(name, RecordType::A), querier);
            check_header(&r, ResponseCode::Refused, false);
            assert!(r.answers.is_empty(), "{why}");
        }
        // B's own name from B works, with B's TTL.
        let r = ask(
            &query(&format!("{AP_2}.{PN_B}.{ZONE}"), RecordType::A),
            a(20),
        );
        check_header(&r, ResponseCode::NoError, true);
        assert_eq!(addresses(&r), vec![a(20)]);
        assert_eq!(r.answers[0].ttl, 30);
    }

    #[test]
    fn labels_with_dots_inside_match_nothing() {
        // One label "2.worker": not the two labels "2" and "worker".
        let labels: Vec<&[u8]> = vec![
            b"2.worker",
            AP_1.as_bytes(),
            PN_A.as_bytes(),
            b"private-network",
            b"internal",
        ];
        let name = Name::from_labels(labels).expect("name");
        let mut m = Message::query();
        m.metadata.id = 0x1234;
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(name, RecordType::A));
        let r = ask(&m, a(2));
        check_header(&r, ResponseCode::NXDomain, true);
    }

    #[test]
    fn edns_is_answered_and_bad_versions_refused() {
        let mut m = query(&format!("{AP_1}.{PN_A}.{ZONE}"), RecordType::A);
        let mut edns = Edns::new();
        edns.set_max_payload(4096);
        m.set_edns(edns.clone());
        let r = ask(&m, a(2));
        check_header(&r, ResponseCode::NoError, true);
        assert_eq!(r.edns.as_ref().map(Edns::max_payload), Some(EDNS_PAYLOAD));
        edns.set_version(1);
        m.set_edns(edns);
        let r = ask(&m, a(2));
        // BADVERS (16, which hickory decodes as its twin BADSIG), in the OPT record's high bits.
        assert_eq!(u16::from(r.metadata.response_code), 16);
        assert_eq!(r.edns.as_ref().map(Edns::version), Some(0));
        assert!(r.answers.is_empty());
        // Without EDNS in the query there is none in the answer.
        let r = ask(
            &query(&format!("{AP_1}.{PN_A}.{ZONE}"), RecordType::A),
            a(2),
        );
        assert!(r.edns.is_none());
    }

    #[test]
    fn large_answers_are_truncated_over_udp_only() {
        let name = format!("worker.{AP_BIG}.{PN_A}.{ZONE}");
        let m = query(&name, RecordType::A);
        let wire = m.to_vec().expect("encode");
        let d = directory();
        // 60 A records do not fit 512 bytes: TC, no records.
        let out = answer(&wire, a(2), &d).expect("answer");
        assert!(out.len() <= UDP_PAYLOAD);
        let r = Message::from_vec(&out).expect("decode");
        assert!(r.metadata.truncation);
        assert!(r.answers.is_empty());
        assert_eq!(r.queries.len(), 1);
        // With EDNS 1232 they fit (12 + question + 60 × 16 + OPT).
        let mut with_edns = m.clone();
        let mut edns = Edns::new();
        edns.set_max_payload(1232);
        with_edns.set_edns(edns);
        let out = answer(&with_edns.to_vec().expect("encode"), a(2), &d).expect("answer");
        let r = Message::from_vec(&out).expect("decode");
        assert!(!r.metadata.truncation);
        assert_eq!(r.answers.len(), 60);
        // Over TCP, always whole.
        let out = answer_over(&wire, a(2), &d, Transport::Tcp).expect("answer");
        let r = Message::from_vec(&out).expect("decode");
        assert!(!r.metadata.truncation);
        assert_eq!(r.answers.len(), 60);
    }

    #[test]
    fn odd_messages() {
        let d = directory();
        // No question: FORMERR; two questions: FORMERR.
        let mut m = Message::query();
        m.metadata.id = 0x1234;
        let r = Message::from_vec(&answer(&m.to_vec().expect("enc"), a(2), &d).expect("answer"))
            .expect("decode");
        assert_eq!(r.metadata.response_code, ResponseCode::FormErr);
        let mut m = query(&format!("{AP_1}.{PN_A}.{ZONE}"), RecordType::A);
        m.add_query(Query::query(
            Name::from_ascii("example.com.").expect("name"),
            RecordType::A,
        ));
        let r = Message::from_vec(&answer(&m.to_vec().expect("enc"), a(2), &d).expect("answer"))
            .expect("decode");
        assert_eq!(r.metadata.response_code, ResponseCode::FormErr);
        // Another opcode: NOTIMP.
        let mut m = query(&format!("{AP_1}.{PN_A}.{ZONE}"), RecordType::A);
        m.metadata.op_code = OpCode::Status;
        let r = Message::from_vec(&answer(&m.to_vec().expect("enc"), a(2), &d).expect("answer"))
            .expect("decode");
        assert_eq!(r.metadata.response_code, ResponseCode::NotImp);
        // Class CH: REFUSED.
        let mut m = Message::query();
        let mut q = Query::query(
            Name::from_ascii(format!("{AP_1}.{PN_A}.{ZONE}")).expect("name"),
            RecordType::A,
        );
        q.set_query_class(DNSClass::CH);
        m.add_query(q);
        let r = Message::from_vec(&answer(&m.to_vec().expect("enc"), a(2), &d).expect("answer"))
            .expect("decode");
        assert_eq!(r.metadata.response_code, ResponseCode::Refused);
        // A response is never answered (no loops between responders).
        let mut m = query(&format!("{AP_1}.{PN_A}.{ZONE}"), RecordType::A);
        m.metadata.message_type = MessageType::Response;
        assert_eq!(answer(&m.to_vec().expect("enc"), a(2), &d), None);
    }

    #[test]
    fn malformed_input_is_ignored_on_every_prefix() {
        let d = directory();
        let mut m = query(&format!("2.worker.{AP_1}.{PN_A}.{ZONE}"), RecordType::A);
        m.set_edns(Edns::new());
        let wire = m.to_vec().expect("encode");
        assert!(answer(&wire, a(2), &d).is_some());
        for len in 0..wire.len() {
            assert_eq!(
                answer(&wire[..len], a(2), &d),
                None,
                "prefix of {len} bytes"
            );
        }
        // Garbage, a compression pointer loop, and every single-bit flip: no panic.
        assert_eq!(answer(&[0xff; 300], a(2), &d), None);
        let looped = [
            0x12, 0x34, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xc0, 0x0c,
            0x00, 0x01, 0x00, 0x01,
        ];
        assert_eq!(answer(&looped, a(2), &d), None);
        for bit in 0..wire.len() * 8 {
            let mut flipped = wire.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            let _ = answer(&flipped, a(2), &d);
        }
    }

    #[test]
    fn querier_addresses() {
        let v4: SocketAddr = "10.240.0.2:5353".parse().expect("addr");
        assert_eq!(querier(v4), a(2));
        let mapped: SocketAddr = "[::ffff:10.240.0.3]:5353".parse().expect("addr");
        assert_eq!(querier(mapped), a(3));
        let v6: SocketAddr = "[2001:db8::1]:5353".parse().expect("addr");
        assert_eq!(querier(v6), Ipv4Addr::UNSPECIFIED);
    }

    /// Binds 127.0.0.1 on a port free for both UDP and TCP; returns the handles and the address.
    fn spawn_local(directory: SharedDirectory) -> (Vec<JoinHandle<()>>, SocketAddr) {
        for _ in 0..20 {
            let port = std::net::UdpSocket::bind("127.0.0.1:0")
                .and_then(|s| s.local_addr())
                .expect("a free port")
                .port();
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
            match spawn(&[addr, addr], directory.clone()) {
                Ok(handles) => return (handles, addr),
                Err(DnsError::Bind { .. }) => continue,
            }
        }
        panic!("no port free for both UDP and TCP");
    }

    async fn tcp_ask(stream: &mut TcpStream, m: &Message) -> Message {
        let wire = m.to_vec().expect("encode");
        let mut framed = u16::try_from(wire.len())
            .expect("short")
            .to_be_bytes()
            .to_vec();
        framed.extend_from_slice(&wire);
        stream.write_all(&framed).await.expect("write");
        let len = stream.read_u16().await.expect("length");
        let mut body = vec![0u8; usize::from(len)];
        stream.read_exact(&mut body).await.expect("body");
        Message::from_vec(&body).expect("decode")
    }

    #[tokio::test]
    async fn serves_udp_and_tcp() {
        let shared: SharedDirectory = Arc::new(RwLock::new(Arc::new(directory())));
        let (handles, addr) = spawn_local(shared.clone());
        assert_eq!(handles.len(), 2, "duplicates bound once");

        // UDP, from 127.0.0.1 (a member of A).
        let name = format!("{AP_1}.{PN_A}.{ZONE}");
        let client = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let wire = query(&name, RecordType::A).to_vec().expect("encode");
        // Garbage first: ignored, and the next query is still answered.
        client
            .send_to(b"\x00\x01garbage", addr)
            .await
            .expect("send");
        client.send_to(&wire, addr).await.expect("send");
        let mut buf = vec![0u8; 2048];
        let (n, from) = timeout(Duration::from_secs(5), client.recv_from(&mut buf))
            .await
            .expect("UDP answer in time")
            .expect("recv");
        assert_eq!(from, addr);
        let r = Message::from_vec(&buf[..n]).expect("decode");
        check_header(&r, ResponseCode::NoError, true);
        assert_eq!(addresses(&r), vec![a(2), a(3)]);

        // TCP: several queries on one connection, then a truncated-over-UDP one whole.
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        let r = tcp_ask(&mut stream, &query(&name, RecordType::A)).await;
        assert_eq!(addresses(&r), vec![a(2), a(3)]);
        let r = tcp_ask(
            &mut stream,
            &query(&format!("nope.{AP_1}.{PN_A}.{ZONE}"), RecordType::A),
        )
        .await;
        assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
        let big = format!("worker.{AP_BIG}.{PN_A}.{ZONE}");
        let r = tcp_ask(&mut stream, &query(&big, RecordType::A)).await;
        assert_eq!(r.answers.len(), 60);

        // A reload: the new directory is used at once, on the same connection.
        *shared.write().expect("lock") = Arc::new(Directory::default());
        let r = tcp_ask(&mut stream, &query(&name, RecordType::A)).await;
        assert_eq!(
            r.metadata.response_code,
            ResponseCode::Refused,
            "no longer a member"
        );

        // A bad frame closes the connection.
        stream
            .write_all(&[0, 5, 1, 2, 3, 4, 5])
            .await
            .expect("write");
        let mut rest = Vec::new();
        let n = timeout(Duration::from_secs(5), stream.read_to_end(&mut rest))
            .await
            .expect("closed in time")
            .expect("read");
        assert_eq!(n, 0);

        // Aborting the handles stops serving: the port can be bound again.
        for h in &handles {
            h.abort();
        }
        for h in handles {
            let _ = h.await;
        }
        std::net::UdpSocket::bind(addr).expect("UDP port released");
        std::net::TcpListener::bind(addr).expect("TCP port released");
    }

    #[tokio::test]
    async fn a_bind_failure_names_the_socket() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let busy = taken.local_addr().expect("addr");
        let shared: SharedDirectory = Arc::default();
        match spawn(&[busy], shared) {
            Err(DnsError::Bind { proto, addr, .. }) => {
                // UDP on that port may or may not be free; either way the error names the socket.
                assert!(proto == "tcp" || proto == "udp");
                assert_eq!(addr, busy);
            }
            Ok(_) => panic!("bound a busy TCP port"),
        }
        let text = DnsError::Bind {
            proto: "udp",
            addr: busy,
            source: io::Error::from(io::ErrorKind::AddrInUse),
        }
        .to_string();
        assert!(
            text.starts_with(&format!("binding DNS udp {busy}: ")),
            "{text}"
        );
    }
}
