//! SDP (RFC 8866) parsing and building for offer/answer with SIP phones.

use crate::error::SdpError;
use std::fmt::Write as _;

/// One payload format of an m-section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Codec {
    pub payload_type: u8,
    /// Encoding name as written (`PCMU`, `opus`, `H264`); empty when a
    /// dynamic payload type has no rtpmap.
    pub name: String,
    pub clock_rate: u32,
    pub channels: Option<u16>,
    pub fmtp: Option<String>,
    pub rtcp_fb: Vec<String>,
}

impl Codec {
    pub fn new(payload_type: u8, name: impl Into<String>, clock_rate: u32) -> Self {
        Codec {
            payload_type,
            name: name.into(),
            clock_rate,
            channels: None,
            fmtp: None,
            rtcp_fb: Vec::new(),
        }
    }
}

/// Static payload types (RFC 3551) filled in when there is no rtpmap.
pub fn static_payload_type(pt: u8) -> Option<(&'static str, u32, Option<u16>)> {
    Some(match pt {
        0 => ("PCMU", 8000, None),
        3 => ("GSM", 8000, None),
        4 => ("G723", 8000, None),
        8 => ("PCMA", 8000, None),
        9 => ("G722", 8000, None),
        13 => ("CN", 8000, None),
        18 => ("G729", 8000, None),
        26 => ("JPEG", 90000, None),
        34 => ("H263", 90000, None),
        _ => return None,
    })
}

/// One `m=` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaDescription {
    /// `audio`, `video`, `application`, ...
    pub kind: String,
    pub port: u16,
    /// `RTP/AVP`, `RTP/AVPF`, `UDP/TLS/RTP/SAVPF`, ...
    pub proto: String,
    /// Numeric formats of the m-line, in order.
    pub formats: Vec<u8>,
    /// Non-numeric formats (e.g. `webrtc-datachannel`), kept for output.
    pub extra_formats: Vec<String>,
    /// `c=` address of this m-section.
    pub connection: Option<String>,
    /// `sendrecv` | `sendonly` | `recvonly` | `inactive`.
    pub direction: String,
    pub rtcp_port: Option<u16>,
    pub rtcp_mux: bool,
    /// One per numeric format in m-line order.
    pub codecs: Vec<Codec>,
    /// Every other `a=` line in order: `(name, value)`.
    pub attributes: Vec<(String, Option<String>)>,
}

impl MediaDescription {
    pub fn new(
        kind: impl Into<String>,
        port: u16,
        proto: impl Into<String>,
        codecs: Vec<Codec>,
    ) -> Self {
        MediaDescription {
            kind: kind.into(),
            port,
            proto: proto.into(),
            formats: codecs.iter().map(|c| c.payload_type).collect(),
            extra_formats: Vec::new(),
            connection: None,
            direction: "sendrecv".to_string(),
            rtcp_port: None,
            rtcp_mux: false,
            codecs,
            attributes: Vec::new(),
        }
    }

    /// Codec by payload type.
    pub fn codec(&self, pt: u8) -> Option<&Codec> {
        self.codecs.iter().find(|c| c.payload_type == pt)
    }
}

/// A whole session description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionDescription {
    pub origin_username: String,
    pub session_id: u64,
    pub session_version: u64,
    pub origin_address: String,
    pub session_name: String,
    /// Session-level `c=` address.
    pub connection: Option<String>,
    /// Session-level `a=` lines other than a direction (which is applied to
    /// media sections that have none).
    pub attributes: Vec<(String, Option<String>)>,
    pub media: Vec<MediaDescription>,
}

const DIRECTIONS: [&str; 4] = ["sendrecv", "sendonly", "recvonly", "inactive"];

/// `IN IP4 192.0.2.1` → `192.0.2.1`.
fn parse_connection(value: &str, line: usize) -> Result<String, SdpError> {
    let mut it = value.split_whitespace();
    match (it.next(), it.next(), it.next()) {
        (Some(_net), Some(_addrtype), Some(addr)) => Ok(addr.to_string()),
        _ => Err(SdpError::syntax(line, format!("bad c= line {value:?}"))),
    }
}

