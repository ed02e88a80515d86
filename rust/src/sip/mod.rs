//! SIP (RFC 3261) message parser and serializer, plus the structured header
//! values used by a UA: URIs, name-addrs and Via.

mod message;
mod uri;

#[cfg(test)]
pub(crate) mod message_tests;

pub use message::{
    canonical_header_name, header_all, header_first, parse_cseq, SipMessage, StartLine,
    MAX_MESSAGE_SIZE,
};
pub use uri::{NameAddr, SipUri, Via};

/// Parameters as written, in order: `;name=value` or `;name`.
pub type Params = Vec<(String, Option<String>)>;

/// Split `s` on `sep` outside double-quoted strings (with `\` escapes) and
/// outside `<...>`.
pub(crate) fn split_outside_quotes(s: &str, sep: char) -> Vec<&str> {
    let mut out = Vec::new();
    let mut in_quotes = false;
    let mut escaped = false;
    let mut in_angle = false;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        if in_quotes {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_quotes = false;
            }
            continue;
        }
        match c {
            '"' => in_quotes = true,
            '<' => in_angle = true,
            '>' => in_angle = false,
            _ if c == sep && !in_angle => {
                // `start..i` are char boundaries: `start` is 0 or just after
                // an ASCII separator, `i` comes from char_indices.
                out.push(&s[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    out.push(s.get(start..).unwrap_or(""));
    out
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
