//! The header list of a SIP message and header-name canonicalization.
//!
//! `Headers` keeps every name and value in one `String` and records spans
//! into it, so parsing a message costs one allocation for all its headers
//! instead of two per header. Known names are `&'static str` and take no
//! space in the buffer.

use crate::error::SipError;
use std::fmt;
use std::ops::Range;

/// Known header names in canonical capitalization; a name's index is its
/// [`KnownId`]. No two differ only in case.
const KNOWN: [&str; 66] = [
    "Allow",
    "Accept",
    "Authorization",
    "Allow-Events",
    "Accept-Contact",
    "Accept-Encoding",
    "Accept-Language",
    "Alert-Info",
    "Authentication-Info",
    "Call-ID",
    "CSeq",
    "Contact",
    "Content-Length",
    "Content-Type",
    "Call-Info",
    "Content-Disposition",
    "Content-Encoding",
    "Content-Language",
    "Date",
    "Expires",
    "Event",
    "Error-Info",
    "From",
    "History-Info",
    "Identity",
    "In-Reply-To",
    "Max-Forwards",
    "MIME-Version",
    "Min-Expires",
    "Min-SE",
    "Organization",
    "Proxy-Authenticate",
    "Proxy-Authorization",
    "P-Asserted-Identity",
    "P-Preferred-Identity",
    "Path",
    "Priority",
    "Privacy",
    "Proxy-Require",
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
    "Supported",
    "Server",
    "Session-Expires",
    "Subject",
    "Subscription-State",
    "Service-Route",
    "SIP-ETag",
    "SIP-If-Match",
    "To",
    "Timestamp",
    "User-Agent",
    "Unsupported",
    "Via",
    "WWW-Authenticate",
    "Warning",
];

/// Headers whose comma-joined values are split into separate entries.
const LIST_HEADERS: [&str; 8] = [
    "Via",
    "Route",
    "Record-Route",
    "Contact",
    "Allow",
    "Supported",
    "Require",
    "Accept",
];

/// A header name we know, as a small index into [`KNOWN`]: comparing ids is
/// what makes lookups and the parser's per-header checks cheap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct KnownId(u8);

impl KnownId {
    pub(crate) const FROM: KnownId = KnownId::of("From");
    pub(crate) const TO: KnownId = KnownId::of("To");
    pub(crate) const CALL_ID: KnownId = KnownId::of("Call-ID");
    pub(crate) const CSEQ: KnownId = KnownId::of("CSeq");
    pub(crate) const CONTENT_LENGTH: KnownId = KnownId::of("Content-Length");

    /// The id of a canonical name; a compile error when used in a const
    /// with a name that is not in [`KNOWN`].
    const fn of(name: &str) -> KnownId {
        let mut i = 0;
        while i < KNOWN.len() {
            if const_eq(KNOWN[i].as_bytes(), name.as_bytes()) {
                return KnownId(i as u8);
            }
            i += 1;
        }
        panic!("not a known header name");
    }

    /// The canonical name.
    pub(crate) fn name(self) -> &'static str {
        KNOWN.get(usize::from(self.0)).copied().unwrap_or("")
    }

    /// Whether comma-joined values are split into one entry each.
    pub(crate) fn is_list(self) -> bool {
        IS_LIST.get(usize::from(self.0)).copied().unwrap_or(false)
    }
}

const fn const_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// `IS_LIST[id]`: whether [`KNOWN`]`[id]` is in [`LIST_HEADERS`].
const IS_LIST: [bool; KNOWN.len()] = {
    let mut t = [false; KNOWN.len()];
    let mut i = 0;
    while i < LIST_HEADERS.len() {
        t[KnownId::of(LIST_HEADERS[i]).0 as usize] = true;
        i += 1;
    }
    t
};

/// Hash of a header name from its length and three lower-cased bytes
/// (first, middle, last). The constants were searched for to give every
/// name in [`KNOWN`] its own slot (checked when `NAME_SLOTS` is built), so
/// a lookup compares against at most one name. `name` is not empty.
const fn name_hash(name: &[u8]) -> usize {
    let n = name.len();
    let (first, last) = match name {
        [first, .., last] => (*first, *last),
        [only] => (*only, *only),
        [] => return 0,
    };
    // n / 2 < n: the name is not empty here
    let mid = name[n / 2];
    (n + 18 * first.to_ascii_lowercase() as usize
        + 7 * mid.to_ascii_lowercase() as usize
        + 20 * last.to_ascii_lowercase() as usize)
        & 0xff
}