fn addr_type(addr: &str) -> &'static str {
    if addr.contains(':') {
        "IP6"
    } else {
        "IP4"
    }
}

/// `96 H264/90000` style attribute value → (pt, rest).
fn pt_and_rest(value: &str, line: usize, what: &str) -> Result<(String, String), SdpError> {
    let value = value.trim();
    let (pt, rest) = value
        .split_once(char::is_whitespace)
        .ok_or_else(|| SdpError::syntax(line, format!("bad a={what} value {value:?}")))?;
    Ok((pt.to_string(), rest.trim().to_string()))
}

struct MediaBuilder {
    media: MediaDescription,
    direction: Option<String>,
    rtpmaps: Vec<(u8, String, u32, Option<u16>)>,
    fmtps: Vec<(u8, String)>,
    fbs: Vec<(Option<u8>, String)>,
}

impl MediaBuilder {
    fn finish(self, default_direction: &str) -> MediaDescription {
        let mut m = self.media;
        m.direction = self
            .direction
            .unwrap_or_else(|| default_direction.to_string());
        m.codecs = m
            .formats
            .iter()
            .map(|&pt| {
                let mut c =
                    if let Some((_, name, rate, ch)) = self.rtpmaps.iter().find(|r| r.0 == pt) {
                        Codec {
                            channels: *ch,
                            ..Codec::new(pt, name.clone(), *rate)
                        }
                    } else if let Some((name, rate, ch)) = static_payload_type(pt) {
                        Codec {
                            channels: ch,
                            ..Codec::new(pt, name, rate)
                        }
                    } else {
                        Codec::new(pt, "", 0)
                    };
                c.fmtp = self.fmtps.iter().find(|f| f.0 == pt).map(|f| f.1.clone());
                c.rtcp_fb = self
                    .fbs
                    .iter()
                    .filter(|(fpt, _)| fpt.is_none() || *fpt == Some(pt))
                    .map(|(_, v)| v.clone())
                    .collect();
                c
            })
            .collect();
        m
    }
}

impl SessionDescription {
    pub fn new(origin_address: impl Into<String>, media: Vec<MediaDescription>) -> Self {
        SessionDescription {
            origin_username: "-".to_string(),
            session_id: 0,
            session_version: 0,
            origin_address: origin_address.into(),
            session_name: "-".to_string(),
            connection: None,
            attributes: Vec::new(),
            media,
        }
    }

