//! Structured SIP header values: `SipUri`, `NameAddr` (From/To/Contact/
//! Route) and `Via`.

use super::{
    find_param, find_param_in, parse_params, split_outside_quotes, write_params, Params,
    SplitOutsideQuotes,
};
use crate::error::SipError;
use std::fmt;

/// `sip:user@host:port;params?headers` (also `sips:`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipUri {
    /// `sip` or `sips`, lower-cased.
    pub scheme: String,
    /// User part as written (may include `:password`), without the `@`.
    pub user: Option<String>,
    /// Host name or address; IPv6 references keep their brackets.
    pub host: String,
    pub port: Option<u16>,
    pub params: Params,
    /// URI headers after `?`, as written (without the `?`).
    pub headers: Option<String>,
}

/// Split `host[:port]` where host may be a bracketed IPv6 reference.
fn parse_hostport(
    s: &str,
    what: &'static str,
    full: &str,
) -> Result<(String, Option<u16>), SipError> {
    let s = s.trim();
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let end = rest
            .find(']')
            .ok_or_else(|| SipError::value(what, full, "unterminated IPv6 reference"))?;
        let host = format!("[{}]", rest.get(..end).unwrap_or(""));
        let after = rest.get(end + 1..).unwrap_or("");
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p),
            None if after.is_empty() => None,
            None => {
                return Err(SipError::value(what, full, "garbage after IPv6 reference"));
            }
        };
        (host, port)
    } else {
        match s.split_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (s.to_string(), None),
        }
    };
    if host.is_empty() || host == "[]" {
        return Err(SipError::value(what, full, "empty host"));
    }
    if host
        .chars()
        .any(|c| c.is_whitespace() || c == '<' || c == '>' || c == '"' || c == '@')
    {
        return Err(SipError::value(what, full, "invalid character in host"));
    }
    let port = match port {
        Some(p) => Some(
            p.trim()
                .parse::<u16>()
                .map_err(|_| SipError::value(what, full, format!("bad port {p:?}")))?,
        ),
        None => None,
    };
    Ok((host, port))
}

impl SipUri {
    pub fn parse(value: &str) -> Result<SipUri, SipError> {
        let v = value.trim();
        let (scheme, rest) = v
            .split_once(':')
            .ok_or_else(|| SipError::value("SIP URI", value, "no scheme"))?;
        let scheme = scheme.to_ascii_lowercase();
        if scheme != "sip" && scheme != "sips" {
            return Err(SipError::value(
                "SIP URI",
                value,
                format!("scheme {scheme:?} is not sip or sips"),
            ));
        }
        let (rest, headers) = match rest.split_once('?') {
            Some((r, h)) => (r, Some(h.to_string())),
            None => (rest, None),
        };
        let (user, hostpart) = match rest.rfind('@') {
            Some(at) => (
                Some(rest.get(..at).unwrap_or("").to_string()),
                rest.get(at + 1..).unwrap_or(""),
            ),
            None => (None, rest),
        };
        if user.as_deref() == Some("") {
            return Err(SipError::value("SIP URI", value, "empty user part"));
        }
        let (hostport, params) = match hostpart.split_once(';') {
            Some((h, p)) => (h, parse_params(p)),
            None => (hostpart, Vec::new()),
        };
        let (host, port) = parse_hostport(hostport, "SIP URI", value)?;
        Ok(SipUri {
            scheme,
            user,
            host,
            port,
            params,
            headers,
        })
    }

    /// Value of a URI parameter (case-insensitive name); `Some(None)` for a flag.
    pub fn param(&self, name: &str) -> Option<Option<&str>> {
        find_param(&self.params, name)
    }
}

impl fmt::Display for SipUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = String::new();
        s.push_str(&self.scheme);
        s.push(':');
        if let Some(u) = &self.user {
            s.push_str(u);
            s.push('@');
        }
        s.push_str(&self.host);
        if let Some(p) = self.port {
            s.push(':');
            s.push_str(&p.to_string());
        }
        write_params(&mut s, &self.params);
        if let Some(h) = &self.headers {
            s.push('?');
            s.push_str(h);
        }
        f.write_str(&s)
    }
}

/// A From/To/Contact/Route value: `"Bob" <sip:bob@host>;tag=x`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameAddr {
    /// Display name, unquoted and unescaped.
    pub display: Option<String>,
    /// The URI as written between `<` and `>` (not parsed further).
    pub uri: String,
    /// Header parameters (after the URI), e.g. `tag`, `expires`.
    pub params: Params,
}

