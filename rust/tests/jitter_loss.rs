//! Loss: a frame with a hole is never emitted; NACK when negotiated, PLI /
//! FIR / an event when the frame cannot be recovered; decoding resumes only
//! at the next keyframe.
mod common;
use common::*;
use sipstream_core::rtp::RtcpPacket;
use sipstream_core::session::*;
use std::time::Instant;

fn nack_pli() -> Feedback {
    Feedback {
        nack: true,
        pli: true,
        fir: false,
    }
}

/// Feed frames 0..n; `deliver(frame, k, packet)` decides each packet's fate.
fn run(
    s: &mut MediaSession,
    t0: Instant,
    n: u32,
    mut deliver: impl FnMut(u32, usize) -> bool,
) -> (Vec<Vec<u8>>, Vec<Output>) {
    let mut tx = VideoSender::new(0x77, 100, 1000);
    let mut sent = Vec::new();
    let mut out = Vec::new();
    let mut now = t0;
    for f in 0..n {
        let (au, pkts) = tx.next_frame(5000);
        sent.push(au);
        for (k, p) in pkts.iter().enumerate() {
            if deliver(f, k) {
                s.handle_receive(now, video_rtp(), far_video(), p);
            }
        }
        let next = now + ms(33);
        out.extend(drain(s));
        out.extend(run_until(s, &mut now, next, ms(11)));
    }
    out.extend(run_until(
        s,
        &mut now,
        t0 + ms(33 * u64::from(n) + 1000),
        ms(10),
    ));
    (sent, out)
}

#[test]
fn lost_fu_a_fragment_drops_the_frame_nacks_then_plis_and_waits_for_keyframe() {
    let t0 = Instant::now();
    let mut s = MediaSession::new(t0, config(nack_pli()));
    // frame 5 (a P frame) loses its second FU-A fragment for good
    let (sent, out) = run(&mut s, t0, 40, |f, k| !(f == 5 && k == 1));
    let got = frames(&out);
    // frames 0..=4 whole, 5..=29 dropped (5 broken, the rest reference it),
    // 30 is the next IDR and everything after it flows again
    let expect: Vec<&Vec<u8>> = sent.iter().take(5).chain(sent.iter().skip(30)).collect();
    assert_eq!(got.len(), expect.len());
    assert!(got.iter().zip(&expect).all(|(f, au)| &&f.data == au));
    let fb = rtcp(&out);
    let nacks: Vec<&RtcpPacket> = fb
        .iter()
        .filter(|p| matches!(p, RtcpPacket::Nack { .. }))
        .collect();
    assert!(
        !nacks.is_empty() && nacks.len() <= 3,
        "NACKed up to 3 times: {nacks:?}"
    );
    assert!(matches!(
        nacks[0],
        RtcpPacket::Nack {
            media_ssrc: 0x77,
            ..
        }
    ));
    assert!(fb.iter().any(|p| matches!(
        p,
        RtcpPacket::Pli {
            media_ssrc: 0x77,
            ..
        }
    )));
    // every feedback packet is a compound starting with RR + SDES
    assert!(transmits(&out)
        .iter()
        .all(|t| t.data[1] == 201 && t.to.port() == 40003));
    let st = s.stats().video.unwrap();
    assert_eq!(st.lost, 1);
    assert_eq!(st.dropped_frames, 25);
    assert!(st.nacks_sent >= 1 && st.keyframe_requests >= 1);
}

