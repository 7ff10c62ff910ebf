//! One bench's section of BENCHMARKS.md, between `<!-- NAME:begin -->` and `<!-- NAME:end -->`:
//! replaced in place on the next run, appended when absent, every other section left alone.

use std::{path::Path, time::Instant};

use anyhow::{Context as _, Result};

pub fn begin(name: &str) -> String {
    format!("<!-- {name}:begin -->")
}

pub fn end(name: &str) -> String {
    format!("<!-- {name}:end -->")
}

/// Replaces section `name` of `path` (markers included) with `section`, which must carry both
/// markers; appends it if the file has none; creates the file if it does not exist.
pub fn write(path: &Path, name: &str, section: &str) -> Result<()> {
    let (begin, end) = (begin(name), end(name));
    let old = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let section = section.trim_end();
    let new = match (old.find(&begin), old.find(&end)) {
        (Some(a), Some(b)) if b > a => {
            format!("{}{section}{}", &old[..a], &old[b + end.len()..])
        }
        _ if old.trim().is_empty() => format!("{section}\n"),
        _ => format!("{}\n\n{section}\n", old.trim_end()),
    };
    std::fs::write(path, new).with_context(|| format!("writing {}", path.display()))
}

/// Prints section `name` (`text`, markers included) and writes it into the workspace's
/// BENCHMARKS.md, unless `not_written` says why this run's figures are not for the record.
pub fn publish(
    name: &str,
    text: &str,
    not_written: Option<String>,
    started: Instant,
) -> Result<()> {
    println!("\n{text}");
    if let Some(why) = not_written {
        println!("{why}: BENCHMARKS.md not written");
        return Ok(());
    }
    let path = netguard_tests::workspace_root().join("BENCHMARKS.md");
    write(&path, name, text)?;
    println!(
        "{name} section written to {} ({:.0} s)",
        path.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `1234567.0` → `1,234,567`.
pub fn thousands(v: f64) -> String {
    let s = format!("{v:.0}");
    let (sign, digits) = s.strip_prefix('-').map_or(("", s.as_str()), |d| ("-", d));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    format!("{sign}{out}")
}

/// `date -u`, minutes.
pub fn date() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown date".into())
}

/// A Debian package's version, or "unknown".
pub fn package_version(pkg: &str) -> String {
    std::process::Command::new("dpkg-query")
        .args(["-W", "-f", "${Version}", pkg])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "unknown".into())
}
