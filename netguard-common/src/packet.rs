//! Header parsing shared by the XDP program, the tc program and host tests.
//!
//! The parser reads through [`PacketBytes`], which the eBPF side implements with bounds-checked
//! loads from packet memory and the host side with a byte slice. Every multi-byte field is read
//! as bytes and converted with `from_be_bytes`: ports and lengths come out in host order,
//! addresses stay as network-order bytes (the order LPM keys use).
//!
//! What `parse` returns:
//! - `FrameKind::NonIp`: an ethertype other than IPv4/IPv6 after at most two VLAN tags;
//! - `FrameKind::Malformed`: a header the packet does not hold entirely, or that contradicts
//!   itself (IHL < 5, total length beyond the frame, a third VLAN tag, …);
//! - `FrameKind::Ip`: addresses plus a [`Transport`], whose kind may be `Malformed` (the L3
//!   header was sound, so the destination can still be judged).

pub const ETH_HLEN: usize = 14;
pub const ETH_P_IPV4: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_8021AD: u16 = 0x88a8;
pub const MAX_VLAN_TAGS: usize = 2;
/// IPv6 extension headers walked before giving up (the packet is then dropped as malformed).
pub const MAX_IPV6_EXT_HEADERS: usize = 4;
/// Offsets beyond this are never read: it bounds every offset for the verifier.
pub const MAX_OFFSET: usize = 0xffff;

pub const TCP_SYN: u16 = 0x02;
pub const TCP_ACK: u16 = 0x10;

const IPPROTO_HOPOPTS: u8 = 0;
const IPPROTO_ICMP: u8 = 1;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_ROUTING: u8 = 43;
const IPPROTO_FRAGMENT: u8 = 44;
const IPPROTO_AH: u8 = 51;
const IPPROTO_ICMPV6: u8 = 58;
const IPPROTO_DSTOPTS: u8 = 60;

/// Read access to a frame starting at its Ethernet header.
pub trait PacketBytes {
    /// A header whose bytes are known to lie inside the frame (see [`PacketBytes::header`]).
    type Header<const N: usize>: Header<N>;

    /// Length of the frame in bytes.
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// `N` bytes at `off`, or `None` when they are not all inside the frame.
    fn load<const N: usize>(&self, off: usize) -> Option<[u8; N]>;
    /// The `N` bytes at `off` as a header whose fields are then read without further checks,
    /// or `None` when they are not all inside the frame. The XDP side reads each field with one
    /// load of its width straight from packet memory, instead of copying the header byte by byte.
    fn header<const N: usize>(&self, off: usize) -> Option<Self::Header<N>>;
}

/// Fields of an `N`-byte header at constant offsets `O` (checked at compile time against `N`).
pub trait Header<const N: usize>: Copy {
    fn u8_at<const O: usize>(&self) -> u8;
    /// Two bytes in network order, as a number.
    fn be16_at<const O: usize>(&self) -> u16;
    /// Four bytes as they lie in memory (`u32::from_ne_bytes`): addresses keep their byte order.
    fn ne32_at<const O: usize>(&self) -> u32;
}

impl<const N: usize> Header<N> for [u8; N] {
    #[inline(always)]
    fn u8_at<const O: usize>(&self) -> u8 {
        const { assert!(O < N) };
        self[O]
    }

    #[inline(always)]
    fn be16_at<const O: usize>(&self) -> u16 {
        const { assert!(O + 2 <= N) };
        u16::from_be_bytes([self[O], self[O + 1]])
    }

    #[inline(always)]
    fn ne32_at<const O: usize>(&self) -> u32 {
        const { assert!(O + 4 <= N) };
        u32::from_ne_bytes([self[O], self[O + 1], self[O + 2], self[O + 3]])
    }
}

impl PacketBytes for [u8] {
    type Header<const N: usize> = [u8; N];

    fn len(&self) -> usize {
        <[u8]>::len(self)
    }

    fn load<const N: usize>(&self, off: usize) -> Option<[u8; N]> {
        let end = off.checked_add(N)?;
        self.get(off..end)?.try_into().ok()
    }

    fn header<const N: usize>(&self, off: usize) -> Option<[u8; N]> {
        self.load::<N>(off)
    }
}

