//! A strict, incremental decoder of the chunked transfer coding (RFC 9112 §7.1), and its
//! encoder.
//!
//! The decoder holds no buffer: it walks chunk-size lines and trailers byte by byte and hands
//! chunk data back as ranges of the caller's input, so it needs O(1) memory whatever the chunk
//! sizes and however the input is split. It is stricter than the grammar where laxness lets two
//! parsers disagree about where a body ends:
//!
//! - a chunk size is 1 to 16 hex digits (no sign, no `0x`, no whitespace), followed directly by
//!   `;` (an extension) or CRLF;
//! - every line ends in CRLF: a bare LF, or a CR not followed by LF, is an error;
//! - an extension is `;` then visible ASCII, spaces or tabs, and the whole chunk-size line is at
//!   most [`MAX_CHUNK_LINE`] bytes;
//! - chunk data is followed by exactly CRLF;
//! - trailer fields are `token ":" value` lines with no control characters (no obs-fold), at most
//!   [`MAX_TRAILER_BYTES`] in all. They are checked and dropped (not forwarded);
//! - the decoded total may not exceed the limit given to [`ChunkedDecoder::new`]: a chunk whose
//!   announced size would pass it is refused when its size line ends, before any of its data.

use std::ops::Range;

/// Longest chunk-size line, extension included, CRLF excluded.
pub const MAX_CHUNK_LINE: usize = 4096;

/// Most trailer bytes (field lines with their CRLFs).
pub const MAX_TRAILER_BYTES: usize = 8192;

/// Why a chunked body is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    #[error("malformed chunk size")]
    BadSize,
    #[error("chunk size line ends without CRLF")]
    BadLineEnding,
    #[error("malformed chunk extension")]
    BadExtension,
    #[error("chunk size line too long")]
    LineTooLong,
    #[error("chunk data not followed by CRLF")]
    BadDataEnd,
    #[error("malformed trailer field")]
    BadTrailer,
    #[error("trailer section too large")]
    TrailerTooLarge,
    #[error("body larger than the limit")]
    TooLarge,
}

/// What one call to [`ChunkedDecoder::decode`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Every byte given was framing; give more.
    NeedMore,
    /// Chunk data: this range of the input.
    Data(Range<usize>),
    /// The last chunk and the trailer section are complete. Bytes after them are not the body's.
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading hex digits; `digits` so far.
    Size {
        digits: u8,
    },
    /// After `;` of a chunk extension.
    Extension,
    /// The CR of the chunk-size line was seen.
    SizeLf,
    /// `remaining` data bytes to go.
    Data,
    DataCr,
    DataLf,
    /// At the start of a trailer line (or of the final CRLF).
    TrailerStart,
    /// In a trailer field name.
    TrailerName,
    /// After the colon of a trailer field.
    TrailerValue,
    TrailerLf,
    FinalLf,
    Done,
}

/// Decoder state; see the module docs for what it accepts.
#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: State,
    size: u64,
    remaining: u64,
    line_len: usize,
    trailer_bytes: usize,
    total: u64,
    max_total: u64,
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

impl ChunkedDecoder {
    /// A decoder that refuses bodies whose decoded size exceeds `max_total` bytes.
    pub fn new(max_total: u64) -> Self {
        ChunkedDecoder {
            state: State::Size { digits: 0 },
            size: 0,
            remaining: 0,
            line_len: 0,
            trailer_bytes: 0,
            total: 0,
            max_total,
        }
    }

    /// Decoded bytes announced so far (all chunks whose size line is complete).
    pub fn total(&self) -> u64 {
        self.total
    }

    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Consumes framing from `input` until chunk data, the end of the body, or the end of the
    /// input. Returns how many bytes of `input` were consumed (for [`Step::Data`], up to the end
    /// of the returned range) and what was found. After [`Step::Done`] it consumes nothing.
    pub fn decode(&mut self, input: &[u8]) -> Result<(usize, Step), ChunkError> {
        if self.state == State::Done {
            return Ok((0, Step::Done));
        }
        let mut i = 0;
        while i < input.len() {
            if self.state == State::Data {
                let take = usize::try_from(self.remaining)
                    .unwrap_or(usize::MAX)
                    .min(input.len() - i);
                self.remaining -= take as u64;
                if self.remaining == 0 {
                    self.state = State::DataCr;
                }
                return Ok((i + take, Step::Data(i..i + take)));
            }
            let b = input[i];
            i += 1;
            self.byte(b)?;
            if self.state == State::Done {
                return Ok((i, Step::Done));
            }
        }
        Ok((i, Step::NeedMore))
    }

