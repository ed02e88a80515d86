//! SIP message parsing and serialization.

use super::headers::{known_id, Headers, KnownId};
use crate::error::SipError;
use std::borrow::Cow;

/// Largest message we accept (RFC 3261 messages over UDP are far smaller).
pub const MAX_MESSAGE_SIZE: usize = 64 * 1024;

/// Most header entries (after splitting comma-joined lists) we accept; real
/// messages have a few dozen.
pub const MAX_HEADERS: usize = 256;

/// Request line or status line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartLine {
    Request { method: String, uri: String },
    Response { status: u16, reason: String },
}

/// A parsed or built SIP request or response.
///
/// Header names are canonical (compact forms expanded, known headers in
/// their RFC capitalization, unknown names as written); comma-joined values
/// of list headers are split into one entry each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipMessage {
    pub start: StartLine,
    pub headers: Headers,
    pub body: Vec<u8>,
}

/// `TOKEN[b]`: whether byte `b` may appear in a token (RFC 3261 §25.1).
static TOKEN: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~'
            );
        b += 1;
    }
    t
};

#[inline]
fn is_token_byte(b: u8) -> bool {
    TOKEN[usize::from(b)]
}

/// The end of a line, or why there is none.
enum LineError {
    /// No LF before the end of the input.
    Unterminated,
    /// NUL, or a CR not followed by LF, at this offset. They have no place in
    /// a start line or header (RFC 3261 §25.1: only CRLF ends a line, TEXT
    /// excludes CTLs but HTAB); they are how header injection and request
    /// smuggling start.
    Forbidden(usize, &'static str),
}

impl LineError {
    fn into_sip(self, end: usize, unterminated: &'static str) -> SipError {
        match self {
            LineError::Unterminated => SipError::syntax(end, unterminated),
            LineError::Forbidden(offset, what) => {
                SipError::syntax(offset, format!("{what} in the start line or a header"))
            }
        }
    }
}

/// One line starting at `pos`: (line without CRLF or LF, offset after it).
#[inline]
fn next_line(data: &[u8], pos: usize) -> Result<(&[u8], usize), LineError> {
    let rest = data.get(pos..).unwrap_or(&[]);
    let i = find_line_end(rest).ok_or(LineError::Unterminated)?;
    let line = rest.get(..i).unwrap_or(&[]);
    match (rest.get(i), rest.get(i + 1)) {
        (Some(b'\n'), _) => Ok((line, pos + i + 1)),
        (Some(b'\r'), Some(b'\n')) => Ok((line, pos + i + 2)),
        (Some(b'\r'), None) => Err(LineError::Unterminated),
        (Some(b'\r'), Some(_)) => Err(LineError::Forbidden(pos + i, "bare CR")),
        _ => Err(LineError::Forbidden(pos + i, "NUL byte")),
    }
}

/// Index of the first LF, CR or NUL, eight bytes at a time. One SWAR test
/// per word flags the bytes below 14 (`\r` + 1): the usual "has a byte less
/// than n" trick, which flags every such byte and may also flag bytes just
/// above a true match (borrows), never bytes at or above 0x80. Each flagged
/// byte is then checked, so tabs and other controls in a line only cost a
/// look.
pub(crate) fn find_line_end(hay: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    const BELOW: u64 = ONES * (b'\r' as u64 + 1);
    let mut chunks = hay.chunks_exact(8);
    let mut base = 0;
    for chunk in &mut chunks {
        let word = <[u8; 8]>::try_from(chunk).map_or(0, u64::from_le_bytes);
        let mut flagged = word.wrapping_sub(BELOW) & !word & HIGHS;
        while flagged != 0 {
            let i = (flagged.trailing_zeros() / 8) as usize;
            if matches!(chunk.get(i), Some(b'\n' | b'\r' | 0)) {
                return Some(base + i);
            }
            flagged &= flagged - 1;
        }
        base += 8;
    }
    let tail = chunks
        .remainder()
        .iter()
        .position(|&b| matches!(b, b'\n' | b'\r' | 0));
    tail.map(|i| base + i)
}

/// Bytes as text: borrowed when valid UTF-8 (the rule on the wire), else
/// with U+FFFD for each bad sequence.
fn text(bytes: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(s) => Cow::Borrowed(s),
        Err(_) => String::from_utf8_lossy(bytes),
    }
}

