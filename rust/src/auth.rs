//! HTTP digest authentication as used by SIP (RFC 2617, RFC 7616, RFC 8760):
//! challenge parsing, response computation and the Authorization value.

use crate::error::AuthError;
use md5::Md5;
use sha2::{Digest, Sha256, Sha512_256};

/// Parameters of a `WWW-Authenticate` / `Proxy-Authenticate` Digest
/// challenge: lower-cased names, unquoted values, plus `("scheme", "Digest")`
/// first.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Challenge {
    pub params: Vec<(String, String)>,
}

impl Challenge {
    /// Parameter value by (case-insensitive) name.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn from_pairs<I, K, V>(pairs: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        Challenge {
            params: pairs
                .into_iter()
                .map(|(k, v)| (k.into().to_ascii_lowercase(), v.into()))
                .collect(),
        }
    }
}

/// Parse a challenge header value. Errors when it is not a Digest challenge
/// or a parameter is malformed.
pub fn parse_challenge(value: &str) -> Result<Challenge, AuthError> {
    let v = value.trim_start();
    let lead = value.len() - v.len();
    let scheme_end = v.find(|c: char| c.is_whitespace()).unwrap_or(v.len());
    let scheme = v.get(..scheme_end).unwrap_or("");
    if !scheme.eq_ignore_ascii_case("Digest") {
        return Err(AuthError::NotDigest {
            scheme: scheme.to_string(),
        });
    }
    let mut params = vec![("scheme".to_string(), "Digest".to_string())];
    let chars: Vec<(usize, char)> = v.char_indices().collect();
    let mut i = chars
        .iter()
        .position(|&(o, _)| o >= scheme_end)
        .unwrap_or(chars.len());
    let at = |i: usize| chars.get(i).map(|&(_, c)| c);
    let offset = |i: usize| lead + chars.get(i).map_or(v.len(), |&(o, _)| o);
    loop {
        while at(i).is_some_and(|c| c.is_whitespace() || c == ',') {
            i += 1;
        }
        if at(i).is_none() {
            break;
        }
        let key_start = i;
        let mut key = String::new();
        while let Some(c) = at(i).filter(|&c| c != '=' && c != ',' && !c.is_whitespace()) {
            key.push(c);
            i += 1;
        }
        while at(i).is_some_and(char::is_whitespace) {
            i += 1;
        }
        if at(i) != Some('=') {
            return Err(AuthError::Syntax {
                offset: offset(key_start),
                msg: format!("parameter {key:?} has no '='"),
            });
        }
        i += 1;
        while at(i).is_some_and(char::is_whitespace) {
            i += 1;
        }
        let mut val = String::new();
        if at(i) == Some('"') {
            let quote_start = i;
            i += 1;
            loop {
                match at(i) {
                    None => {
                        return Err(AuthError::Syntax {
                            offset: offset(quote_start),
                            msg: format!("unterminated quoted value of {key:?}"),
                        })
                    }
                    Some('"') => {
                        i += 1;
                        break;
                    }
                    Some('\\') => {
                        if let Some(c) = at(i + 1) {
                            val.push(c);
                        }
                        i += 2;
                    }
                    Some(c) => {
                        val.push(c);
                        i += 1;
                    }
                }
            }
        } else {
            while let Some(c) = at(i).filter(|&c| c != ',') {
                val.push(c);
                i += 1;
            }
            val = val.trim_end().to_string();
        }
        params.push((key.to_ascii_lowercase(), val));
    }
    Ok(Challenge { params })
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Hash {
    Md5,
    Sha256,
    Sha512_256,
}

fn hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        // both indices are nibbles (< 16), in bounds of the 16-byte table
        s.push(char::from(HEX[usize::from(b >> 4)]));
        s.push(char::from(HEX[usize::from(b & 0x0f)]));
    }
    s
}

impl Hash {
    fn h(self, data: &str) -> String {
        match self {
            Hash::Md5 => hex(&Md5::digest(data.as_bytes())),
            Hash::Sha256 => hex(&Sha256::digest(data.as_bytes())),
            Hash::Sha512_256 => hex(&Sha512_256::digest(data.as_bytes())),
        }
    }
}

