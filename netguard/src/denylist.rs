//! Denylists: the files real publishers serve (FireHOL, Spamhaus) and inline CIDRs from the
//! config, turned into sorted, deduplicated prefix lists for the kernel's LPM tries.
//!
//! Files are taken exactly as published (see `tests/data/denylists/SOURCES.md`): a cron job
//! drops the download in place, so the loader adapts to the formats, not the other way round.
//! One entry per line; text after the first `#` or `;` is a comment (FireHOL headers, Spamhaus
//! headers and `1.10.16.0/20 ; SBL256894` data lines); surrounding whitespace, CR included, is
//! trimmed; gzip is recognised by its magic bytes because downloads are not always named `.gz`.

use std::io::{self, Read as _};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use crate::config::DenylistConfig;

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// The largest decompressed list accepted. Real lists are a few MiB (the largest FireHOL
/// `.ipset` is ~4 MiB); the cap keeps a truncated or hostile download from exhausting memory
/// at startup, before anything else is attached.
const MAX_DECOMPRESSED: u64 = 256 << 20;

const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// Every denylisted prefix, ready for the kernel.
///
/// `v4` and `v6` are sorted and hold each prefix once. Overlapping prefixes are kept as listed
/// rather than aggregated: the LPM trie resolves overlaps itself, and `deny del` must be able
/// to remove exactly the prefix an operator or a list added.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Denylist {
    pub v4: Vec<Ipv4Net>,
    pub v6: Vec<Ipv6Net>,
    /// Problems that do not stop the daemon (an empty list file), for the caller to log.
    pub warnings: Vec<String>,
    /// Entries read before deduplication, inline and from files.
    pub entries_read: usize,
}

impl Denylist {
    /// Distinct prefixes, both families.
    pub fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    pub fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DenylistError {
    #[error("reading denylist {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    /// `origin` is a file path or `denylist.cidrs[i]`; `line` is 1-based.
    #[error("{origin}:{line}: {reason}: {text:?}")]
    BadEntry {
        origin: String,
        line: usize,
        text: String,
        reason: String,
    },
}

/// Reported by [`load`] after each file, so a daemon can log progress through large lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    /// The file just read.
    pub file: PathBuf,
    /// 0-based index of `file` in `denylist.files`.
    pub file_index: usize,
    pub files_total: usize,
    pub entries_in_file: usize,
    /// Inline entries plus every file read so far, before deduplication.
    pub entries_so_far: usize,
}

/// Parses one list's text. `origin` is used in errors.
pub fn parse_list(text: &str, origin: &str) -> Result<Vec<IpNet>, DenylistError> {
    let mut out = Vec::new();
    for_each_entry(text.as_bytes(), origin, |net| out.push(net))?;
    Ok(out)
}

/// Parses one entry (inline CIDR or a CLI argument): CIDR or bare address, host bits refused.
///
/// Surrounding whitespace is ignored. The error is the reason alone, without the text, so the
/// caller can name the input its own way.
pub fn parse_entry(text: &str) -> Result<IpNet, String> {
    let net = parse_net(text.trim())?;
    match host_bits_problem(net) {
        Some(reason) => Err(reason),
        None => Ok(net),
    }
}

/// Reads one list file, decompressing it first if it is gzip.
pub fn read_file(path: &Path) -> Result<Vec<IpNet>, DenylistError> {
    let bytes = read_bytes(path)?;
    let mut out = Vec::new();
    for_each_entry(&bytes, &path.display().to_string(), |net| out.push(net))?;
    Ok(out)
}