/// The valid UTF-8 prefix of the header section checked so far. Values are
/// borrowed from it instead of each being validated on its own: one
/// `from_utf8` call per message rather than one per header. Values it does
/// not cover (after an invalid byte) go through [`text`], so the result is
/// the same either way.
struct Utf8Prefix<'a> {
    data: &'a [u8],
    /// Offset in `data` where `valid` starts.
    base: usize,
    valid: &'a str,
    /// Growing `valid` cannot help: it ends at an invalid sequence or at the
    /// end of `data`.
    done: bool,
}

impl<'a> Utf8Prefix<'a> {
    /// Checked up front: more than the header section of most messages,
    /// little of a large body.
    const FIRST: usize = 1024;

    fn new(data: &'a [u8], base: usize) -> Self {
        let mut p = Utf8Prefix {
            data,
            base,
            valid: "",
            done: false,
        };
        p.grow(base + Self::FIRST);
        p
    }

    /// Check up to `end` at least, and at least twice as far as before, so
    /// that a long header section is checked in a few calls.
    fn grow(&mut self, end: usize) {
        let end = end
            .max(self.base + 2 * self.valid.len())
            .min(self.data.len());
        let bytes = self.data.get(self.base..end).unwrap_or(&[]);
        self.valid = match std::str::from_utf8(bytes) {
            Ok(s) => s,
            Err(e) => {
                // error_len() is None for a sequence cut by `end`, which
                // the next, longer check may complete.
                self.done = e.error_len().is_some();
                let prefix = bytes.get(..e.valid_up_to()).unwrap_or(&[]);
                std::str::from_utf8(prefix).unwrap_or("")
            }
        };
        self.done |= end == self.data.len();
    }

    /// Bytes `start..end` of the data as text, as [`text`] gives them.
    #[inline]
    fn text(&mut self, start: usize, end: usize) -> Cow<'a, str> {
        // (start >= base always: values come after the start line)
        let in_valid = start
            .checked_sub(self.base)
            .zip(end.checked_sub(self.base))
            .and_then(|(s, e)| self.valid.get(s..e));
        match in_valid {
            Some(s) => Cow::Borrowed(s),
            None => self.text_slow(start, end),
        }
    }

    /// [`Utf8Prefix::text`] for what the prefix does not cover yet.
    #[cold]
    fn text_slow(&mut self, start: usize, end: usize) -> Cow<'a, str> {
        if end > self.base + self.valid.len() && !self.done {
            self.grow(end);
            if let Some(s) = start
                .checked_sub(self.base)
                .zip(end.checked_sub(self.base))
                .and_then(|(s, e)| self.valid.get(s..e))
            {
                return Cow::Borrowed(s);
            }
        }
        text(self.data.get(start..end).unwrap_or(&[]))
    }
}

fn parse_start_line(line: &[u8], offset: usize) -> Result<StartLine, SipError> {
    let text = std::str::from_utf8(line)
        .map_err(|e| SipError::syntax(offset + e.valid_up_to(), "start line is not valid UTF-8"))?;
    if text.starts_with("SIP/") {
        let (version, rest) = split_at_space(text);
        if !version.eq_ignore_ascii_case("SIP/2.0") {
            return Err(SipError::syntax(
                offset,
                format!("unsupported version {version:?}"),
            ));
        }
        let code_offset = offset + version.len() + 1;
        let (code, reason) = split_at_space(
            rest.ok_or_else(|| SipError::syntax(code_offset, "status line has no status code"))?,
        );
        if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
            return Err(SipError::syntax(
                code_offset,
                format!("bad status code {code:?}"),
            ));
        }
        let status: u16 = code
            .parse()
            .map_err(|_| SipError::syntax(code_offset, format!("bad status code {code:?}")))?;
        if !(100..=699).contains(&status) {
            return Err(SipError::syntax(
                code_offset,
                format!("status code {status} out of range 100..699"),
            ));
        }
        let reason = reason.unwrap_or("").to_string();
        Ok(StartLine::Response { status, reason })
    } else {
        let (method, rest) = split_at_space(text);
        let (uri, rest) = rest.map_or(("", None), split_at_space);
        let (Some(version), false) = (rest, rest.is_some_and(|v| v.contains(' '))) else {
            return Err(SipError::syntax(
                offset,
                "request line is not 'METHOD SP Request-URI SP SIP/2.0'",
            ));
        };
        if method.is_empty() || !method.bytes().all(is_token_byte) {
            return Err(SipError::syntax(offset, format!("bad method {method:?}")));
        }
        let uri_offset = offset + method.len() + 1;
        if uri.is_empty() || !uri.as_bytes().contains(&b':') {
            return Err(SipError::syntax(
                uri_offset,
                format!("bad Request-URI {uri:?}"),
            ));
        }
        if !version.eq_ignore_ascii_case("SIP/2.0") {
            return Err(SipError::syntax(
                uri_offset + uri.len() + 1,
                format!("unsupported version {version:?}"),
            ));
        }
        Ok(StartLine::Request {
            method: method.to_string(),
            uri: uri.to_string(),
        })
    }
}