    /// Parse SDP text (CRLF or LF line ends).
    pub fn parse(text: &str) -> Result<SessionDescription, SdpError> {
        let mut sd = SessionDescription::new("", Vec::new());
        let mut have_origin = false;
        let mut session_direction: Option<String> = None;
        let mut builders: Vec<MediaBuilder> = Vec::new();
        for (idx, raw) in text.lines().enumerate() {
            let line = idx + 1;
            let l = raw.trim_end_matches('\r');
            if l.trim().is_empty() {
                continue;
            }
            let (typ, value) = l
                .split_once('=')
                .ok_or_else(|| SdpError::syntax(line, format!("no '=' in {l:?}")))?;
            if typ.len() != 1 {
                return Err(SdpError::syntax(line, format!("bad line type {typ:?}")));
            }
            match typ {
                "v" if value.trim() != "0" => {
                    return Err(SdpError::syntax(
                        line,
                        format!("unsupported version {value:?}"),
                    ));
                }
                "o" => {
                    let f: Vec<&str> = value.split_whitespace().collect();
                    let [user, id, ver, _net, _at, addr] = f.as_slice() else {
                        return Err(SdpError::syntax(line, "o= needs 6 fields"));
                    };
                    sd.origin_username = (*user).to_string();
                    sd.session_id = id
                        .parse()
                        .map_err(|_| SdpError::syntax(line, format!("bad session id {id:?}")))?;
                    sd.session_version = ver.parse().map_err(|_| {
                        SdpError::syntax(line, format!("bad session version {ver:?}"))
                    })?;
                    sd.origin_address = (*addr).to_string();
                    have_origin = true;
                }
                "s" => sd.session_name = value.to_string(),
                "c" => {
                    let addr = parse_connection(value, line)?;
                    match builders.last_mut() {
                        Some(b) => b.media.connection = Some(addr),
                        None => sd.connection = Some(addr),
                    }
                }
                "m" => {
                    let f: Vec<&str> = value.split_whitespace().collect();
                    let [kind, port, proto, fmts @ ..] = f.as_slice() else {
                        return Err(SdpError::syntax(line, "m= needs media, port and proto"));
                    };
                    let port_only = port.split('/').next().unwrap_or("");
                    let port: u16 = port_only
                        .parse()
                        .map_err(|_| SdpError::syntax(line, format!("bad port {port:?}")))?;
                    let mut media = MediaDescription::new(*kind, port, *proto, Vec::new());
                    let rtp = proto.contains("RTP");
                    for f in fmts {
                        match f.parse::<u8>() {
                            Ok(pt) if rtp && pt < 128 => media.formats.push(pt),
                            Ok(_) if rtp => {
                                return Err(SdpError::syntax(
                                    line,
                                    format!("payload type {f} > 127"),
                                ))
                            }
                            _ if rtp => {
                                return Err(SdpError::syntax(
                                    line,
                                    format!("bad payload type {f:?}"),
                                ))
                            }
                            _ => media.extra_formats.push((*f).to_string()),
                        }
                    }
                    builders.push(MediaBuilder {
                        media,
                        direction: None,
                        rtpmaps: Vec::new(),
                        fmtps: Vec::new(),
                        fbs: Vec::new(),
                    });
                }
                "a" => {
                    let (name, val) = match value.split_once(':') {
                        Some((n, v)) => (n, Some(v)),
                        None => (value, None),
                    };
                    let Some(b) = builders.last_mut() else {
                        if val.is_none() && DIRECTIONS.contains(&name) {
                            session_direction = Some(name.to_string());
                        } else {
                            sd.attributes
                                .push((name.to_string(), val.map(str::to_string)));
                        }
                        continue;
                    };
                    let mut keep = false;
                    match (name, val) {
                        (d, None) if DIRECTIONS.contains(&d) => b.direction = Some(d.to_string()),
                        ("rtcp-mux", None) => b.media.rtcp_mux = true,
                        ("rtcp", Some(v)) => {
                            let p = v.split_whitespace().next().unwrap_or("");
                            b.media.rtcp_port = Some(p.parse().map_err(|_| {
                                SdpError::syntax(line, format!("bad a=rtcp port {p:?}"))
                            })?);
                        }
                        ("rtpmap", Some(v)) => {
                            let (pt, enc) = pt_and_rest(v, line, "rtpmap")?;
                            let mut parts = enc.split('/');
                            let ename = parts.next().unwrap_or("").to_string();
                            let rate = parts
                                .next()
                                .and_then(|r| r.trim().parse::<u32>().ok())
                                .ok_or_else(|| {
                                    SdpError::syntax(line, format!("bad rtpmap {v:?}"))
                                })?;
                            let ch = match parts.next() {
                                Some(c) => Some(c.trim().parse::<u16>().map_err(|_| {
                                    SdpError::syntax(line, format!("bad channels in {v:?}"))
                                })?),
                                None => None,
                            };
                            match pt.parse::<u8>() {
                                Ok(pt) if b.media.formats.contains(&pt) => {
                                    b.rtpmaps.push((pt, ename, rate, ch))
                                }
                                Ok(_) => keep = true,
                                Err(_) => {
                                    return Err(SdpError::syntax(
                                        line,
                                        format!("bad rtpmap payload type {pt:?}"),
                                    ))
                                }
                            }
                        }
                        ("fmtp", Some(v)) => {
                            let (pt, params) = pt_and_rest(v, line, "fmtp")
                                .unwrap_or((v.trim().to_string(), String::new()));
                            match pt.parse::<u8>() {
                                Ok(pt) if b.media.formats.contains(&pt) => {
                                    b.fmtps.push((pt, params))
                                }
                                _ => keep = true,
                            }
                        }
                        ("rtcp-fb", Some(v)) => {
                            let (pt, fb) = pt_and_rest(v, line, "rtcp-fb")?;
                            if pt == "*" {
                                b.fbs.push((None, fb));
                            } else {
                                match pt.parse::<u8>() {
                                    Ok(pt) if b.media.formats.contains(&pt) => {
                                        b.fbs.push((Some(pt), fb))
                                    }
                                    _ => keep = true,
                                }
                            }
                        }
                        _ => keep = true,
                    }
                    if keep {
                        b.media
                            .attributes
                            .push((name.to_string(), val.map(str::to_string)));
                    }
                }
                // t=, b=, i=, u=, e=, p=, r=, z=, k=: not needed by a gateway
                _ => {}
            }
        }
        if !have_origin {
            return Err(SdpError::Missing { what: "o=" });
        }
        let default_direction = session_direction.as_deref().unwrap_or("sendrecv");
        sd.media = builders
            .into_iter()
            .map(|b| b.finish(default_direction))
            .collect();
        Ok(sd)
    }

