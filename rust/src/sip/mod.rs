//! SIP (RFC 3261) message parser and serializer, plus the structured header
//! values used by a UA: URIs, name-addrs and Via.

mod headers;
pub(crate) mod message;
mod uri;

#[cfg(test)]
pub(crate) mod message_tests;

pub use headers::{canonical_header_name, Headers};
pub use message::{parse_cseq, serialize, SipMessage, StartLine, MAX_HEADERS, MAX_MESSAGE_SIZE};

pub use uri::{NameAddr, SipUri, Via};

use std::ops::Range;

/// Parameters as written, in order: `;name=value` or `;name`.
pub type Params = Vec<(String, Option<String>)>;

/// Byte ranges of `s` split on the ASCII `sep` outside double-quoted
/// strings (with `\` escapes) and outside `<...>`.
pub(crate) struct SplitOutsideQuotes<'a> {
    s: &'a str,
    sep: u8,
    pos: usize,
    done: bool,
}

impl<'a> SplitOutsideQuotes<'a> {
    pub(crate) fn new(s: &'a str, sep: char) -> Self {
        debug_assert!(sep.is_ascii() && !OUTSIDE_SPECIAL[sep as usize] && sep != '\\');
        SplitOutsideQuotes {
            s,
            sep: sep as u8,
            pos: 0,
            done: false,
        }
    }
}

/// Whether a byte can change the state of [`SplitOutsideQuotes`] outside
/// quotes (besides its separator), so that runs of other bytes are skipped
/// with one table lookup each.
static OUTSIDE_SPECIAL: [bool; 256] = {
    let mut t = [false; 256];
    t[b'"' as usize] = true;
    t[b'<' as usize] = true;
    t[b'>' as usize] = true;
    t
};

impl Iterator for SplitOutsideQuotes<'_> {
    type Item = Range<usize>;

    fn next(&mut self) -> Option<Range<usize>> {
        if self.done {
            return None;
        }
        let start = self.pos;
        let mut in_angle = false;
        // Bytes, not chars: every byte we look at is ASCII, and ASCII bytes
        // never occur inside a multi-byte UTF-8 sequence, so the ranges are
        // on char boundaries.
        let bytes = self.s.as_bytes();
        let mut i = start;
        while let Some(&c) = bytes.get(i) {
            if c == self.sep && !in_angle {
                self.pos = i + 1;
                return Some(start..i);
            }
            if OUTSIDE_SPECIAL[usize::from(c)] {
                match c {
                    b'"' => {
                        // to the closing quote; `\` escapes the next byte
                        i += 1;
                        while let Some(&q) = bytes.get(i) {
                            match q {
                                b'\\' => i += 2,
                                b'"' => break,
                                _ => i += 1,
                            }
                        }
                    }
                    b'<' => in_angle = true,
                    _ => in_angle = false,
                }
            }
            i += 1;
        }
        self.done = true;
        Some(start..self.s.len())
    }
}

/// Split `s` on `sep` outside double-quoted strings (with `\` escapes) and
/// outside `<...>`.
pub(crate) fn split_outside_quotes(s: &str, sep: char) -> Vec<&str> {
    SplitOutsideQuotes::new(s, sep)
        .map(|r| s.get(r).unwrap_or(""))
        .collect()
}

/// Parse `;a=b;c;d="x;y"` (the leading `;` optional) into params.
pub(crate) fn parse_params(s: &str) -> Params {
    split_outside_quotes(s, ';')
        .into_iter()
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (k.trim().to_string(), Some(v.trim().to_string())),
            None => (p.to_string(), None),
        })
        .collect()
}

/// [`find_param`] on `parse_params(s)`, without building the list.
pub(crate) fn find_param_in<'a>(s: &'a str, name: &str) -> Option<Option<&'a str>> {
    for r in SplitOutsideQuotes::new(s, ';') {
        let p = s.get(r).unwrap_or("").trim();
        if p.is_empty() {
            continue;
        }
        // (a byte search: `split_once('=')` calls out to memchr, slower on
        // these few bytes)
        let (k, v) = match p.as_bytes().iter().position(|&b| b == b'=') {
            Some(i) => (
                p.get(..i).unwrap_or("").trim(),
                Some(p.get(i + 1..).unwrap_or("").trim()),
            ),
            None => (p, None),
        };
        if k.eq_ignore_ascii_case(name) {
            return Some(v);
        }
    }
    None
}

/// Write params as `;a=b;c`.
pub(crate) fn write_params(out: &mut String, params: &Params) {
    for (k, v) in params {
        out.push(';');
        out.push_str(k);
        if let Some(v) = v {
            out.push('=');
            out.push_str(v);
        }
    }
}

/// Case-insensitive parameter lookup; `Some(None)` for a flag parameter.
pub(crate) fn find_param<'a>(params: &'a Params, name: &str) -> Option<Option<&'a str>> {
    params
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_deref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_respects_quotes_and_angle_brackets() {
        let parts = split_outside_quotes(r#""a, \"b" <sip:x;a=1,2>, <sip:y>"#, ',');
        assert_eq!(parts, vec![r#""a, \"b" <sip:x;a=1,2>"#, " <sip:y>"]);
    }

    /// The splitter as a plain per-byte state machine, to check the one
    /// that skips ahead.
    fn split_reference(s: &str, sep: u8) -> Vec<Range<usize>> {
        let (mut out, mut start) = (Vec::new(), 0);
        let (mut in_quotes, mut escaped, mut in_angle) = (false, false, false);
        for (i, &c) in s.as_bytes().iter().enumerate() {
            if in_quotes {
                if escaped {
                    escaped = false;
                } else if c == b'\\' {
                    escaped = true;
                } else if c == b'"' {
                    in_quotes = false;
                }
                continue;
            }
            match c {
                b'"' => in_quotes = true,
                b'<' => in_angle = true,
                b'>' => in_angle = false,
                _ if c == sep && !in_angle => {
                    out.push(start..i);
                    start = i + 1;
                }
                _ => {}
            }
        }
        out.push(start..s.len());
        out
    }

    #[test]
    fn split_agrees_with_a_per_byte_state_machine() {
        let mut rng = crate::sip::message_tests::XorShift(0xA076_1D64_78BD_642F);
        let alphabet = ['"', '\\', '<', '>', ',', ';', 'a', ' ', 'é'];
        for _ in 0..50_000 {
            let len = (rng.next() % 24) as usize;
            let s: String = (0..len)
                .map(|_| alphabet[(rng.next() % alphabet.len() as u64) as usize])
                .collect();
            for sep in [',', ';'] {
                let fast: Vec<_> = SplitOutsideQuotes::new(&s, sep).collect();
                assert_eq!(fast, split_reference(&s, sep as u8), "{s:?} on {sep:?}");
            }
        }
    }

    #[test]
    fn params_keep_order_and_flags() {
        let p = parse_params(";transport=tcp;lr;x=\"a;b\"");
        assert_eq!(
            p,
            vec![
                ("transport".into(), Some("tcp".into())),
                ("lr".into(), None),
                ("x".into(), Some("\"a;b\"".into())),
            ]
        );
    }
}
