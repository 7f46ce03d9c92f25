//! A resource's fingerprint and the record of every resource's fingerprint, kept compact: a
//! 10,000-file device holds two such records at once (the last clean converge's, read from
//! state.json, and this run's), and as text-keyed maps of hex strings they took 1.5 MB each.
//!
//! On disk nothing changes: state.json keeps a JSON object of "kind id" → 32 hex digits, in key
//! order, exactly as before, so a run-state file written by an older agent still reads.

use std::fmt;

use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The first 16 bytes of a SHA-256 over what a resource wants (see `fleet::sources`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Fingerprint(pub [u8; 16]);

impl Fingerprint {
    /// The fingerprint of a digest: its first 16 bytes.
    pub fn of(digest: &[u8]) -> Self {
        let mut b = [0; 16];
        b.copy_from_slice(&digest[..16]);
        Fingerprint(b)
    }

    /// Reads the 32 lowercase or uppercase hex digits [`Display`](fmt::Display) writes.
    pub fn parse(hex: &str) -> Option<Self> {
        let hex = hex.as_bytes();
        if hex.len() != 32 {
            return None;
        }
        let mut b = [0; 16];
        for (out, pair) in b.iter_mut().zip(hex.chunks(2)) {
            let digit = |c: u8| (c as char).to_digit(16);
            *out = (digit(pair[0])? * 16 + digit(pair[1])?) as u8;
        }
        Some(Fingerprint(b))
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

/// "kind id" → fingerprint, sorted by key. The keys live in one string and each entry keeps
/// where its key ends there (it starts where the previous one ends): 20 bytes per entry beside
/// the key's text, against two heap strings and a B-tree slot.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Fingerprints {
    keys: String,
    entries: Vec<(u32, Fingerprint)>,
}

impl Fingerprints {
    /// The record of `pairs`; of two equal keys the later one is kept (as a map would).
    pub fn collect<K: AsRef<str>>(pairs: impl IntoIterator<Item = (K, Fingerprint)>) -> Self {
        let pairs = pairs.into_iter();
        let mut b = Builder::with_capacity(pairs.size_hint().0);
        pairs.for_each(|(k, f)| b.push(k.as_ref(), f));
        b.finish()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Every key and its fingerprint, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, Fingerprint)> {
        let starts = std::iter::once(0).chain(self.entries.iter().map(|e| e.0));
        starts
            .zip(&self.entries)
            .map(|(start, (end, f))| (&self.keys[start as usize..*end as usize], *f))
    }

    fn key(&self, n: usize) -> &str {
        let start = if n == 0 { 0 } else { self.entries[n - 1].0 };
        &self.keys[start as usize..self.entries[n].0 as usize]
    }

    /// The fingerprint recorded for `key`.
    pub fn get(&self, key: &str) -> Option<Fingerprint> {
        let n = bisect(self.entries.len(), |n| self.key(n).cmp(key))?;
        Some(self.entries[n].1)
    }
}

/// Keys appended as they come, then sorted once.
struct Builder {
    text: String,
    spans: Vec<(u32, u32, Fingerprint)>,
}

impl Builder {
    fn with_capacity(n: usize) -> Self {
        Builder {
            text: String::new(),
            spans: Vec::with_capacity(n),
        }
    }

    fn push(&mut self, key: &str, f: Fingerprint) {
        let start = offset(self.text.len());
        self.text.push_str(key);
        self.spans.push((start, offset(self.text.len()), f));
    }

    fn finish(mut self) -> Fingerprints {
        let text = &self.text;
        let key = |s: &(u32, u32, Fingerprint)| &text[s.0 as usize..s.1 as usize];
        // Stable: equal keys stay in input order, and the last of each run wins below.
        self.spans.sort_by(|a, b| key(a).cmp(key(b)));
        let mut out = Fingerprints {
            keys: String::with_capacity(text.len()),
            entries: Vec::with_capacity(self.spans.len()),
        };
        for (n, s) in self.spans.iter().enumerate() {
            if self
                .spans
                .get(n + 1)
                .is_some_and(|next| key(next) == key(s))
            {
                continue;
            }
            out.keys.push_str(key(s));
            out.entries.push((offset(out.keys.len()), s.2));
        }
        out
    }
}

/// Where `probe` answers Equal among `0..len`, probed in order.
fn bisect(len: usize, probe: impl Fn(usize) -> std::cmp::Ordering) -> Option<usize> {
    let (mut lo, mut hi) = (0, len);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        match probe(mid) {
            std::cmp::Ordering::Less => lo = mid + 1,
            std::cmp::Ordering::Greater => hi = mid,
            std::cmp::Ordering::Equal => return Some(mid),
        }
    }
    None
}

/// Keys past 4 GiB of text cannot come from one device's desired state.
fn offset(n: usize) -> u32 {
    u32::try_from(n).expect("fingerprint keys under 4 GiB")
}

impl fmt::Debug for Fingerprints {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl Serialize for Fingerprints {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.len()))?;
        for (k, f) in self.iter() {
            map.serialize_entry(k, &f.to_string())?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Fingerprints {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(RecordVisitor)
    }
}

struct RecordVisitor;

impl<'de> Visitor<'de> for RecordVisitor {
    type Value = Fingerprints;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a map of resource to fingerprint")
    }

    /// A value that is not 32 hex digits is left out: it could never equal a fingerprint this
    /// agent computes, and a missing entry classifies the same way (intentional).
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fingerprints, A::Error> {
        let mut b = Builder::with_capacity(map.size_hint().unwrap_or(0));
        while let Some((k, v)) = map.next_entry::<String, String>()? {
            if let Some(f) = Fingerprint::parse(&v) {
                b.push(&k, f);
            }
        }
        Ok(b.finish())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// `last_applied.fingerprints` as the agent wrote it while it kept a map of hex strings.
    const WRITTEN_BEFORE: &str = r#"{
  "file /etc/b": "00112233445566778899aabbccddeeff",
  "file /etc/a": "0123456789abcdef0123456789abcdef",
  "package curl": "ffeeddccbbaa99887766554433221100"
}"#;

    #[test]
    fn a_record_written_as_a_map_of_hex_reads_and_writes_back_the_same_bytes() {
        let read: Fingerprints = serde_json::from_str(WRITTEN_BEFORE).unwrap();
        assert_eq!(read.len(), 3);
        let a = read.get("file /etc/a").unwrap();
        assert_eq!(a.to_string(), "0123456789abcdef0123456789abcdef");
        assert_eq!(read.get("file /etc/c"), None);
        let as_map: BTreeMap<String, String> = serde_json::from_str(WRITTEN_BEFORE).unwrap();
        assert_eq!(
            serde_json::to_string_pretty(&read).unwrap(),
            serde_json::to_string_pretty(&as_map).unwrap(),
            "key order and hex text as the map wrote them"
        );
    }

    #[test]
    fn a_value_that_is_not_a_fingerprint_is_left_out_and_the_rest_still_reads() {
        let json = r#"{"file /a": "not hex", "file /b": "00112233445566778899aabbccddeeff"}"#;
        let read: Fingerprints = serde_json::from_str(json).unwrap();
        assert_eq!(read.get("file /a"), None);
        assert!(read.get("file /b").is_some());
    }

    #[test]
    fn the_later_of_two_equal_keys_wins_and_lookups_find_every_key() {
        let f = |n: u8| Fingerprint([n; 16]);
        let keys: Vec<String> = (0..100).rev().map(|n| format!("file /f{n}")).collect();
        let mut pairs: Vec<(String, Fingerprint)> =
            keys.iter().map(|k| (k.clone(), f(1))).collect();
        pairs.push(("file /f7".into(), f(2)));
        let r = Fingerprints::collect(pairs);
        assert_eq!(r.len(), 100);
        assert!(keys.iter().all(|k| r.get(k).is_some()));
        assert_eq!(r.get("file /f7"), Some(f(2)));
        let listed: Vec<&str> = r.iter().map(|(k, _)| k).collect();
        assert!(listed.windows(2).all(|w| w[0] < w[1]), "sorted");
        assert_eq!(Fingerprint::parse(&f(0xab).to_string()), Some(f(0xab)));
        assert_eq!(Fingerprint::parse("AB".repeat(16).as_str()), Some(f(0xab)));
    }
}
