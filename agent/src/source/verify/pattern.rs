//! OpenSSH pattern lists (ssh_config(5) PATTERNS), as used by allowed_signers' `namespaces=`:
//! comma-separated glob patterns with `*` and `?`; a pattern prefixed with `!` denies whatever it
//! matches, whatever else in the list matches too.

/// Glob match of `text` against one pattern (`*` any run, `?` any one character).
pub(crate) fn glob(text: &str, pattern: &str) -> bool {
    let t: Vec<char> = text.chars().collect();
    let p: Vec<char> = pattern.chars().collect();
    // Iterative wildcard match with backtracking to the last `*`: linear in practice, no recursion.
    let (mut ti, mut pi) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            ti += 1;
            pi += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// True when `text` matches the list and no negated entry matches it (match_pattern_list == 1).
pub(crate) fn list_allows(text: &str, list: &str) -> bool {
    let mut positive = false;
    for entry in list.split(',') {
        match entry.strip_prefix('!') {
            Some(neg) if glob(text, neg) => return false,
            Some(_) => {}
            None if glob(text, entry) => positive = true,
            None => {}
        }
    }
    positive
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob("git", "git"));
        assert!(glob("git", "g*"));
        assert!(glob("git", "*"));
        assert!(glob("git", "g?t"));
        assert!(glob("", "*"));
        assert!(!glob("git", "gi"));
        assert!(!glob("git", "file"));
        assert!(!glob("git", "g?"));
        assert!(glob("aaab", "*a*b"));
        assert!(!glob("aaac", "*a*b"));
        assert!(!glob("Git", "git"), "namespaces are case-sensitive");
    }

    #[test]
    fn lists_and_negation() {
        assert!(list_allows("git", "file,git"));
        assert!(list_allows("git", "*"));
        assert!(!list_allows("git", "file"));
        assert!(!list_allows("git", "*,!git"));
        assert!(!list_allows("git", "!git,git"));
        assert!(
            !list_allows("git", "!file"),
            "a negation alone allows nothing"
        );
        assert!(list_allows("git", "!file,*"));
    }
}