impl NameAddr {
    pub fn new(display: Option<String>, uri: impl Into<String>) -> Self {
        NameAddr {
            display,
            uri: uri.into(),
            params: Vec::new(),
        }
    }

    pub fn parse(value: &str) -> Result<NameAddr, SipError> {
        let parts = NameAddrParts::split(value)?;
        let display = match parts.display {
            Some(Display::Quoted(raw)) => Some(unescape_quoted(raw)),
            Some(Display::Plain(d)) => Some(d.to_string()),
            None => None,
        };
        Ok(NameAddr {
            display,
            uri: parts.uri.to_string(),
            params: parse_params(parts.params),
        })
    }

    /// The `tag` parameter of a From/To value: what
    /// `NameAddr::parse(value)?.tag()` gives, with the same errors, but
    /// borrowed from `value` and without allocating.
    pub fn tag_of(value: &str) -> Result<Option<&str>, SipError> {
        let parts = NameAddrParts::split(value)?;
        Ok(find_param_in(parts.params, "tag").flatten())
    }

    /// The `tag` parameter.
    pub fn tag(&self) -> Option<&str> {
        find_param(&self.params, "tag").flatten()
    }

    /// Header parameter by case-insensitive name; `Some(None)` for a flag.
    pub fn param(&self, name: &str) -> Option<Option<&str>> {
        find_param(&self.params, name)
    }
}

/// A display name as written.
enum Display<'a> {
    /// Between the quotes, backslash escapes still in.
    Quoted(&'a str),
    /// Before `<`, trimmed, not empty.
    Plain(&'a str),
}

/// A name-addr or addr-spec value split into its parts, borrowed.
struct NameAddrParts<'a> {
    display: Option<Display<'a>>,
    uri: &'a str,
    /// The header parameters after the URI, as [`parse_params`] takes them.
    params: &'a str,
}

impl<'a> NameAddrParts<'a> {
    fn split(value: &'a str) -> Result<Self, SipError> {
        let v = value.trim();
        if v.is_empty() {
            return Err(SipError::value("name-addr", value, "empty"));
        }
        let mut display = None;
        let mut rest = v;
        if let Some(q) = v.strip_prefix('"') {
            let end = closing_quote(q)
                .ok_or_else(|| SipError::value("name-addr", value, "unterminated quote"))?;
            display = Some(Display::Quoted(q.get(..end).unwrap_or("")));
            rest = q.get(end + 1..).unwrap_or("").trim_start();
            if !rest.starts_with('<') {
                return Err(SipError::value(
                    "name-addr",
                    value,
                    "display name not followed by <uri>",
                ));
            }
        }
        if let Some(lt) = byte_index(rest, b'<') {
            if display.is_none() {
                let d = rest.get(..lt).unwrap_or("").trim();
                if !d.is_empty() {
                    display = Some(Display::Plain(d));
                }
            }
            let after = rest.get(lt + 1..).unwrap_or("");
            let gt = byte_index(after, b'>')
                .ok_or_else(|| SipError::value("name-addr", value, "no closing '>'"))?;
            let uri = after.get(..gt).unwrap_or("").trim();
            if uri.is_empty() {
                return Err(SipError::value("name-addr", value, "empty URI"));
            }
            let tail = after.get(gt + 1..).unwrap_or("").trim();
            if !tail.is_empty() && !tail.starts_with(';') {
                return Err(SipError::value(
                    "name-addr",
                    value,
                    "garbage after '>' (expected ;params)",
                ));
            }
            Ok(NameAddrParts {
                display,
                uri,
                params: tail,
            })
        } else {
            // addr-spec: parameters after the URI belong to the header
            let first = SplitOutsideQuotes::new(rest, ';')
                .next()
                .map_or(rest.len(), |r| r.end);
            let uri = rest.get(..first).unwrap_or("").trim();
            if uri.is_empty() || uri.contains(char::is_whitespace) {
                return Err(SipError::value("name-addr", value, "bad URI"));
            }
            Ok(NameAddrParts {
                display: None,
                uri,
                params: rest.get(first + 1..).unwrap_or(""),
            })
        }
    }
}

/// Index in `q` (the text after an opening quote) of the closing quote.
fn closing_quote(q: &str) -> Option<usize> {
    // Bytes, not chars: a backslash escapes the next char, and skipping one
    // byte of a multi-byte char is harmless since its other bytes are never
    // ASCII.
    let mut escaped = false;
    for (i, &c) in q.as_bytes().iter().enumerate() {
        if escaped {
            escaped = false;
        } else if c == b'\\' {
            escaped = true;
        } else if c == b'"' {
            return Some(i);
        }
    }
    None
}