/// `(hash, is_sess)` for an algorithm name; empty means MD5.
fn algorithm(name: &str) -> Result<(Hash, bool), AuthError> {
    let upper = name.trim().to_ascii_uppercase();
    let (base, sess) = match upper.strip_suffix("-SESS") {
        Some(b) => (b, true),
        None => (upper.as_str(), false),
    };
    let hash = match base {
        "" | "MD5" => Hash::Md5,
        "SHA-256" => Hash::Sha256,
        "SHA-512-256" => Hash::Sha512_256,
        _ => {
            return Err(AuthError::UnsupportedAlgorithm {
                algorithm: name.to_string(),
            })
        }
    };
    Ok((hash, sess))
}

/// The hex `response` value (RFC 2617 §3.2.2 / RFC 7616 §3.4.1).
/// `qop` is `None` for RFC 2069 compatibility, else `"auth"`; `cnonce` and
/// `nc` are required with a qop or a `-sess` algorithm.
#[allow(clippy::too_many_arguments)] // mirrors the RFC's inputs one to one
pub fn digest_response(
    algorithm_name: &str,
    username: &str,
    realm: &str,
    password: &str,
    method: &str,
    uri: &str,
    nonce: &str,
    qop: Option<&str>,
    cnonce: Option<&str>,
    nc: Option<u32>,
) -> Result<String, AuthError> {
    let (hash, sess) = algorithm(algorithm_name)?;
    let mut ha1 = hash.h(&format!("{username}:{realm}:{password}"));
    if sess {
        let cnonce = cnonce.ok_or(AuthError::Missing { param: "cnonce" })?;
        ha1 = hash.h(&format!("{ha1}:{nonce}:{cnonce}"));
    }
    let ha2 = hash.h(&format!("{method}:{uri}"));
    match qop.map(str::trim).filter(|q| !q.is_empty()) {
        None => Ok(hash.h(&format!("{ha1}:{nonce}:{ha2}"))),
        Some(q) if q.eq_ignore_ascii_case("auth") => {
            let cnonce = cnonce.ok_or(AuthError::Missing { param: "cnonce" })?;
            let nc = nc.ok_or(AuthError::Missing { param: "nc" })?;
            Ok(hash.h(&format!("{ha1}:{nonce}:{nc:08x}:{cnonce}:auth:{ha2}")))
        }
        Some(q) => Err(AuthError::UnsupportedQop { qop: q.to_string() }),
    }
}

fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// The whole `Authorization` / `Proxy-Authorization` header value answering
/// `challenge`: qop=auth when offered, else RFC 2069 style.
pub fn digest_authorization(
    username: &str,
    password: &str,
    method: &str,
    uri: &str,
    challenge: &Challenge,
    cnonce: &str,
    nc: u32,
) -> Result<String, AuthError> {
    if let Some(scheme) = challenge.get("scheme") {
        if !scheme.eq_ignore_ascii_case("Digest") {
            return Err(AuthError::NotDigest {
                scheme: scheme.to_string(),
            });
        }
    }
    let realm = challenge
        .get("realm")
        .ok_or(AuthError::Missing { param: "realm" })?;
    let nonce = challenge
        .get("nonce")
        .ok_or(AuthError::Missing { param: "nonce" })?;
    let alg = challenge.get("algorithm");
    let qop = match challenge.get("qop") {
        None => None,
        Some(list) => {
            let offered: Vec<&str> = list
                .split(',')
                .map(str::trim)
                .filter(|q| !q.is_empty())
                .collect();
            if offered.iter().any(|q| q.eq_ignore_ascii_case("auth")) {
                Some("auth")
            } else if offered.is_empty() {
                None
            } else {
                return Err(AuthError::UnsupportedQop {
                    qop: list.to_string(),
                });
            }
        }
    };
    let (_, sess) = algorithm(alg.unwrap_or(""))?;
    let use_cnonce = qop.is_some() || sess;
    let response = digest_response(
        alg.unwrap_or("MD5"),
        username,
        realm,
        password,
        method,
        uri,
        nonce,
        qop,
        use_cnonce.then_some(cnonce),
        qop.map(|_| nc),
    )?;
    let mut out = format!(
        "Digest username={}, realm={}, nonce={}, uri={}, response={}",
        quote(username),
        quote(realm),
        quote(nonce),
        quote(uri),
        quote(&response)
    );
    if let Some(a) = alg {
        out.push_str(", algorithm=");
        out.push_str(a);
    }
    if use_cnonce {
        out.push_str(", cnonce=");
        out.push_str(&quote(cnonce));
    }
    if let Some(opaque) = challenge.get("opaque") {
        out.push_str(", opaque=");
        out.push_str(&quote(opaque));
    }
    if let Some(q) = qop {
        out.push_str(&format!(", qop={q}, nc={nc:08x}"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc2617_example_md5_qop_auth() {
        let r = digest_response(
            "MD5",
            "Mufasa",
            "testrealm@host.com",
            "Circle Of Life",
            "GET",
            "/dir/index.html",
            "dcd98b7102dd2f0e8b11d0f600bfb0c093",
            Some("auth"),
            Some("0a4f113b"),
            Some(1),
        )
        .unwrap();
        assert_eq!(r, "6629fae49393a05397450978507c4ef1");
    }

    const RFC7616_NONCE: &str = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v";
    const RFC7616_CNONCE: &str = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ";

    #[test]
    fn rfc7616_example_md5_and_sha256() {
        let args = |alg| {
            digest_response(
                alg,
                "Mufasa",
                "http-auth@example.org",
                "Circle of Life",
                "GET",
                "/dir/index.html",
                RFC7616_NONCE,
                Some("auth"),
                Some(RFC7616_CNONCE),
                Some(1),
            )
            .unwrap()
        };
        assert_eq!(args("MD5"), "8ca523f5e9506fed4657c9700eebdbec");
        assert_eq!(
            args("SHA-256"),
            "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"
        );
    }

    #[test]
    fn rfc7616_challenge_parses_and_authorization_matches() {
        let ch = parse_challenge(
            "Digest\r\n realm=\"http-auth@example.org\",\n qop=\"auth, auth-int\",\n algorithm=SHA-256,\n nonce=\"7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v\",\n opaque=\"FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS\"",
        )
        .unwrap();
        assert_eq!(ch.get("scheme"), Some("Digest"));
        assert_eq!(ch.get("realm"), Some("http-auth@example.org"));
        assert_eq!(ch.get("qop"), Some("auth, auth-int"));
        assert_eq!(ch.get("algorithm"), Some("SHA-256"));
        let auth = digest_authorization(
            "Mufasa",
            "Circle of Life",
            "GET",
            "/dir/index.html",
            &ch,
            RFC7616_CNONCE,
            1,
        )
        .unwrap();
        assert_eq!(
            auth,
            "Digest username=\"Mufasa\", realm=\"http-auth@example.org\", \
             nonce=\"7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v\", uri=\"/dir/index.html\", \
             response=\"753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1\", \
             algorithm=SHA-256, cnonce=\"f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ\", \
             opaque=\"FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS\", qop=auth, nc=00000001"
        );
    }

    #[test]
    fn rfc2069_no_qop_response_and_header() {
        // RFC 2069 style: response = H(HA1:nonce:HA2)
        let ha1 = hex(&Md5::digest(b"alice:asterisk:secret"));
        let ha2 = hex(&Md5::digest(b"REGISTER:sip:pbx.example.com"));
        let expect = hex(&Md5::digest(format!("{ha1}:5f3a1c2b:{ha2}").as_bytes()));
        let ch = parse_challenge("Digest algorithm=MD5, realm=\"asterisk\", nonce=\"5f3a1c2b\"")
            .unwrap();
        let auth = digest_authorization(
            "alice",
            "secret",
            "REGISTER",
            "sip:pbx.example.com",
            &ch,
            "c",
            1,
        )
        .unwrap();
        assert_eq!(
            auth,
            format!("Digest username=\"alice\", realm=\"asterisk\", nonce=\"5f3a1c2b\", uri=\"sip:pbx.example.com\", response=\"{expect}\", algorithm=MD5")
        );
    }

    #[test]
    fn md5_sess_uses_cnonce_in_ha1() {
        let ha1 = hex(&Md5::digest(b"bob:r:pw"));
        let ha1 = hex(&Md5::digest(format!("{ha1}:n:cn").as_bytes()));
        let ha2 = hex(&Md5::digest(b"INVITE:sip:x@y"));
        let expect = hex(&Md5::digest(
            format!("{ha1}:n:0000000a:cn:auth:{ha2}").as_bytes(),
        ));
        let got = digest_response(
            "MD5-sess",
            "bob",
            "r",
            "pw",
            "INVITE",
            "sip:x@y",
            "n",
            Some("auth"),
            Some("cn"),
            Some(10),
        )
        .unwrap();
        assert_eq!(got, expect);
        let ch = Challenge::from_pairs([
            ("realm", "r"),
            ("nonce", "n"),
            ("algorithm", "MD5-sess"),
            ("qop", "auth"),
        ]);
        let auth = digest_authorization("bob", "pw", "INVITE", "sip:x@y", &ch, "cn", 10).unwrap();
        assert!(auth.contains(&format!("response=\"{expect}\"")), "{auth}");
        assert!(auth.contains("nc=0000000a"));
    }

    #[test]
    fn kamailio_407_challenge_with_qop_auth() {
        let ch = parse_challenge("Digest realm=\"sip.example.org\", nonce=\"ZbC1pWW0t8l7o3Yn1j0f0f1h2i3j\", qop=\"auth\"").unwrap();
        let auth = digest_authorization(
            "alice",
            "pw",
            "INVITE",
            "sip:bob@sip.example.org",
            &ch,
            "abc",
            1,
        )
        .unwrap();
        assert!(
            auth.contains(", cnonce=\"abc\", qop=auth, nc=00000001"),
            "{auth}"
        );
        assert!(!auth.contains("algorithm"));
    }

    #[test]
    fn non_digest_and_malformed_challenges_are_errors() {
        assert!(matches!(
            parse_challenge("Basic realm=\"x\""),
            Err(AuthError::NotDigest { .. })
        ));
        assert!(matches!(
            parse_challenge(""),
            Err(AuthError::NotDigest { .. })
        ));
        assert!(matches!(
            parse_challenge("Digest realm=\"x"),
            Err(AuthError::Syntax { .. })
        ));
        assert!(matches!(
            parse_challenge("Digest realm"),
            Err(AuthError::Syntax { .. })
        ));
        let ch = Challenge::from_pairs([("realm", "r")]);
        assert!(matches!(
            digest_authorization("u", "p", "M", "sip:x", &ch, "c", 1),
            Err(AuthError::Missing { param: "nonce" })
        ));
        let ch = Challenge::from_pairs([("realm", "r"), ("nonce", "n"), ("algorithm", "SHA-1")]);
        assert!(matches!(
            digest_authorization("u", "p", "M", "sip:x", &ch, "c", 1),
            Err(AuthError::UnsupportedAlgorithm { .. })
        ));
        let ch = Challenge::from_pairs([("realm", "r"), ("nonce", "n"), ("qop", "auth-int")]);
        assert!(matches!(
            digest_authorization("u", "p", "M", "sip:x", &ch, "c", 1),
            Err(AuthError::UnsupportedQop { .. })
        ));
    }

    #[test]
    fn challenge_values_with_escapes_and_commas() {
        let ch = parse_challenge(r#"digest realm="a\"b, c", nonce=xyz , stale=FALSE"#).unwrap();
        assert_eq!(ch.get("realm"), Some("a\"b, c"));
        assert_eq!(ch.get("nonce"), Some("xyz"));
        assert_eq!(ch.get("STALE"), Some("FALSE"));
    }
}