/// An address: IPv4 in the first word (the rest zero), or IPv6.
///
/// A struct rather than an enum on purpose: an enum's shorter variant leaves bytes undefined,
/// LLVM then copies those undefined bytes through registers, and the verifier rejects reading
/// them (`R4 !read_ok`). Every value the parser returns is fully initialised, and the struct
/// has no padding. Stored as words in memory order (`u32::from_ne_bytes` of each 4 bytes): an
/// IPv4 address stays one register from the packet load to the map key instead of being taken
/// apart into bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Addr {
    words: [u32; 4],
    v6: u32,
}

impl Addr {
    #[inline(always)]
    pub const fn v4(a: [u8; 4]) -> Self {
        Self::from_v4_word(u32::from_ne_bytes(a))
    }

    /// IPv4 from its four bytes as they lie in memory (`u32::from_ne_bytes`).
    #[inline(always)]
    pub const fn from_v4_word(word: u32) -> Self {
        Self {
            words: [word, 0, 0, 0],
            v6: 0,
        }
    }

    #[inline(always)]
    pub const fn v6(o: [u8; 16]) -> Self {
        Self::from_v6_words([
            u32::from_ne_bytes([o[0], o[1], o[2], o[3]]),
            u32::from_ne_bytes([o[4], o[5], o[6], o[7]]),
            u32::from_ne_bytes([o[8], o[9], o[10], o[11]]),
            u32::from_ne_bytes([o[12], o[13], o[14], o[15]]),
        ])
    }

    /// IPv6 from its sixteen bytes as four words in memory order.
    #[inline(always)]
    pub const fn from_v6_words(words: [u32; 4]) -> Self {
        Self { words, v6: 1 }
    }

    #[inline(always)]
    pub const fn is_v6(&self) -> bool {
        self.v6 != 0
    }

    /// The four IPv4 bytes (meaningful only when `!is_v6()`).
    #[inline(always)]
    pub const fn v4_octets(&self) -> [u8; 4] {
        self.words[0].to_ne_bytes()
    }

    /// The IPv4 address as `u32::from_ne_bytes` of its bytes (meaningful only when `!is_v6()`).
    #[inline(always)]
    pub const fn v4_word(&self) -> u32 {
        self.words[0]
    }

    /// The IPv6 address as four words in memory order (meaningful only when `is_v6()`).
    #[inline(always)]
    pub const fn v6_words(&self) -> [u32; 4] {
        self.words
    }

    /// The sixteen IPv6 bytes (meaningful only when `is_v6()`).
    #[inline(always)]
    pub const fn v6_octets(&self) -> &[u8; 16] {
        // SAFETY: `[u32; 4]` and `[u8; 16]` have the same size, every bit pattern is a valid
        // `[u8; 16]`, and `u8` needs no alignment; the borrow keeps `self` alive.
        unsafe { &*(&raw const self.words).cast::<[u8; 16]>() }
    }
}

/// What sits above IP.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum L4 {
    Tcp,
    Udp,
    Icmp,
    Icmp6,
    /// An IPv4 fragment (first or not) or an IPv6 fragment header: ports are not trusted.
    Fragment,
    /// Any other IP protocol (`proto` says which).
    Other,
    /// The L4 header is truncated or inconsistent, or the IPv6 extension chain is too long.
    Malformed,
}

impl L4 {
    #[inline(always)]
    const fn from_u8(b: u8) -> L4 {
        match b {
            0 => L4::Tcp,
            1 => L4::Udp,
            2 => L4::Icmp,
            3 => L4::Icmp6,
            4 => L4::Fragment,
            5 => L4::Other,
            _ => L4::Malformed,
        }
    }
}

/// The transport header fields the policy needs, packed into one word so the parsed packet
/// fits in a few BPF registers (ten, of which five survive a helper call) instead of spilling
/// to the stack field by field. Fields that do not apply are zero.
///
/// Bits 0–7: [`L4`]; 8–15: IP protocol; 16–23: TCP flags or ICMP type; 24–31: ICMP code;
/// 32–63: the four port bytes as they lie in the packet (`u32::from_ne_bytes` of source port
/// then destination port, both network order), or the ICMP echo identifier's two bytes then
/// zeros. Keeping them in packet order costs the parser one load and no byte swaps; the
/// accessors swap what they return.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Transport {
    bits: u64,
}

