//! Byte sizes and byte rates as operators write them: `1600000000`, `"1.6GB"`, `"12.8Gbit"`,
//! `"20MB/s"`, `"160Mbit/s"`, `"64KiB"`.
//!
//! Decimal prefixes are powers of 1000 (`kB`/`KB`, `MB`, `GB`, `TB`), binary ones powers of
//! 1024 (`KiB`, `MiB`, `GiB`, `TiB`); a `bit` unit divides by 8 (`kbit`, `Mbit`, `Gbit`, also
//! `Mbps`-style). The value must come out as a whole number of bytes. Parsing is exact: the
//! number is read as a decimal fraction and scaled with 128-bit integers, never floats.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

/// Parses a size: a plain integer (bytes) or a number with a unit.
pub fn parse_size(text: &str) -> Result<u64, String> {
    parse(text, false)
}

/// Parses a rate in bytes per second: like a size, optionally followed by `/s` (`ps` after a
/// bit unit, as in `Mbps`).
pub fn parse_rate(text: &str) -> Result<u64, String> {
    parse(text, true)
}

fn parse(text: &str, rate: bool) -> Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let unit = unit.trim();
    if number.is_empty() {
        return Err(format!("{text:?} does not start with a number"));
    }
    let (int, frac) = number.split_once('.').unwrap_or((number, ""));
    if int.is_empty() || frac.contains('.') || (number.contains('.') && frac.is_empty()) {
        return Err(format!("{text:?}: malformed number {number:?}"));
    }
    let mut unit = unit;
    if rate {
        unit = unit.strip_suffix("/s").map(str::trim_end).unwrap_or(unit);
    }
    let (numerator, denominator): (u128, u128) = match unit {
        "" | "B" => (1, 1),
        "kB" | "KB" => (1_000, 1),
        "MB" => (1_000_000, 1),
        "GB" => (1_000_000_000, 1),
        "TB" => (1_000_000_000_000, 1),
        "KiB" => (1 << 10, 1),
        "MiB" => (1 << 20, 1),
        "GiB" => (1 << 30, 1),
        "TiB" => (1 << 40, 1),
        "bit" | "bps" if rate || unit == "bit" => (1, 8),
        "kbit" | "Kbit" | "kbps" | "Kbps" => (1_000, 8),
        "Mbit" | "Mbps" => (1_000_000, 8),
        "Gbit" | "Gbps" => (1_000_000_000, 8),
        "Tbit" | "Tbps" => (1_000_000_000_000, 8),
        other => {
            return Err(format!(
                "{text:?}: unknown unit {other:?} (use B, kB, MB, GB, KiB, MiB, GiB, kbit, Mbit, Gbit{})",
                if rate {
                    ", optionally followed by /s"
                } else {
                    ""
                }
            ));
        }
    };
    if !rate && (unit.ends_with("ps")) {
        return Err(format!(
            "{text:?}: {unit:?} is a rate unit; a size takes B, MB, GB, Mbit, …"
        ));
    }
    let digits = |s: &str| -> Result<u128, String> {
        if s.len() > 30 {
            return Err(format!("{text:?}: number too long"));
        }
        s.parse::<u128>()
            .map_err(|_| format!("{text:?}: malformed number {number:?}"))
    };
    let whole = digits(int)?;
    let fraction = if frac.is_empty() { 0 } else { digits(frac)? };
    let scale = 10u128.pow(frac.len() as u32);
    // value = (whole + fraction/scale) * numerator / denominator
    let scaled = (whole * scale + fraction)
        .checked_mul(numerator)
        .ok_or_else(|| format!("{text:?} is too large"))?;
    let divisor = scale * denominator;
    if scaled % divisor != 0 {
        return Err(format!("{text:?} is not a whole number of bytes"));
    }
    u64::try_from(scaled / divisor).map_err(|_| format!("{text:?} is too large"))
}

/// A config value holding bytes, written as an integer or a string with a unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Bytes(pub u64);

/// A config value holding bytes per second.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct BytesPerSec(pub u64);

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} B", self.0)
    }
}

impl fmt::Display for BytesPerSec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} B/s ({} Mbit/s)", self.0, self.0 as f64 * 8.0 / 1e6)
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Raw {
    Int(u64),
    Text(String),
}

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Raw::deserialize(d)? {
            Raw::Int(n) => Ok(Bytes(n)),
            Raw::Text(s) => parse_size(&s).map(Bytes).map_err(de::Error::custom),
        }
    }
}

impl<'de> Deserialize<'de> for BytesPerSec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Raw::deserialize(d)? {
            Raw::Int(n) => Ok(BytesPerSec(n)),
            Raw::Text(s) => parse_rate(&s).map(BytesPerSec).map_err(de::Error::custom),
        }
    }
}

impl Serialize for Bytes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.0)
    }
}

impl Serialize for BytesPerSec {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platform_numbers() {
        assert_eq!(parse_rate("20MB/s"), Ok(20_000_000));
        assert_eq!(parse_rate("160Mbit/s"), Ok(20_000_000));
        assert_eq!(parse_rate("160 Mbps"), Ok(20_000_000));
        assert_eq!(parse_rate("20000000"), Ok(20_000_000));
        assert_eq!(parse_size("1.6GB"), Ok(1_600_000_000));
        assert_eq!(parse_size("12.8Gbit"), Ok(1_600_000_000));
        assert_eq!(parse_size("1600000000"), Ok(1_600_000_000));
        assert_eq!(parse_size("64KiB"), Ok(65_536));
        assert_eq!(parse_size("8 MB"), Ok(8_000_000));
        assert_eq!(parse_rate("1.5MiB/s"), Ok(1_572_864));
    }

    #[test]
    fn refusals_say_why() {
        for (text, why) in [
            ("", "number"),
            ("MB", "number"),
            ("1.2.3MB", "malformed"),
            ("1.MB", "malformed"),
            ("20 furlongs", "unknown unit"),
            ("1bit", "whole number"),
            ("0.1B", "whole number"),
            ("99999999999999999999TB", "too large"),
            ("20Mbps", "rate unit"),
        ] {
            let err = parse_size(text).expect_err(text);
            assert!(err.contains(why), "{text}: {err}");
        }
        assert!(parse_size("20MB/s").is_err(), "a size has no /s");
    }

    #[test]
    fn deserializes_integers_and_strings() {
        #[derive(Deserialize)]
        struct T {
            a: Bytes,
            b: BytesPerSec,
        }
        let t: T = toml::from_str("a = \"1.6GB\"\nb = 20000000\n").expect("parses");
        assert_eq!((t.a, t.b), (Bytes(1_600_000_000), BytesPerSec(20_000_000)));
        let err = toml::from_str::<T>("a = \"lots\"\nb = 1\n")
            .err()
            .expect("refused");
        assert!(err.to_string().contains("lots"), "{err}");
    }
}