/// `NAME_SLOTS[name_hash(name)]` is the id + 1 of the known name with that
/// hash, 0 for none. Building it fails to compile on a collision.
const NAME_SLOTS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < KNOWN.len() {
        let h = name_hash(KNOWN[i].as_bytes());
        assert!(t[h] == 0, "two known header names share a hash slot");
        t[h] = i as u8 + 1;
        i += 1;
    }
    t
};

/// Compact form (RFC 3261 §7.3.3 and extensions) → canonical long name.
fn compact_form(c: u8) -> Option<KnownId> {
    COMPACT
        .get(usize::from(c.to_ascii_lowercase().wrapping_sub(b'a')))
        .copied()
        .flatten()
}

/// `COMPACT[c - b'a']`: the header compact form `c` stands for.
const COMPACT: [Option<KnownId>; 26] = {
    const FORMS: [(u8, &str); 15] = [
        (b'v', "Via"),
        (b'f', "From"),
        (b't', "To"),
        (b'i', "Call-ID"),
        (b'm', "Contact"),
        (b'c', "Content-Type"),
        (b'l', "Content-Length"),
        (b's', "Subject"),
        (b'k', "Supported"),
        (b'o', "Event"),
        (b'x', "Session-Expires"),
        (b'e', "Content-Encoding"),
        (b'r', "Refer-To"),
        (b'b', "Referred-By"),
        (b'u', "Allow-Events"),
    ];
    let mut t = [None; 26];
    let mut i = 0;
    while i < FORMS.len() {
        t[(FORMS[i].0 - b'a') as usize] = Some(KnownId::of(FORMS[i].1));
        i += 1;
    }
    t
};

/// Longest name in [`KNOWN`] and then some.
const MAX_KNOWN_LEN: usize = 24;

/// `FOLDED[id]`: the name lower-cased and zero-padded, and for each byte the
/// bit that ASCII case folding sets (0x20 for letters, 0 otherwise): `b`
/// equals name byte `l` ignoring case exactly when `b | mask == l`.
const FOLDED: [([u8; MAX_KNOWN_LEN], [u8; MAX_KNOWN_LEN]); KNOWN.len()] = {
    let mut t = [([0u8; MAX_KNOWN_LEN], [0u8; MAX_KNOWN_LEN]); KNOWN.len()];
    let mut i = 0;
    while i < KNOWN.len() {
        let name = KNOWN[i].as_bytes();
        assert!(name.len() <= MAX_KNOWN_LEN);
        let mut j = 0;
        while j < name.len() {
            t[i].0[j] = name[j].to_ascii_lowercase();
            t[i].1[j] = if name[j].is_ascii_alphabetic() {
                0x20
            } else {
                0
            };
            j += 1;
        }
        i += 1;
    }
    t
};

/// The known header a name (compact form or any case) stands for.
#[inline]
pub(crate) fn known_id(name: &[u8]) -> Option<KnownId> {
    match name {
        [] => None,
        [c] => compact_form(*c),
        _ => {
            let slot = NAME_SLOTS.get(name_hash(name)).copied().unwrap_or(0);
            let id = KnownId(slot.checked_sub(1)?);
            let (lower, mask) = FOLDED.get(usize::from(id.0))?;
            if name.len() != id.name().len() {
                return None;
            }
            // Branch-free over the whole name: names are short.
            let diff = name
                .iter()
                .zip(lower.iter().zip(mask))
                .fold(0, |acc, (b, (l, m))| acc | ((b | m) ^ l));
            (diff == 0).then_some(id)
        }
    }
}

/// The canonical name for a header name (compact form or any case), if it
/// is one we know.
pub(crate) fn known_name(name: &[u8]) -> Option<&'static str> {
    known_id(name).map(KnownId::name)
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