impl core::fmt::Debug for Transport {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Transport")
            .field("kind", &self.kind())
            .field("proto", &self.proto())
            .field("src_port", &self.src_port())
            .field("dst_port", &self.dst_port())
            .field("icmp_id", &self.icmp_id())
            .field("icmp_type", &self.icmp_type())
            .field("icmp_code", &self.icmp_code())
            .field("tcp_flags", &self.tcp_flags())
            .finish()
    }
}

/// Two 16-bit numbers as their four network-order bytes, read natively.
#[inline(always)]
const fn wire_pair(a: u16, b: u16) -> u32 {
    let (a, b) = (a.to_be_bytes(), b.to_be_bytes());
    u32::from_ne_bytes([a[0], a[1], b[0], b[1]])
}

impl Transport {
    /// `wire`: the four port bytes as read from the packet (see the type's documentation).
    #[inline(always)]
    const fn pack(kind: L4, proto: u8, aux: u8, code: u8, wire: u32) -> Self {
        Self {
            bits: kind as u64
                | (proto as u64) << 8
                | (aux as u64) << 16
                | (code as u64) << 24
                | (wire as u64) << 32,
        }
    }

    #[inline(always)]
    pub const fn of(kind: L4, proto: u8) -> Self {
        Self::pack(kind, proto, 0, 0, 0)
    }

    #[inline(always)]
    pub const fn ports(kind: L4, proto: u8, src_port: u16, dst_port: u16) -> Self {
        Self::pack(kind, proto, 0, 0, wire_pair(src_port, dst_port))
    }

    #[inline(always)]
    pub const fn tcp(src_port: u16, dst_port: u16, flags: u8) -> Self {
        Self::pack(
            L4::Tcp,
            IPPROTO_TCP,
            flags,
            0,
            wire_pair(src_port, dst_port),
        )
    }

    #[inline(always)]
    pub const fn icmp(v6: bool, ty: u8, code: u8, id: u16) -> Self {
        let (kind, proto) = if v6 {
            (L4::Icmp6, IPPROTO_ICMPV6)
        } else {
            (L4::Icmp, IPPROTO_ICMP)
        };
        Self::pack(kind, proto, ty, code, wire_pair(id, 0))
    }

    #[inline(always)]
    pub const fn kind(&self) -> L4 {
        L4::from_u8(self.bits as u8)
    }

    #[inline(always)]
    pub const fn proto(&self) -> u8 {
        (self.bits >> 8) as u8
    }

    #[inline(always)]
    const fn is_icmp(&self) -> bool {
        matches!(self.kind(), L4::Icmp | L4::Icmp6)
    }

    #[inline(always)]
    const fn wire(&self) -> [u8; 4] {
        ((self.bits >> 32) as u32).to_ne_bytes()
    }

    /// TCP flags byte (zero for other protocols).
    #[inline(always)]
    pub const fn tcp_flags(&self) -> u8 {
        if matches!(self.kind(), L4::Tcp) {
            (self.bits >> 16) as u8
        } else {
            0
        }
    }

    /// ICMP/ICMPv6 type (zero for other protocols).
    #[inline(always)]
    pub const fn icmp_type(&self) -> u8 {
        if self.is_icmp() {
            (self.bits >> 16) as u8
        } else {
            0
        }
    }

    #[inline(always)]
    pub const fn icmp_code(&self) -> u8 {
        (self.bits >> 24) as u8
    }

    /// TCP/UDP source port (zero for other protocols).
    #[inline(always)]
    pub const fn src_port(&self) -> u16 {
        if self.is_icmp() {
            0
        } else {
            let w = self.wire();
            u16::from_be_bytes([w[0], w[1]])
        }
    }

    /// TCP/UDP destination port (zero for other protocols).
    #[inline(always)]
    pub const fn dst_port(&self) -> u16 {
        let w = self.wire();
        u16::from_be_bytes([w[2], w[3]])
    }