/// Inline cidrs + every file; calls `progress` after each file.
///
/// Relative paths in `cfg.files` are taken as given (relative to the working directory);
/// [`crate::config::Config::load`] has already resolved them against the config file.
pub fn load(
    cfg: &DenylistConfig,
    progress: &mut dyn FnMut(&Progress),
) -> Result<Denylist, DenylistError> {
    let mut list = Denylist::default();
    let Denylist {
        v4,
        v6,
        warnings,
        entries_read,
    } = &mut list;
    let mut push = |net: IpNet| match net {
        IpNet::V4(net) => v4.push(net),
        IpNet::V6(net) => v6.push(net),
    };

    for (i, text) in cfg.cidrs.iter().enumerate() {
        let net = parse_inline(text).map_err(|reason| DenylistError::BadEntry {
            origin: format!("denylist.cidrs[{i}]"),
            line: 1,
            text: text.clone(),
            reason,
        })?;
        push(net);
        *entries_read += 1;
    }

    for (file_index, path) in cfg.files.iter().enumerate() {
        let bytes = read_bytes(path)?;
        let n = for_each_entry(&bytes, &path.display().to_string(), &mut push)?;
        if n == 0 {
            // Spamhaus serves EDROP like this since merging it into DROP (2024): a fetch job
            // keeps producing the file, and refusing it would stop the daemon from starting.
            warnings.push(format!(
                "{}: no entries (only comments or blank lines); nothing is denied from it",
                path.display()
            ));
        }
        *entries_read += n;
        progress(&Progress {
            file: path.clone(),
            file_index,
            files_total: cfg.files.len(),
            entries_in_file: n,
            entries_so_far: *entries_read,
        });
    }

    // Lists overlap (FireHOL level1 repeats Spamhaus DROP): keep each exact prefix once.
    // One integer key sorts the million-entry case about a third faster than the derived
    // `Ord`, in the same order (address, then prefix length).
    v4.sort_unstable_by_key(|net| {
        u64::from(net.addr().to_bits()) << 8 | u64::from(net.prefix_len())
    });
    v4.dedup();
    v6.sort_unstable();
    v6.dedup();
    Ok(list)
}

/// An inline `denylist.cidrs` entry: the syntax of a file line, but an entry that is empty
/// (or only a comment) is a mistake rather than something to skip.
pub(crate) fn parse_inline(text: &str) -> Result<IpNet, String> {
    let entry = entry_text(text.as_bytes());
    if entry.is_empty() {
        return Err("no address or CIDR".to_owned());
    }
    parse_net_bytes(entry).and_then(|net| match host_bits_problem(net) {
        Some(reason) => Err(reason),
        None => Ok(net),
    })
}

/// Address-or-CIDR syntax only: a bare address becomes /32 or /128, and host bits are kept so
/// that the config can list them with every other problem (see [`host_bits_problem`]).
pub(crate) fn parse_net(text: &str) -> Result<IpNet, String> {
    parse_net_bytes(text.as_bytes())
}

/// Why `net` is not a network prefix, suggesting both readings of what was probably meant.
pub(crate) fn host_bits_problem(net: IpNet) -> Option<String> {
    let network = net.trunc();
    (network != net).then(|| {
        format!(
            "host bits set (use {}/{} for the single address or {network} for the network)",
            net.addr(),
            net.max_prefix_len()
        )
    })
}

fn read_bytes(path: &Path) -> Result<Vec<u8>, DenylistError> {
    let read_error = |source| DenylistError::Read {
        path: path.to_owned(),
        source,
    };
    let raw = std::fs::read(path).map_err(read_error)?;
    if raw.starts_with(&GZIP_MAGIC) {
        gunzip(&raw).map_err(read_error)
    } else {
        Ok(raw)
    }
}

fn gunzip(raw: &[u8]) -> io::Result<Vec<u8>> {
    // The trailer's ISIZE is the last member's size mod 2^32: good enough to size the buffer
    // once, never trusted beyond that.
    let size_hint = raw
        .last_chunk::<4>()
        .map_or(0, |isize| u64::from(u32::from_le_bytes(*isize)));
    let capacity = usize::try_from(size_hint.min(MAX_DECOMPRESSED)).unwrap_or(0);
    let mut out = Vec::with_capacity(capacity);
    // Multi-member, as `cat a.gz b.gz` and some mirrors produce.
    MultiGzDecoder::new(raw)
        .take(MAX_DECOMPRESSED + 1)
        .read_to_end(&mut out)
        .map_err(|e| io::Error::new(e.kind(), format!("decompressing gzip: {e}")))?;
    if out.len() as u64 > MAX_DECOMPRESSED {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("decompresses to more than {} MiB", MAX_DECOMPRESSED >> 20),
        ));
    }
    Ok(out)
}

