//! SIP message tests with real-world style fixtures.

use super::*;
use crate::error::SipError;

/// Fixtures are written with `\n`; SIP uses CRLF. `{LEN}` is replaced by the
/// body length so the fixtures stay readable.
fn crlf(head: &str, body: &str) -> Vec<u8> {
    let body = body.replace('\n', "\r\n");
    let head = head
        .replace('\n', "\r\n")
        .replace("{LEN}", &body.len().to_string());
    let mut v = head.into_bytes();
    v.extend_from_slice(body.as_bytes());
    v
}

pub(crate) const SOFTPHONE_SDP: &str = "v=0
o=alice 1832 2713 IN IP4 192.168.1.33
s=Talk
c=IN IP4 192.168.1.33
t=0 0
a=rtcp-xr:rcvr-rtt=all:10000 stat-summary=loss,dup,jitt,TTL voip-metrics
m=audio 7078 RTP/AVP 96 97 98 0 8 18 101 99 100
a=rtpmap:96 opus/48000/2
a=fmtp:96 useinbandfec=1
a=rtpmap:97 speex/16000
a=fmtp:97 vbr=on
a=rtpmap:98 speex/8000
a=fmtp:98 vbr=on
a=fmtp:18 annexb=yes
a=rtpmap:101 telephone-event/48000
a=rtpmap:99 telephone-event/16000
a=rtpmap:100 telephone-event/8000
a=rtcp-fb:* trr-int 1000
a=rtcp-fb:* ccm tmmbr
m=video 9078 RTP/AVP 96 97
a=rtpmap:96 VP8/90000
a=rtpmap:97 H264/90000
a=fmtp:97 profile-level-id=42801F
a=rtcp-fb:* trr-int 1000
a=rtcp-fb:* ccm tmmbr
a=rtcp-fb:96 nack pli
a=rtcp-fb:96 ccm fir
a=rtcp-fb:97 nack pli
a=rtcp-fb:97 ccm fir
";

const INVITE_HEAD: &str = "INVITE sip:stream1@192.168.1.20:5060 SIP/2.0
Via: SIP/2.0/UDP 192.168.1.33:5062;branch=z9hG4bK.Xq3nPd9Yc;rport
From: \"Linphone\" <sip:alice@192.168.1.20>;tag=lUu7fJbtc
To: <sip:stream1@192.168.1.20>
CSeq: 20 INVITE
Call-ID: 6kPq~nYwQx
Max-Forwards: 70
Supported: replaces, outbound, gruu
Allow: INVITE, ACK, CANCEL, OPTIONS, BYE, REFER, NOTIFY, MESSAGE, SUBSCRIBE, INFO, UPDATE
Content-Type: application/sdp
Content-Length: {LEN}
Contact: <sip:alice@192.168.1.33:5062;transport=udp>;+sip.instance=\"<urn:uuid:8a9b5e0e-1a2b-4c3d-9e8f-0a1b2c3d4e5f>\"
User-Agent: Linphone Desktop/4.4.10 (Ubuntu 22.04) LinphoneCore/5.1.64

";

pub(crate) fn invite() -> Vec<u8> {
    crlf(INVITE_HEAD, SOFTPHONE_SDP)
}

fn trying() -> Vec<u8> {
    crlf(
        "SIP/2.0 100 Trying
Via: SIP/2.0/UDP 192.168.1.33:5062;branch=z9hG4bK.Xq3nPd9Yc;rport=5062;received=192.168.1.33
From: \"Linphone\" <sip:alice@192.168.1.20>;tag=lUu7fJbtc
To: <sip:stream1@192.168.1.20>
Call-ID: 6kPq~nYwQx
CSeq: 20 INVITE
Content-Length: 0

",
        "",
    )
}

fn ringing() -> Vec<u8> {
    crlf(
        "SIP/2.0 180 Ringing
Via: SIP/2.0/UDP 192.168.1.33:5062;branch=z9hG4bK.Xq3nPd9Yc;rport=5062;received=192.168.1.33
Record-Route: <sip:10.0.0.1;lr>, <sip:10.0.0.2;lr;ftag=lUu7fJbtc>
From: \"Linphone\" <sip:alice@192.168.1.20>;tag=lUu7fJbtc
To: <sip:stream1@192.168.1.20>;tag=8321234356
Call-ID: 6kPq~nYwQx
CSeq: 20 INVITE
Contact: <sip:stream1@192.168.1.20:5060>
Content-Length: 0

",
        "",
    )
}

fn ok_with_sdp() -> Vec<u8> {
    crlf(
        "SIP/2.0 200 OK
Via: SIP/2.0/UDP 192.168.1.33:5062;branch=z9hG4bK.Xq3nPd9Yc;rport=5062;received=192.168.1.33
Record-Route: <sip:10.0.0.1;lr>
Record-Route: <sip:10.0.0.2;lr;ftag=lUu7fJbtc>
From: \"Linphone\" <sip:alice@192.168.1.20>;tag=lUu7fJbtc
To: <sip:stream1@192.168.1.20>;tag=8321234356
Call-ID: 6kPq~nYwQx
CSeq: 20 INVITE
Contact: <sip:stream1@192.168.1.20:5060>
Allow: INVITE, ACK, BYE, CANCEL, OPTIONS
Content-Type: application/sdp
Content-Length: {LEN}

",
        "v=0
o=- 3912 3912 IN IP4 192.168.1.20
s=sipstream
c=IN IP4 192.168.1.20
t=0 0
m=audio 40000 RTP/AVP 0 101
a=rtpmap:0 PCMU/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-15
a=recvonly
m=video 40002 RTP/AVP 97
a=rtpmap:97 H264/90000
a=fmtp:97 profile-level-id=42801F;packetization-mode=1
a=rtcp-fb:97 nack pli
a=recvonly
",
    )
}

