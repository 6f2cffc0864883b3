//! Secrets out of every text, in every form a reader would recognise: as
//! given and in any letter case (the client upper-cases methods, URLs
//! lower-case hosts), percent- and form-encoded (URLs, query strings), and
//! base64 at any alignment (HTTP Basic credentials carry
//! `base64(user:password)`, so the password's characters sit at any offset).

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};

/// Shorter base64 fragments than this are not searched for: they would
/// match by chance.
const MIN_BASE64: usize = 4;

/// The forms of a set of secrets, found once per run and applied to every
/// text of its record.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    /// Matched whatever their letter case (lower-cased here).
    any_case: Vec<Vec<u8>>,
    /// Matched exactly (base64 is case-sensitive).
    exact: Vec<String>,
}

impl Redactor {
    /// The forms of `secrets`; empty ones are ignored.
    pub fn new<S: AsRef<str>>(secrets: &[S]) -> Self {
        let mut r = Redactor::default();
        for s in secrets.iter().map(AsRef::as_ref).filter(|s| !s.is_empty()) {
            let mut forms = vec![
                s.to_string(),
                s.to_lowercase(),
                s.to_uppercase(),
                percent(s, false),
                percent(s, true),
            ];
            forms.sort();
            forms.dedup();
            for f in forms {
                let lower = f.to_ascii_lowercase().into_bytes();
                if !r.any_case.contains(&lower) {
                    r.any_case.push(lower);
                }
            }
            for f in base64_fragments(s.as_bytes()) {
                if f.len() >= MIN_BASE64 && !r.exact.contains(&f) {
                    r.exact.push(f);
                }
            }
        }
        // Longest first, so a form is not cut up by a shorter one inside it.
        r.any_case.sort_by_key(|f| std::cmp::Reverse(f.len()));
        r.exact.sort_by_key(|f| std::cmp::Reverse(f.len()));
        r
    }

    /// True when there is nothing to redact.
    pub fn is_empty(&self) -> bool {
        self.any_case.is_empty()
    }

    /// Replaces every form of every secret in `text` with `***`.
    pub fn redact(&self, text: &mut String) {
        for f in &self.any_case {
            // Searched from after each replacement: a secret such as `*`
            // must not find itself in the `***` put in its place.
            let mut from = 0;
            while let Some(at) = text
                .as_bytes()
                .get(from..)
                .and_then(|rest| find_any_case(rest, f))
            {
                let start = from + at;
                text.replace_range(start..start + f.len(), "***");
                from = start + 3;
            }
        }
        for f in &self.exact {
            if text.contains(f.as_str()) {
                *text = text.replace(f.as_str(), "***");
            }
        }
        self.redact_folded(text);
    }

    /// As [`Redactor::redact`] for bytes that need not be text (a binary
    /// body kept with a recorded run): each form, as bytes, becomes `***`.
    pub fn redact_bytes(&self, bytes: &mut Vec<u8>) {
        if let Ok(text) = std::str::from_utf8(bytes) {
            let mut text = text.to_string();
            self.redact(&mut text);
            *bytes = text.into_bytes();
            return;
        }
        let forms = self
            .any_case
            .iter()
            .map(|f| (f.as_slice(), true))
            .chain(self.exact.iter().map(|f| (f.as_bytes(), false)));
        for (form, any_case) in forms {
            let mut from = 0;
            while let Some(at) = bytes.get(from..).and_then(|rest| {
                rest.windows(form.len()).position(|w| {
                    if any_case {
                        w.eq_ignore_ascii_case(form)
                    } else {
                        w == form
                    }
                })
            }) {
                let start = from + at;
                bytes.splice(start..start + form.len(), *b"***");
                from = start + 3;
            }
        }
    }

