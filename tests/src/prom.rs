//! A reader for the Prometheus text exposition format (0.0.4), enough to check what
//! `/metrics` serves: samples with their labels, and the `# TYPE` of each family.

use std::collections::{BTreeMap, HashMap};

/// One sample line.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// A parsed scrape.
#[derive(Clone, Debug, Default)]
pub struct Scrape {
    pub samples: Vec<Sample>,
    /// Family name → `counter`, `gauge`, `histogram`, …
    pub types: HashMap<String, String>,
}

impl Scrape {
    /// Parses a whole exposition; an error names the line.
    pub fn parse(text: &str) -> Result<Scrape, String> {
        let mut out = Scrape::default();
        for (n, line) in text.lines().enumerate() {
            let err = |why: &str| format!("line {}: {why}: {line:?}", n + 1);
            if line.is_empty() {
                continue;
            }
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut parts = rest.split(' ');
                let (Some(name), Some(kind), None) = (parts.next(), parts.next(), parts.next())
                else {
                    return Err(err("bad TYPE line"));
                };
                if out.types.insert(name.into(), kind.into()).is_some() {
                    return Err(err("second TYPE for a family"));
                }
                continue;
            }
            if line.starts_with('#') {
                continue;
            }
            out.samples.push(parse_sample(line).map_err(|e| err(&e))?);
        }
        Ok(out)
    }

    /// The value of the one sample named `name` whose labels include `labels`; `None` if there
    /// is none. Panics if several match (the test asked an ambiguous question).
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let found: Vec<&Sample> = self
            .samples
            .iter()
            .filter(|s| {
                s.name == name
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .collect();
        assert!(
            found.len() <= 1,
            "{name} {labels:?} matches {} samples",
            found.len()
        );
        found.first().map(|s| s.value)
    }

    /// [`Scrape::get`], or 0 when absent.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels).unwrap_or(0.0)
    }
}

fn parse_sample(line: &str) -> Result<Sample, String> {
    let name_end = line
        .find(['{', ' '])
        .ok_or_else(|| "no value".to_string())?;
    let name = &line[..name_end];
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    {
        return Err("bad metric name".into());
    }
    let mut labels = BTreeMap::new();
    let mut rest = &line[name_end..];
    if let Some(after) = rest.strip_prefix('{') {
        let mut chars = after.char_indices().peekable();
        loop {
            // label name
            let start = chars.peek().map(|&(i, _)| i).ok_or("unterminated labels")?;
            if after[start..].starts_with('}') {
                chars.next();
                break;
            }
            let eq = after[start..].find('=').ok_or("label without =")? + start;
            let key = after[start..eq].to_string();
            while chars.peek().is_some_and(|&(i, _)| i <= eq) {
                chars.next();
            }
            if chars.next().map(|(_, c)| c) != Some('"') {
                return Err("label value not quoted".into());
            }
            let mut value = String::new();
            loop {
                match chars.next().ok_or("unterminated label value")?.1 {
                    '"' => break,
                    '\\' => match chars.next().ok_or("dangling escape")?.1 {
                        'n' => value.push('\n'),
                        c @ ('\\' | '"') => value.push(c),
                        c => return Err(format!("bad escape \\{c}")),
                    },
                    c => value.push(c),
                }
            }
            labels.insert(key, value);
            match chars.next().map(|(_, c)| c) {
                Some(',') => continue,
                Some('}') => break,
                _ => return Err("expected , or } after a label".into()),
            }
        }
        let consumed = chars.peek().map_or(after.len(), |&(i, _)| i);
        rest = &after[consumed..];
    }
    let value = rest.trim();
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().map_err(|_| format!("bad value {v:?}"))?,
    };
    Ok(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_labels_escapes_and_types() {
        let s = Scrape::parse(
            "# HELP a_total x\n# TYPE a_total counter\na_total{app=\"s\\\"h\",code=\"2xx\"} 3\nb 1.5\nc_bucket{le=\"+Inf\"} 2\n",
        )
        .unwrap();
        assert_eq!(s.types["a_total"], "counter");
        assert_eq!(s.get("a_total", &[("app", "s\"h")]), Some(3.0));
        assert_eq!(s.get("b", &[]), Some(1.5));
        assert_eq!(s.value("c_bucket", &[("le", "+Inf")]), 2.0);
        assert!(Scrape::parse("x{a=1} 2").is_err());
        assert!(Scrape::parse("x{a=\"1\"} two").is_err());
    }
}