/// Index of the first `b` (ASCII) in `s`; a plain loop, as these strings are
/// short.
fn byte_index(s: &str, b: u8) -> Option<usize> {
    s.as_bytes().iter().position(|&c| c == b)
}

/// A quoted display name without its backslash escapes.
fn unescape_quoted(raw: &str) -> String {
    let mut name = String::with_capacity(raw.len());
    let mut escaped = false;
    for c in raw.chars() {
        if escaped || c != '\\' {
            name.push(c);
            escaped = false;
        } else {
            escaped = true;
        }
    }
    name
}

impl fmt::Display for NameAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = String::new();
        if let Some(d) = &self.display {
            s.push('"');
            for c in d.chars() {
                if c == '"' || c == '\\' {
                    s.push('\\');
                }
                s.push(c);
            }
            s.push_str("\" ");
        }
        s.push('<');
        s.push_str(&self.uri);
        s.push('>');
        write_params(&mut s, &self.params);
        f.write_str(&s)
    }
}

/// One Via entry: `SIP/2.0/UDP host:port;branch=z9hG4bK...;rport`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via {
    /// Transport, upper-cased (`UDP`, `TCP`, `TLS`, `WS`, `WSS`).
    pub transport: String,
    pub host: String,
    pub port: Option<u16>,
    pub params: Params,
}

impl Via {
    pub fn parse(value: &str) -> Result<Via, SipError> {
        let mut parts = split_outside_quotes(value, ';').into_iter();
        let head = parts.next().unwrap_or("").trim();
        let params = parse_params(&parts.collect::<Vec<_>>().join(";"));
        // "SIP / 2.0 / UDP host:port" — whitespace is allowed around '/'
        let mut compact = String::with_capacity(head.len());
        let mut chars = head.chars().peekable();
        while let Some(c) = chars.next() {
            if c.is_whitespace() {
                while chars.peek().is_some_and(|n| n.is_whitespace()) {
                    chars.next();
                }
                let next_is_slash = chars.peek() == Some(&'/');
                if next_is_slash || compact.ends_with('/') {
                    continue;
                }
                compact.push(' ');
            } else {
                compact.push(c);
            }
        }
        let mut words = compact.split(' ');
        let proto = words.next().unwrap_or("");
        let sent_by = words
            .next()
            .ok_or_else(|| SipError::value("Via", value, "no sent-by"))?;
        let mut p = proto.split('/');
        let (name, version, transport) = (p.next(), p.next(), p.next());
        let (Some(name), Some(_version), Some(transport), None) =
            (name, version, transport, p.next())
        else {
            return Err(SipError::value(
                "Via",
                value,
                "sent-protocol is not NAME/VERSION/TRANSPORT",
            ));
        };
        if !name.eq_ignore_ascii_case("SIP") || transport.is_empty() {
            return Err(SipError::value(
                "Via",
                value,
                "sent-protocol is not SIP/2.0/...",
            ));
        }
        let (host, port) = parse_hostport(sent_by, "Via", value)?;
        Ok(Via {
            transport: transport.to_ascii_uppercase(),
            host,
            port,
            params,
        })
    }

    /// The `branch` parameter.
    pub fn branch(&self) -> Option<&str> {
        find_param(&self.params, "branch").flatten()
    }

    /// Parameter by case-insensitive name; `Some(None)` for a flag (`rport`).
    pub fn param(&self, name: &str) -> Option<Option<&str>> {
        find_param(&self.params, name)
    }
}