    /// A secret that a header fold (a line break followed by a space or a
    /// tab, which HTTP/1.1 readers join) cuts in two: what the fold joins
    /// is replaced, fold included.
    fn redact_folded(&self, text: &mut String) {
        if !text.contains('\n') {
            return;
        }
        // Each pass removes one secret; a text holds at most as many as it
        // has folds.
        for _ in 0..=text.matches('\n').count() {
            let (joined, at) = unfold(text);
            if joined.len() == text.len() {
                return;
            }
            let hit = self
                .any_case
                .iter()
                .find_map(|f| find_any_case(joined.as_bytes(), f).map(|i| (i, f.len())))
                .or_else(|| {
                    self.exact
                        .iter()
                        .find_map(|f| joined.find(f.as_str()).map(|i| (i, f.len())))
                });
            let Some((start, len)) = hit else { return };
            let (from, to) = (at[start], at[start + len - 1] + 1);
            if !(text.is_char_boundary(from) && text.is_char_boundary(to)) {
                return;
            }
            text.replace_range(from..to, "***");
        }
    }

    /// Redacts a secret that `a`'s end and `b`'s start hold between them
    /// (a log line cut in two, say): what crosses the boundary is replaced,
    /// `***` at the end of `a`.
    pub fn redact_across(&self, a: &mut String, b: &mut String) {
        for f in &self.any_case {
            let tail_start = a.len().saturating_sub(f.len());
            let head_end = b.len().min(f.len());
            let (Some(tail), Some(head)) = (
                (tail_start..=a.len()).find(|&i| a.is_char_boundary(i)),
                (0..=head_end).rev().find(|&i| b.is_char_boundary(i)),
            ) else {
                continue;
            };
            let joined = format!("{}{}", &a[tail..], &b[..head]);
            let mut from = 0;
            while let Some(at) = find_any_case(&joined.as_bytes()[from..], f) {
                let start = tail + from + at;
                let end = start + f.len();
                if start < a.len() && end > a.len() {
                    let cut_b = end - a.len();
                    if a.is_char_boundary(start) && b.is_char_boundary(cut_b) {
                        a.truncate(start);
                        a.push_str("***");
                        b.replace_range(..cut_b, "");
                        break;
                    }
                }
                from += at + 1;
                if from >= joined.len() {
                    break;
                }
            }
        }
    }
}

/// `text` with its header folds (CR? LF, then spaces or tabs) taken out,
/// and for each byte left, where it was in `text`.
fn unfold(text: &str) -> (String, Vec<usize>) {
    let b = text.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut at = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let lf = match (b[i], b.get(i + 1)) {
            (b'\r', Some(b'\n')) => Some(i + 2),
            (b'\n', _) => Some(i + 1),
            _ => None,
        };
        if let Some(next) = lf
            && matches!(b.get(next), Some(b' ' | b'\t'))
        {
            i = next;
            while matches!(b.get(i), Some(b' ' | b'\t')) {
                i += 1;
            }
            continue;
        }
        out.push(b[i]);
        at.push(i);
        i += 1;
    }
    // Only ASCII bytes were taken out, so what is left is still UTF-8.
    (String::from_utf8(out).unwrap_or_default(), at)
}

/// Where `needle` (lower-case) first occurs in `hay`, ignoring ASCII case,
/// on a character boundary.
fn find_any_case(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || needle.len() > hay.len() {
        return None;
    }
    (0..=hay.len() - needle.len()).find(|&i| {
        // A UTF-8 continuation byte never starts a match.
        (hay[i] & 0xc0) != 0x80
            && hay[i..i + needle.len()]
                .iter()
                .zip(needle)
                .all(|(h, n)| h.to_ascii_lowercase() == *n)
    })
}

/// Every byte outside RFC 3986's unreserved set as `%XX`; `form` writes a
/// space as `+`, as `application/x-www-form-urlencoded` does.
fn percent(s: &str, form: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(b as char)
            }
            b' ' if form => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// The base64 characters that `secret`'s bytes alone determine, at each of
