//! The header list of a SIP message and header-name canonicalization.
//!
//! `Headers` keeps every name and value in one `String` and records spans
//! into it, so parsing a message costs one allocation for all its headers
//! instead of two per header. Known names are `&'static str` and take no
//! space in the buffer.

use std::fmt;
use std::ops::Range;

/// Compact form (RFC 3261 §7.3.3 and extensions) → canonical long name.
fn compact_form(c: u8) -> Option<&'static str> {
    Some(match c.to_ascii_lowercase() {
        b'v' => "Via",
        b'f' => "From",
        b't' => "To",
        b'i' => "Call-ID",
        b'm' => "Contact",
        b'c' => "Content-Type",
        b'l' => "Content-Length",
        b's' => "Subject",
        b'k' => "Supported",
        b'o' => "Event",
        b'x' => "Session-Expires",
        b'e' => "Content-Encoding",
        b'r' => "Refer-To",
        b'b' => "Referred-By",
        b'u' => "Allow-Events",
        _ => return None,
    })
}

/// Known header names in canonical capitalization, grouped by lower-cased
/// first letter so that a lookup compares against a handful of names.
fn known_by_first_letter(c: u8) -> &'static [&'static str] {
    match c.to_ascii_lowercase() {
        b'a' => &[
            "Allow",
            "Accept",
            "Authorization",
            "Allow-Events",
            "Accept-Contact",
            "Accept-Encoding",
            "Accept-Language",
            "Alert-Info",
            "Authentication-Info",
        ],
        b'c' => &[
            "Call-ID",
            "CSeq",
            "Contact",
            "Content-Length",
            "Content-Type",
            "Call-Info",
            "Content-Disposition",
            "Content-Encoding",
            "Content-Language",
        ],
        b'd' => &["Date"],
        b'e' => &["Expires", "Event", "Error-Info"],
        b'f' => &["From"],
        b'h' => &["History-Info"],
        b'i' => &["Identity", "In-Reply-To"],
        b'm' => &["Max-Forwards", "MIME-Version", "Min-Expires", "Min-SE"],
        b'o' => &["Organization"],
        b'p' => &[
            "Proxy-Authenticate",
            "Proxy-Authorization",
            "P-Asserted-Identity",
            "P-Preferred-Identity",
            "Path",
            "Priority",
            "Privacy",
            "Proxy-Require",
        ],
        b'r' => &[
            "Record-Route",
            "Route",
            "Require",
            "Reason",
            "RAck",
            "RSeq",
            "Refer-To",
            "Referred-By",
            "Remote-Party-ID",
            "Replaces",
            "Reply-To",
            "Retry-After",
        ],
        b's' => &[
            "Supported",
            "Server",
            "Session-Expires",
            "Subject",
            "Subscription-State",
            "Service-Route",
            "SIP-ETag",
            "SIP-If-Match",
        ],
        b't' => &["To", "Timestamp"],
        b'u' => &["User-Agent", "Unsupported"],
        b'v' => &["Via"],
        b'w' => &["WWW-Authenticate", "Warning"],
        _ => &[],
    }
}

/// The canonical name for a header name (compact form or any case), if it
/// is one we know.
pub(crate) fn known_name(name: &[u8]) -> Option<&'static str> {
    match name {
        [] => None,
        [c] => compact_form(*c),
        [c, ..] => known_by_first_letter(*c)
            .iter()
            .find(|k| k.as_bytes().eq_ignore_ascii_case(name))
            .copied(),
    }
}

/// Canonical form of a header name, without allocating: compact forms
/// expanded, known headers in RFC capitalization, unknown names trimmed.
pub(crate) fn canonical_name(name: &str) -> &str {
    let name = name.trim();
    known_name(name.as_bytes()).unwrap_or(name)
}

/// Canonical form of a header name: compact forms expanded, known headers
/// in RFC capitalization (`call-id` → `Call-ID`), unknown names unchanged.
pub fn canonical_header_name(name: &str) -> String {
    canonical_name(name).to_string()
}

/// Headers whose comma-joined values are split into separate entries.
pub(crate) fn is_list_header(canonical: &str) -> bool {
    matches!(
        canonical,
        "Via" | "Route" | "Record-Route" | "Contact" | "Allow" | "Supported" | "Require" | "Accept"
    )
}

#[derive(Debug, Clone, Copy)]
enum Name {
    /// A canonical known name.
    Known(&'static str),
    /// Bytes `start..end` of the buffer.
    Other(usize, usize),
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    name: Name,
    /// Value bytes `start..end` of the buffer.
    start: usize,
    end: usize,
}

/// The ordered `(name, value)` header entries of a message.
#[derive(Clone, Default)]
pub struct Headers {
    buf: String,
    entries: Vec<Entry>,
}

impl Headers {
    pub fn new() -> Self {
        Self::default()
    }