impl fmt::Display for Via {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = format!("SIP/2.0/{} {}", self.transport, self.host);
        if let Some(p) = self.port {
            s.push(':');
            s.push_str(&p.to_string());
        }
        write_params(&mut s, &self.params);
        f.write_str(&s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sip_uri_with_user_port_and_params() {
        let u = SipUri::parse("sip:alice@192.0.2.10:5070;transport=tcp;lr").unwrap();
        assert_eq!(u.scheme, "sip");
        assert_eq!(u.user.as_deref(), Some("alice"));
        assert_eq!(u.host, "192.0.2.10");
        assert_eq!(u.port, Some(5070));
        assert_eq!(u.param("transport"), Some(Some("tcp")));
        assert_eq!(u.param("LR"), Some(None));
        assert_eq!(u.to_string(), "sip:alice@192.0.2.10:5070;transport=tcp;lr");
    }

    #[test]
    fn sips_uri_ipv6_and_headers_round_trip() {
        let u = SipUri::parse("SIPS:[2001:db8::1]:5061?subject=hi").unwrap();
        assert_eq!(u.scheme, "sips");
        assert_eq!(u.user, None);
        assert_eq!(u.host, "[2001:db8::1]");
        assert_eq!(u.port, Some(5061));
        assert_eq!(u.headers.as_deref(), Some("subject=hi"));
        assert_eq!(u.to_string(), "sips:[2001:db8::1]:5061?subject=hi");
    }

    #[test]
    fn sip_uri_rejects_bad_input() {
        for bad in [
            "",
            "alice@host",
            "tel:+123",
            "sip:",
            "sip:a@",
            "sip:h:99999",
            "sip:[::1",
            "sip:@h",
        ] {
            assert!(SipUri::parse(bad).is_err(), "{bad:?} should fail");
        }
    }

    #[test]
    fn name_addr_quoted_display_and_tag() {
        let n =
            NameAddr::parse(r#""Bob \"B\" Smith" <sip:bob@example.com>;tag=a73kszlfl"#).unwrap();
        assert_eq!(n.display.as_deref(), Some(r#"Bob "B" Smith"#));
        assert_eq!(n.uri, "sip:bob@example.com");
        assert_eq!(n.tag(), Some("a73kszlfl"));
        assert_eq!(
            n.to_string(),
            r#""Bob \"B\" Smith" <sip:bob@example.com>;tag=a73kszlfl"#
        );
        assert_eq!(NameAddr::parse(&n.to_string()).unwrap(), n);
    }

    #[test]
    fn name_addr_unquoted_display_and_bare_addr_spec() {
        let n = NameAddr::parse("Alice <sip:alice@atlanta.com;transport=udp>;expires=60").unwrap();
        assert_eq!(n.display.as_deref(), Some("Alice"));
        assert_eq!(n.uri, "sip:alice@atlanta.com;transport=udp");
        assert_eq!(n.param("expires"), Some(Some("60")));
        let b = NameAddr::parse("sip:carol@chicago.com;tag=887s").unwrap();
        assert_eq!(b.display, None);
        assert_eq!(b.uri, "sip:carol@chicago.com");
        assert_eq!(b.tag(), Some("887s"));
        assert_eq!(b.to_string(), "<sip:carol@chicago.com>;tag=887s");
    }

    #[test]
    fn name_addr_rejects_malformed() {
        for bad in [
            "",
            "\"Bob <sip:bob@x>",
            "<sip:bob@x",
            "\"Bob\" sip:bob@x",
            "<>",
            "<sip:a@b> junk",
        ] {
            assert!(NameAddr::parse(bad).is_err(), "{bad:?} should fail");
        }
    }

    #[test]
    fn via_with_branch_rport_and_received() {
        let v = Via::parse(
            "SIP/2.0/UDP 10.0.0.5:5060;rport=5062;branch=z9hG4bK776asdhds;received=203.0.113.9",
        )
        .unwrap();
        assert_eq!(v.transport, "UDP");
        assert_eq!(v.host, "10.0.0.5");
        assert_eq!(v.port, Some(5060));
        assert_eq!(v.branch(), Some("z9hG4bK776asdhds"));
        assert_eq!(v.param("rport"), Some(Some("5062")));
        assert_eq!(
            v.to_string(),
            "SIP/2.0/UDP 10.0.0.5:5060;rport=5062;branch=z9hG4bK776asdhds;received=203.0.113.9"
        );
    }

    #[test]
    fn via_with_spaces_around_slashes_and_flag_param() {
        let v =
            Via::parse("SIP / 2.0 / tcp  client.example.com ; branch=z9hG4bKx ; rport").unwrap();
        assert_eq!(v.transport, "TCP");
        assert_eq!(v.host, "client.example.com");
        assert_eq!(v.port, None);
        assert_eq!(v.branch(), Some("z9hG4bKx"));
        assert_eq!(v.param("rport"), Some(None));
    }

    #[test]
    fn via_rejects_malformed() {
        for bad in [
            "",
            "SIP/2.0/UDP",
            "SIP/2.0 host",
            "HTTP/1.1/TCP host",
            "SIP/2.0/UDP host:x",
        ] {
            assert!(Via::parse(bad).is_err(), "{bad:?} should fail");
        }
    }
}