/// the three offsets it can have in a longer encoded value, in the standard
/// and the URL-safe alphabets.
fn base64_fragments(secret: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    for offset in 0..3usize {
        let mut input = vec![0u8; offset];
        input.extend_from_slice(secret);
        // Character i carries bits 6i..6i+6 of the input; the secret holds
        // bits 8·offset..8·(offset+len).
        let first = (8 * offset).div_ceil(6);
        let last = (8 * (offset + secret.len())) / 6;
        if last <= first {
            continue;
        }
        for encoded in [
            STANDARD_NO_PAD.encode(&input),
            URL_SAFE_NO_PAD.encode(&input),
        ] {
            if let Some(f) = encoded.get(first..last) {
                out.push(f.to_string());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_in_binary_bytes_are_redacted() {
        let r = Redactor::new(&["Tok3n"]);
        let mut b = vec![
            0xff, 0xfe, b't', b'o', b'k', b'3', b'n', 0x00, b'T', b'o', b'k', b'3', b'n',
        ];
        r.redact_bytes(&mut b);
        assert_eq!(b, [0xff, 0xfe, b'*', b'*', b'*', 0x00, b'*', b'*', b'*']);
        let mut text = b"x Tok3n y".to_vec();
        r.redact_bytes(&mut text);
        assert_eq!(text, b"x *** y");
    }

    #[test]
    fn every_form_of_a_secret_is_redacted() {
        let r = Redactor::new(&["s3cr et/+x", ""]);
        for (text, why) in [
            ("token s3cr et/+x here", "as given"),
            ("GET S3CR ET/+X", "upper-cased"),
            ("https://x/?t=s3cr%20et%2F%2Bx", "percent-encoded"),
            (
                "https://x/?t=s3cr%20et%2f%2bx",
                "percent-encoded, lower-case hex",
            ),
            ("t=s3cr+et%2F%2Bx&u=1", "form-encoded"),
        ] {
            let mut t = text.to_string();
            r.redact(&mut t);
            assert!(t.contains("***"), "{why}: {t}");
            assert!(!t.to_lowercase().contains("s3cr"), "{why}: {t}");
        }
        // Basic credentials: base64("user:password") at every offset.
        let r = Redactor::new(&["hunter2-correct-horse"]);
        for user in ["a", "ab", "abc", "alice"] {
            let header = format!(
                "authorization: Basic {}",
                base64::engine::general_purpose::STANDARD
                    .encode(format!("{user}:hunter2-correct-horse"))
            );
            let mut t = header.clone();
            r.redact(&mut t);
            assert!(t.contains("***"), "{user}: {t}");
            // What is left cannot be decoded back to the password.
            let left: String = t.rsplit(' ').next().unwrap_or("").replace("***", "");
            assert!(left.len() < header.len() / 2, "{t}");
        }
        // A secret that `***` itself contains.
        let mut t = "a*b".to_string();
        Redactor::new(&["*"]).redact(&mut t);
        assert_eq!(t, "a***b");
        // Nothing else is touched.
        let mut t = "nothing to see".to_string();
        Redactor::new(&["s3cret"]).redact(&mut t);
        assert_eq!(t, "nothing to see");
        assert!(Redactor::new(&[""]).is_empty());
    }

    #[test]
    fn a_secret_split_by_a_header_fold_is_redacted() {
        let r = Redactor::new(&["s3cret"]);
        let mut t = "authorization: Bearer s3c\r\n ret\r\nx-other: s3\n\tcret".to_string();
        r.redact(&mut t);
        assert_eq!(t, "authorization: Bearer ***\r\nx-other: ***");
        // A line break that is not a fold joins nothing.
        let mut t = "s3c\r\nret".to_string();
        r.redact(&mut t);
        assert_eq!(t, "s3c\r\nret");
        // base64 of the secret split by a fold.
        let r = Redactor::new(&["hunter2hunter2"]);
        let mut t = "basic aHVudGVy\r\n Mmh1bnRlcjI=".to_string();
        r.redact(&mut t);
        assert!(!t.contains("aHVudGVy"), "{t}");
    }

    #[test]
    fn a_secret_split_across_two_lines_is_redacted() {
        let r = Redactor::new(&["s3cret"]);
        let (mut a, mut b) = ("token is s3c".to_string(), "ret, said the log".to_string());
        r.redact_across(&mut a, &mut b);
        assert_eq!(a, "token is ***");
        assert_eq!(b, ", said the log");
        let (mut a, mut b) = ("plain".to_string(), "text é".to_string());
        r.redact_across(&mut a, &mut b);
        assert_eq!((a.as_str(), b.as_str()), ("plain", "text é"));
    }
}