    /// ICMP/ICMPv6 echo identifier (zero for other protocols).
    #[inline(always)]
    pub const fn icmp_id(&self) -> u16 {
        if self.is_icmp() {
            let w = self.wire();
            u16::from_be_bytes([w[0], w[1]])
        } else {
            0
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpPacket {
    pub transport: Transport,
    pub src: Addr,
    pub dst: Addr,
}

impl IpPacket {
    pub const fn is_v6(&self) -> bool {
        self.dst.is_v6()
    }
}

#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameKind {
    NonIp,
    Malformed,
    Ip,
}

/// A parsed frame; `ip` is meaningful only when `kind` is `Ip` (zeroed otherwise).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frame {
    pub kind: FrameKind,
    pub ip: IpPacket,
}

const NO_IP: IpPacket = IpPacket {
    transport: Transport::of(L4::Other, 0),
    src: Addr::v4([0; 4]),
    dst: Addr::v4([0; 4]),
};

impl Frame {
    pub const NON_IP: Frame = Frame {
        kind: FrameKind::NonIp,
        ip: NO_IP,
    };
    pub const MALFORMED: Frame = Frame {
        kind: FrameKind::Malformed,
        ip: NO_IP,
    };

    #[inline(always)]
    const fn ip(ip: IpPacket) -> Frame {
        Frame {
            kind: FrameKind::Ip,
            ip,
        }
    }

    /// Whether the parse found a header truncated or inconsistent: the network header (the
    /// whole frame is `Malformed`) or the transport header (`L4::Malformed`).
    #[inline(always)]
    pub fn is_malformed_anywhere(&self) -> bool {
        match self.kind {
            FrameKind::Malformed => true,
            FrameKind::Ip => matches!(self.ip.transport.kind(), L4::Malformed),
            FrameKind::NonIp => false,
        }
    }
}

/// What follows the Ethernet header and its VLAN tags.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum L3Kind {
    Ipv4,
    Ipv6,
    NonIp,
    Malformed,
}

/// Where the network header starts: a plain struct (no payload-carrying enum), so every byte
/// of it is initialised whatever the branch that built it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct L3 {
    pub kind: L3Kind,
    /// Offset of the IPv4/IPv6 header (meaningful for `Ipv4`/`Ipv6` only).
    pub off: usize,
}

/// The Ethernet header and at most two VLAN tags.
#[inline(always)]
pub fn l3<P: PacketBytes + ?Sized>(p: &P) -> L3 {
    let at = |kind, off| L3 { kind, off };
    let Some(eth) = p.header::<2>(12) else {
        return at(L3Kind::Malformed, 0);
    };
    let mut ethertype = eth.be16_at::<0>();
    let mut off = ETH_HLEN;
    let mut tags = 0;
    while tags < MAX_VLAN_TAGS {
        if ethertype != ETH_P_8021Q && ethertype != ETH_P_8021AD {
            break;
        }
        // A tag is TCI (2 bytes) then the inner ethertype.
        let Some(tag) = p.header::<4>(off) else {
            return at(L3Kind::Malformed, 0);
        };
        ethertype = tag.be16_at::<2>();
        off += 4;
        tags += 1;
    }
    match ethertype {
        ETH_P_IPV4 => at(L3Kind::Ipv4, off),
        ETH_P_IPV6 => at(L3Kind::Ipv6, off),
        // A third tag would hide the payload's type: never guess, drop it.
        ETH_P_8021Q | ETH_P_8021AD => at(L3Kind::Malformed, 0),
        _ => at(L3Kind::NonIp, 0),
    }
}

#[inline(always)]
pub fn parse<P: PacketBytes + ?Sized>(p: &P) -> Frame {
    let l3 = l3(p);
    let ip = match l3.kind {
        L3Kind::Ipv4 => ipv4(p, l3.off),
        L3Kind::Ipv6 => ipv6(p, l3.off),
        L3Kind::NonIp => return Frame::NON_IP,
        L3Kind::Malformed => return Frame::MALFORMED,
    };
    match ip {
        Some(ip) => Frame::ip(ip),
        None => Frame::MALFORMED,
    }
}

