//! Request ids: 32 hex digits, unique within a process and unpredictable across processes
//! (a random 64-bit key from `getrandom(2)` mixed with a counter through splitmix64).

use std::sync::{
    OnceLock,
    atomic::{AtomicU64, Ordering},
};

static KEY: OnceLock<u64> = OnceLock::new();
static COUNTER: AtomicU64 = AtomicU64::new(0);

fn key() -> u64 {
    *KEY.get_or_init(|| {
        let mut bytes = [0u8; 8];
        // SAFETY: getrandom writes at most `len` bytes into the buffer we own.
        let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
        if n == bytes.len() as isize {
            u64::from_ne_bytes(bytes)
        } else {
            // No entropy source: still unique per process, from the clock and pid.
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            t.as_nanos() as u64 ^ (u64::from(std::process::id()) << 32)
        }
    })
}

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A fresh request id.
pub fn new_request_id() -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let k = key();
    // splitmix64 is a bijection: distinct counters give distinct first halves.
    let a = splitmix64(n ^ k);
    let b = splitmix64(a ^ k.rotate_left(17));
    hex_id(a, b)
}

/// `{a:016x}{b:016x}` without going through the formatter (this runs for every request).
fn hex_id(a: u64, b: u64) -> String {
    let mut id = String::with_capacity(32);
    for half in [a, b] {
        for shift in (0..16).rev() {
            let digit = ((half >> (shift * 4)) & 0xf) as u8;
            id.push(char::from(b"0123456789abcdef"[usize::from(digit)]));
        }
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_is_zero_padded_lowercase() {
        for (a, b) in [
            (0, u64::MAX),
            (0x0123_4567_89ab_cdef, 0xf),
            (u64::MAX / 3, 1 << 60),
        ] {
            assert_eq!(hex_id(a, b), format!("{a:016x}{b:016x}"));
        }
    }

    #[test]
    fn ids_are_hex_and_distinct() {
        let ids: std::collections::HashSet<String> =
            (0..10_000).map(|_| new_request_id()).collect();
        assert_eq!(ids.len(), 10_000);
        assert!(
            ids.iter()
                .all(|id| id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()))
        );
    }
}
