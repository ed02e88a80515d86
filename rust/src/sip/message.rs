//! SIP message parsing and serialization.

use super::split_outside_quotes;
use crate::error::SipError;

/// Largest message we accept (RFC 3261 messages over UDP are far smaller).
pub const MAX_MESSAGE_SIZE: usize = 64 * 1024;

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
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

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

/// Known header names in canonical capitalization.
const KNOWN_HEADERS: &[&str] = &[
    "Accept",
    "Accept-Contact",
    "Accept-Encoding",
    "Accept-Language",
    "Alert-Info",
    "Allow",
    "Allow-Events",
    "Authentication-Info",
    "Authorization",
    "Call-ID",
    "Call-Info",
    "Contact",
    "Content-Disposition",
    "Content-Encoding",
    "Content-Language",
    "Content-Length",
    "Content-Type",
    "CSeq",
    "Date",
    "Error-Info",
    "Event",
    "Expires",
    "From",
    "History-Info",
    "Identity",
    "In-Reply-To",
    "Max-Forwards",
    "MIME-Version",
    "Min-Expires",
    "Min-SE",
    "Organization",
    "P-Asserted-Identity",
    "P-Preferred-Identity",
    "Path",
    "Priority",
    "Privacy",
    "Proxy-Authenticate",
    "Proxy-Authorization",
    "Proxy-Require",
    "RAck",
    "Reason",
    "Record-Route",
    "Refer-To",
    "Referred-By",
    "Remote-Party-ID",
    "Replaces",
    "Reply-To",
    "Require",
    "Retry-After",
    "Route",
    "RSeq",
    "Server",
    "Service-Route",
    "Session-Expires",
    "SIP-ETag",
    "SIP-If-Match",
    "Subject",
    "Subscription-State",
    "Supported",
    "Timestamp",
    "To",
    "Unsupported",
    "User-Agent",
    "Via",
    "Warning",
    "WWW-Authenticate",
];

/// Headers whose comma-joined values are split into separate entries.
const LIST_HEADERS: &[&str] = &[
    "Via",
    "Route",
    "Record-Route",
    "Contact",
    "Allow",
    "Supported",
    "Require",
    "Accept",
];

/// Canonical form of a header name: compact forms expanded, known headers
/// in RFC capitalization (`call-id` → `Call-ID`), unknown names unchanged.
pub fn canonical_header_name(name: &str) -> String {
    let name = name.trim();
    if let [c] = name.as_bytes() {
        if let Some(long) = compact_form(*c) {
            return long.to_string();
        }
    }
    KNOWN_HEADERS
        .iter()
        .find(|k| k.eq_ignore_ascii_case(name))
        .map_or_else(|| name.to_string(), |k| (*k).to_string())
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b)
}

/// One line starting at `pos`: (line without CR/LF, offset after the LF).
/// `None` when no LF follows.
fn next_line(data: &[u8], pos: usize) -> Option<(&[u8], usize)> {
    let rest = data.get(pos..)?;
    let nl = rest.iter().position(|&b| b == b'\n')?;
    let line = rest.get(..nl)?;
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    Some((line, pos + nl + 1))
}