    /// SDP text with CRLF line ends. The m-line formats come from `codecs`
    /// (or `formats` when there are no codecs), then `extra_formats`.
    pub fn to_sdp_string(&self) -> String {
        let mut s = String::new();
        // writing to a String cannot fail
        let _ = write!(
            s,
            "v=0\r\no={} {} {} IN {} {}\r\ns={}\r\n",
            self.origin_username,
            self.session_id,
            self.session_version,
            addr_type(&self.origin_address),
            self.origin_address,
            if self.session_name.is_empty() {
                "-"
            } else {
                &self.session_name
            }
        );
        if let Some(c) = &self.connection {
            let _ = write!(s, "c=IN {} {}\r\n", addr_type(c), c);
        }
        s.push_str("t=0 0\r\n");
        write_attributes(&mut s, &self.attributes);
        for m in &self.media {
            let _ = write!(s, "m={} {} {}", m.kind, m.port, m.proto);
            if m.codecs.is_empty() {
                for f in &m.formats {
                    let _ = write!(s, " {f}");
                }
            }
            for c in &m.codecs {
                let _ = write!(s, " {}", c.payload_type);
            }
            for f in &m.extra_formats {
                let _ = write!(s, " {f}");
            }
            s.push_str("\r\n");
            if let Some(c) = &m.connection {
                let _ = write!(s, "c=IN {} {}\r\n", addr_type(c), c);
            }
            if let Some(p) = m.rtcp_port {
                let _ = write!(s, "a=rtcp:{p}\r\n");
            }
            for c in &m.codecs {
                if !c.name.is_empty() {
                    let _ = write!(s, "a=rtpmap:{} {}/{}", c.payload_type, c.name, c.clock_rate);
                    if let Some(ch) = c.channels {
                        let _ = write!(s, "/{ch}");
                    }
                    s.push_str("\r\n");
                }
                if let Some(f) = &c.fmtp {
                    let _ = write!(s, "a=fmtp:{} {}\r\n", c.payload_type, f);
                }
                for fb in &c.rtcp_fb {
                    let _ = write!(s, "a=rtcp-fb:{} {}\r\n", c.payload_type, fb);
                }
            }
            let _ = write!(s, "a={}\r\n", m.direction);
            if m.rtcp_mux {
                s.push_str("a=rtcp-mux\r\n");
            }
            write_attributes(&mut s, &m.attributes);
        }
        s
    }
}

fn write_attributes(s: &mut String, attrs: &[(String, Option<String>)]) {
    for (n, v) in attrs {
        s.push_str("a=");
        s.push_str(n);
        if let Some(v) = v {
            s.push(':');
            s.push_str(v);
        }
        s.push_str("\r\n");
    }
}

