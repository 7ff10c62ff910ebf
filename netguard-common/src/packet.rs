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
    /// Length of the frame in bytes.
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// `N` bytes at `off`, or `None` when they are not all inside the frame.
    fn load<const N: usize>(&self, off: usize) -> Option<[u8; N]>;
}

impl PacketBytes for [u8] {
    fn len(&self) -> usize {
        <[u8]>::len(self)
    }

    fn load<const N: usize>(&self, off: usize) -> Option<[u8; N]> {
        let end = off.checked_add(N)?;
        self.get(off..end)?.try_into().ok()
    }
}

/// An address: IPv4 in the first four bytes (the rest zero), or IPv6.
///
/// A struct rather than an enum on purpose: an enum's shorter variant leaves bytes undefined,
/// LLVM then copies those undefined bytes through registers, and the verifier rejects reading
/// them (`R4 !read_ok`). Every value the parser returns is fully initialised.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Addr {
    octets: [u8; 16],
    v6: bool,
}

impl Addr {
    #[inline(always)]
    pub const fn v4(a: [u8; 4]) -> Self {
        Self {
            octets: [a[0], a[1], a[2], a[3], 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            v6: false,
        }
    }

    #[inline(always)]
    pub const fn v6(octets: [u8; 16]) -> Self {
        Self { octets, v6: true }
    }

    #[inline(always)]
    pub const fn is_v6(&self) -> bool {
        self.v6
    }

    /// The four IPv4 bytes (meaningful only when `!is_v6()`).
    #[inline(always)]
    pub const fn v4_octets(&self) -> [u8; 4] {
        [
            self.octets[0],
            self.octets[1],
            self.octets[2],
            self.octets[3],
        ]
    }

    /// The sixteen IPv6 bytes (meaningful only when `is_v6()`).
    #[inline(always)]
    pub const fn v6_octets(&self) -> &[u8; 16] {
        &self.octets
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

/// The transport header fields the policy needs; fields that do not apply are zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transport {
    pub src_port: u16,
    pub dst_port: u16,
    /// ICMP/ICMPv6 echo identifier.
    pub icmp_id: u16,
    pub kind: L4,
    pub proto: u8,
    pub icmp_type: u8,
    pub icmp_code: u8,
    /// TCP flags byte (zero for other protocols); a `u16` so the struct has no padding.
    pub tcp_flags: u16,
}

impl Transport {
    #[inline(always)]
    pub const fn of(kind: L4, proto: u8) -> Self {
        Self {
            src_port: 0,
            dst_port: 0,
            icmp_id: 0,
            kind,
            proto,
            icmp_type: 0,
            icmp_code: 0,
            tcp_flags: 0,
        }
    }

    #[inline(always)]
    pub const fn ports(kind: L4, proto: u8, src_port: u16, dst_port: u16) -> Self {
        Self {
            src_port,
            dst_port,
            ..Self::of(kind, proto)
        }
    }

    #[inline(always)]
    pub const fn icmp(v6: bool, ty: u8, code: u8, id: u16) -> Self {
        Self {
            icmp_id: id,
            icmp_type: ty,
            icmp_code: code,
            ..Self::of(
                if v6 { L4::Icmp6 } else { L4::Icmp },
                if v6 { IPPROTO_ICMPV6 } else { IPPROTO_ICMP },
            )
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
}

#[inline(always)]
fn be16(b: [u8; 2]) -> u16 {
    u16::from_be_bytes(b)
}

#[inline(always)]
pub fn parse<P: PacketBytes + ?Sized>(p: &P) -> Frame {
    let Some(eth) = p.load::<ETH_HLEN>(0) else {
        return Frame::MALFORMED;
    };
    let mut ethertype = be16([eth[12], eth[13]]);
    let mut off = ETH_HLEN;
    let mut tags = 0;
    while tags < MAX_VLAN_TAGS {
        if ethertype != ETH_P_8021Q && ethertype != ETH_P_8021AD {
            break;
        }
        // A tag is TCI (2 bytes) then the inner ethertype.
        let Some(tag) = p.load::<4>(off) else {
            return Frame::MALFORMED;
        };
        ethertype = be16([tag[2], tag[3]]);
        off += 4;
        tags += 1;
    }
    match ethertype {
        ETH_P_IPV4 => parse_ipv4(p, off),
        ETH_P_IPV6 => parse_ipv6(p, off),
        // A third tag would hide the payload's type: never guess, drop it.
        ETH_P_8021Q | ETH_P_8021AD => Frame::MALFORMED,
        _ => Frame::NON_IP,
    }
}

#[inline(always)]
fn parse_ipv4<P: PacketBytes + ?Sized>(p: &P, off: usize) -> Frame {
    let Some(h) = p.load::<20>(off) else {
        return Frame::MALFORMED;
    };
    if h[0] >> 4 != 4 {
        return Frame::MALFORMED;
    }
    let ihl = (h[0] & 0x0f) as usize;
    if ihl < 5 {
        return Frame::MALFORMED;
    }
    let header_len = ihl * 4;
    let total_len = be16([h[2], h[3]]) as usize;
    // Ethernet padding may follow the datagram; a datagram longer than the frame may not.
    if total_len < header_len || off + total_len > p.len() {
        return Frame::MALFORMED;
    }
    let src = Addr::v4([h[12], h[13], h[14], h[15]]);
    let dst = Addr::v4([h[16], h[17], h[18], h[19]]);
    let frag = be16([h[6], h[7]]);
    // MF set or a non-zero offset: the first fragment's ports do not describe the rest, and a
    // later fragment's "ports" are payload bytes.
    let transport = if frag & 0x3fff != 0 {
        Transport::of(L4::Fragment, h[9])
    } else {
        parse_l4(p, h[9], off + header_len, off + total_len, false)
    };
    Frame::ip(IpPacket {
        transport,
        src,
        dst,
    })
}

#[inline(always)]
fn parse_ipv6<P: PacketBytes + ?Sized>(p: &P, off: usize) -> Frame {
    // Loaded in pieces: a 40-byte copy plus its slices would crowd the 512-byte BPF stack.
    let (Some(h), Some(src), Some(dst)) = (
        p.load::<8>(off),
        p.load::<16>(off + 8),
        p.load::<16>(off + 24),
    ) else {
        return Frame::MALFORMED;
    };
    if h[0] >> 4 != 6 {
        return Frame::MALFORMED;
    }
    let end = off + 40 + be16([h[4], h[5]]) as usize;
    if end > p.len() {
        return Frame::MALFORMED;
    }
    let mut next = h[6];
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
                next = e[0];
                if next == IPPROTO_HOPOPTS {
                    // Hop-by-hop is only valid first (RFC 8200 §4.1).
                    break;
                }
                if next == IPPROTO_AH {
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
    Frame::ip(IpPacket {
        transport,
        src: Addr::v6(src),
        dst: Addr::v6(dst),
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
        IPPROTO_TCP => {
            let Some(t) = p.load::<20>(off) else {
                return malformed;
            };
            let data_offset = (t[12] >> 4) as usize;
            if data_offset < 5 || off + data_offset * 4 > end {
                return malformed;
            }
            Transport {
                tcp_flags: t[13] as u16,
                ..Transport::ports(L4::Tcp, proto, be16([t[0], t[1]]), be16([t[2], t[3]]))
            }
        }
        IPPROTO_UDP => {
            let Some(u) = p.load::<8>(off) else {
                return malformed;
            };
            if off + 8 > end {
                return malformed;
            }
            Transport::ports(L4::Udp, proto, be16([u[0], u[1]]), be16([u[2], u[3]]))
        }
        IPPROTO_ICMP | IPPROTO_ICMPV6 if (proto == IPPROTO_ICMPV6) == v6 => {
            let Some(i) = p.load::<8>(off) else {
                return malformed;
            };
            if off + 8 > end {
                return malformed;
            }
            Transport::icmp(v6, i[0], i[1], be16([i[4], i[5]]))
        }
        other => Transport::of(L4::Other, other),
    }
}
