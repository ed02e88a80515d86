//! RTCP: receiver reports every ~5 s with correct loss / sequence / jitter /
//! LSR-DLSR fields, SDES CNAME, latching of the send address, rtcp-mux, BYE.
mod common;
use common::*;
use sipstream_core::rtp::rtcp::write_receiver_report;
use sipstream_core::rtp::{parse_rtcp_compound, ReportBlock, RtcpPacket};
use sipstream_core::session::*;
use std::time::{Duration, Instant};

#[test]
fn receiver_reports_every_five_seconds_carry_rfc3550_statistics() {
    let t0 = Instant::now();
    let mut s = MediaSession::new(t0, config(Feedback::default()));
    let mut a = AudioSender {
        ssrc: 0xa0d,
        seq: 65500,
        ts: 0,
    };
    let mut now = t0;
    let mut out = Vec::new();
    let mut report_times = Vec::new();
    for i in 0..1000u64 {
        let p = a.next();
        // 1 in 50 lost; arrival jitter of 0..4 ms
        if i % 50 != 7 {
            s.handle_receive(t0 + ms(i * 20 + i % 5), LocalSocket::AUDIO_RTP, far(), &p);
        }
        let next = t0 + ms(i * 20 + 20);
        while now < next {
            now += ms(5);
            s.handle_timeout(now);
            let o = drain(&mut s);
            if !transmits(&o).is_empty() {
                report_times.push(now - t0);
            }
            out.extend(o);
        }
    }
    // 20 s of media: 2..8 reports spaced 2.5..7.5 s apart (randomized)
    assert!((2..=8).contains(&report_times.len()), "{report_times:?}");
    for w in report_times.windows(2) {
        let gap = w[1] - w[0];
        assert!(gap >= Duration::from_millis(2500) && gap <= Duration::from_millis(7500));
    }
    let t = transmits(&out);
    assert!(t.iter().all(|t| t.to == "10.0.0.2:40001".parse().unwrap()));
    assert!(t.iter().all(|t| t.from
        == LocalSocket {
            kind: MediaKind::Audio,
            rtcp: true
        }));
    let last = parse_rtcp_compound(&t.last().unwrap().data).unwrap();
    let RtcpPacket::ReceiverReport { ssrc, reports } = &last[0] else {
        panic!("compound starts with RR: {last:?}");
    };
    assert_eq!(*ssrc, SessionConfig::default().local_ssrc);
    let b = reports[0];
    assert_eq!(b.ssrc, 0xa0d);
    let received = (report_times.len() as u64, b.extended_highest_seq);
    assert!(
        b.extended_highest_seq > 0x1_0000,
        "wrapped once: {received:?}"
    );
    assert!(b.cumulative_lost >= 15 && b.cumulative_lost <= 20, "{b:?}");
    assert!(
        b.jitter > 0 && b.jitter < 8 * 5,
        "jitter in 8 kHz ticks: {}",
        b.jitter
    );
    assert!(matches!(&last[1], RtcpPacket::Sdes { cnames } if cnames[0].1 == "sipstream"));
    let st = s.stats().audio.unwrap();
    assert!(st.jitter_ms > 0.0 && st.jitter_ms < 5.0);
    assert_eq!(st.lost, 20);
}