/// Calls `f` for each entry of a list and returns how many there were.
///
/// Works on bytes so that a comment in another encoding (Latin-1 headers exist) does not make
/// a whole list unreadable; only the entry part of a line has to be ASCII. Nothing is
/// allocated per line unless the line is bad.
fn for_each_entry(
    bytes: &[u8],
    origin: &str,
    mut f: impl FnMut(IpNet),
) -> Result<usize, DenylistError> {
    let bytes = bytes.strip_prefix(UTF8_BOM).unwrap_or(bytes);
    let mut entries = 0;
    for (index, line) in bytes.split(|&b| b == b'\n').enumerate() {
        let entry = entry_text(line);
        if entry.is_empty() {
            continue;
        }
        let net = parse_net_bytes(entry)
            .and_then(|net| match host_bits_problem(net) {
                Some(reason) => Err(reason),
                None => Ok(net),
            })
            .map_err(|reason| DenylistError::BadEntry {
                origin: origin.to_owned(),
                line: index + 1,
                text: String::from_utf8_lossy(entry).into_owned(),
                reason,
            })?;
        f(net);
        entries += 1;
    }
    Ok(entries)
}

/// The part of a line that is an entry: before the first `#` or `;`, trimmed (CR included).
fn entry_text(line: &[u8]) -> &[u8] {
    let data = match line.iter().position(|&b| b == b'#' || b == b';') {
        Some(comment) => &line[..comment],
        None => line,
    };
    data.trim_ascii()
}

fn parse_net_bytes(text: &[u8]) -> Result<IpNet, String> {
    if text.is_empty() {
        return Err("no address or CIDR".to_owned());
    }
    if text.iter().any(u8::is_ascii_whitespace) {
        return Err("expected one address or CIDR, found several words".to_owned());
    }
    let (addr, prefix_len) = match text.iter().position(|&b| b == b'/') {
        Some(slash) => (&text[..slash], Some(&text[slash + 1..])),
        None => (text, None),
    };
    let addr: IpAddr = std::str::from_utf8(addr)
        .ok()
        .and_then(|addr| addr.parse().ok())
        .ok_or_else(|| "not an IP address or CIDR".to_owned())?;
    let (family, max) = match addr {
        IpAddr::V4(_) => ("IPv4", 32),
        IpAddr::V6(_) => ("IPv6", 128),
    };
    let prefix_len = match prefix_len {
        None => max,
        Some([]) => return Err("missing prefix length after '/'".to_owned()),
        Some(digits) => match parse_prefix_len(digits) {
            None => return Err("prefix length is not a number".to_owned()),
            Some(len) => match u8::try_from(len) {
                Ok(len) if len <= max => len,
                _ => return Err(format!("prefix length {len} is over {max} for {family}")),
            },
        },
    };
    IpNet::new(addr, prefix_len).map_err(|e| e.to_string())
}