fn unauthorized_401() -> Vec<u8> {
    crlf(
        "SIP/2.0 401 Unauthorized
Via: SIP/2.0/UDP 192.168.1.33:5062;branch=z9hG4bK.R1a;received=192.168.1.33;rport=5062
From: <sip:alice@pbx.example.com>;tag=7Gh2
To: <sip:alice@pbx.example.com>;tag=as5e8c2f1a
Call-ID: reg-1@192.168.1.33
CSeq: 1 REGISTER
Server: Asterisk PBX 18.20.0
Allow: INVITE, ACK, CANCEL, OPTIONS, BYE, REFER, SUBSCRIBE, NOTIFY, INFO, PUBLISH, MESSAGE
Supported: replaces, timer
WWW-Authenticate: Digest algorithm=MD5, realm=\"asterisk\", nonce=\"5f3a1c2b\"
Content-Length: 0

",
        "",
    )
}

fn proxy_auth_407() -> Vec<u8> {
    crlf(
        "SIP/2.0 407 Proxy Authentication Required
Via: SIP/2.0/UDP 192.168.1.33:5062;branch=z9hG4bK.I2;rport=5062
From: \"Linphone\" <sip:alice@sip.example.org>;tag=lUu7fJbtc
To: <sip:bob@sip.example.org>;tag=b27e1a1d33761e85846fc98f5f3a7e58.7d5a
Call-ID: 6kPq~nYwQx
CSeq: 102 INVITE
Proxy-Authenticate: Digest realm=\"sip.example.org\", nonce=\"ZbC1pWW0t8l7o3Yn1j0f0f1h2i3j\", qop=\"auth\"
Server: kamailio (5.7.2 (x86_64/linux))
Content-Length: 0

",
        "",
    )
}

fn ack() -> Vec<u8> {
    crlf(
        "ACK sip:stream1@192.168.1.20:5060 SIP/2.0
Via: SIP/2.0/UDP 192.168.1.33:5062;branch=z9hG4bK.ack1;rport
Route: <sip:10.0.0.2;lr;ftag=lUu7fJbtc>,<sip:10.0.0.1;lr>
From: \"Linphone\" <sip:alice@192.168.1.20>;tag=lUu7fJbtc
To: <sip:stream1@192.168.1.20>;tag=8321234356
CSeq: 20 ACK
Call-ID: 6kPq~nYwQx
Max-Forwards: 70
Content-Length: 0

",
        "",
    )
}

fn bye() -> Vec<u8> {
    crlf(
        "BYE sip:alice@192.168.1.33:5062;transport=udp SIP/2.0
Via: SIP/2.0/UDP 192.168.1.20:5060;branch=z9hG4bK-524287-1---c9e8f7b4;rport
Max-Forwards: 70
From: <sip:stream1@192.168.1.20>;tag=8321234356
To: \"Linphone\" <sip:alice@192.168.1.20>;tag=lUu7fJbtc
Call-ID: 6kPq~nYwQx
CSeq: 2 BYE
User-Agent: sipstream
Content-Length: 0

",
        "",
    )
}

fn register_with_auth() -> Vec<u8> {
    crlf(
        "REGISTER sip:pbx.example.com SIP/2.0
Via: SIP/2.0/UDP 192.168.1.33:5062;branch=z9hG4bK.R2;rport
From: <sip:alice@pbx.example.com>;tag=7Gh2
To: <sip:alice@pbx.example.com>
Call-ID: reg-1@192.168.1.33
CSeq: 2 REGISTER
Contact: <sip:alice@192.168.1.33:5062>;expires=3600;+sip.instance=\"<urn:uuid:1>\"
Authorization: Digest username=\"alice\", realm=\"asterisk\", nonce=\"5f3a1c2b\", uri=\"sip:pbx.example.com\", response=\"0b6e5ab6e2b1e4a1c0a0b7a2b9c2f1d3\", algorithm=MD5
Expires: 3600
Max-Forwards: 70
User-Agent: Zoiper rv2.10.20.3
Allow-Events: presence, kpml, talk
Content-Length: 0

",
        "",
    )
}

fn options() -> Vec<u8> {
    crlf(
        "OPTIONS sip:192.168.1.20 SIP/2.0
Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKd9e1.keepalive.0
From: <sip:pinger@10.0.0.1>;tag=87b1
To: <sip:192.168.1.20>
Call-ID: 3c26700857f4-ping
CSeq: 1 OPTIONS
Max-Forwards: 70
Accept: application/sdp, application/pidf+xml
Content-Length: 0

",
        "",
    )
}

fn compact() -> Vec<u8> {
    crlf(
        "INVITE sip:bob@biloxi.com SIP/2.0
v: SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bKnashds8
f: Alice <sip:alice@atlanta.com>;tag=1928301774
t: Bob <sip:bob@biloxi.com>
i: a84b4c76e66710
CSeq: 314159 INVITE
m: <sip:alice@pc33.atlanta.com>
c: application/sdp
k: timer, 100rel
s: compact test
o: refer
x: 1800;refresher=uac
e: gzip
r: <sip:carol@chicago.com>
b: <sip:alice@atlanta.com>
u: talk
l: {LEN}

",
        "v=0\n",
    )
}