/// `s` split at its first space: the part before it and, when there is a
/// space, the part after it.
fn split_at_space(s: &str) -> (&str, Option<&str>) {
    match s.as_bytes().iter().position(|&b| b == b' ') {
        Some(i) => (s.get(..i).unwrap_or(""), s.get(i + 1..)),
        None => (s, None),
    }
}

fn trim_bytes(b: &[u8]) -> &[u8] {
    let (start, end) = trim_range(b);
    b.get(start..end).unwrap_or(&[])
}

/// `start..end` of `b` without leading and trailing ASCII whitespace.
#[inline]
fn trim_range(b: &[u8]) -> (usize, usize) {
    let start = b
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(b.len());
    let end = b
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    (start, end)
}

impl SipMessage {
    /// A request with canonicalized header names.
    pub fn request(
        method: impl Into<String>,
        uri: impl Into<String>,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    ) -> Self {
        SipMessage {
            start: StartLine::Request {
                method: method.into(),
                uri: uri.into(),
            },
            headers: canonical_headers(&headers),
            body,
        }
    }

    /// A response with canonicalized header names.
    pub fn response(
        status: u16,
        reason: impl Into<String>,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    ) -> Self {
        SipMessage {
            start: StartLine::Response {
                status,
                reason: reason.into(),
            },
            headers: canonical_headers(&headers),
            body,
        }
    }

    /// Parse one message. The body is taken by Content-Length, or is the rest
    /// of the input when there is none.
    ///
    /// Rejected, with the byte offset: more than [`MAX_MESSAGE_SIZE`] bytes,
    /// more than [`MAX_HEADERS`] header entries besides Content-Length, NUL
    /// or bare CR in the start line or headers, a Content-Length that is not
    /// a decimal number, that exceeds the bytes left, or a second one.
    pub fn parse(data: &[u8]) -> Result<SipMessage, SipError> {
        if data.len() > MAX_MESSAGE_SIZE {
            return Err(SipError::TooLarge {
                size: data.len(),
                max: MAX_MESSAGE_SIZE,
            });
        }
        // RFC 3261 §7.5: ignore CRLFs before the start line (keep-alives).
        let mut pos = data
            .iter()
            .position(|&b| b != b'\r' && b != b'\n')
            .ok_or_else(|| SipError::syntax(data.len(), "empty message"))?;
        let (line, next) = next_line(data, pos)
            .map_err(|e| e.into_sip(data.len(), "start line not terminated"))?;
        let start = parse_start_line(line, pos)?;
        pos = next;

        let mut parser = HeaderParser {
            // names and values are shorter than what is left of the input
            headers: Headers::with_capacity(data.len() - pos, 32),
            open: None,
            content_length: None,
            text: Utf8Prefix::new(data, pos),
        };
        let body_start = loop {
            let (line, next) = next_line(data, pos).map_err(|e| {
                e.into_sip(data.len(), "header section not terminated by an empty line")
            })?;
            if line.is_empty() {
                break next;
            }
            parser.line(line, pos)?;
            pos = next;
        };
        parser.close()?;

        let available = data.len() - body_start;
        let body = match parser.content_length {
            Some((n, _)) if n > available => {
                return Err(SipError::ContentLength {
                    offset: body_start,
                    msg: format!("Content-Length {n} exceeds the {available} bytes available"),
                });
            }
            Some((n, _)) => data.get(body_start..body_start + n),
            None => data.get(body_start..),
        };
        Ok(SipMessage {
            start,
            headers: parser.headers,
            body: body.unwrap_or(&[]).to_vec(),
        })
    }

    pub fn is_request(&self) -> bool {
        matches!(self.start, StartLine::Request { .. })
    }

    pub fn method(&self) -> Option<&str> {
        match &self.start {
            StartLine::Request { method, .. } => Some(method),
            StartLine::Response { .. } => None,
        }
    }

    pub fn uri(&self) -> Option<&str> {
        match &self.start {
            StartLine::Request { uri, .. } => Some(uri),
            StartLine::Response { .. } => None,
        }
    }