/// Digits only (`u8::from_str` would also take `+24`), and few enough not to overflow.
fn parse_prefix_len(digits: &[u8]) -> Option<u16> {
    if digits.len() > 3 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(
        digits
            .iter()
            .fold(0, |acc, d| acc * 10 + u16::from(d - b'0')),
    )
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;
    use std::time::Instant;

    use super::*;

    const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/data/denylists");

    /// (file, IPv4 entries, IPv6 entries), from the table in `SOURCES.md`.
    const FILES: [(&str, usize, usize); 13] = [
        ("firehol_level1.netset", 2_480, 0),
        ("spamhaus_drop.netset", 905, 0),
        ("spamhaus_edrop.netset", 63, 0),
        ("firehol_level4.netset.gz", 175_456, 0),
        ("firehol_abusers_30d.netset.gz", 178_727, 0),
        ("blocklist_net_ua.ipset", 97_180, 0),
        ("stopforumspam_180d.ipset.gz", 288_020, 0),
        ("alienvault_reputation.ipset.gz", 261_197, 0),
        ("spamhaus-drop-2025-01-17.txt", 1_385, 0),
        ("spamhaus-dropv6-2025-01-15.txt", 0, 78),
        ("spamhaus-edrop-2023-12-01.txt", 289, 0),
        ("spamhaus-edrop-2024-10-18-merged.txt", 0, 0),
        ("secops-spamhaus-edrop-2024-02-27.txt", 322, 0),
    ];

    fn data(name: &str) -> PathBuf {
        Path::new(DATA).join(name)
    }

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    /// A directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> Self {
            let dir = std::env::temp_dir().join(format!(
                "netguard-denylist-{tag}-{}-{:?}",
                std::process::id(),
                std::thread::current().id()
            ));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn bad_entry(err: DenylistError) -> (String, usize, String, String) {
        match err {
            DenylistError::BadEntry {
                origin,
                line,
                text,
                reason,
            } => (origin, line, text, reason),
            other => panic!("expected BadEntry, got {other}"),
        }
    }

    #[test]
    fn each_file_matches_sources_md() {
        for (name, want_v4, want_v6) in FILES {
            let nets = read_file(&data(name)).unwrap();
            let v4 = nets.iter().filter(|n| matches!(n, IpNet::V4(_))).count();
            let v6 = nets.len() - v4;
            assert_eq!((v4, v6), (want_v4, want_v6), "{name}");
        }
    }

    #[test]
    fn each_file_through_load_reports_progress_and_warnings() {
        for (name, want_v4, want_v6) in FILES {
            let cfg = DenylistConfig {
                cidrs: vec![],
                files: vec![data(name)],
            };
            let mut seen = Vec::new();
            let list = load(&cfg, &mut |p| seen.push(p.clone())).unwrap();
            // No file has a duplicate inside it, so nothing is lost to deduplication.
            assert_eq!((list.v4.len(), list.v6.len()), (want_v4, want_v6), "{name}");
            assert_eq!(list.entries_read, want_v4 + want_v6, "{name}");
            assert_eq!(seen.len(), 1);
            assert_eq!(seen[0].entries_in_file, want_v4 + want_v6);
            if want_v4 + want_v6 == 0 {
                assert_eq!(list.warnings.len(), 1, "{name}");
                assert!(list.warnings[0].contains(name), "{:?}", list.warnings);
            } else {
                assert!(list.warnings.is_empty(), "{name}: {:?}", list.warnings);
            }
        }
    }

    #[test]
    fn all_files_together() {
        let cfg = DenylistConfig {
            cidrs: vec![],
            files: FILES.iter().map(|(name, _, _)| data(name)).collect(),
        };
        let mut calls = 0;
        let mut last = 0;
        let start = Instant::now();
        let list = load(&cfg, &mut |p| {
            calls += 1;
            assert!(p.entries_so_far >= last);
            last = p.entries_so_far;
            assert_eq!(p.files_total, 13);
        })
        .unwrap();
        let elapsed = start.elapsed();
        eprintln!(
            "loaded {} files, {} entries, {} distinct in {elapsed:?}",
            calls,
            list.entries_read,
            list.len()
        );
        assert_eq!(calls, 13);
        assert_eq!(list.entries_read, 1_006_102);
        assert_eq!(last, 1_006_102);
        assert_eq!(list.len(), 888_411);
        assert_eq!(list.v4.len(), 888_333);
        assert_eq!(list.v6.len(), 78);
        assert_eq!(list.warnings.len(), 1);
        assert!(list.v4.is_sorted_by(|a, b| a < b), "sorted, no duplicates");
        assert!(list.v6.is_sorted_by(|a, b| a < b), "sorted, no duplicates");
    }

    #[test]
    fn spamhaus_inline_comments_and_secops_trailing_spaces() {
        let drop = read_file(&data("spamhaus-drop-2025-01-17.txt")).unwrap();
        assert_eq!(drop[0], net("1.10.16.0/20"));
        let secops = read_file(&data("secops-spamhaus-edrop-2024-02-27.txt")).unwrap();
        assert_eq!(secops[0], net("2.56.247.0/24"));
    }

    #[test]
    fn bare_addresses_become_host_prefixes() {
        let nets = parse_list("192.0.2.7\n2001:db8::1\n", "t").unwrap();
        assert_eq!(nets, [net("192.0.2.7/32"), net("2001:db8::1/128")]);
        let ua = read_file(&data("blocklist_net_ua.ipset")).unwrap();
        assert!(ua.iter().all(|n| n.prefix_len() == 32));
    }

    #[test]
    fn comments_whitespace_and_blank_lines() {
        let text = "# header\n; other header\n\n   \n 10.0.0.0/8 \n192.0.2.0/24 ; SBL1\n\
                    198.51.100.0/24 # why\n\t203.0.113.0/24\t\n";
        let nets = parse_list(text, "t").unwrap();
        assert_eq!(
            nets,
            [
                net("10.0.0.0/8"),
                net("192.0.2.0/24"),
                net("198.51.100.0/24"),
                net("203.0.113.0/24")
            ]
        );
    }

    #[test]
    fn crlf_and_bom() {
        let text = "\u{feff}; header\r\n10.0.0.0/8 ; SBL1\r\n\r\n192.0.2.1\r\nbad\r\n";
        let err = parse_list(text, "crlf.txt").unwrap_err();
        assert_eq!(
            bad_entry(err),
            (
                "crlf.txt".to_owned(),
                5,
                "bad".to_owned(),
                "not an IP address or CIDR".to_owned()
            )
        );
        let nets = parse_list(&text.replace("bad\r\n", ""), "crlf.txt").unwrap();
        assert_eq!(nets, [net("10.0.0.0/8"), net("192.0.2.1/32")]);
    }

    #[test]
    fn bad_lines_name_origin_line_and_text() {
        let cases = [
            ("1.2.3.4/33", "prefix length 33 is over 32 for IPv4"),
            ("2001:db8::/129", "prefix length 129 is over 128 for IPv6"),
            ("10.0.0.1/8", "host bits set"),
            ("hello", "not an IP address or CIDR"),
            ("1.2.3.4 5.6.7.8", "several words"),
            ("1.2.3.4/", "missing prefix length"),
            ("1.2.3.4/999", "prefix length 999 is over 32"),
            ("1.2.3.4/1234", "not a number"),
            ("1.2.3.4/+8", "not a number"),
            ("1.2.3/24", "not an IP address"),
        ];
        for (bad, reason) in cases {
            let text = format!("# header\n10.0.0.0/8\n\n{bad} ; comment\n192.0.2.0/24\n");
            let err = parse_list(&text, "/etc/netguard/deny.txt").unwrap_err();
            let shown = err.to_string();
            let (origin, line, got_text, got_reason) = bad_entry(err);
            assert_eq!(origin, "/etc/netguard/deny.txt", "{bad}");
            assert_eq!(line, 4, "{bad}");
            assert_eq!(got_text, bad);
            assert!(got_reason.contains(reason), "{bad}: {got_reason}");
            assert!(
                shown.starts_with("/etc/netguard/deny.txt:4: ")
                    && shown.ends_with(&format!("{bad:?}")),
                "{shown}"
            );
        }
    }

    #[test]
    fn host_bits_message_suggests_both_readings() {
        let reason = parse_entry("10.0.0.1/8").unwrap_err();
        assert!(reason.contains("10.0.0.1/32"), "{reason}");
        assert!(reason.contains("10.0.0.0/8"), "{reason}");
        let reason = parse_entry("2001:db8::1/32").unwrap_err();
        assert!(reason.contains("2001:db8::1/128"), "{reason}");
        assert!(reason.contains("2001:db8::/32"), "{reason}");
    }

    #[test]
    fn parse_entry_cases() {
        assert_eq!(parse_entry(" 192.0.2.0/24 "), Ok(net("192.0.2.0/24")));
        assert_eq!(parse_entry("192.0.2.1"), Ok(net("192.0.2.1/32")));
        assert_eq!(parse_entry("0.0.0.0/0"), Ok(net("0.0.0.0/0")));
        assert_eq!(parse_entry("::/0"), Ok(net("::/0")));
        assert_eq!(parse_entry("2001:db8::/32"), Ok(net("2001:db8::/32")));
        assert_eq!(
            parse_entry("::ffff:192.0.2.1"),
            Ok(net("::ffff:192.0.2.1/128"))
        );
        assert!(parse_entry("").is_err());
        assert!(parse_entry("192.0.2.0/24 # no comments on the command line").is_err());
    }

    #[test]
    fn inline_cidrs_errors_name_the_index() {
        let cfg = DenylistConfig {
            cidrs: vec![
                "192.0.2.0/24".into(),
                "198.51.100.0/24 ; comments allowed, as in files".into(),
                "10.0.0.1/8".into(),
            ],
            files: vec![],
        };
        let err = load(&cfg, &mut |_| {}).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("denylist.cidrs[2]:1: host bits set"),
            "{err}"
        );
        let (origin, line, text, _) = bad_entry(err);
        assert_eq!(
            (origin.as_str(), line, text.as_str()),
            ("denylist.cidrs[2]", 1, "10.0.0.1/8")
        );

        let cfg = DenylistConfig {
            cidrs: vec!["192.0.2.0/24".into(), " # only a comment".into()],
            files: vec![],
        };
        let (origin, _, _, reason) = bad_entry(load(&cfg, &mut |_| {}).unwrap_err());
        assert_eq!(origin, "denylist.cidrs[1]");
        assert_eq!(reason, "no address or CIDR");
    }

    #[test]
    fn inline_and_files_merge_sorted_and_deduplicated_without_aggregation() {
        let dir = TempDir::new("merge");
        let file = dir.0.join("list.txt");
        std::fs::write(&file, "10.0.0.0/8\n10.1.0.0/16\n192.0.2.1\n2001:db8::/32\n").unwrap();
        let cfg = DenylistConfig {
            cidrs: vec![
                "192.0.2.1/32".into(),
                "10.0.0.0/8".into(),
                "9.0.0.0/8".into(),
            ],
            files: vec![file],
        };
        let list = load(&cfg, &mut |_| {}).unwrap();
        assert_eq!(list.entries_read, 7);
        let v4: Vec<String> = list.v4.iter().map(ToString::to_string).collect();
        // 10.1.0.0/16 sits inside 10.0.0.0/8 and stays: the trie handles overlaps.
        assert_eq!(
            v4,
            ["9.0.0.0/8", "10.0.0.0/8", "10.1.0.0/16", "192.0.2.1/32"]
        );
        assert_eq!(list.v6, ["2001:db8::/32".parse::<Ipv6Net>().unwrap()]);
    }

    #[test]
    fn gzip_is_detected_by_magic_not_extension() {
        let dir = TempDir::new("gzip");
        let text = "; header\n192.0.2.0/24 ; SBL1\n198.51.100.7\n";
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(text.as_bytes()).unwrap();
        let gz = gz.finish().unwrap();
        let want = vec![net("192.0.2.0/24"), net("198.51.100.7/32")];

        let misnamed_gz = dir.0.join("drop.txt");
        std::fs::write(&misnamed_gz, &gz).unwrap();
        assert_eq!(read_file(&misnamed_gz).unwrap(), want);

        let misnamed_plain = dir.0.join("drop.txt.gz");
        std::fs::write(&misnamed_plain, text).unwrap();
        assert_eq!(read_file(&misnamed_plain).unwrap(), want);

        // Two members, as `cat a.gz b.gz` makes.
        let two = dir.0.join("two.gz");
        std::fs::write(&two, [gz.as_slice(), gz.as_slice()].concat()).unwrap();
        assert_eq!(read_file(&two).unwrap().len(), 4);
    }

    #[test]
    fn bad_line_in_gzip_file_names_the_file() {
        let dir = TempDir::new("gzbad");
        let path = dir.0.join("list.netset.gz");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(b"# h\n10.0.0.0/8\n10.0.0.1/8\n").unwrap();
        std::fs::write(&path, gz.finish().unwrap()).unwrap();
        let (origin, line, _, _) = bad_entry(read_file(&path).unwrap_err());
        assert_eq!(origin, path.display().to_string());
        assert_eq!(line, 3);
    }

    #[test]
    fn corrupt_gzip_and_missing_file_are_read_errors_naming_the_path() {
        let dir = TempDir::new("corrupt");
        let path = dir.0.join("list.gz");
        std::fs::write(&path, [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3, 0xff, 0xff]).unwrap();
        let err = read_file(&path).unwrap_err();
        assert!(matches!(err, DenylistError::Read { .. }), "{err}");
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{err}"
        );

        let missing = dir.0.join("missing.txt");
        let cfg = DenylistConfig {
            cidrs: vec![],
            files: vec![missing.clone()],
        };
        let err = load(&cfg, &mut |_| {}).unwrap_err();
        assert!(
            matches!(&err, DenylistError::Read { path, source } if *path == missing
                && source.kind() == io::ErrorKind::NotFound),
            "{err}"
        );
        assert!(err.to_string().starts_with("reading denylist "), "{err}");
    }

    #[test]
    fn non_utf8_comments_do_not_matter() {
        let nets = parse_list_bytes(b"# Latin-1 \xe9t\xe9\n192.0.2.0/24 ; caf\xe9\n");
        assert_eq!(nets, [net("192.0.2.0/24")]);
    }

    fn parse_list_bytes(bytes: &[u8]) -> Vec<IpNet> {
        let mut out = Vec::new();
        for_each_entry(bytes, "t", |n| out.push(n)).unwrap();
        out
    }

    #[test]
    fn comments_only_and_empty_lists_give_no_entries() {
        assert_eq!(parse_list("", "t").unwrap(), []);
        assert_eq!(parse_list("; EOF\n", "t").unwrap(), []);
        let merged = read_file(&data("spamhaus-edrop-2024-10-18-merged.txt")).unwrap();
        assert!(merged.is_empty());
    }
}