pub(crate) fn all_fixtures() -> Vec<Vec<u8>> {
    vec![
        invite(),
        trying(),
        ringing(),
        ok_with_sdp(),
        unauthorized_401(),
        proxy_auth_407(),
        ack(),
        bye(),
        register_with_auth(),
        options(),
        compact(),
    ]
}

#[test]
fn invite_from_softphone_parses_start_line_headers_and_sdp_body() {
    let m = SipMessage::parse(&invite()).unwrap();
    assert!(m.is_request());
    assert_eq!(m.method(), Some("INVITE"));
    assert_eq!(m.uri(), Some("sip:stream1@192.168.1.20:5060"));
    assert_eq!(m.call_id(), Some("6kPq~nYwQx"));
    assert_eq!(m.cseq(), Some((20, "INVITE".to_string())));
    assert_eq!(m.body, SOFTPHONE_SDP.replace('\n', "\r\n").as_bytes());
    assert_eq!(m.header("content-type"), Some("application/sdp"));
    assert_eq!(
        m.header_all("Supported"),
        vec!["replaces", "outbound", "gruu"]
    );
    assert_eq!(m.header_all("Allow").len(), 11);
    // quoted '<' in +sip.instance and no comma: one Contact
    assert_eq!(m.header_all("m").len(), 1);
    let contact = NameAddr::parse(m.header("Contact").unwrap()).unwrap();
    assert_eq!(contact.uri, "sip:alice@192.168.1.33:5062;transport=udp");
    let from = NameAddr::parse(m.header("From").unwrap()).unwrap();
    assert_eq!(from.display.as_deref(), Some("Linphone"));
    assert_eq!(from.tag(), Some("lUu7fJbtc"));
    let via = Via::parse(m.header("v").unwrap()).unwrap();
    assert_eq!(via.branch(), Some("z9hG4bK.Xq3nPd9Yc"));
}

#[test]
fn provisional_and_final_responses_parse() {
    let t = SipMessage::parse(&trying()).unwrap();
    assert!(!t.is_request());
    assert_eq!((t.status(), t.reason()), (Some(100), Some("Trying")));
    assert!(t.body.is_empty());
    let r = SipMessage::parse(&ringing()).unwrap();
    assert_eq!(r.status(), Some(180));
    assert_eq!(
        r.header_all("Record-Route"),
        vec!["<sip:10.0.0.1;lr>", "<sip:10.0.0.2;lr;ftag=lUu7fJbtc>"]
    );
    let ok = SipMessage::parse(&ok_with_sdp()).unwrap();
    assert_eq!((ok.status(), ok.reason()), (Some(200), Some("OK")));
    assert_eq!(ok.header_all("record-route").len(), 2);
    assert!(ok.body.starts_with(b"v=0\r\n"));
    assert!(ok.body.ends_with(b"a=recvonly\r\n"));
    let to = NameAddr::parse(ok.header("To").unwrap()).unwrap();
    assert_eq!(to.tag(), Some("8321234356"));
}

#[test]
fn challenges_in_401_and_407_are_not_split() {
    let m = SipMessage::parse(&unauthorized_401()).unwrap();
    assert_eq!(m.status(), Some(401));
    assert_eq!(
        m.header_all("www-authenticate"),
        vec!["Digest algorithm=MD5, realm=\"asterisk\", nonce=\"5f3a1c2b\""]
    );
    assert!(m.headers.iter().any(|(n, _)| n == "WWW-Authenticate"));
    let p = SipMessage::parse(&proxy_auth_407()).unwrap();
    assert_eq!(p.status(), Some(407));
    assert_eq!(p.reason(), Some("Proxy Authentication Required"));
    assert_eq!(p.header_all("Proxy-Authenticate").len(), 1);
    assert!(p
        .header("Proxy-Authenticate")
        .unwrap()
        .contains("qop=\"auth\""));
    assert_eq!(p.cseq(), Some((102, "INVITE".to_string())));
}

#[test]
fn ack_bye_register_options_parse() {
    let a = SipMessage::parse(&ack()).unwrap();
    assert_eq!(a.method(), Some("ACK"));
    assert_eq!(
        a.header_all("Route"),
        vec!["<sip:10.0.0.2;lr;ftag=lUu7fJbtc>", "<sip:10.0.0.1;lr>"]
    );
    let b = SipMessage::parse(&bye()).unwrap();
    assert_eq!(b.method(), Some("BYE"));
    assert_eq!(b.uri(), Some("sip:alice@192.168.1.33:5062;transport=udp"));
    assert_eq!(b.cseq(), Some((2, "BYE".into())));
    let r = SipMessage::parse(&register_with_auth()).unwrap();
    assert_eq!(r.method(), Some("REGISTER"));
    assert_eq!(r.header_all("Authorization").len(), 1);
    assert_eq!(r.header("Expires"), Some("3600"));
    // Allow-Events is not a split header
    assert_eq!(r.header_all("u"), vec!["presence, kpml, talk"]);
    let c = NameAddr::parse(r.header("Contact").unwrap()).unwrap();
    assert_eq!(c.param("expires"), Some(Some("3600")));
    let o = SipMessage::parse(&options()).unwrap();
    assert_eq!(o.method(), Some("OPTIONS"));
    assert_eq!(
        o.header_all("Accept"),
        vec!["application/sdp", "application/pidf+xml"]
    );
}