/// `start..end` of `s` without leading and trailing whitespace, as
/// `str::trim` has it: ASCII whitespace (U+0009..U+000D, space) is skipped
/// byte by byte, anything else non-ASCII is left to `trim_start`/`trim_end`.
fn trimmed_span(s: &str) -> (usize, usize) {
    let is_ascii_space = |b: &u8| matches!(b, b'\t'..=b'\r' | b' ');
    let bytes = s.as_bytes();
    let mut start = bytes
        .iter()
        .position(|b| !is_ascii_space(b))
        .unwrap_or(bytes.len());
    if bytes.get(start).is_some_and(|b| !b.is_ascii()) {
        let rest = s.get(start..).unwrap_or("");
        start += rest.len() - rest.trim_start().len();
    }
    let mut end = bytes
        .iter()
        .rposition(|b| !is_ascii_space(b))
        .map_or(start, |e| e + 1)
        .max(start);
    if end > start && bytes.get(end - 1).is_some_and(|b| !b.is_ascii()) {
        end = start + s.get(start..end).unwrap_or("").trim_end().len();
    }
    (start, end)
}

/// An offset into [`Headers`]' buffer. Parsed messages are at most 64 KiB;
/// a hand-built header list past 4 GiB reads back empty names and values
/// there (the offsets saturate) rather than costing every entry twice the
/// space.
type Offset = u32;

