//! A head's end-to-end header fields in one buffer: names and values back to back, with their
//! offsets beside them. Parsing a head then costs two allocations however many fields it has,
//! instead of two per field — every request and every response goes through here.

use std::fmt;

/// One field: the name as received, the value trimmed of surrounding whitespace.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Field<'a> {
    pub name: &'a [u8],
    pub value: &'a [u8],
}

impl Field<'_> {
    pub fn is(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name.as_bytes())
    }
}

impl fmt::Debug for Field<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {}",
            String::from_utf8_lossy(self.name),
            String::from_utf8_lossy(self.value)
        )
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
struct Span {
    start: usize,
    name_end: usize,
    end: usize,
}

/// Fields in order.
#[derive(Clone, Default)]
pub struct Fields {
    bytes: Vec<u8>,
    spans: Vec<Span>,
    /// Room to allocate at the first push: a head without such fields allocates nothing.
    room: (usize, usize),
}

impl PartialEq for Fields {
    fn eq(&self, other: &Fields) -> bool {
        self.iter().eq(other.iter())
    }
}

impl Eq for Fields {}

impl Fields {
    /// Room for up to `fields` fields of `bytes` bytes in all (names plus values), taken at
    /// the first push.
    pub fn with_capacity(fields: usize, bytes: usize) -> Fields {
        Fields {
            bytes: Vec::new(),
            spans: Vec::new(),
            room: (fields, bytes),
        }
    }

    pub fn push(&mut self, name: &[u8], value: &[u8]) {
        if self.spans.capacity() == 0 {
            self.spans.reserve(self.room.0.max(1));
            self.bytes
                .reserve(self.room.1.max(name.len() + value.len()));
        }
        let start = self.bytes.len();
        self.bytes.extend_from_slice(name);
        let name_end = self.bytes.len();
        self.bytes.extend_from_slice(value);
        self.spans.push(Span {
            start,
            name_end,
            end: self.bytes.len(),
        });
    }

    pub fn len(&self) -> usize {
        self.spans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    fn field(&self, s: &Span) -> Field<'_> {
        Field {
            name: &self.bytes[s.start..s.name_end],
            value: &self.bytes[s.name_end..s.end],
        }
    }

    pub fn get(&self, index: usize) -> Option<Field<'_>> {
        self.spans.get(index).map(|s| self.field(s))
    }

    pub fn iter(&self) -> impl ExactSizeIterator<Item = Field<'_>> + '_ {
        self.spans.iter().map(|s| self.field(s))
    }

    /// Keeps the fields `keep` accepts, in order (their bytes stay until the head is dropped).
    pub fn retain(&mut self, mut keep: impl FnMut(Field<'_>) -> bool) {
        let bytes = &self.bytes;
        self.spans.retain(|s| {
            keep(Field {
                name: &bytes[s.start..s.name_end],
                value: &bytes[s.name_end..s.end],
            })
        });
    }
}

impl fmt::Debug for Fields {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_keep_order_names_and_values() {
        let mut f = Fields::with_capacity(2, 16);
        assert_eq!(
            f.bytes.capacity(),
            0,
            "nothing allocated before the first field"
        );
        f.push(b"Accept", b"*/*");
        f.push(b"X-Empty", b"");
        f.push(b"Cookie", b"a=1; b=2");
        assert_eq!(f.len(), 3);
        let all: Vec<(&[u8], &[u8])> = f.iter().map(|x| (x.name, x.value)).collect();
        assert_eq!(
            all,
            [
                (&b"Accept"[..], &b"*/*"[..]),
                (b"X-Empty", b""),
                (b"Cookie", b"a=1; b=2")
            ]
        );
        assert!(f.get(2).is_some_and(|x| x.is("cookie")));
        assert!(f.get(3).is_none());

        f.retain(|x| !x.is("x-empty"));
        let names: Vec<&[u8]> = f.iter().map(|x| x.name).collect();
        assert_eq!(names, [&b"Accept"[..], b"Cookie"]);
        assert_eq!(f.get(1).map(|x| x.value), Some(&b"a=1; b=2"[..]));
        assert_eq!(format!("{f:?}"), "[Accept: */*, Cookie: a=1; b=2]");
    }
}