#[test]
fn compact_forms_are_expanded_to_canonical_names() {
    let m = SipMessage::parse(&compact()).unwrap();
    let names: Vec<&str> = m.headers.iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        vec![
            "Via",
            "From",
            "To",
            "Call-ID",
            "CSeq",
            "Contact",
            "Content-Type",
            "Supported",
            "Supported",
            "Subject",
            "Event",
            "Session-Expires",
            "Content-Encoding",
            "Refer-To",
            "Referred-By",
            "Allow-Events",
            "Content-Length",
        ]
    );
    assert_eq!(m.body, b"v=0\r\n");
    assert_eq!(m.header("i"), Some("a84b4c76e66710"));
}

#[test]
fn known_header_names_get_canonical_capitalization() {
    let data = b"OPTIONS sip:x@y SIP/2.0\r\ncall-id: abc\r\ncseq: 1 OPTIONS\r\nWWW-AUTHENTICATE: Digest realm=\"r\"\r\nX-Custom-thing: 1\r\nmax-forwards: 70\r\n\r\n";
    let m = SipMessage::parse(data).unwrap();
    let names: Vec<&str> = m.headers.iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        vec![
            "Call-ID",
            "CSeq",
            "WWW-Authenticate",
            "X-Custom-thing",
            "Max-Forwards"
        ]
    );
    assert_eq!(m.header("x-custom-THING"), Some("1"));
    assert_eq!(canonical_header_name("l"), "Content-Length");
    assert_eq!(
        canonical_header_name("P-asserted-identity"),
        "P-Asserted-Identity"
    );
}

#[test]
fn multiple_via_on_one_line_and_on_several_lines() {
    let one = b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP p1.example.com;branch=z9hG4bKa, SIP/2.0/UDP p2.example.com:5070;branch=z9hG4bKb;received=\"1.2.3.4\"\r\nVia: SIP/2.0/TCP p3.example.com;branch=z9hG4bKc\r\nCall-ID: x\r\n\r\n";
    let m = SipMessage::parse(one).unwrap();
    let vias = m.header_all("Via");
    assert_eq!(vias.len(), 3);
    let parsed: Vec<Via> = vias.iter().map(|v| Via::parse(v).unwrap()).collect();
    assert_eq!(parsed[0].branch(), Some("z9hG4bKa"));
    assert_eq!(parsed[1].port, Some(5070));
    assert_eq!(parsed[2].transport, "TCP");
}

#[test]
fn contact_star_is_not_split_and_quoted_commas_are_kept() {
    let data = b"REGISTER sip:r SIP/2.0\r\nContact: *\r\nContact: \"Doe, John\" <sip:j@h>, <sip:k@h;a=1>\r\n\r\n";
    let m = SipMessage::parse(data).unwrap();
    assert_eq!(
        m.header_all("Contact"),
        vec!["*", "\"Doe, John\" <sip:j@h>", "<sip:k@h;a=1>"]
    );
}

#[test]
fn folded_header_is_unfolded() {
    let data = b"MESSAGE sip:a@b SIP/2.0\r\nSubject: I know you're there,\r\n   pick up the phone\r\n\tand talk to me!\r\nCall-ID: 1\r\nContent-Length: 0\r\n\r\n";
    let m = SipMessage::parse(data).unwrap();
    assert_eq!(
        m.header("Subject"),
        Some("I know you're there, pick up the phone and talk to me!")
    );
    assert_eq!(m.call_id(), Some("1"));
}

#[test]
fn lf_only_line_endings_are_accepted() {
    let data = b"BYE sip:a@b SIP/2.0\nCall-ID: lf\nCSeq: 3 BYE\nContent-Length: 4\n\nabcdEXTRA";
    let m = SipMessage::parse(data).unwrap();
    assert_eq!(m.call_id(), Some("lf"));
    assert_eq!(m.body, b"abcd");
}

#[test]
fn leading_crlf_keepalive_is_skipped() {
    let m = SipMessage::parse(b"\r\n\r\nOPTIONS sip:a@b SIP/2.0\r\nCall-ID: k\r\n\r\n").unwrap();
    assert_eq!(m.call_id(), Some("k"));
    assert!(SipMessage::parse(b"\r\n\r\n").is_err());
}

#[test]
fn body_is_rest_of_datagram_without_content_length() {
    let m = SipMessage::parse(b"MESSAGE sip:a@b SIP/2.0\r\nCall-ID: 1\r\n\r\nhello world").unwrap();
    assert_eq!(m.body, b"hello world");
}

#[test]
fn content_length_larger_than_available_is_an_error_with_offset() {
    let data = b"INVITE sip:a@b SIP/2.0\r\nCall-ID: 1\r\nContent-Length: 100\r\n\r\nshort";
    let err = SipMessage::parse(data).unwrap_err();
    let body_start = data.len() - 5;
    assert!(matches!(err, SipError::ContentLength { offset, .. } if offset == body_start));
    assert!(err.to_string().contains("100"), "{err}");
}

#[test]
fn content_length_not_a_number_is_an_error_at_its_line() {
    let data = b"INVITE sip:a@b SIP/2.0\r\nCall-ID: 1\r\nContent-Length: 12abc\r\n\r\n";
    let err = SipMessage::parse(data).unwrap_err();
    assert_eq!(err.offset(), Some(36));
    assert!(matches!(err, SipError::ContentLength { .. }));
}

