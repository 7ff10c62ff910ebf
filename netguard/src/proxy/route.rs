//! Host → app routing as data: exact names and `*.suffix` wildcards.
//!
//! Names are normalised before they are stored or looked up: ASCII lowercase, one trailing dot
//! removed (`Shop.Example.COM.` is `shop.example.com`). An exact entry beats every wildcard; among
//! wildcards the longest suffix wins. `*.shop.example.com` matches any name that ends in
//! `.shop.example.com` with at least one label before it (`a.shop.example.com`,
//! `a.b.shop.example.com`, as nginx's `server_name *.example.com` does) but not
//! `shop.example.com` itself. Lookups allocate only for names that need lowercasing.

use std::collections::HashMap;

/// A routing table from host names to values (app indices in the proxy).
#[derive(Debug, Clone)]
pub struct RouteTable<T> {
    exact: HashMap<String, T>,
    /// `(".suffix", value)`, longest suffix first.
    wildcards: Vec<(String, T)>,
}

/// A pattern that cannot be a route, or a second route for the same pattern.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error("{0:?} is not a host name or `*.` wildcard")]
    Invalid(String),
    #[error("{0:?} is listed twice")]
    Duplicate(String),
}

/// A parsed route pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pattern {
    /// A normalised host name.
    Exact(String),
    /// The normalised suffix after `*.`, without its leading dot.
    Wildcard(String),
}

impl Pattern {
    pub fn parse(text: &str) -> Result<Pattern, RouteError> {
        let invalid = || RouteError::Invalid(text.to_owned());
        match text.strip_prefix("*.") {
            Some(suffix) => normalize(suffix).map(Pattern::Wildcard).ok_or_else(invalid),
            None => normalize(text).map(Pattern::Exact).ok_or_else(invalid),
        }
    }
}

/// The routing form of a DNS name: lowercase, no trailing dot. `None` if it is not a name:
/// empty labels, labels over 63 bytes, names over 253 bytes, or characters outside letters,
/// digits, `-` and `_`.
pub fn normalize(name: &str) -> Option<String> {
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() || name.len() > 253 {
        return None;
    }
    let valid_label = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if !name.split('.').all(valid_label) {
        return None;
    }
    Some(name.to_ascii_lowercase())
}

impl<T> RouteTable<T> {
    /// Builds a table; the same pattern twice (after normalisation) is an error.
    pub fn new(entries: impl IntoIterator<Item = (Pattern, T)>) -> Result<Self, RouteError> {
        let mut exact = HashMap::new();
        let mut wildcards: Vec<(String, T)> = Vec::new();
        for (pattern, value) in entries {
            match pattern {
                Pattern::Exact(name) => {
                    if exact.contains_key(&name) {
                        return Err(RouteError::Duplicate(name));
                    }
                    exact.insert(name, value);
                }
                Pattern::Wildcard(suffix) => {
                    let dotted = format!(".{suffix}");
                    if wildcards.iter().any(|(s, _)| *s == dotted) {
                        return Err(RouteError::Duplicate(format!("*{dotted}")));
                    }
                    wildcards.push((dotted, value));
                }
            }
        }
        // Longest first; equal lengths cannot match the same name unless equal (refused above).
        wildcards.sort_by_key(|(suffix, _)| std::cmp::Reverse(suffix.len()));
        Ok(RouteTable { exact, wildcards })
    }