    pub fn status(&self) -> Option<u16> {
        match &self.start {
            StartLine::Response { status, .. } => Some(*status),
            StartLine::Request { .. } => None,
        }
    }

    pub fn reason(&self) -> Option<&str> {
        match &self.start {
            StartLine::Response { reason, .. } => Some(reason),
            StartLine::Request { .. } => None,
        }
    }

    /// First value of a header (case-insensitive, compact form accepted).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name)
    }

    /// Every value of a header, in order.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers.get_all(name)
    }

    pub fn call_id(&self) -> Option<&str> {
        self.headers.call_id()
    }

    /// `(number, METHOD)` from CSeq.
    pub fn cseq(&self) -> Option<(u32, String)> {
        self.headers.cseq().map(|(n, m)| (n, m.to_string()))
    }

    /// The `tag` parameter of the first From header; see
    /// [`Headers::from_tag`].
    pub fn from_tag(&self) -> Result<Option<&str>, SipError> {
        self.headers.from_tag()
    }

    /// The `tag` parameter of the first To header; see [`Headers::to_tag`].
    pub fn to_tag(&self) -> Result<Option<&str>, SipError> {
        self.headers.to_tag()
    }

    /// Serialize; Content-Length is written from the body (replacing the
    /// first Content-Length entry, dropping others, or appended).
    pub fn to_bytes(&self) -> Vec<u8> {
        serialize(&self.start, &self.headers, &self.body)
    }
}

fn canonical_headers(headers: &[(String, String)]) -> Headers {
    let mut out = Headers::with_capacity(headers.iter().map(|(_, v)| v.len()).sum(), headers.len());
    for (name, value) in headers {
        match known_id(name.trim().as_bytes()) {
            Some(known) => out.push_known(known, value),
            None => out.push(name.trim(), value),
        }
    }
    out
}

/// Header lines → entries. A header stays "open" until the next header line
/// starts, because folded continuation lines may still extend its value;
/// closing it splits list values and checks Content-Length and the cap.
struct HeaderParser<'a> {
    headers: Headers,
    /// Offset of the line of the last entry and its known name, while it
    /// is open.
    open: Option<(usize, Option<KnownId>)>,
    /// (value, offset of its line) of the first Content-Length.
    content_length: Option<(usize, usize)>,
    text: Utf8Prefix<'a>,
}

impl HeaderParser<'_> {
    /// Take the header line `line`, which starts at `offset` in the data.
    #[inline]
    fn line(&mut self, line: &[u8], offset: usize) -> Result<(), SipError> {
        if let [b' ' | b'\t', ..] = line {
            // folded continuation line (RFC 3261 §7.3.1)
            if self.open.is_none() {
                return Err(SipError::syntax(
                    offset,
                    "continuation line before any header",
                ));
            }
            let (start, end) = trim_range(line);
            let more = self.text.text(offset + start, offset + end);
            self.headers.extend_last(&more);
            return Ok(());
        }
        self.close()?;
        // Usually the name is a token right up to the colon; otherwise
        // (spaces before the colon, or an error) take the general path.
        let token_len = line
            .iter()
            .position(|&b| !is_token_byte(b))
            .unwrap_or(line.len());
        let (name, value) = match line.split_at_checked(token_len) {
            Some((name, [b':', value @ ..])) if !name.is_empty() => (name, value),
            _ => split_header_line(line, offset)?,
        };
        let value_offset = offset + (line.len() - value.len());
        let (start, end) = trim_range(value);
        let value = self.text.text(value_offset + start, value_offset + end);
        let known = known_id(name);
        match known {
            Some(known) => self.headers.push_known(known, &value),
            // a token is ASCII, hence UTF-8
            None => self
                .headers
                .push_other(std::str::from_utf8(name).unwrap_or("?"), &value),
        }
        self.open = Some((offset, known));
        Ok(())
    }

    /// Finish the open header, if any.
    #[inline]
    fn close(&mut self) -> Result<(), SipError> {
        let Some((offset, known)) = self.open.take() else {
            return Ok(());
        };
        if let Some(k) = known.filter(|k| *k == KnownId::CONTENT_LENGTH || k.is_list()) {
            self.close_special(offset, k)?;
        }
        // Content-Length does not count: the serializer adds one when there
        // is none, and what parses must parse again after serializing.
        let entries = self.headers.len() - usize::from(self.content_length.is_some());
        if entries > MAX_HEADERS {
            return Err(SipError::syntax(
                offset,
                format!("more than {MAX_HEADERS} header entries"),
            ));
        }
        Ok(())
    }

    /// The part of [`HeaderParser::close`] for Content-Length and list
    /// headers.
    fn close_special(&mut self, offset: usize, known: KnownId) -> Result<(), SipError> {
        let Some((_, value)) = self.headers.last() else {
            return Ok(());
        };
        if known == KnownId::CONTENT_LENGTH {
            if let Some((_, first)) = self.content_length {
                // Two lengths are how request smuggling starts (RFC 3261
                // §20.14 has exactly one); reject even equal ones.
                return Err(SipError::ContentLength {
                    offset,
                    msg: format!("second Content-Length (the first is at byte offset {first})"),
                });
            }
            self.content_length = Some((parse_content_length(value, offset)?, offset));
        } else if value.as_bytes().contains(&b',') {
            // ("Contact: *" has no comma, so it is never split.)
            self.headers.split_last();
        }
        Ok(())
    }
}