#[test]
fn malformed_messages_report_byte_offsets() {
    let cases: &[(&[u8], usize)] = &[
        (b"INVITE sip:a@b\r\n\r\n", 0),
        (b"SIP/2.0 2000 OK\r\n\r\n", 8),
        (b"SIP/2.0 099 Hmm\r\n\r\n", 8),
        (b"INVITE sip:a@b SIP/3.0\r\n\r\n", 15),
        (b"INVITE sip:a@b SIP/2.0\r\nNoColonHere\r\n\r\n", 24),
        (b"INVITE sip:a@b SIP/2.0\r\n folded-first: x\r\n\r\n", 24),
        (b"INVITE sip:a@b SIP/2.0\r\nBad Name: x\r\n\r\n", 24),
        (b"INVITE sip:a@b SIP/2.0\r\nCall-ID: 1\r\n", 36),
    ];
    for (data, offset) in cases {
        let err = SipMessage::parse(data).unwrap_err();
        assert_eq!(
            err.offset(),
            Some(*offset),
            "{err} for {:?}",
            String::from_utf8_lossy(data)
        );
    }
}

#[test]
fn oversized_message_is_rejected() {
    let mut data = b"MESSAGE sip:a@b SIP/2.0\r\nCall-ID: 1\r\n\r\n".to_vec();
    data.resize(MAX_MESSAGE_SIZE + 1, b'x');
    assert!(matches!(
        SipMessage::parse(&data),
        Err(SipError::TooLarge { .. })
    ));
    data.truncate(MAX_MESSAGE_SIZE);
    assert!(SipMessage::parse(&data).is_ok());
}

#[test]
fn serializer_writes_one_line_per_entry_and_rewrites_content_length() {
    let m = SipMessage::parse(&ringing()).unwrap();
    let out = String::from_utf8(m.to_bytes()).unwrap();
    assert!(out.starts_with("SIP/2.0 180 Ringing\r\n"));
    assert!(out.contains(
        "Record-Route: <sip:10.0.0.1;lr>\r\nRecord-Route: <sip:10.0.0.2;lr;ftag=lUu7fJbtc>\r\n"
    ));
    assert!(out.ends_with("Content-Length: 0\r\n\r\n"));

    let mut m = SipMessage::parse(&invite()).unwrap();
    m.body = b"v=0\r\n".to_vec();
    let out = m.to_bytes();
    let again = SipMessage::parse(&out).unwrap();
    assert_eq!(again.header_all("Content-Length"), vec!["5"]);
    assert_eq!(again.body, b"v=0\r\n");
    assert_eq!(
        again.headers.iter().collect::<Vec<_>>(),
        m.headers
            .iter()
            .map(|(n, v)| (n, if n == "Content-Length" { "5" } else { v }))
            .collect::<Vec<_>>()
    );
}

#[test]
fn built_request_gets_canonical_names_and_appended_content_length() {
    let m = SipMessage::request(
        "INVITE",
        "sip:bob@example.com",
        vec![
            (
                "via".into(),
                "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1".into(),
            ),
            ("i".into(), "cid".into()),
            ("cseq".into(), "1 INVITE".into()),
            ("X-Evil".into(), "a\r\nInjected: yes".into()),
        ],
        b"v=0\r\n".to_vec(),
    );
    let out = String::from_utf8(m.to_bytes()).unwrap();
    assert_eq!(
        out,
        "INVITE sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1\r\nCall-ID: cid\r\nCSeq: 1 INVITE\r\nX-Evil: a  Injected: yes\r\nContent-Length: 5\r\n\r\nv=0\r\n"
    );
    let r = SipMessage::response(200, "OK", vec![], vec![]);
    assert_eq!(r.to_bytes(), b"SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n");
}

#[test]
fn every_fixture_round_trips_through_the_serializer() {
    for f in all_fixtures() {
        let m = SipMessage::parse(&f).unwrap();
        let again = SipMessage::parse(&m.to_bytes()).unwrap();
        assert_eq!(again.start, m.start);
        assert_eq!(again.body, m.body);
        fn strip(h: &Headers) -> Vec<(&str, &str)> {
            h.iter().filter(|(n, _)| *n != "Content-Length").collect()
        }
        assert_eq!(strip(&again.headers), strip(&m.headers));
    }
}

#[test]
fn truncation_at_every_byte_offset_never_panics() {
    for f in all_fixtures() {
        for cut in 0..=f.len() {
            let _ = SipMessage::parse(&f[..cut]);
        }
        // and truncation of the header section is always an error
        let header_end = f.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        for cut in 0..header_end + 3 {
            assert!(SipMessage::parse(&f[..cut]).is_err(), "cut at {cut}");
        }
    }
}