    /// The value for `host` (a name without port; any case; trailing dot allowed).
    pub fn lookup(&self, host: &str) -> Option<&T> {
        let host = host.strip_suffix('.').unwrap_or(host);
        let lowered;
        let host = if host.bytes().any(|b| b.is_ascii_uppercase()) {
            lowered = host.to_ascii_lowercase();
            lowered.as_str()
        } else {
            host
        };
        if let Some(v) = self.exact.get(host) {
            return Some(v);
        }
        self.wildcards
            .iter()
            .find(|(suffix, _)| host.len() > suffix.len() && host.ends_with(suffix.as_str()))
            .map(|(_, v)| v)
    }

    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.wildcards.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(entries: &[(&str, &'static str)]) -> RouteTable<&'static str> {
        RouteTable::new(
            entries
                .iter()
                .map(|(p, v)| (Pattern::parse(p).expect("valid pattern"), *v)),
        )
        .expect("no duplicates")
    }

    #[test]
    fn exact_beats_wildcard_and_longer_suffix_beats_shorter() {
        let t = table(&[
            ("shop.example.com", "shop"),
            ("*.shop.example.com", "shop-wild"),
            ("*.example.com", "catch-all"),
            ("api.shop.example.com", "api"),
            ("*.eu.shop.example.com", "eu"),
        ]);
        let cases = [
            ("shop.example.com", Some("shop")),
            ("api.shop.example.com", Some("api")),
            ("www.shop.example.com", Some("shop-wild")),
            ("a.b.shop.example.com", Some("shop-wild")),
            ("x.eu.shop.example.com", Some("eu")),
            ("eu.shop.example.com", Some("shop-wild")),
            ("blog.example.com", Some("catch-all")),
            ("example.com", None),
            ("other.org", None),
            // The suffix must start at a label boundary.
            ("evilshop.example.com", Some("catch-all")),
            ("evilexample.com", None),
            ("", None),
        ];
        for (host, want) in cases {
            assert_eq!(t.lookup(host).copied(), want, "{host:?}");
        }
    }

    #[test]
    fn names_are_case_insensitive_and_trailing_dot_is_ignored() {
        let t = table(&[
            ("Shop.Example.COM.", "shop"),
            ("*.Static.Example.com", "static"),
        ]);
        for host in [
            "shop.example.com",
            "SHOP.EXAMPLE.COM",
            "shop.example.com.",
            "Shop.Example.Com.",
        ] {
            assert_eq!(t.lookup(host).copied(), Some("shop"), "{host:?}");
        }
        assert_eq!(t.lookup("CDN.static.example.com.").copied(), Some("static"));
        assert_eq!(t.lookup("shop.example.com.."), None);
    }

    #[test]
    fn patterns() {
        assert_eq!(Pattern::parse("*.A.b"), Ok(Pattern::Wildcard("a.b".into())));
        assert_eq!(Pattern::parse("a.b."), Ok(Pattern::Exact("a.b".into())));
        assert_eq!(
            Pattern::parse("_acme.x"),
            Ok(Pattern::Exact("_acme.x".into()))
        );
        for bad in [
            "",
            ".",
            "*",
            "*.",
            "a..b",
            "a.*.b",
            "**.a",
            "a b",
            "a:80",
            "[::1]",
            "a/b",
            "ä.com",
            &"a".repeat(64),
            &format!("{}.com", ["a"; 126].join(".")),
        ] {
            assert!(Pattern::parse(bad).is_err(), "{bad:?}");
        }
        assert!(Pattern::parse(&"a".repeat(63)).is_ok());
    }

    #[test]
    fn duplicates_are_refused_after_normalisation() {
        let dup = RouteTable::new([
            (Pattern::parse("a.com").unwrap(), 1),
            (Pattern::parse("A.COM.").unwrap(), 2),
        ]);
        assert_eq!(dup.unwrap_err(), RouteError::Duplicate("a.com".into()));
        let dup = RouteTable::new([
            (Pattern::parse("*.a.com").unwrap(), 1),
            (Pattern::parse("*.A.com").unwrap(), 2),
        ]);
        assert_eq!(dup.unwrap_err(), RouteError::Duplicate("*.a.com".into()));
        // An exact name and a wildcard over it are different routes.
        assert!(
            RouteTable::new([
                (Pattern::parse("a.com").unwrap(), 1),
                (Pattern::parse("*.a.com").unwrap(), 2),
            ])
            .is_ok()
        );
    }
}