#[test]
fn lsr_and_dlsr_echo_the_last_sender_report_and_rtcp_address_is_latched() {
    let t0 = Instant::now();
    let mut s = MediaSession::new(t0, config(Feedback::default()));
    let mut a = AudioSender {
        ssrc: 5,
        seq: 1,
        ts: 0,
    };
    s.handle_receive(
        t0,
        LocalSocket::AUDIO_RTP,
        "192.0.2.9:7000".parse().unwrap(),
        &a.next(),
    );
    let rtcp_from = "192.0.2.9:7001".parse().unwrap();
    let ntp: u64 = (3_900_000_000u64 << 32) | 0x8000_0000;
    s.handle_receive(
        t0 + ms(100),
        LocalSocket {
            kind: MediaKind::Audio,
            rtcp: true,
        },
        rtcp_from,
        &sender_report(5, ntp, 0),
    );
    assert_eq!(
        s.remote_rtp(MediaKind::Audio),
        Some("192.0.2.9:7000".parse().unwrap())
    );
    assert_eq!(s.remote_rtcp(MediaKind::Audio), Some(rtcp_from));
    let mut now = t0;
    let out = run_until(&mut s, &mut now, t0 + ms(8000), ms(50));
    let t = transmits(&out);
    assert!(!t.is_empty());
    assert_eq!(t[0].to, rtcp_from);
    let p = parse_rtcp_compound(&t[0].data).unwrap();
    let RtcpPacket::ReceiverReport { reports, .. } = &p[0] else {
        panic!()
    };
    assert_eq!(reports[0].last_sr, ((ntp >> 16) & 0xffff_ffff) as u32);
    let dlsr = f64::from(reports[0].delay_since_last_sr) / 65536.0;
    let sent_at = (now - t0).as_secs_f64(); // upper bound
    assert!(dlsr > 0.0 && dlsr < sent_at, "{dlsr}");
    assert_eq!(s.stats().audio.unwrap().sender_reports, 1);
}

#[test]
fn rtcp_mux_sends_reports_from_the_rtp_socket_to_the_rtp_source() {
    let t0 = Instant::now();
    let mut cfg = config(Feedback {
        pli: true,
        ..Feedback::default()
    });
    cfg.video.rtcp_mux = true;
    let mut s = MediaSession::new(t0, cfg);
    let src = "198.51.100.4:9999".parse().unwrap();
    let mut v = VideoSender::new(8, 0, 0);
    for p in v.next_frame(100).1 {
        s.handle_receive(t0, video_rtp(), src, &p);
    }
    s.request_keyframe(t0 + ms(10));
    let t = transmits(&drain(&mut s));
    assert_eq!(t.len(), 1);
    assert_eq!((t[0].to, t[0].from), (src, video_rtp()));
    let p = parse_rtcp_compound(&t[0].data).unwrap();
    assert!(matches!(p[2], RtcpPacket::Pli { media_ssrc: 8, .. }));
}

#[test]
fn bye_is_reported_as_an_event() {
    let t0 = Instant::now();
    let mut s = MediaSession::new(t0, config(Feedback::default()));
    let mut a = AudioSender {
        ssrc: 77,
        seq: 1,
        ts: 0,
    };
    s.handle_receive(t0, LocalSocket::AUDIO_RTP, far(), &a.next());
    let mut bye = Vec::new();
    sipstream_core::rtp::rtcp::write_receiver_report(&mut bye, 77, &[]);
    sipstream_core::rtp::rtcp::write_bye(&mut bye, 77, Some("hangup"));
    s.handle_receive(t0, LocalSocket::AUDIO_RTP, far(), &bye);
    let ev = events(&drain(&mut s));
    assert_eq!(
        ev,
        vec![Event::Bye {
            kind: Some(MediaKind::Audio),
            ssrc: 77,
            reason: Some("hangup".into())
        }]
    );
}

/// The far end's RR (SSRC 5) with a report block on `ssrc` echoing an SR.
fn echo(ssrc: u32, last_sr: u32, delay_since_last_sr: u32) -> Vec<u8> {
    let mut rr = Vec::new();
    let block = ReportBlock {
        ssrc,
        fraction_lost: 0,
        cumulative_lost: 0,
        extended_highest_seq: 3,
        jitter: 0,
        last_sr,
        delay_since_last_sr,
    };
    write_receiver_report(&mut rr, 5, &[block]);
    rr
}