#[test]
fn retransmission_in_time_recovers_the_frame_without_pli() {
    let t0 = Instant::now();
    let mut s = MediaSession::new(t0, config(nack_pli()));
    let mut tx = VideoSender::new(0x77, 65530, 0);
    let mut sent = Vec::new();
    let mut out = Vec::new();
    let mut now = t0;
    for f in 0..10 {
        let (au, pkts) = tx.next_frame(5000);
        sent.push(au);
        for (k, p) in pkts.iter().enumerate() {
            if f == 3 && k == 2 {
                continue;
            }
            s.handle_receive(now, video_rtp(), far_video(), p);
        }
        out.extend(drain(&mut s));
        if f == 3 {
            // the NACK went out; the far end retransmits 30 ms later
            assert!(rtcp(&out)
                .iter()
                .any(|p| matches!(p, RtcpPacket::Nack { .. })));
            s.handle_receive(now + ms(30), video_rtp(), far_video(), &pkts[2]);
        }
        let next = now + ms(33);
        out.extend(run_until(&mut s, &mut now, next, ms(11)));
    }
    out.extend(run_until(&mut s, &mut now, t0 + ms(2000), ms(10)));
    let got = frames(&out);
    assert_eq!(got.len(), 10);
    assert!(got.iter().zip(&sent).all(|(f, au)| &f.data == au));
    assert!(!rtcp(&out)
        .iter()
        .any(|p| matches!(p, RtcpPacket::Pli { .. })));
    assert_eq!(s.stats().video.unwrap().dropped_frames, 0);
}

#[test]
fn without_pli_or_fir_a_keyframe_needed_event_is_raised() {
    let t0 = Instant::now();
    let mut s = MediaSession::new(t0, config(Feedback::default()));
    let (_, out) = run(&mut s, t0, 12, |f, k| !(f == 2 && k == 0));
    assert!(events(&out).contains(&Event::KeyframeNeeded { ssrc: 0x77 }));
    assert!(transmits(&out).iter().all(|t| {
        sipstream_core::rtp::parse_rtcp_compound(&t.data)
            .unwrap()
            .iter()
            .all(|p| !matches!(p, RtcpPacket::Pli { .. } | RtcpPacket::Nack { .. }))
    }));
}

#[test]
fn fir_is_used_when_only_ccm_fir_is_negotiated() {
    let t0 = Instant::now();
    let mut s = MediaSession::new(
        t0,
        config(Feedback {
            fir: true,
            ..Feedback::default()
        }),
    );
    let (_, out) = run(&mut s, t0, 12, |f, k| !(f == 2 && k == 0));
    assert!(rtcp(&out).iter().any(|p| matches!(
        p,
        RtcpPacket::Fir {
            media_ssrc: 0x77,
            seq_nr: 1,
            ..
        }
    )));
}

#[test]
fn random_loss_and_reorder_never_yield_an_undecodable_frame() {
    // 1% loss + 2% reorder, like the aiortc report: every emitted frame is
    // byte-identical to a sent one and, unless a keyframe, directly follows
    // the previously emitted frame.
    for enabled in [true, false] {
        let t0 = Instant::now();
        let mut cfg = config(nack_pli());
        cfg.jitter.enabled = enabled;
        let mut s = MediaSession::new(t0, cfg);
        let mut tx = VideoSender::new(9, 60000, u32::MAX - 300_000);
        let mut rng: u64 = 0x1234_5678_9abc_def0;
        let mut rand = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % 1000
        };
        let mut sent = Vec::new();
        let mut got = Vec::new();
        let mut now = t0;
        let mut held: Option<Vec<u8>> = None;
        for _ in 0..1500 {
            let (au, pkts) = tx.next_frame(3000);
            sent.push(au);
            for p in pkts {
                let r = rand();
                if r < 10 {
                    continue; // lost
                }
                if r < 30 && held.is_none() {
                    held = Some(p); // delivered after the next packet
                    continue;
                }
                s.handle_receive(now, video_rtp(), far_video(), &p);
                if let Some(h) = held.take() {
                    s.handle_receive(now, video_rtp(), far_video(), &h);
                }
            }
            let next = now + ms(33);
            got.extend(frames(&drain(&mut s)));
            got.extend(frames(&run_until(&mut s, &mut now, next, ms(11))));
        }
        let index_of = |d: &Vec<u8>| sent.iter().position(|a| a == d);
        let mut prev: Option<usize> = None;
        for f in &got {
            let i = index_of(&f.data).expect("emitted frame is one that was sent, whole");
            if !f.keyframe {
                assert_eq!(
                    prev.map(|p| p + 1),
                    Some(i),
                    "P frame follows its reference"
                );
            }
            prev = Some(i);
        }
        assert!(got.len() > 300, "enabled={enabled}: {}", got.len());
    }
}