fn offset(n: usize) -> Offset {
    Offset::try_from(n).unwrap_or(Offset::MAX)
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    /// The name, when it is a known one in canonical form; otherwise the
    /// name is bytes `name_start..name_end` of the buffer.
    known: Option<KnownId>,
    /// The known header this entry answers lookups for: the name's id when
    /// the name equals a known name ignoring case (never for a compact form
    /// pushed as written, see [`Headers::push`]).
    key: Option<KnownId>,
    name_start: Offset,
    name_end: Offset,
    /// Value bytes `start..end` of the buffer.
    start: Offset,
    end: Offset,
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
        let known = known_id(name.as_bytes());
        match known.filter(|k| k.name() == name) {
            Some(known) => self.push_known(known, value),
            None => {
                let key = known.filter(|k| k.name().eq_ignore_ascii_case(name));
                self.push_named(name, key, value);
            }
        }
    }

    #[inline]
    pub(crate) fn push_known(&mut self, name: KnownId, value: &str) {
        let start = offset(self.buf.len());
        self.buf.push_str(value);
        self.entries.push(Entry {
            known: Some(name),
            key: Some(name),
            name_start: 0,
            name_end: 0,
            start,
            end: offset(self.buf.len()),
        });
    }

    /// Append an entry with a name that is not a known one (the parser has
    /// already looked it up).
    pub(crate) fn push_other(&mut self, name: &str, value: &str) {
        self.push_named(name, None, value);
    }

    fn push_named(&mut self, name: &str, key: Option<KnownId>, value: &str) {
        let name_start = offset(self.buf.len());
        self.buf.push_str(name);
        let start = offset(self.buf.len());
        self.buf.push_str(value);
        self.entries.push(Entry {
            known: None,
            key,
            name_start,
            name_end: start,
            start,
            end: offset(self.buf.len()),
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
        last.end = offset(self.buf.len());
    }

    /// Replace the last entry by one entry per non-empty, trimmed part of its
    /// value split on commas outside quotes and `<...>`. The parts stay
    /// where they are in the buffer.
    pub(crate) fn split_last(&mut self) {
        let Some(last) = self.entries.pop() else {
            return;
        };
        // (the buffer, not `value_of`: entries are pushed while it is borrowed)
        let value = self
            .buf
            .get(last.start as usize..last.end as usize)
            .unwrap_or("");
        for Range { start, end } in super::SplitOutsideQuotes::new(value, ',') {
            let part = value.get(start..end).unwrap_or("");
            let (trim_start, trim_end) = trimmed_span(part);
            let (start, end) = (start + trim_start, start + trim_end);
            if end > start {
                self.entries.push(Entry {
                    start: last.start.saturating_add(offset(start)),
                    end: last.start.saturating_add(offset(end)),
                    ..last
                });
            }
        }
    }

    fn span(&self, start: Offset, end: Offset) -> &str {
        self.buf.get(start as usize..end as usize).unwrap_or("")
    }

    fn name_of(&self, e: &Entry) -> &str {
        match e.known {
            Some(k) => k.name(),
            None => self.span(e.name_start, e.name_end),
        }
    }

    fn value_of(&self, e: &Entry) -> &str {
        self.span(e.start, e.end)
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

    /// Entries answering a lookup of `name`: those whose name equals its
    /// canonical form (compact forms expanded) ignoring case.
    fn matching<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Entry> + 'a {
        let name = name.trim();
        let key = known_id(name.as_bytes());
        self.entries.iter().filter(move |e| match key {
            Some(_) => e.key == key,
            // Known names are never unknown ones in another case, so
            // only entries without a key can match.
            None => e.key.is_none() && self.name_of(e).eq_ignore_ascii_case(name),
        })
    }

    /// First value of `name` (case-insensitive, compact form accepted).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.matching(name).next().map(|e| self.value_of(e))
    }

    /// Every value of `name`, in order.
    pub fn get_all(&self, name: &str) -> Vec<&str> {
        self.matching(name).map(|e| self.value_of(e)).collect()
    }

    /// First value of a known header, by id: no name to canonicalize.
    #[inline]
    pub(crate) fn get_known(&self, id: KnownId) -> Option<&str> {
        self.entries
            .iter()
            .find(|e| e.key == Some(id))
            .map(|e| self.value_of(e))
    }

    /// Call-ID.
    pub fn call_id(&self) -> Option<&str> {
        self.get_known(KnownId::CALL_ID)
    }

    /// `(number, METHOD)` from the first CSeq; `None` when there is none or
    /// it does not read "number method".
    pub fn cseq(&self) -> Option<(u32, &str)> {
        super::message::cseq_parts(self.get_known(KnownId::CSEQ)?)
    }

    /// The `tag` parameter of the first From header, as
    /// `NameAddr::parse(from)?.tag()` gives it but without building the
    /// `NameAddr`: `Ok(None)` when there is no From or it has no tag, an
    /// error when From is not a name-addr.
    pub fn from_tag(&self) -> Result<Option<&str>, SipError> {
        self.get_known(KnownId::FROM)
            .map_or(Ok(None), super::NameAddr::tag_of)
    }

    /// The `tag` parameter of the first To header, like [`Headers::from_tag`].
    pub fn to_tag(&self) -> Result<Option<&str>, SipError> {
        self.get_known(KnownId::TO)
            .map_or(Ok(None), super::NameAddr::tag_of)
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
        for k in KNOWN {
            assert_eq!(canonical_name(&k.to_ascii_uppercase()), k);
            assert_eq!(canonical_name(&k.to_ascii_lowercase()), k);
            assert_eq!(known_name(k.as_bytes()), Some(k));
        }
        for (i, a) in KNOWN.iter().enumerate() {
            for b in &KNOWN[..i] {
                assert!(!a.eq_ignore_ascii_case(b), "{a} listed twice");
            }
        }
    }

    #[test]
    fn names_sharing_a_known_name_hash_slot_are_not_taken_for_it() {
        // Same length, first, middle and last letter as a known name.
        for name in ["Vxa", "Tq", "Cxxxxxd", "Frxm", "Accept-Lxxxxxge", "X-Via"] {
            assert_eq!(known_name(name.as_bytes()), None, "{name}");
            assert_eq!(canonical_name(name), name);
        }
        assert_eq!(known_name(b""), None);
        assert_eq!(known_name(b"q"), None);
    }

    #[test]
    fn exactly_the_list_headers_are_split() {
        let mut lists: Vec<_> = (0..KNOWN.len())
            .map(|i| KnownId(i as u8))
            .filter(|k| k.is_list())
            .map(KnownId::name)
            .collect();
        lists.sort_unstable();
        let mut expected = LIST_HEADERS.to_vec();
        expected.sort_unstable();
        assert_eq!(lists, expected);
    }

    #[test]
    fn trimmed_span_is_str_trim() {
        let pieces = [
            " ", "\t", "\u{b}", "\u{a0}", "\u{3000}", "\u{85}", "a", "é", ",", "\u{1c}",
        ];
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        for _ in 0..20_000 {
            let mut s = String::new();
            for _ in 0..(x % 7) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                s.push_str(pieces[(x % pieces.len() as u64) as usize]);
            }
            let (start, end) = trimmed_span(&s);
            assert_eq!(&s[start..end], s.trim(), "{s:?}");
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
        h.push_known(KnownId::of("Allow"), "INVITE,");
        h.extend_last("ACK , \"a,b\"");
        h.extend_last("");
        h.split_last();
        assert_eq!(h.get_all("Allow"), vec!["INVITE", "ACK", "\"a,b\""]);
        h.push("Subject", "");
        h.extend_last("x");
        assert_eq!(h.last(), Some(("Subject", "x")));
    }
}
