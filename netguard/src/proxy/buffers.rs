//! Per-worker recycling of the buffers every request needs: the response head's (16 KiB) and
//! the first read of a client's input (see [`INPUT`]).
//!
//! Allocating and freeing them per request is glibc's large-chunk path for the first
//! (consolidating the small-chunk bins each time) and an allocation plus a zero fill for the
//! second, a measurable share of the proxy's CPU; keeping a few freed buffers per worker thread
//! avoids it without holding memory in idle connections. Tasks never migrate between the
//! proxy's workers, so each thread's lists serve its own connections.

use std::{
    cell::RefCell,
    ops::{Deref, DerefMut},
};

/// Buffers kept per thread: enough for the requests one worker has in flight at once in the
/// common case, a bounded 1 MiB at most.
const KEEP: usize = 64;

/// Size of a client connection's first read buffer: most request heads fit (nginx's
/// `client_header_buffer_size` default is the same).
pub const INPUT: usize = 1024;

thread_local! {
    static FREE: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
    static INPUTS: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// [`INPUT`] initialized bytes (their contents unspecified) to read into.
pub fn input() -> Vec<u8> {
    INPUTS
        .with(|free| free.borrow_mut().pop())
        .unwrap_or_else(|| vec![0; INPUT])
}

/// Hands a buffer from [`input`] back for this thread's next request (others are freed).
pub fn recycle_input(v: Vec<u8>) {
    if v.len() != INPUT {
        return;
    }
    let _ = INPUTS.try_with(|free| {
        let mut free = free.borrow_mut();
        if free.len() < KEEP {
            free.push(v);
        }
    });
}

/// An empty buffer with room for at least `capacity` bytes; it returns to its thread's list
/// when dropped.
pub struct Buf(Vec<u8>);

impl Buf {
    pub fn with_capacity(capacity: usize) -> Buf {
        let recycled = FREE.with(|free| free.borrow_mut().pop());
        let mut v = recycled.unwrap_or_default();
        v.reserve(capacity);
        Buf(v)
    }

    /// The bytes, leaving the buffer to be freed rather than recycled.
    pub fn into_vec(mut self) -> Vec<u8> {
        std::mem::take(&mut self.0)
    }
}

impl Deref for Buf {
    type Target = Vec<u8>;
    fn deref(&self) -> &Vec<u8> {
        &self.0
    }
}

impl DerefMut for Buf {
    fn deref_mut(&mut self) -> &mut Vec<u8> {
        &mut self.0
    }
}

impl Drop for Buf {
    fn drop(&mut self) {
        let mut v = std::mem::take(&mut self.0);
        if v.capacity() == 0 {
            return;
        }
        v.clear();
        // A thread being torn down has no list any more: the buffer is simply freed.
        let _ = FREE.try_with(|free| {
            let mut free = free.borrow_mut();
            if free.len() < KEEP {
                free.push(v);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dropped_buffer_is_handed_out_again_empty() {
        let mut a = Buf::with_capacity(16 * 1024);
        a.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
        let ptr = a.as_ptr();
        drop(a);
        let b = Buf::with_capacity(16 * 1024);
        assert_eq!(b.as_ptr(), ptr, "recycled");
        assert!(b.is_empty());
        assert!(b.capacity() >= 16 * 1024);
        // Taken out as a Vec, it is not recycled.
        let v = b.into_vec();
        let c = Buf::with_capacity(16);
        assert_ne!(c.as_ptr(), v.as_ptr());
    }

    #[test]
    fn input_buffers_are_recycled_at_their_size_only() {
        let a = input();
        assert_eq!(a.len(), INPUT);
        let ptr = a.as_ptr();
        recycle_input(a);
        let b = input();
        assert_eq!(b.as_ptr(), ptr, "recycled");
        assert_eq!(b.len(), INPUT);
        // A grown buffer is freed, not kept.
        let mut grown = b;
        grown.resize(4 * INPUT, 0);
        recycle_input(grown);
        assert_eq!(input().len(), INPUT);
    }
}