/// Parses a frame of which only the first `readable` bytes may be cheap to read: `prefix` reads
/// those (and reports the whole frame's length), `whole` reads every byte. An skb keeps its
/// headers in its linear area nearly always, but not always (a GSO packet may keep part of them
/// in its fragments).
///
/// A header cut off where the prefix ends can only make the parse come out malformed somewhere
/// (every failed read is reported so), so a parse of the prefix that is not malformed anywhere is
/// the parse of the frame, and only a malformed one is repeated through `whole`.
#[inline(always)]
pub fn parse_prefix_first<A, B>(prefix: &A, readable: usize, whole: &B) -> Frame
where
    A: PacketBytes + ?Sized,
    B: PacketBytes + ?Sized,
{
    let frame = parse(prefix);
    if readable >= prefix.len() || !frame.is_malformed_anywhere() {
        return frame;
    }
    parse(whole)
}

/// A sound IPv4 header: what the decision needs of it, and where its payload lies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv4Header {
    pub src: Addr,
    pub dst: Addr,
    pub proto: u8,
    /// MF set or a non-zero offset: the first fragment's ports do not describe the rest, and a
    /// later fragment's "ports" are payload bytes.
    pub fragment: bool,
    /// Offset of the transport header (the IP header's length skipped, options included).
    pub l4_off: usize,
    /// End of the datagram (Ethernet padding may follow it).
    pub end: usize,
}

impl Ipv4Header {
    /// A TCP segment that is not a fragment: the hot path.
    #[inline(always)]
    pub const fn is_tcp(&self) -> bool {
        !self.fragment && self.proto == IPPROTO_TCP
    }

    #[inline(always)]
    pub const fn packet(&self, transport: Transport) -> IpPacket {
        IpPacket {
            transport,
            src: self.src,
            dst: self.dst,
        }
    }

    /// The transport the datagram carries.
    #[inline(always)]
    pub fn transport<P: PacketBytes + ?Sized>(&self, p: &P) -> Transport {
        if self.fragment {
            Transport::of(L4::Fragment, self.proto)
        } else {
            parse_l4(p, self.proto, self.l4_off, self.end, false)
        }
    }
}

/// The IPv4 header at `off`; `None` when it is truncated or inconsistent.
#[inline(always)]
pub fn ipv4_header<P: PacketBytes + ?Sized>(p: &P, off: usize) -> Option<Ipv4Header> {
    let h = p.header::<20>(off)?;
    let version_ihl = h.u8_at::<0>();
    // Version 4 without options, nearly every datagram: the general checks below would give the
    // same answer, one compare says it.
    let header_len = if version_ihl == 0x45 {
        20
    } else {
        if version_ihl >> 4 != 4 {
            return None;
        }
        let ihl = (version_ihl & 0x0f) as usize;
        if ihl < 5 {
            return None;
        }
        ihl * 4
    };
    let total_len = h.be16_at::<2>() as usize;
    // Ethernet padding may follow the datagram; a datagram longer than the frame may not.
    if total_len < header_len || off + total_len > p.len() {
        return None;
    }
    Some(Ipv4Header {
        src: Addr::from_v4_word(h.ne32_at::<12>()),
        dst: Addr::from_v4_word(h.ne32_at::<16>()),
        proto: h.u8_at::<9>(),
        fragment: h.be16_at::<6>() & 0x3fff != 0,
        l4_off: off + header_len,
        end: off + total_len,
    })
}

/// An IPv4 datagram at `off`; `None` when its header is truncated or inconsistent.
#[inline(always)]
pub fn ipv4<P: PacketBytes + ?Sized>(p: &P, off: usize) -> Option<IpPacket> {
    let h = ipv4_header(p, off)?;
    Some(h.packet(h.transport(p)))
}

/// The TCP header at `off` in a datagram ending at `end`; `None` when it is truncated or its
/// data offset is below 5 or beyond the datagram.
#[inline(always)]
pub fn tcp<P: PacketBytes + ?Sized>(p: &P, off: usize, end: usize) -> Option<Transport> {
    if off > MAX_OFFSET {
        return None;
    }
    let t = p.header::<20>(off)?;
    let data_offset = (t.u8_at::<12>() >> 4) as usize;
    if data_offset < 5 || off + data_offset * 4 > end {
        return None;
    }
    Some(Transport::pack(
        L4::Tcp,
        IPPROTO_TCP,
        t.u8_at::<13>(),
        0,
        t.ne32_at::<0>(),
    ))
}

