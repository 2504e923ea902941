//! Redis's glob patterns, as `CONFIG GET` reads them (and `KEYS` and
//! `SCAN MATCH` will): `*` any run, `?` any byte, `[abc]`, `[a-z]`,
//! `[^...]` a byte of (or not of) a class, `\x` the byte `x` itself.
//!
//! **Why not recursion.** The obvious matcher recurses at every `*` and
//! tries every split: a pattern of 20,000 `*` overflowed the stack and
//! aborted the node, and 60 `*` before a letter that never comes kept a
//! worker busy for hours. This one remembers only the last `*` seen and
//! backtracks to it (a later `*` can absorb whatever an earlier one would
//! have), so it runs in O(pattern × subject) time and constant space.

/// Whether `subject` matches `pattern` (bytes compared exactly, or ASCII
/// case-insensitively with `nocase`).
pub fn matches(pattern: &[u8], subject: &[u8], nocase: bool) -> bool {
    let (mut p, mut s) = (0, 0);
    // Where to resume after the last `*`: the pattern after it, and the
    // first subject byte it has not absorbed yet.
    let mut star: Option<(usize, usize)> = None;
    while s < subject.len() {
        if p < pattern.len() {
            if pattern[p] == b'*' {
                star = Some((p + 1, s));
                p += 1;
                continue;
            }
            if let Some(next) = one(pattern, p, subject[s], nocase) {
                p = next;
                s += 1;
                continue;
            }
        }
        match star {
            // The last `*` absorbs one more byte; retry what follows it.
            Some((after, absorbed)) => {
                star = Some((after, absorbed + 1));
                p = after;
                s = absorbed + 1;
            }
            None => return false,
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// If the pattern element at `p` (not `*`) matches byte `c`: the index of
/// the next element.
fn one(pattern: &[u8], p: usize, c: u8, nocase: bool) -> Option<usize> {
    match pattern[p] {
        b'?' => Some(p + 1),
        b'\\' if p + 1 < pattern.len() => same(pattern[p + 1], c, nocase).then_some(p + 2),
        b'[' => class(pattern, p + 1, c, nocase),
        x => same(x, c, nocase).then_some(p + 1),
    }
}

/// A class starting at `p` (after `[`), as Redis reads it: `^` negates,
/// `\` escapes, `a-z` is a range (either way round); an unterminated class
/// ends with the pattern. Returns the index after the class if `c` is in
/// it (or, negated, not in it).
fn class(pattern: &[u8], mut p: usize, c: u8, nocase: bool) -> Option<usize> {
    let negated = pattern.get(p) == Some(&b'^');
    if negated {
        p += 1;
    }
    let mut hit = false;
    loop {
        match pattern.get(p) {
            None => break,
            Some(b']') => {
                p += 1;
                break;
            }
            Some(b'\\') if p + 1 < pattern.len() => {
                hit |= same(pattern[p + 1], c, nocase);
                p += 2;
            }
            Some(&from) if p + 2 < pattern.len() && pattern[p + 1] == b'-' => {
                let fold = |b: u8| if nocase { b.to_ascii_lowercase() } else { b };
                let (a, b) = (fold(from), fold(pattern[p + 2]));
                hit |= (a.min(b)..=a.max(b)).contains(&fold(c));
                p += 3;
            }
            Some(&x) => {
                hit |= same(x, c, nocase);
                p += 1;
            }
        }
    }
    (hit != negated).then_some(p)
}

fn same(a: u8, b: u8, nocase: bool) -> bool {
    a == b || (nocase && a.eq_ignore_ascii_case(&b))
}

#[cfg(test)]
mod tests {
    use super::matches;

    fn m(p: &str, s: &str) -> bool {
        matches(p.as_bytes(), s.as_bytes(), false)
    }

    #[test]
    fn patterns_match_as_redis_reads_them() {
        assert!(m("*", "") && m("*", "save"));
        assert!(m("max*", "maxmemory") && !m("max*", "save"));
        assert!(m("*memory", "maxmemory") && m("m*m*y", "maxmemory"));
        assert!(!m("save", "saves") && !m("saves", "save"));
        assert!(m("h?llo", "hello") && !m("h?llo", "hllo"));
        assert!(m("h[ae]llo", "hallo") && !m("h[ae]llo", "hillo"));
        assert!(m("h[^e]llo", "hallo") && !m("h[^e]llo", "hello"));
        assert!(m("h[a-b]llo", "hbllo") && m("h[b-a]llo", "hallo"));
        assert!(!m("h[a-b]llo", "hcllo"));
        assert!(m("h\\*llo", "h*llo") && !m("h\\*llo", "hello"));
        assert!(m("a[\\]]b", "a]b"));
        // An unterminated class ends with the pattern.
        assert!(m("a[bc", "ab") && !m("a[bc", "ad"));
        assert!(m("*a*b*c*", "xxaxxbxxcxx") && !m("*a*b*c*", "xxcxxbxxaxx"));
        assert!(matches(b"MAX*", b"maxmemory", true));
        assert!(matches(b"[A-C]x", b"bx", true));
        assert!(!matches(b"MAX*", b"maxmemory", false));
    }

    #[test]
    fn hostile_patterns_take_linear_space_and_bounded_time() {
        let stars = "*".repeat(20_000);
        assert!(m(&stars, "maxmemory"));
        let slow = format!("{}x", "*".repeat(60));
        assert!(!m(&slow, &"a".repeat(10_000)));
        // 5,000 `*a` against 4,999 `a`: exponential for the recursive
        // matcher, 10⁴ × 5·10³ steps here.
        let many = "*a".repeat(5_000);
        assert!(!m(&many, &"a".repeat(4_999)));
    }
}