    fn byte(&mut self, b: u8) -> Result<(), ChunkError> {
        use State::*;
        match self.state {
            Size { digits } => {
                if let Some(d) = (b as char).to_digit(16) {
                    if digits == 16 {
                        return Err(ChunkError::BadSize);
                    }
                    self.size = (self.size << 4) | u64::from(d);
                    self.state = Size { digits: digits + 1 };
                    self.line_len += 1;
                } else if digits == 0 {
                    return Err(ChunkError::BadSize);
                } else if b == b';' {
                    self.state = Extension;
                    self.line_len += 1;
                } else if b == b'\r' {
                    self.state = SizeLf;
                } else if b == b'\n' {
                    return Err(ChunkError::BadLineEnding);
                } else {
                    return Err(ChunkError::BadSize);
                }
            }
            Extension => match b {
                b'\r' => self.state = SizeLf,
                b'\n' => return Err(ChunkError::BadLineEnding),
                b' ' | b'\t' | 0x21..=0x7e => {
                    self.line_len += 1;
                    if self.line_len > MAX_CHUNK_LINE {
                        return Err(ChunkError::LineTooLong);
                    }
                }
                _ => return Err(ChunkError::BadExtension),
            },
            SizeLf => {
                if b != b'\n' {
                    return Err(ChunkError::BadLineEnding);
                }
                self.line_len = 0;
                if self.size == 0 {
                    self.state = TrailerStart;
                } else {
                    let total = self
                        .total
                        .checked_add(self.size)
                        .filter(|&t| t <= self.max_total)
                        .ok_or(ChunkError::TooLarge)?;
                    self.total = total;
                    self.remaining = self.size;
                    self.size = 0;
                    self.state = Data;
                }
            }
            Data => unreachable!("data is taken in bulk by decode"),
            DataCr => {
                if b != b'\r' {
                    return Err(ChunkError::BadDataEnd);
                }
                self.state = DataLf;
            }
            DataLf => {
                if b != b'\n' {
                    return Err(ChunkError::BadDataEnd);
                }
                self.state = Size { digits: 0 };
            }
            TrailerStart => {
                if b == b'\r' {
                    self.state = FinalLf;
                } else if is_tchar(b) {
                    self.count_trailer()?;
                    self.state = TrailerName;
                } else if b == b'\n' {
                    return Err(ChunkError::BadLineEnding);
                } else {
                    // Includes SP/HTAB: obs-fold.
                    return Err(ChunkError::BadTrailer);
                }
            }
            TrailerName => {
                self.count_trailer()?;
                if b == b':' {
                    self.state = TrailerValue;
                } else if !is_tchar(b) {
                    return Err(ChunkError::BadTrailer);
                }
            }
            TrailerValue => match b {
                b'\r' => {
                    self.count_trailer()?;
                    self.state = TrailerLf;
                }
                b'\n' => return Err(ChunkError::BadLineEnding),
                b' ' | b'\t' | 0x21..=0x7e | 0x80..=0xff => self.count_trailer()?,
                _ => return Err(ChunkError::BadTrailer),
            },
            TrailerLf => {
                if b != b'\n' {
                    return Err(ChunkError::BadLineEnding);
                }
                self.count_trailer()?;
                self.state = TrailerStart;
            }
            FinalLf => {
                if b != b'\n' {
                    return Err(ChunkError::BadLineEnding);
                }
                self.state = Done;
            }
            Done => {}
        }
        Ok(())
    }

    fn count_trailer(&mut self) -> Result<(), ChunkError> {
        self.trailer_bytes += 1;
        if self.trailer_bytes > MAX_TRAILER_BYTES {
            return Err(ChunkError::TrailerTooLarge);
        }
        Ok(())
    }
}

/// The framing line before `len` bytes of chunk data: `{len:x}\r\n`.
pub fn chunk_header(len: usize) -> String {
    format!("{len:x}\r\n")
}

/// What follows each chunk's data.
pub const CHUNK_END: &[u8] = b"\r\n";

