//! Debian version strings: dpkg's ordering (Debian policy §5.6.12) and the check of a version a
//! user pins. Pure string code, apart from the status database, so the fuzz target and the
//! package type use it without a root.

use std::cmp::Ordering;

/// Orders two Debian versions as dpkg does (Debian policy §5.6.12): epoch numerically, then the
/// upstream version, then the revision, each compared with [`compare_part`].
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    let (ea, ua, ra) = split_version(a.trim());
    let (eb, ub, rb) = split_version(b.trim());
    compare_digits(ea.as_bytes(), eb.as_bytes())
        .then_with(|| compare_part(ua, ub))
        .then_with(|| compare_part(ra, rb))
}

/// Splits "epoch:upstream-revision"; a missing epoch is 0 and a missing revision is empty (which
/// orders like "0").
fn split_version(v: &str) -> (&str, &str, &str) {
    let (epoch, rest) = match v.split_once(':') {
        Some((e, r)) if !e.is_empty() && e.bytes().all(|b| b.is_ascii_digit()) => (e, r),
        _ => ("0", v),
    };
    match rest.rsplit_once('-') {
        Some((u, r)) => (epoch, u, r),
        None => (epoch, rest, ""),
    }
}

/// Compares two runs of decimal digits as numbers of any size.
fn compare_digits(a: &[u8], b: &[u8]) -> Ordering {
    let strip = |s: &[u8]| -> usize { s.iter().take_while(|&&c| c == b'0').count() };
    let (a, b) = (&a[strip(a)..], &b[strip(b)..]);
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

/// The weight of a character in the non-digit parts: `~` before the end of the string, the end
/// before letters, letters before everything else.
fn weight(c: Option<u8>) -> i32 {
    match c {
        None => 0,
        Some(b'~') => -1,
        Some(c) if c.is_ascii_digit() => 0,
        Some(c) if c.is_ascii_alphabetic() => i32::from(c),
        Some(c) => i32::from(c) + 256,
    }
}

/// Compares an upstream version or a revision: alternately a non-digit part (by [`weight`]) and a
/// digit part (numerically), from the left.
pub fn compare_part(a: &str, b: &str) -> Ordering {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        while a.get(i).is_some_and(|c| !c.is_ascii_digit())
            || b.get(j).is_some_and(|c| !c.is_ascii_digit())
        {
            let (wa, wb) = (weight(a.get(i).copied()), weight(b.get(j).copied()));
            if wa != wb {
                return wa.cmp(&wb);
            }
            i += 1;
            j += 1;
        }
        // Equal weights mean the same non-digit on both sides, so i and j stay in bounds.
        let (si, sj) = (i, j);
        while a.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        while b.get(j).is_some_and(u8::is_ascii_digit) {
            j += 1;
        }
        match compare_digits(&a[si..i], &b[sj..j]) {
            Ordering::Equal => {}
            other => return other,
        }
    }
    Ordering::Equal
}

/// Checks a version a user typed (a pin), so that a typo fails at validation with a fix rather
/// than at apt-get on every device.
pub fn validate_version(v: &str) -> Result<(), String> {
    if v.is_empty() {
        return Err("the version is empty".into());
    }
    if let Some(c) = v
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || ".+~-:".contains(*c)))
    {
        return Err(format!(
            "'{v}' contains '{c}'; a Debian version has only letters, digits and . + ~ - :"
        ));
    }
    let (epoch, upstream) = match v.split_once(':') {
        Some((e, u)) => (Some(e), u),
        None => (None, v),
    };
    if let Some(e) = epoch {
        if e.is_empty() || !e.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!(
                "'{v}': the epoch before ':' must be a number, e.g. 1:2.0-1"
            ));
        }
    }
    if upstream.contains(':') {
        return Err(format!("'{v}' has more than one ':'"));
    }
    if !upstream.starts_with(|c: char| c.is_ascii_digit()) {
        return Err(format!(
            "'{v}': the upstream version must start with a digit"
        ));
    }
    if upstream.ends_with('-') {
        return Err(format!("'{v}': the revision after the last '-' is empty"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use Ordering::{Equal, Greater, Less};

    fn cmp(a: &str, b: &str) -> Ordering {
        compare_versions(a, b)
    }

    #[test]
    fn policy_examples_order_as_dpkg_does() {
        let cases = [
            ("1.0~rc1", "1.0", Less),
            ("1:0.9", "2.0", Greater),
            ("1.0-1", "1.0-1+b1", Less),
            ("1.0a", "1.0+", Less),
            ("1.0", "1.0-0", Equal),
            ("0:1.0", "1.0", Equal),
            ("1.0", "1.00", Equal),
            ("1.2.3", "1.2", Greater),
            ("2.0", "1.99", Greater),
            ("1.10", "1.9", Greater),
            ("1.0+dfsg-1", "1.0-1", Greater),
            ("7.88.1-10+deb12u5", "7.88.1-10", Greater),
            ("1.0-1~bpo12+1", "1.0-1", Less),
            ("1.0-rc1-2", "1.0-rc1-10", Less),
            ("2:1", "10:0", Less),
            ("1.0~~", "1.0~~a", Less),
            ("1.0~~a", "1.0~", Less),
            ("1.0~", "1.0", Less),
            ("1.0", "1.0a", Less),
            ("1.0.", "1.0a", Greater),
            (
                "99999999999999999999999",
                "99999999999999999999998",
                Greater,
            ),
        ];
        for (a, b, want) in cases {
            assert_eq!(cmp(a, b), want, "{a} vs {b}");
            assert_eq!(cmp(b, a), want.reverse(), "{b} vs {a}");
        }
    }

    #[test]
    fn sorts_the_policy_tilde_chain() {
        let mut v = vec!["a", "", "~", "~~a", "~~"];
        v.sort_by(|a, b| compare_part(a, b));
        assert_eq!(v, vec!["~~", "~~a", "~", "", "a"]);
    }

    #[test]
    fn validates_pins() {
        for ok in ["1.0-1", "1:2.3~rc1-0+deb12u1", "7.88.1-10+deb12u5", "2.0"] {
            assert!(validate_version(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "v1.0",
            "1.0 beta",
            "a:1.0",
            "1:2:3",
            "1.0-",
            "1.0/stable",
            "1.0*",
        ] {
            assert!(validate_version(bad).is_err(), "{bad}");
        }
    }
}