/// Minimal xorshift64 for reproducible fuzzing without dependencies.
pub(crate) struct XorShift(pub u64);
impl XorShift {
    pub(crate) fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

#[test]
fn random_garbage_and_mutated_messages_never_panic() {
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let fixtures = all_fixtures();
    let alphabet = b"SIP/2.0 :;,<>\"\r\n\t\\=@INVITEsip0123456789abcVia-Content-Length\xff\xc3";
    for i in 0..100_000u32 {
        let data: Vec<u8> = if i % 2 == 0 {
            let len = (rng.next() % 200) as usize;
            (0..len)
                .map(|_| {
                    let r = rng.next();
                    if r.is_multiple_of(4) {
                        r as u8
                    } else {
                        alphabet[(r >> 8) as usize % alphabet.len()]
                    }
                })
                .collect()
        } else {
            let mut d = fixtures[(rng.next() as usize) % fixtures.len()].clone();
            for _ in 0..1 + rng.next() % 8 {
                let pos = (rng.next() as usize) % d.len();
                let r = rng.next();
                match r % 3 {
                    0 => d[pos] = alphabet[(r >> 8) as usize % alphabet.len()],
                    1 => {
                        d.remove(pos);
                    }
                    _ => d.insert(pos, (r >> 16) as u8),
                }
            }
            d
        };
        if let Ok(m) = SipMessage::parse(&data) {
            let _ = SipMessage::parse(&m.to_bytes());
            for (n, v) in m.headers.iter() {
                match n {
                    "Via" => drop(Via::parse(v)),
                    "From" | "To" | "Contact" | "Route" | "Record-Route" => {
                        if let Ok(na) = NameAddr::parse(v) {
                            let _ = SipUri::parse(&na.uri);
                        }
                    }
                    _ => {}
                }
            }
        }
    }
}

// ----------------------------------------------------------- hostile input

/// `n` lines of `Route: <sip:pN>` after a request line.
fn many_routes(n: usize, content_length: bool) -> Vec<u8> {
    let mut d = b"OPTIONS sip:a@b SIP/2.0\r\n".to_vec();
    for i in 0..n {
        d.extend_from_slice(format!("Route: <sip:p{i}>\r\n").as_bytes());
    }
    if content_length {
        d.extend_from_slice(b"Content-Length: 0\r\n");
    }
    d.extend_from_slice(b"\r\n");
    d
}

#[test]
fn too_many_header_entries_are_rejected_at_the_first_one_over_the_cap() {
    let ok = SipMessage::parse(&many_routes(MAX_HEADERS, true)).unwrap();
    assert_eq!(ok.headers.len(), MAX_HEADERS + 1);
    let data = many_routes(MAX_HEADERS + 1, true);
    let err = SipMessage::parse(&data).unwrap_err();
    assert!(
        err.to_string().contains("more than 256 header entries"),
        "{err}"
    );
    let last_route = data
        .windows(13)
        .position(|w| w == b"Route: <sip:p256>".get(..13).unwrap())
        .unwrap();
    assert!(err.offset().unwrap() >= last_route, "{err}");
    // comma-joined values count once per entry
    let mut joined = b"OPTIONS sip:a@b SIP/2.0\r\nAllow: ".to_vec();
    joined.extend_from_slice(vec!["A"; MAX_HEADERS + 1].join(",").as_bytes());
    joined.extend_from_slice(b"\r\n\r\n");
    assert!(SipMessage::parse(&joined).is_err());
    // tens of thousands of empty-ish lines stay an error, not work
    let mut flood = b"OPTIONS sip:a@b SIP/2.0\r\n".to_vec();
    while flood.len() < MAX_MESSAGE_SIZE - 10 {
        flood.extend_from_slice(b"a:\r\n");
    }
    flood.extend_from_slice(b"\r\n");
    assert!(SipMessage::parse(&flood).is_err());
}

#[test]
fn message_at_the_header_cap_without_content_length_survives_serialization() {
    // Found by the fuzzer: the serializer adds a Content-Length, which must
    // not push a message that parsed over the cap when parsed again.
    let m = SipMessage::parse(&many_routes(MAX_HEADERS, false)).unwrap();
    assert_eq!(m.headers.len(), MAX_HEADERS);
    let again = SipMessage::parse(&m.to_bytes()).unwrap();
    assert_eq!(again.headers.len(), MAX_HEADERS + 1);
    assert_eq!(again.header("Content-Length"), Some("0"));
}

#[test]
fn second_content_length_is_rejected_even_when_equal() {
    let data = b"INVITE sip:a@b SIP/2.0\r\nContent-Length: 4\r\nl: 4\r\n\r\nabcd";
    let err = SipMessage::parse(data).unwrap_err();
    assert!(
        matches!(err, SipError::ContentLength { offset: 43, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("offset 24"), "{err}");
}

#[test]
fn negative_signed_huge_or_empty_content_length_is_an_error_at_its_line() {
    for bad in [
        "-1",
        "+4",
        "4 4",
        "0x10",
        "",
        "99999999999999999999999999",
        "65537",
        "4;x",
    ] {
        let data =
            format!("BYE sip:a@b SIP/2.0\r\nCall-ID: 1\r\nContent-Length: {bad}\r\n\r\nabcd");
        let err = SipMessage::parse(data.as_bytes()).unwrap_err();
        assert!(
            matches!(err, SipError::ContentLength { offset: 33, .. }),
            "{bad:?}: {err}"
        );
    }
    // leading zeros and surrounding blanks are fine
    let m =
        SipMessage::parse(b"BYE sip:a@b SIP/2.0\r\nContent-Length:   0004 \r\n\r\nabcdef").unwrap();
    assert_eq!(m.body, b"abcd");
}

#[test]
fn nul_bytes_in_start_line_or_headers_are_rejected_but_allowed_in_the_body() {
    let cases: &[&[u8]] = &[
        b"INVITE sip:a\0@b SIP/2.0\r\n\r\n",
        b"SIP/2.0 200 O\0K\r\n\r\n",
        b"BYE sip:a@b SIP/2.0\r\nCall-ID: x\0y\r\n\r\n",
        b"BYE sip:a@b SIP/2.0\r\nCall\0-ID: x\r\n\r\n",
        b"BYE sip:a@b SIP/2.0\r\nSubject: a\r\n \0\r\n\r\n",
    ];
    for data in cases {
        let err = SipMessage::parse(data).unwrap_err();
        let nul = data.iter().position(|&b| b == 0);
        assert_eq!(err.offset(), nul, "{err}");
        assert!(err.to_string().contains("NUL byte"), "{err}");
    }
    let m =
        SipMessage::parse(b"MESSAGE sip:a@b SIP/2.0\r\nContent-Length: 3\r\n\r\n\0\x01\0").unwrap();
    assert_eq!(m.body, b"\0\x01\0");
}

#[test]
fn bare_cr_in_a_header_is_rejected_as_an_injection_attempt() {
    let data = b"BYE sip:a@b SIP/2.0\r\nCall-ID: 1\rContent-Length: 9\r\n\r\n";
    let err = SipMessage::parse(data).unwrap_err();
    assert_eq!(err.offset(), Some(31), "{err}");
    assert!(err.to_string().contains("bare CR"), "{err}");
    assert!(SipMessage::parse(b"SIP/2.0 200 OK\r\r\n\r\n").is_err());
}

#[test]
fn oversize_message_is_rejected_before_any_parsing() {
    let data = vec![b'x'; MAX_MESSAGE_SIZE + 1];
    assert_eq!(
        SipMessage::parse(&data),
        Err(SipError::TooLarge {
            size: MAX_MESSAGE_SIZE + 1,
            max: MAX_MESSAGE_SIZE
        })
    );
}

#[test]
fn very_long_header_line_parses_in_linear_time_up_to_the_size_limit() {
    let head = b"MESSAGE sip:a@b SIP/2.0\r\nSubject: ";
    let mut data = head.to_vec();
    data.resize(MAX_MESSAGE_SIZE - 4, b'a');
    data.extend_from_slice(b"\r\n\r\n");
    let started = std::time::Instant::now();
    let m = SipMessage::parse(&data).unwrap();
    assert_eq!(
        m.header("Subject").unwrap().len(),
        MAX_MESSAGE_SIZE - 4 - head.len()
    );
    // a long Via list of 64 KiB splits in one pass
    let mut via = b"SIP/2.0 200 OK\r\nVia: ".to_vec();
    while via.len() < MAX_MESSAGE_SIZE - 100 {
        via.extend_from_slice(b"\"a,b,c,d,e,f,g,h\"");
    }
    via.extend_from_slice(b"\r\n\r\n");
    assert_eq!(SipMessage::parse(&via).unwrap().header_all("Via").len(), 1);
    assert!(started.elapsed() < std::time::Duration::from_secs(1));
}

#[test]
fn serializer_neutralizes_cr_lf_in_every_field_given_to_it() {
    let evil = "x\r\nInjected: 1\r\n\r\nBODY";
    let m = SipMessage::request(
        format!("INVITE{evil}"),
        format!("sip:a@b{evil}"),
        vec![
            (format!("X-Name{evil}"), evil.to_string()),
            ("Call-ID".into(), evil.to_string()),
        ],
        b"hi".to_vec(),
    );
    let out = m.to_bytes();
    let text = String::from_utf8(out.clone()).unwrap();
    // start line + 3 header lines + blank line, then the body
    assert_eq!(text.matches("\r\n").count(), 5, "{text}");
    assert!(text.ends_with("Content-Length: 2\r\n\r\nhi"), "{text}");
    let r = SipMessage::response(200, format!("OK{evil}"), vec![], vec![]);
    assert_eq!(
        r.to_bytes(),
        b"SIP/2.0 200 OKx  Injected: 1    BODY\r\nContent-Length: 0\r\n\r\n"
    );
    // what comes back is one header per line, and no "Injected" header
    let again = SipMessage::parse(&out);
    if let Ok(again) = again {
        assert_eq!(again.header("Injected"), None);
    }
}

#[test]
fn line_end_search_agrees_with_a_plain_scan() {
    let mut rng = XorShift(0x2545_F491_4F6C_DD1D);
    for _ in 0..20_000 {
        let len = (rng.next() % 40) as usize;
        let data: Vec<u8> = (0..len)
            .map(|_| match rng.next() % 6 {
                0 => b'\n',
                1 => b'\r',
                2 => 0,
                _ => rng.next() as u8,
            })
            .collect();
        let plain = data.iter().position(|&b| matches!(b, b'\n' | b'\r' | 0));
        assert_eq!(super::message::find_line_end(&data), plain, "{data:?}");
    }
}

// ------------------------------------------------ dialog-matching accessors

/// What the accessors must agree with: the From/To value parsed as a
/// `NameAddr`.
fn tag_via_name_addr(m: &SipMessage, name: &str) -> Result<Option<String>, String> {
    match m.header(name) {
        None => Ok(None),
        Some(v) => NameAddr::parse(v)
            .map(|n| n.tag().map(str::to_string))
            .map_err(|e| e.to_string()),
    }
}

fn assert_accessors_agree(m: &SipMessage) {
    let own = |r: Result<Option<&str>, SipError>| {
        r.map(|t| t.map(str::to_string)).map_err(|e| e.to_string())
    };
    assert_eq!(own(m.from_tag()), tag_via_name_addr(m, "From"));
    assert_eq!(own(m.to_tag()), tag_via_name_addr(m, "To"));
    assert_eq!(m.call_id(), m.header("Call-ID"));
    assert_eq!(m.cseq(), m.header("CSeq").and_then(parse_cseq));
}

#[test]
fn dialog_accessors_read_what_the_headers_say() {
    let m = SipMessage::parse(&invite()).unwrap();
    assert_eq!(m.from_tag().unwrap(), Some("lUu7fJbtc"));
    assert_eq!(m.to_tag().unwrap(), None);
    assert_eq!(m.call_id(), Some("6kPq~nYwQx"));
    assert_eq!(m.cseq(), Some((20, "INVITE".to_string())));
    assert_eq!(m.headers.cseq(), Some((20, "INVITE")));
    for f in all_fixtures() {
        assert_accessors_agree(&SipMessage::parse(&f).unwrap());
    }
}

#[test]
fn tag_accessors_take_compact_forms_addr_specs_and_any_param_case() {
    let m = SipMessage::parse(
        b"BYE sip:a@b SIP/2.0\r\nf: sip:alice@h;TAG = x1 ;lr\r\nt: \"Q\\\" t\" <sip:b@h>;tag=y2\r\n\r\n",
    )
    .unwrap();
    assert_eq!(m.from_tag().unwrap(), Some("x1"));
    assert_eq!(m.to_tag().unwrap(), Some("y2"));
    assert_accessors_agree(&m);
    // a flag "tag" has no value; a later tag= is not looked at
    let m = SipMessage::parse(b"BYE sip:a@b SIP/2.0\r\nFrom: <sip:a@h>;tag;tag=z\r\n\r\n").unwrap();
    assert_eq!(m.from_tag().unwrap(), None);
    assert_accessors_agree(&m);
}

#[test]
fn tag_of_a_malformed_from_is_the_same_error_as_name_addr_gives() {
    for from in [
        "\"unterminated <sip:a@h>",
        "<sip:a@h",
        "<>;tag=1",
        "<sip:a@h> junk;tag=1",
        "\"x\" sip:a@h",
        "a b;tag=1",
    ] {
        let data = format!("BYE sip:a@b SIP/2.0\r\nFrom: {from}\r\n\r\n");
        let m = SipMessage::parse(data.as_bytes()).unwrap();
        assert!(m.from_tag().is_err(), "{from}");
        assert_accessors_agree(&m);
    }
    // an empty From is an error too (NameAddr.parse("") is one)
    let m = SipMessage::parse(b"BYE sip:a@b SIP/2.0\r\nFrom:\r\n\r\n").unwrap();
    assert!(m.from_tag().is_err());
}

#[test]
fn folded_from_is_looked_up_with_its_continuation() {
    let m = SipMessage::parse(
        b"BYE sip:a@b SIP/2.0\r\nFrom: <sip:a@h>\r\n  ;tag=folded\r\nCall-ID: c\r\n\r\n",
    )
    .unwrap();
    assert_eq!(m.header("From"), Some("<sip:a@h> ;tag=folded"));
    assert_eq!(m.from_tag().unwrap(), Some("folded"));
    assert_eq!(m.call_id(), Some("c"));
}

#[test]
fn non_utf8_header_values_are_replaced_and_later_headers_still_read() {
    let m = SipMessage::parse(
        b"BYE sip:a@b SIP/2.0\r\nSubject: caf\xe9 \xff\r\nFrom: <sip:a@h>;tag=\xc3\xa9t\xc3\xa9\r\nCall-ID: c\xff\r\nCSeq: 2 BYE\r\n\r\n",
    )
    .unwrap();
    assert_eq!(m.header("Subject"), Some("caf\u{fffd} \u{fffd}"));
    assert_eq!(m.from_tag().unwrap(), Some("été"));
    assert_eq!(m.call_id(), Some("c\u{fffd}"));
    assert_eq!(m.cseq(), Some((2, "BYE".to_string())));
    assert_accessors_agree(&m);
}

#[test]
fn values_past_the_first_utf8_check_and_across_its_end_are_exact() {
    // A header section of several KiB, with multi-byte characters at every
    // offset around where the first UTF-8 check stops (1 KiB in).
    for pad in 990..1040 {
        let mut d = b"OPTIONS sip:a@b SIP/2.0\r\n".to_vec();
        d.extend_from_slice(b"X-Pad: ");
        d.extend(std::iter::repeat_n(b'p', pad));
        d.extend_from_slice(b"\r\nSubject: \xc3\xa9\xe2\x82\xac\xf0\x9f\x8e\xa5 ok\r\n");
        for i in 0..60 {
            d.extend_from_slice(format!("X-More-{i}: v\u{e9}{i}\r\n").as_bytes());
        }
        d.extend_from_slice(b"Call-ID: tail\r\n\r\n");
        let m = SipMessage::parse(&d).unwrap();
        assert_eq!(m.header("Subject"), Some("é€🎥 ok"), "pad {pad}");
        assert_eq!(m.header("X-More-59"), Some("vé59"));
        assert_eq!(m.call_id(), Some("tail"));
    }
}

#[test]
fn accessors_agree_with_name_addr_on_mutated_messages() {
    let mut rng = XorShift(0x5DEE_CE66_D1CE_4E5B);
    let fixtures = all_fixtures();
    let alphabet = b";=\"\\<> ,:tagTAG\xc3\xa9\xff";
    for _ in 0..20_000 {
        let mut d = fixtures[(rng.next() as usize) % fixtures.len()].clone();
        for _ in 0..1 + rng.next() % 4 {
            let pos = (rng.next() as usize) % d.len();
            d.insert(pos, alphabet[(rng.next() as usize) % alphabet.len()]);
        }
        if let Ok(m) = SipMessage::parse(&d) {
            assert_accessors_agree(&m);
        }
    }
}