/// `name: value` → (name, bytes after the colon), the name trimmed and
/// checked to be a token.
fn split_header_line(line: &[u8], offset: usize) -> Result<(&[u8], &[u8]), SipError> {
    let colon = line
        .iter()
        .position(|&b| b == b':')
        .ok_or_else(|| SipError::syntax(offset, "header line without ':'"))?;
    let (name, value) = line.split_at(colon);
    let name = trim_bytes(name);
    if name.is_empty() || !name.iter().copied().all(is_token_byte) {
        return Err(SipError::syntax(
            offset,
            format!("invalid header name {:?}", String::from_utf8_lossy(name)),
        ));
    }
    Ok((name, value.get(1..).unwrap_or(&[])))
}

/// Decimal digits only (no sign), and no more than the largest message.
fn parse_content_length(value: &str, offset: usize) -> Result<usize, SipError> {
    let digits = value.trim();
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(SipError::ContentLength {
            offset,
            msg: format!("{value:?} is not a number"),
        });
    }
    // Leading zeros are legal; more than 64 KiB never is.
    let significant = digits.trim_start_matches('0');
    match significant.parse::<usize>() {
        Ok(n) if n <= MAX_MESSAGE_SIZE => Ok(n),
        _ if significant.is_empty() => Ok(0),
        _ => Err(SipError::ContentLength {
            offset,
            msg: format!("{digits} is larger than the largest message ({MAX_MESSAGE_SIZE})"),
        }),
    }
}

/// `"314159 INVITE"` → `(314159, "INVITE")`.
pub fn parse_cseq(value: &str) -> Option<(u32, String)> {
    cseq_parts(value).map(|(n, m)| (n, m.to_string()))
}

/// [`parse_cseq`] without copying the method.
pub(crate) fn cseq_parts(value: &str) -> Option<(u32, &str)> {
    let mut it = value.split_whitespace();
    let n = it.next()?.parse().ok()?;
    let m = it.next()?;
    Some((n, m))
}

/// Header values must not break the framing: CR/LF become spaces.
fn push_sanitized(out: &mut Vec<u8>, s: &str) {
    out.extend(
        s.bytes()
            .map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
    );
}

/// Serialize a start line, headers and body (what [`SipMessage::to_bytes`]
/// does, for callers that hold the parts separately).
pub fn serialize(start: &StartLine, headers: &Headers, body: &[u8]) -> Vec<u8> {
    let size: usize = headers.iter().map(|(n, v)| n.len() + v.len() + 4).sum();
    let mut out = Vec::with_capacity(size + 64 + body.len());
    match start {
        StartLine::Request { method, uri } => {
            push_sanitized(&mut out, method);
            out.push(b' ');
            push_sanitized(&mut out, uri);
            out.extend_from_slice(b" SIP/2.0\r\n");
        }
        StartLine::Response { status, reason } => {
            out.extend_from_slice(format!("SIP/2.0 {status} ").as_bytes());
            push_sanitized(&mut out, reason);
            out.extend_from_slice(b"\r\n");
        }
    }
    let mut wrote_length = false;
    for (name, value) in headers.iter() {
        if super::headers::canonical_name(name) == "Content-Length" {
            if !wrote_length {
                out.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
                wrote_length = true;
            }
            continue;
        }
        push_sanitized(&mut out, name);
        out.extend_from_slice(b": ");
        push_sanitized(&mut out, value);
        out.extend_from_slice(b"\r\n");
    }
    if !wrote_length {
        out.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}
