//! Header parsing shared by the XDP program, the tc program and host tests.
//!
//! The parser reads through [`PacketBytes`], which the eBPF side implements with bounds-checked
//! loads from packet memory and the host side with a byte slice. Every multi-byte field is read
//! as bytes and converted with `from_be_bytes`: ports and lengths come out in host order,
//! addresses stay as network-order bytes (the order LPM keys use).
//!
//! What `parse` returns:
//! - [`Frame::NonIp`]: an ethertype other than IPv4/IPv6 after at most two VLAN tags;
//! - [`Frame::Malformed`]: a header the packet does not hold entirely, or that contradicts
//!   itself (IHL < 5, total length beyond the frame, a third VLAN tag, …);
//! - [`Frame::Ip`]: addresses plus a [`Transport`], which may itself be `Malformed` (the L3
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

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Addr {
    V4([u8; 4]),
    V6([u8; 16]),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Tcp { src_port: u16, dst_port: u16, flags: u8 },
    Udp { src_port: u16, dst_port: u16 },
    Icmp { ty: u8, code: u8, id: u16 },
    Icmp6 { ty: u8, code: u8, id: u16 },
    /// An IPv4 fragment (first or not) or an IPv6 fragment header: ports are not trusted.
    Fragment,
    /// Any other IP protocol, by number.
    Other(u8),
    /// The L4 header is truncated or inconsistent, or the IPv6 extension chain is too long.
    Malformed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpPacket {
    pub src: Addr,
    pub dst: Addr,
    pub transport: Transport,
}

impl IpPacket {
    pub const fn is_v6(&self) -> bool {
        matches!(self.dst, Addr::V6(_))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Frame {
    NonIp,
    Malformed,
    Ip(IpPacket),
}

#[inline(always)]
fn be16(b: [u8; 2]) -> u16 {
    u16::from_be_bytes(b)
}

#[inline(always)]
pub fn parse<P: PacketBytes + ?Sized>(p: &P) -> Frame {
    let Some(eth) = p.load::<ETH_HLEN>(0) else {
        return Frame::Malformed;
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
            return Frame::Malformed;
        };
        ethertype = be16([tag[2], tag[3]]);
        off += 4;
        tags += 1;
    }
    match ethertype {
        ETH_P_IPV4 => parse_ipv4(p, off),
        ETH_P_IPV6 => parse_ipv6(p, off),
        // A third tag would hide the payload's type: never guess, drop it.
        ETH_P_8021Q | ETH_P_8021AD => Frame::Malformed,
        _ => Frame::NonIp,
    }
}

#[inline(always)]
fn parse_ipv4<P: PacketBytes + ?Sized>(p: &P, off: usize) -> Frame {
    let Some(h) = p.load::<20>(off) else {
        return Frame::Malformed;
    };
    if h[0] >> 4 != 4 {
        return Frame::Malformed;
    }
    let ihl = (h[0] & 0x0f) as usize;
    if ihl < 5 {
        return Frame::Malformed;
    }
    let header_len = ihl * 4;
    let total_len = be16([h[2], h[3]]) as usize;
    // Ethernet padding may follow the datagram; a datagram longer than the frame may not.
    if total_len < header_len || off + total_len > p.len() {
        return Frame::Malformed;
    }
    let src = Addr::V4([h[12], h[13], h[14], h[15]]);
    let dst = Addr::V4([h[16], h[17], h[18], h[19]]);
    let frag = be16([h[6], h[7]]);
    // MF set or a non-zero offset: the first fragment's ports do not describe the rest, and a
    // later fragment's "ports" are payload bytes.
    let transport = if frag & 0x3fff != 0 {
        Transport::Fragment
    } else {
        parse_l4(p, h[9], off + header_len, off + total_len, false)
    };
    Frame::Ip(IpPacket {
        src,
        dst,
        transport,
    })
}

#[inline(always)]
fn parse_ipv6<P: PacketBytes + ?Sized>(p: &P, off: usize) -> Frame {
    // Loaded in pieces: a 40-byte copy plus its slices would crowd the 512-byte BPF stack.
    let (Some(h), Some(src), Some(dst)) = (p.load::<8>(off), p.load::<16>(off + 8), p.load::<16>(off + 24))
    else {
        return Frame::Malformed;
    };
    if h[0] >> 4 != 6 {
        return Frame::Malformed;
    }
    let end = off + 40 + be16([h[4], h[5]]) as usize;
    if end > p.len() {
        return Frame::Malformed;
    }
    let mut next = h[6];
    let mut cur = off + 40;
    let mut walked = 0;
    let mut transport = Transport::Malformed;
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
                transport = Transport::Fragment;
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
    Frame::Ip(IpPacket {
        src: Addr::V6(src),
        dst: Addr::V6(dst),
        transport,
    })
}

#[inline(always)]
fn parse_l4<P: PacketBytes + ?Sized>(p: &P, proto: u8, off: usize, end: usize, v6: bool) -> Transport {
    if off > MAX_OFFSET {
        return Transport::Malformed;
    }
    match proto {
        IPPROTO_TCP => {
            let Some(t) = p.load::<20>(off) else {
                return Transport::Malformed;
            };
            let data_offset = (t[12] >> 4) as usize;
            if data_offset < 5 || off + data_offset * 4 > end {
                return Transport::Malformed;
            }
            Transport::Tcp {
                src_port: be16([t[0], t[1]]),
                dst_port: be16([t[2], t[3]]),
                flags: t[13],
            }
        }
        IPPROTO_UDP => {
            let Some(u) = p.load::<8>(off) else {
                return Transport::Malformed;
            };
            if off + 8 > end {
                return Transport::Malformed;
            }
            Transport::Udp {
                src_port: be16([u[0], u[1]]),
                dst_port: be16([u[2], u[3]]),
            }
        }
        IPPROTO_ICMP | IPPROTO_ICMPV6 if (proto == IPPROTO_ICMPV6) == v6 => {
            let Some(i) = p.load::<8>(off) else {
                return Transport::Malformed;
            };
            if off + 8 > end {
                return Transport::Malformed;
            }
            let (ty, code, id) = (i[0], i[1], be16([i[4], i[5]]));
            if v6 {
                Transport::Icmp6 { ty, code, id }
            } else {
                Transport::Icmp { ty, code, id }
            }
        }
        other => Transport::Other(other),
    }
}
