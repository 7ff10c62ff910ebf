//! The router log: one logfmt line per request.
//!
//! ```text
//! time=2025-01-02T03:04:05.678Z app=shop method=GET path="/a b" status=200 bytes_in=87 bytes_out=1234 duration_ms=3.214 client=192.0.2.99:51234 backend=172.17.0.2:5000 request_id=4f0c…
//! ```
//!
//! `app` and `backend` are `-` when there is none (unknown host, refused request); `path` is the
//! request target as received (path and query); `bytes_in` counts the request's head and body
//! bytes read from the client, `bytes_out` the response bytes written to it. Values are quoted
//! when they contain spaces, `=` or quotes, with `"` and `\` escaped and other non-printable bytes
//! written as `\xNN`.

use std::{
    fmt::Write as _,
    fs::File,
    io::Write as _,
    net::SocketAddr,
    path::Path,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

/// One request, as logged.
#[derive(Debug, Clone)]
pub struct Record<'a> {
    pub time: SystemTime,
    pub app: Option<&'a str>,
    pub method: &'a str,
    pub path: &'a str,
    pub status: u16,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub duration: Duration,
    pub client: SocketAddr,
    pub backend: Option<SocketAddr>,
    pub request_id: &'a str,
}

impl Record<'_> {
    pub fn to_logfmt(&self) -> String {
        let mut s = String::with_capacity(256);
        let _ = write!(s, "time={}", rfc3339(self.time));
        s.push_str(" app=");
        value(&mut s, self.app.unwrap_or("-"));
        s.push_str(" method=");
        value(&mut s, self.method);
        s.push_str(" path=");
        value(&mut s, self.path);
        let _ = write!(
            s,
            " status={} bytes_in={} bytes_out={} duration_ms={:.3} client={}",
            self.status,
            self.bytes_in,
            self.bytes_out,
            self.duration.as_secs_f64() * 1000.0,
            self.client
        );
        match self.backend {
            Some(b) => {
                let _ = write!(s, " backend={b}");
            }
            None => s.push_str(" backend=-"),
        }
        s.push_str(" request_id=");
        value(&mut s, self.request_id);
        s
    }
}

fn value(out: &mut String, v: &str) {
    let plain = !v.is_empty()
        && v.bytes()
            .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'=' && b != b'\\');
    if plain {
        out.push_str(v);
        return;
    }
    out.push('"');
    for c in v.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c == ' ' || c.is_ascii_graphic() => out.push(c),
            c => {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    let _ = write!(out, "\\x{b:02x}");
                }
            }
        }
    }
    out.push('"');
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` (UTC).
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, day) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// Days since 1970-01-01 → (year, month, day), Howard Hinnant's `civil_from_days`.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Where router log lines go (`proxy.router_log`).
#[derive(Clone)]
pub enum RouterLog {
    Off,
    /// The daemon's stderr, one line per write.
    Stderr,
    /// Appended to a file.
    File(Arc<Mutex<File>>),
    /// Kept in memory (tests, embedding).
    Memory(Arc<Mutex<Vec<String>>>),
}

impl std::fmt::Debug for RouterLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RouterLog::Off => "Off",
            RouterLog::Stderr => "Stderr",
            RouterLog::File(_) => "File",
            RouterLog::Memory(_) => "Memory",
        })
    }
}

impl RouterLog {
    /// `"off"`, `"stderr"`, or a file path (opened for appending, created if missing).
    pub fn open(spec: &str) -> std::io::Result<RouterLog> {
        Ok(match spec {
            "off" => RouterLog::Off,
            "stderr" | "-" => RouterLog::Stderr,
            path => RouterLog::File(Arc::new(Mutex::new(
                File::options()
                    .create(true)
                    .append(true)
                    .open(Path::new(path))?,
            ))),
        })
    }

    /// An in-memory log and the handle to read it.
    pub fn memory() -> (RouterLog, Arc<Mutex<Vec<String>>>) {
        let lines = Arc::new(Mutex::new(Vec::new()));
        (RouterLog::Memory(lines.clone()), lines)
    }

    pub fn write(&self, record: &Record<'_>) {
        match self {
            RouterLog::Off => {}
            RouterLog::Stderr => {
                let line = record.to_logfmt() + "\n";
                let _ = std::io::stderr().lock().write_all(line.as_bytes());
            }
            RouterLog::File(file) => {
                let line = record.to_logfmt() + "\n";
                if let Ok(mut f) = file.lock() {
                    let _ = f.write_all(line.as_bytes());
                }
            }
            RouterLog::Memory(lines) => {
                if let Ok(mut l) = lines.lock() {
                    l.push(record.to_logfmt());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logfmt_line() {
        let r = Record {
            time: UNIX_EPOCH + Duration::from_millis(1_735_787_045_678),
            app: Some("shop"),
            method: "GET",
            path: "/a b?x=\"1\"",
            status: 200,
            bytes_in: 87,
            bytes_out: 1234,
            duration: Duration::from_micros(3214),
            client: "192.0.2.99:51234".parse().unwrap(),
            backend: Some("172.17.0.2:5000".parse().unwrap()),
            request_id: "abc",
        };
        assert_eq!(
            r.to_logfmt(),
            "time=2025-01-02T03:04:05.678Z app=shop method=GET path=\"/a b?x=\\\"1\\\"\" status=200 \
             bytes_in=87 bytes_out=1234 duration_ms=3.214 client=192.0.2.99:51234 \
             backend=172.17.0.2:5000 request_id=abc"
        );
        let none = Record {
            app: None,
            backend: None,
            path: "/é\u{1}",
            ..r
        };
        let line = none.to_logfmt();
        assert!(line.contains(" app=- "), "{line}");
        assert!(line.contains(" backend=- "), "{line}");
        assert!(line.contains(" path=\"/\\xc3\\xa9\\x01\" "), "{line}");
    }

    #[test]
    fn dates() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        // 2000-02-29 (leap day) 12:00:00 UTC.
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(951_825_600)),
            "2000-02-29T12:00:00.000Z"
        );
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(4_102_444_799)),
            "2099-12-31T23:59:59.000Z"
        );
    }
}