impl std::fmt::Display for SessionDescription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_sdp_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message_tests::SOFTPHONE_SDP;

    #[test]
    fn softphone_offer_parses_codecs_fmtp_and_rtcp_fb() {
        let sd = SessionDescription::parse(SOFTPHONE_SDP).unwrap();
        assert_eq!(sd.origin_username, "alice");
        assert_eq!(sd.session_id, 1832);
        assert_eq!(sd.session_version, 2713);
        assert_eq!(sd.origin_address, "192.168.1.33");
        assert_eq!(sd.session_name, "Talk");
        assert_eq!(sd.connection.as_deref(), Some("192.168.1.33"));
        assert_eq!(sd.attributes.len(), 1);
        assert_eq!(sd.attributes[0].0, "rtcp-xr");
        assert_eq!(sd.media.len(), 2);

        let a = &sd.media[0];
        assert_eq!(
            (a.kind.as_str(), a.port, a.proto.as_str()),
            ("audio", 7078, "RTP/AVP")
        );
        assert_eq!(a.formats, vec![96, 97, 98, 0, 8, 18, 101, 99, 100]);
        assert_eq!(a.codecs.len(), 9);
        let opus = a.codec(96).unwrap();
        assert_eq!(
            (opus.name.as_str(), opus.clock_rate, opus.channels),
            ("opus", 48000, Some(2))
        );
        assert_eq!(opus.fmtp.as_deref(), Some("useinbandfec=1"));
        assert_eq!(opus.rtcp_fb, vec!["trr-int 1000", "ccm tmmbr"]);
        let pcmu = a.codec(0).unwrap();
        assert_eq!((pcmu.name.as_str(), pcmu.clock_rate), ("PCMU", 8000));
        assert_eq!(a.codec(8).unwrap().name, "PCMA");
        let g729 = a.codec(18).unwrap();
        assert_eq!(
            (g729.name.as_str(), g729.fmtp.as_deref()),
            ("G729", Some("annexb=yes"))
        );
        assert_eq!(a.direction, "sendrecv");
        assert_eq!(a.connection, None);

        let v = &sd.media[1];
        let h264 = v.codec(97).unwrap();
        assert_eq!((h264.name.as_str(), h264.clock_rate), ("H264", 90000));
        assert_eq!(h264.fmtp.as_deref(), Some("profile-level-id=42801F"));
        assert_eq!(
            h264.rtcp_fb,
            vec!["trr-int 1000", "ccm tmmbr", "nack pli", "ccm fir"]
        );
    }

    #[test]
    fn media_level_connection_direction_rtcp_and_other_attributes() {
        let text = "v=0\no=- 1 2 IN IP4 10.0.0.1\ns=-\nt=0 0\na=sendonly\na=group:BUNDLE 0\n\
                    m=audio 5004 RTP/AVP 9 101\nc=IN IP4 10.0.0.9\na=rtpmap:101 telephone-event/8000\n\
                    a=fmtp:101 0-16\na=rtcp:5005 IN IP4 10.0.0.9\na=ptime:20\na=mid:0\n\
                    m=video 5006 RTP/AVPF 96\na=rtpmap:96 H264/90000\na=recvonly\na=rtcp-mux\n\
                    a=fmtp:96 packetization-mode=1;profile-level-id=42e01f\n";
        let sd = SessionDescription::parse(text).unwrap();
        assert_eq!(sd.connection, None);
        assert_eq!(
            sd.attributes,
            vec![("group".to_string(), Some("BUNDLE 0".to_string()))]
        );
        let a = &sd.media[0];
        assert_eq!(a.connection.as_deref(), Some("10.0.0.9"));
        assert_eq!(a.direction, "sendonly"); // inherited from the session level
        assert_eq!(a.rtcp_port, Some(5005));
        assert_eq!(a.codec(9).unwrap().name, "G722");
        assert_eq!(a.codec(101).unwrap().fmtp.as_deref(), Some("0-16"));
        assert_eq!(
            a.attributes,
            vec![
                ("ptime".to_string(), Some("20".to_string())),
                ("mid".to_string(), Some("0".to_string()))
            ]
        );
        let v = &sd.media[1];
        assert_eq!(v.direction, "recvonly");
        assert!(v.rtcp_mux);
        assert_eq!(v.proto, "RTP/AVPF");
    }

    #[test]
    fn build_then_parse_round_trip() {
        let mut h264 = Codec::new(102, "H264", 90000);
        h264.fmtp = Some("profile-level-id=42e01f;packetization-mode=1".into());
        h264.rtcp_fb = vec!["nack".into(), "nack pli".into(), "ccm fir".into()];
        let mut opus = Codec::new(111, "opus", 48000);
        opus.channels = Some(2);
        let mut audio = MediaDescription::new(
            "audio",
            40000,
            "RTP/AVP",
            vec![Codec::new(0, "PCMU", 8000), opus],
        );
        audio.direction = "recvonly".into();
        audio.attributes.push(("ptime".into(), Some("20".into())));
        let mut video = MediaDescription::new("video", 40002, "RTP/AVPF", vec![h264]);
        video.connection = Some("2001:db8::5".into());
        video.rtcp_port = Some(40003);
        video.rtcp_mux = true;
        let mut sd = SessionDescription::new("192.0.2.5", vec![audio, video]);
        sd.session_id = 42;
        sd.session_version = 7;
        sd.connection = Some("192.0.2.5".into());
        let text = sd.to_sdp_string();
        assert!(text.starts_with("v=0\r\no=- 42 7 IN IP4 192.0.2.5\r\ns=-\r\nc=IN IP4 192.0.2.5\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0 111\r\n"), "{text}");
        assert!(text.contains("c=IN IP6 2001:db8::5\r\n"));
        assert!(text.contains("a=rtcp-fb:102 nack pli\r\n"));
        assert!(text.ends_with("\r\n"));
        let back = SessionDescription::parse(&text).unwrap();
        assert_eq!(back, sd);
    }

    #[test]
    fn parsed_offer_survives_rebuild() {
        let sd = SessionDescription::parse(SOFTPHONE_SDP).unwrap();
        let again = SessionDescription::parse(&sd.to_sdp_string()).unwrap();
        assert_eq!(again, sd);
    }

    #[test]
    fn non_rtp_media_keeps_its_formats() {
        let text = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=sctp-port:5000\r\n";
        let sd = SessionDescription::parse(text).unwrap();
        assert_eq!(sd.media[0].extra_formats, vec!["webrtc-datachannel"]);
        assert!(sd
            .to_sdp_string()
            .contains("m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n"));
    }

    #[test]
    fn errors_name_the_line() {
        let cases = [
            ("v=0\no=- 1 1 IN IP4 h\nthis is not sdp\n", 3),
            ("v=0\no=- x 1 IN IP4 h\n", 2),
            ("v=0\no=- 1 1 IN IP4 h\nm=audio abc RTP/AVP 0\n", 3),
            (
                "v=0\no=- 1 1 IN IP4 h\nm=audio 1 RTP/AVP 0\na=rtpmap:0 PCMU\n",
                4,
            ),
            ("v=0\no=- 1 1 IN IP4 h\nm=audio 1 RTP/AVP 0 foo\n", 3),
            ("v=0\no=- 1 1 IN IP4 h\nc=IN IP4\n", 3),
            ("v=1\n", 1),
        ];
        for (text, line) in cases {
            let err = SessionDescription::parse(text).unwrap_err();
            assert_eq!(err.line(), Some(line), "{err} for {text:?}");
            assert!(err.to_string().contains(&format!("line {line}")));
        }
        assert!(matches!(
            SessionDescription::parse("v=0\ns=x\n"),
            Err(SdpError::Missing { .. })
        ));
    }
}