/// An IPv6 packet at `off`, extension headers walked; `None` when its fixed header is
/// truncated or inconsistent.
#[inline(always)]
pub fn ipv6<P: PacketBytes + ?Sized>(p: &P, off: usize) -> Option<IpPacket> {
    let h = p.header::<40>(off)?;
    if h.u8_at::<0>() >> 4 != 6 {
        return None;
    }
    let end = off + 40 + h.be16_at::<4>() as usize;
    if end > p.len() {
        return None;
    }
    let src = [
        h.ne32_at::<8>(),
        h.ne32_at::<12>(),
        h.ne32_at::<16>(),
        h.ne32_at::<20>(),
    ];
    let dst = [
        h.ne32_at::<24>(),
        h.ne32_at::<28>(),
        h.ne32_at::<32>(),
        h.ne32_at::<36>(),
    ];
    let mut next = h.u8_at::<6>();
    let mut cur = off + 40;
    let mut walked = 0;
    let mut transport = Transport::of(L4::Malformed, next);
    while walked <= MAX_IPV6_EXT_HEADERS {
        let ext_len = match next {
            IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS | IPPROTO_AH => {
                if walked == MAX_IPV6_EXT_HEADERS {
                    // Chain longer than the bound: stays Malformed.
                    break;
                }
                let Some(e) = p.load::<2>(cur) else {
                    break;
                };
                let this = next;
                next = e[0];
                if next == IPPROTO_HOPOPTS {
                    // Hop-by-hop is only valid first (RFC 8200 §4.1).
                    break;
                }
                // AH counts its length in 4-octet units minus 2 (RFC 4302 §2.2); the others
                // in 8-octet units minus 1.
                if this == IPPROTO_AH {
                    (e[1] as usize + 2) * 4
                } else {
                    (e[1] as usize + 1) * 8
                }
            }
            IPPROTO_FRAGMENT => {
                transport = Transport::of(L4::Fragment, IPPROTO_FRAGMENT);
                break;
            }
            l4 => {
                transport = parse_l4(p, l4, cur, end, true);
                break;
            }
        };
        cur += ext_len;
        if cur > end || cur > MAX_OFFSET {
            break;
        }
        walked += 1;
    }
    Some(IpPacket {
        transport,
        src: Addr::from_v6_words(src),
        dst: Addr::from_v6_words(dst),
    })
}

#[inline(always)]
fn parse_l4<P: PacketBytes + ?Sized>(
    p: &P,
    proto: u8,
    off: usize,
    end: usize,
    v6: bool,
) -> Transport {
    let malformed = Transport::of(L4::Malformed, proto);
    if off > MAX_OFFSET {
        return malformed;
    }
    match proto {
        IPPROTO_TCP => match tcp(p, off, end) {
            Some(t) => t,
            None => malformed,
        },
        IPPROTO_UDP => {
            let Some(u) = p.header::<8>(off) else {
                return malformed;
            };
            if off + 8 > end {
                return malformed;
            }
            Transport::pack(L4::Udp, proto, 0, 0, u.ne32_at::<0>())
        }
        IPPROTO_ICMP | IPPROTO_ICMPV6 if (proto == IPPROTO_ICMPV6) == v6 => {
            let Some(i) = p.header::<8>(off) else {
                return malformed;
            };
            if off + 8 > end {
                return malformed;
            }
            // The identifier's two bytes, then zeros (`wire_pair(id, 0)`).
            let id = i.ne32_at::<4>().to_ne_bytes();
            let kind = if v6 { L4::Icmp6 } else { L4::Icmp };
            let wire = u32::from_ne_bytes([id[0], id[1], 0, 0]);
            Transport::pack(kind, proto, i.u8_at::<0>(), i.u8_at::<1>(), wire)
        }
        other => Transport::of(L4::Other, other),
    }
}