fn parse_start_line(line: &[u8], offset: usize) -> Result<StartLine, SipError> {
    let text = std::str::from_utf8(line)
        .map_err(|e| SipError::syntax(offset + e.valid_up_to(), "start line is not valid UTF-8"))?;
    if text.starts_with("SIP/") {
        let mut parts = text.splitn(3, ' ');
        let version = parts.next().unwrap_or("");
        if !version.eq_ignore_ascii_case("SIP/2.0") {
            return Err(SipError::syntax(
                offset,
                format!("unsupported version {version:?}"),
            ));
        }
        let code_offset = offset + version.len() + 1;
        let code = parts
            .next()
            .ok_or_else(|| SipError::syntax(code_offset, "status line has no status code"))?;
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
        let reason = parts.next().unwrap_or("").to_string();
        Ok(StartLine::Response { status, reason })
    } else {
        let mut parts = text.split(' ');
        let (Some(method), Some(uri), Some(version), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(SipError::syntax(
                offset,
                "request line is not 'METHOD SP Request-URI SP SIP/2.0'",
            ));
        };
        if method.is_empty() || !method.bytes().all(is_token_byte) {
            return Err(SipError::syntax(offset, format!("bad method {method:?}")));
        }
        let uri_offset = offset + method.len() + 1;
        if uri.is_empty() || !uri.contains(':') {
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

fn trim_bytes(b: &[u8]) -> &[u8] {
    let start = b
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(b.len());
    let end = b
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    b.get(start..end).unwrap_or(&[])
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
            headers: canonical_headers(headers),
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
            headers: canonical_headers(headers),
            body,
        }
    }

    /// Parse one message. The body is taken by Content-Length, or is the rest
    /// of the input when there is none.
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
            .ok_or_else(|| SipError::syntax(data.len(), "start line not terminated"))?;
        let start = parse_start_line(line, pos)?;
        pos = next;

        // (name, value, offset of the line)
        let mut raw: Vec<(String, String, usize)> = Vec::new();
        let body_start = loop {
            let (line, next) = next_line(data, pos).ok_or_else(|| {
                SipError::syntax(data.len(), "header section not terminated by an empty line")
            })?;
            if line.is_empty() {
                break next;
            }
            let first = line.first().copied().unwrap_or(b' ');
            if first == b' ' || first == b'\t' {
                // folded continuation line (RFC 3261 §7.3.1)
                let Some(last) = raw.last_mut() else {
                    return Err(SipError::syntax(pos, "continuation line before any header"));
                };
                let more = String::from_utf8_lossy(trim_bytes(line));
                if !more.is_empty() {
                    if !last.1.is_empty() {
                        last.1.push(' ');
                    }
                    last.1.push_str(&more);
                }
            } else {
                let colon = line
                    .iter()
                    .position(|&b| b == b':')
                    .ok_or_else(|| SipError::syntax(pos, "header line without ':'"))?;
                let name = trim_bytes(line.get(..colon).unwrap_or(&[]));
                if name.is_empty() || !name.iter().copied().all(is_token_byte) {
                    return Err(SipError::syntax(
                        pos,
                        format!("invalid header name {:?}", String::from_utf8_lossy(name)),
                    ));
                }
                let value = trim_bytes(line.get(colon + 1..).unwrap_or(&[]));
                raw.push((
                    canonical_header_name(&String::from_utf8_lossy(name)),
                    String::from_utf8_lossy(value).into_owned(),
                    pos,
                ));
            }
            pos = next;
        };

        let mut headers = Vec::with_capacity(raw.len());
        let mut content_length: Option<(usize, usize)> = None;
        for (name, value, offset) in raw {
            if name == "Content-Length" && content_length.is_none() {
                let n = value
                    .trim()
                    .parse::<usize>()
                    .map_err(|_| SipError::ContentLength {
                        offset,
                        msg: format!("{value:?} is not a number"),
                    })?;
                content_length = Some((n, offset));
            }
            push_split(&mut headers, name, value);
        }

        let available = data.len().saturating_sub(body_start);
        let body = match content_length {
            Some((n, _)) if n > available => {
                return Err(SipError::ContentLength {
                    offset: body_start,
                    msg: format!("Content-Length {n} exceeds the {available} bytes available"),
                });
            }
            Some((n, _)) => data.get(body_start..body_start + n).unwrap_or(&[]).to_vec(),
            None => data.get(body_start..).unwrap_or(&[]).to_vec(),
        };
        Ok(SipMessage {
            start,
            headers,
            body,
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
        header_first(&self.headers, name)
    }

    /// Every value of a header, in order.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        header_all(&self.headers, name)
    }

    pub fn call_id(&self) -> Option<&str> {
        self.header("Call-ID")
    }

    /// `(number, METHOD)` from CSeq.
    pub fn cseq(&self) -> Option<(u32, String)> {
        parse_cseq(self.header("CSeq")?)
    }

    /// Serialize; Content-Length is written from the body (replacing the
    /// first Content-Length entry, dropping others, or appended).
    pub fn to_bytes(&self) -> Vec<u8> {
        serialize(&self.start, &self.headers, &self.body)
    }
}

fn canonical_headers(headers: Vec<(String, String)>) -> Vec<(String, String)> {
    headers
        .into_iter()
        .map(|(n, v)| (canonical_header_name(&n), v))
        .collect()
}

fn push_split(headers: &mut Vec<(String, String)>, name: String, value: String) {
    let splittable = LIST_HEADERS.contains(&name.as_str())
        && !(name == "Contact" && value.trim() == "*")
        && value.contains(',');
    if splittable {
        for part in split_outside_quotes(&value, ',') {
            let part = part.trim();
            if !part.is_empty() {
                headers.push((name.clone(), part.to_string()));
            }
        }
    } else {
        headers.push((name, value));
    }
}

/// First value of `name` in a header list (case-insensitive, compact form ok).
pub fn header_first<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    let canon = canonical_header_name(name);
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(&canon))
        .map(|(_, v)| v.as_str())
}

/// Every value of `name` in a header list.
pub fn header_all<'a>(headers: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    let canon = canonical_header_name(name);
    headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(&canon))
        .map(|(_, v)| v.as_str())
        .collect()
}

/// `"314159 INVITE"` → `(314159, "INVITE")`.
pub fn parse_cseq(value: &str) -> Option<(u32, String)> {
    let mut it = value.split_whitespace();
    let n = it.next()?.parse().ok()?;
    let m = it.next()?.to_string();
    Some((n, m))
}

/// Header values must not break the framing: CR/LF become spaces.
fn push_sanitized(out: &mut Vec<u8>, s: &str) {
    out.extend(
        s.bytes()
            .map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
    );
}

pub(crate) fn serialize(start: &StartLine, headers: &[(String, String)], body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(512 + body.len());
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
    for (name, value) in headers {
        if canonical_header_name(name) == "Content-Length" {
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