    /// Room for `bytes` of names and values in `entries` entries.
    pub fn with_capacity(bytes: usize, entries: usize) -> Self {
        Headers {
            buf: String::with_capacity(bytes),
            entries: Vec::with_capacity(entries),
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Append an entry with `name` exactly as given (see
    /// [`SipMessage::request`](super::SipMessage::request) for canonical names).
    pub fn push(&mut self, name: &str, value: &str) {
        match known_name(name.as_bytes()).filter(|k| *k == name) {
            Some(known) => self.push_known(known, value),
            None => {
                let start = self.buf.len();
                self.buf.push_str(name);
                let name = Name::Other(start, self.buf.len());
                self.push_value(name, value);
            }
        }
    }

    pub(crate) fn push_known(&mut self, name: &'static str, value: &str) {
        self.push_value(Name::Known(name), value);
    }

    fn push_value(&mut self, name: Name, value: &str) {
        let start = self.buf.len();
        self.buf.push_str(value);
        self.entries.push(Entry {
            name,
            start,
            end: self.buf.len(),
        });
    }

    /// Append `more` to the value of the last entry, space-separated (header
    /// folding). The last entry's value is always at the end of the buffer.
    pub(crate) fn extend_last(&mut self, more: &str) {
        let Some(last) = self.entries.last_mut() else {
            return;
        };
        if more.is_empty() {
            return;
        }
        if last.end > last.start {
            self.buf.push(' ');
        }
        self.buf.push_str(more);
        last.end = self.buf.len();
    }

    /// Replace the last entry by one entry per non-empty, trimmed part of its
    /// value split on commas outside quotes and `<...>`. The parts stay
    /// where they are in the buffer.
    pub(crate) fn split_last(&mut self) {
        let Some(last) = self.entries.pop() else {
            return;
        };
        let value = self.buf.get(last.start..last.end).unwrap_or("");
        for Range { start, end } in super::SplitOutsideQuotes::new(value, ',') {
            let part = value.get(start..end).unwrap_or("");
            let trimmed = part.trim_start();
            let start = start + (part.len() - trimmed.len());
            let end = start + trimmed.trim_end().len();
            if end > start {
                self.entries.push(Entry {
                    name: last.name,
                    start: last.start + start,
                    end: last.start + end,
                });
            }
        }
    }

    fn name_of(&self, e: &Entry) -> &str {
        match e.name {
            Name::Known(k) => k,
            Name::Other(s, t) => self.buf.get(s..t).unwrap_or(""),
        }
    }

    fn value_of(&self, e: &Entry) -> &str {
        self.buf.get(e.start..e.end).unwrap_or("")
    }

    /// Entry `i` as `(name, value)`.
    pub fn get_index(&self, i: usize) -> Option<(&str, &str)> {
        self.entries
            .get(i)
            .map(|e| (self.name_of(e), self.value_of(e)))
    }

    /// Last entry as `(name, value)`.
    pub(crate) fn last(&self) -> Option<(&str, &str)> {
        self.entries
            .last()
            .map(|e| (self.name_of(e), self.value_of(e)))
    }

    /// Entries in order as `(name, value)`.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (&str, &str)> + ExactSizeIterator {
        self.entries
            .iter()
            .map(|e| (self.name_of(e), self.value_of(e)))
    }

    /// First value of `name` (case-insensitive, compact form accepted).
    pub fn get(&self, name: &str) -> Option<&str> {
        let canon = canonical_name(name);
        self.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(canon))
            .map(|(_, v)| v)
    }

    /// Every value of `name`, in order.
    pub fn get_all(&self, name: &str) -> Vec<&str> {
        let canon = canonical_name(name);
        self.iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(canon))
            .map(|(_, v)| v)
            .collect()
    }

    /// Owned copy of the entries.
    pub fn to_vec(&self) -> Vec<(String, String)> {
        self.iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }
}

impl PartialEq for Headers {
    fn eq(&self, other: &Self) -> bool {
        self.iter().eq(other.iter())
    }
}

impl Eq for Headers {}

impl fmt::Debug for Headers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<N: AsRef<str>, V: AsRef<str>> FromIterator<(N, V)> for Headers {
    /// Entries with names exactly as given.
    fn from_iter<I: IntoIterator<Item = (N, V)>>(iter: I) -> Self {
        let mut h = Headers::new();
        for (n, v) in iter {
            h.push(n.as_ref(), v.as_ref());
        }
        h
    }
}

impl From<Vec<(String, String)>> for Headers {
    fn from(v: Vec<(String, String)>) -> Self {
        v.into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_compact_and_known_name_canonicalizes_case_insensitively() {
        assert_eq!(canonical_name("l"), "Content-Length");
        assert_eq!(canonical_name(" V "), "Via");
        assert_eq!(canonical_name("call-id"), "Call-ID");
        assert_eq!(canonical_name("www-AUTHENTICATE"), "WWW-Authenticate");
        assert_eq!(canonical_name("X-Custom"), "X-Custom");
        assert_eq!(canonical_name("q"), "q");
        for c in b'a'..=b'z' {
            for k in known_by_first_letter(c) {
                assert_eq!(
                    k.as_bytes()[0].to_ascii_lowercase(),
                    c,
                    "{k} grouped under {c}"
                );
                assert_eq!(canonical_name(&k.to_ascii_uppercase()), *k);
            }
        }
    }

    #[test]
    fn pushed_names_are_kept_as_written_and_looked_up_canonically() {
        let h: Headers = [("via", "a"), ("Via", "b"), ("X-y", "c"), ("v", "d")]
            .into_iter()
            .collect();
        assert_eq!(
            h.iter().collect::<Vec<_>>(),
            vec![("via", "a"), ("Via", "b"), ("X-y", "c"), ("v", "d")]
        );
        // "v" as written is not "Via": lookups compare canonical names.
        assert_eq!(h.get_all("V"), vec!["a", "b"]);
        assert_eq!(h.get("x-Y"), Some("c"));
        assert_eq!(h.get_index(3), Some(("v", "d")));
    }

    #[test]
    fn folding_and_splitting_edit_the_last_entry_in_place() {
        let mut h = Headers::new();
        h.push_known("Allow", "INVITE,");
        h.extend_last("ACK , \"a,b\"");
        h.extend_last("");
        h.split_last();
        assert_eq!(h.get_all("Allow"), vec!["INVITE", "ACK", "\"a,b\""]);
        h.push("Subject", "");
        h.extend_last("x");
        assert_eq!(h.last(), Some(("Subject", "x")));
    }
}