#[test]
fn after_sending_rtp_our_reports_are_srs_and_their_echo_gives_the_rtt() {
    let t0 = Instant::now();
    let cfg = config(Feedback::default());
    let local_ssrc = cfg.local_ssrc;
    let mut s = MediaSession::new(t0, cfg);
    let mut a = AudioSender {
        ssrc: 5,
        seq: 1,
        ts: 0,
    };
    s.handle_receive(t0, LocalSocket::AUDIO_RTP, far(), &a.next());
    // three priming packets of 160 bytes, sent from outside the session
    for k in 0..3u32 {
        s.note_rtp_sent(
            t0 + ms(20 * u64::from(k)),
            MediaKind::Audio,
            1000 + 160 * k,
            160,
        );
    }
    let mut sr = None;
    let mut now = t0;
    while sr.is_none() && now < t0 + ms(8000) {
        now += ms(50);
        s.handle_timeout(now);
        for t in transmits(&drain(&mut s)) {
            if let Ok(packets) = parse_rtcp_compound(&t.data) {
                if let Some(RtcpPacket::SenderReport { ssrc, info, .. }) = packets.first() {
                    assert_eq!(*ssrc, local_ssrc);
                    sr = Some((now, *info));
                }
            }
        }
    }
    let (sent, info) = sr.expect("an SR after sending RTP");
    assert_eq!((info.packet_count, info.octet_count), (3, 480));
    // our RTP clock at the SR, extrapolated from the last packet (at 40 ms)
    let expected_ts = 1320 + ((sent - t0 - ms(40)).as_secs_f64() * 8000.0) as u32;
    assert!(info.rtp_timestamp.abs_diff(expected_ts) <= 1, "{info:?}");
    // The far end held it 50 ms before its RR, which arrives 120 ms after
    // our SR left: RTT 70 ms.
    let rr = echo(
        local_ssrc,
        ((info.ntp >> 16) & 0xffff_ffff) as u32,
        65_536 * 50 / 1000,
    );
    let rtcp = LocalSocket {
        kind: MediaKind::Audio,
        rtcp: true,
    };
    s.handle_receive(sent + ms(120), rtcp, far(), &rr);
    let rtt = s.stats().audio.unwrap().rtt_ms.expect("rtt");
    assert!((rtt - 70.0).abs() < 1.0, "{rtt}");
    // an echo of an SR we never sent (LSR 0) changes nothing
    s.handle_receive(sent + ms(500), rtcp, far(), &echo(local_ssrc, 0, 0));
    assert!((s.stats().audio.unwrap().rtt_ms.unwrap() - 70.0).abs() < 1.0);
    // nor does one that would make the round trip far negative, or a minute
    let lsr = ((info.ntp >> 16) & 0xffff_ffff) as u32;
    s.handle_receive(sent + ms(600), rtcp, far(), &echo(local_ssrc, lsr, 65_536));
    s.handle_receive(sent + ms(61_000), rtcp, far(), &echo(local_ssrc, lsr, 0));
    assert!((s.stats().audio.unwrap().rtt_ms.unwrap() - 70.0).abs() < 1.0);
    // A loopback far end that counts DLSR in whole milliseconds (libre):
    // held 2.3 ms, it says 3 ms, so the sum comes out just below zero.
    // That is a round trip of 0, not a bad echo.
    s.handle_receive(
        sent + ms(3) - Duration::from_micros(700),
        rtcp,
        far(),
        &echo(local_ssrc, lsr, 65_536 * 3 / 1000),
    );
    assert_eq!(s.stats().audio.unwrap().rtt_ms, Some(0.0));
}

#[test]
fn a_receive_only_session_sends_receiver_reports() {
    let t0 = Instant::now();
    let mut s = MediaSession::new(t0, config(Feedback::default()));
    let mut a = AudioSender {
        ssrc: 5,
        seq: 1,
        ts: 0,
    };
    s.handle_receive(t0, LocalSocket::AUDIO_RTP, far(), &a.next());
    let mut now = t0;
    let out = run_until(&mut s, &mut now, t0 + ms(8000), ms(50));
    let reports: Vec<RtcpPacket> = transmits(&out)
        .iter()
        .filter_map(|t| parse_rtcp_compound(&t.data).ok()?.into_iter().next())
        .collect();
    assert!(!reports.is_empty());
    assert!(reports
        .iter()
        .all(|p| matches!(p, RtcpPacket::ReceiverReport { .. })));
}