/// The last chunk and an empty trailer section.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `pieces` fed one after the other (each piece re-offered from where the decoder
    /// stopped). Returns the data and whether the body was complete, and the bytes left over.
    fn decode_pieces(pieces: &[&[u8]], max: u64) -> Result<(Vec<u8>, bool, Vec<u8>), ChunkError> {
        let mut d = ChunkedDecoder::new(max);
        let mut out = Vec::new();
        let mut done = false;
        let mut rest = Vec::new();
        for piece in pieces {
            let mut input: &[u8] = piece;
            if done {
                rest.extend_from_slice(input);
                continue;
            }
            loop {
                let (used, step) = d.decode(input)?;
                match step {
                    Step::Data(r) => out.extend_from_slice(&input[r]),
                    Step::Done => {
                        done = true;
                        rest.extend_from_slice(&input[used..]);
                        break;
                    }
                    Step::NeedMore => {
                        assert_eq!(used, input.len());
                        break;
                    }
                }
                input = &input[used..];
                if input.is_empty() {
                    break;
                }
            }
        }
        Ok((out, done, rest))
    }

    fn decode_all(input: &[u8]) -> Result<(Vec<u8>, bool, Vec<u8>), ChunkError> {
        decode_pieces(&[input], u64::MAX)
    }

    /// Real bodies: what curl sends for `-H 'Transfer-Encoding: chunked' --data-binary`, with
    /// extensions and trailers as RFC 9112's examples have them.
    const VALID: &[(&str, &[u8], &[u8])] = &[
        ("curl", b"5\r\nhello\r\n0\r\n\r\n", b"hello"),
        ("empty", b"0\r\n\r\n", b""),
        ("zeros", b"000\r\n\r\n", b""),
        (
            "several",
            b"4\r\nWiki\r\n6\r\npedia \r\nE\r\nin \r\n\r\nchunks.\r\n0\r\n\r\n",
            b"Wikipedia in \r\n\r\nchunks.",
        ),
        (
            "extensions",
            b"3;name=value\r\nabc\r\n2;x;y=\"q s\"\r\nde\r\n0;last\r\n\r\n",
            b"abcde",
        ),
        (
            "trailers",
            b"1\r\nx\r\n0\r\nExpires: never\r\nX-Sum:\tabc \r\n\r\n",
            b"x",
        ),
        (
            "uppercase hex",
            b"A\r\n0123456789\r\n0\r\n\r\n",
            b"0123456789",
        ),
        ("data with crlf", b"4\r\n\r\n\r\n\r\n0\r\n\r\n", b"\r\n\r\n"),
    ];

    #[test]
    fn valid_bodies_decode_whole_and_split_at_every_position() {
        for (name, input, want) in VALID {
            let (data, done, rest) = decode_all(input).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(done, "{name}");
            assert_eq!(data, *want, "{name}");
            assert!(rest.is_empty(), "{name}");
            for cut in 0..=input.len() {
                let (a, b) = input.split_at(cut);
                let (data, done, rest) = decode_pieces(&[a, b], u64::MAX)
                    .unwrap_or_else(|e| panic!("{name}@{cut}: {e}"));
                assert!(
                    done && data == *want && rest.is_empty(),
                    "{name} split at {cut}"
                );
            }
            let bytes: Vec<&[u8]> = input.chunks(1).collect();
            let (data, done, _) = decode_pieces(&bytes, u64::MAX).unwrap();
            assert!(done && data == *want, "{name} byte by byte");
        }
    }

    #[test]
    fn every_prefix_of_a_valid_body_needs_more_and_never_fails() {
        for (name, input, want) in VALID {
            for end in 0..input.len() {
                let (data, done, _) = decode_all(&input[..end])
                    .unwrap_or_else(|e| panic!("{name}: prefix of {end} bytes refused: {e}"));
                assert!(!done, "{name}: prefix of {end} bytes ends the body");
                assert!(want.starts_with(&data), "{name}@{end}");
            }
        }
    }

    #[test]
    fn bytes_after_the_body_are_left_alone() {
        let (data, done, rest) = decode_all(b"2\r\nab\r\n0\r\n\r\nGET / HTTP/1.1\r\n").unwrap();
        assert!(done);
        assert_eq!(data, b"ab");
        assert_eq!(rest, b"GET / HTTP/1.1\r\n");
        let mut d = ChunkedDecoder::new(10);
        assert_eq!(d.decode(b"0\r\n\r\nX").unwrap(), (5, Step::Done));
        assert_eq!(d.decode(b"X").unwrap(), (0, Step::Done));
    }

    #[test]
    fn malformed_bodies_are_refused() {
        use ChunkError::*;
        let cases: &[(&str, &[u8], ChunkError)] = &[
            ("no digits", b"\r\n", BadSize),
            ("sign", b"+5\r\nhello\r\n0\r\n\r\n", BadSize),
            ("minus", b"-1\r\n", BadSize),
            ("0x prefix", b"0x5\r\nhello\r\n0\r\n\r\n", BadSize),
            ("underscore", b"1_0\r\n", BadSize),
            ("space before size", b" 5\r\nhello\r\n", BadSize),
            ("space after size", b"5 \r\nhello\r\n", BadSize),
            ("tab after size", b"5\t;x\r\n", BadSize),
            ("space before extension", b"5 ;x\r\nhello\r\n", BadSize),
            ("not hex", b"g\r\n", BadSize),
            ("17 digits", b"00000000000000001\r\n", BadSize),
            (
                "bare LF after size",
                b"5\nhello\r\n0\r\n\r\n",
                BadLineEnding,
            ),
            (
                "bare CR after size",
                b"5\rhello\r\n0\r\n\r\n",
                BadLineEnding,
            ),
            ("bare LF after extension", b"5;a\nhello\r\n", BadLineEnding),
            (
                "bare CR in extension",
                b"5;a\rb\r\nhello\r\n",
                BadLineEnding,
            ),
            ("NUL in extension", b"5;a\0\r\nhello\r\n", BadExtension),
            ("DEL in extension", b"5;a\x7f\r\n", BadExtension),
            (
                "data longer than size",
                b"3\r\nhello\r\n0\r\n\r\n",
                BadDataEnd,
            ),
            ("data ends in bare LF", b"5\r\nhello\n0\r\n\r\n", BadDataEnd),
            ("data ends in bare CR", b"5\r\nhello\r0\r\n\r\n", BadDataEnd),
            ("last chunk bare LF", b"0\n\r\n", BadLineEnding),
            ("final bare LF", b"0\r\n\n", BadLineEnding),
            ("final bare CR", b"0\r\n\rX", BadLineEnding),
            (
                "obs-fold in trailer",
                b"0\r\nA: b\r\n c\r\n\r\n",
                BadTrailer,
            ),
            ("trailer without colon", b"0\r\nAb\r\n\r\n", BadTrailer),
            (
                "space before trailer colon",
                b"0\r\nA : b\r\n\r\n",
                BadTrailer,
            ),
            (
                "control char in trailer",
                b"0\r\nA: \x01\r\n\r\n",
                BadTrailer,
            ),
            ("trailer bare LF", b"0\r\nA: b\n\r\n", BadLineEnding),
            ("trailer CR without LF", b"0\r\nA: b\rX", BadLineEnding),
        ];
        for (name, input, want) in cases {
            assert_eq!(decode_all(input).map(|_| ()), Err(*want), "{name}");
        }
    }

    #[test]
    fn size_overflow_and_limits() {
        // 16 hex digits is the most; the announced total is checked before the data.
        assert_eq!(
            decode_pieces(&[b"ffffffffffffffff\r\n"], u64::MAX).map(|r| r.1),
            Ok(false)
        );
        assert_eq!(
            decode_pieces(&[b"1\r\na\r\nffffffffffffffff\r\n"], u64::MAX).map(|_| ()),
            Err(ChunkError::TooLarge)
        );
        // Exactly at the limit passes, one byte more is refused when its size line ends.
        assert!(decode_pieces(&[b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"], 5).is_ok());
        assert_eq!(
            decode_pieces(&[b"3\r\nabc\r\n3\r\n"], 5).map(|_| ()),
            Err(ChunkError::TooLarge)
        );
        let mut line = b"1;".to_vec();
        line.extend(std::iter::repeat_n(b'x', MAX_CHUNK_LINE - 2));
        line.extend_from_slice(b"\r\nz\r\n0\r\n\r\n");
        assert!(decode_all(&line).is_ok());
        let mut long = b"1;".to_vec();
        long.extend(std::iter::repeat_n(b'x', MAX_CHUNK_LINE - 1));
        assert_eq!(decode_all(&long).map(|_| ()), Err(ChunkError::LineTooLong));
        let mut trailers = b"0\r\n".to_vec();
        while trailers.len() < MAX_TRAILER_BYTES + 10 {
            trailers.extend_from_slice(b"X-A: aaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
        }
        assert_eq!(
            decode_all(&trailers).map(|_| ()),
            Err(ChunkError::TrailerTooLarge)
        );
    }

    #[test]
    fn encoder_output_decodes() {
        let mut body = Vec::new();
        for piece in [&b"hello "[..], &[b'x'; 300][..]] {
            body.extend_from_slice(chunk_header(piece.len()).as_bytes());
            body.extend_from_slice(piece);
            body.extend_from_slice(CHUNK_END);
        }
        body.extend_from_slice(LAST_CHUNK);
        let (data, done, _) = decode_all(&body).unwrap();
        assert!(done);
        assert_eq!(data.len(), 306);
        assert_eq!(chunk_header(300), "12c\r\n");
    }
}
