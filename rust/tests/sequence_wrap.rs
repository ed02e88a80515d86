//! Sequence-number wrap 65535→0 and RTP timestamp wrap inside and between frames.
mod common;
use common::*;
use sipstream_core::session::*;
use std::time::Instant;

#[test]
fn sequence_wrap_inside_an_fu_a_frame_is_seamless() {
    let t0 = Instant::now();
    let mut s = MediaSession::new(t0, config(Feedback::default()));
    let mut tx = VideoSender::new(1, 65533, 5000);
    let mut sent = Vec::new();
    let mut now = t0;
    let mut got = Vec::new();
    for _ in 0..5 {
        let (au, pkts) = tx.next_frame(6000);
        sent.push(au);
        for p in &pkts {
            s.handle_receive(now, video_rtp(), far_video(), p);
        }
        let next = now + ms(33);
        got.extend(frames(&run_until(&mut s, &mut now, next, ms(11))));
    }
    assert_eq!(got.len(), 5);
    assert!(got.iter().zip(&sent).all(|(f, au)| &f.data == au));
    assert_eq!(s.stats().video.unwrap().lost, 0);
}

#[test]
fn timestamp_wrap_between_frames_keeps_pts_monotonic_and_spaced() {
    let t0 = Instant::now();
    let mut s = MediaSession::new(t0, config(Feedback::default()));
    let mut tx = VideoSender::new(1, 100, u32::MAX - 4000);
    let mut now = t0;
    let mut got = Vec::new();
    for _ in 0..6 {
        let (_, pkts) = tx.next_frame(2000);
        for p in &pkts {
            s.handle_receive(now, video_rtp(), far_video(), p);
        }
        let next = now + ms(33);
        got.extend(frames(&run_until(&mut s, &mut now, next, ms(11))));
    }
    assert_eq!(got.len(), 6);
    assert!(got.iter().any(|f| f.timestamp < 10_000));
    for w in got.windows(2) {
        let d = w[1].pts_us - w[0].pts_us;
        assert!(
            (33_000..=34_000).contains(&d),
            "3000 ticks = 33.3 ms, got {d}"
        );
    }
}

#[test]
fn timestamp_wrap_inside_audio_stream_and_seq_wrap_together() {
    let t0 = Instant::now();
    let mut s = MediaSession::new(t0, config(Feedback::default()));
    let mut a = AudioSender {
        ssrc: 3,
        seq: 65530,
        ts: u32::MAX - 800,
    };
    let mut now = t0;
    let mut got = Vec::new();
    for _ in 0..20 {
        s.handle_receive(now, LocalSocket::AUDIO_RTP, far(), &a.next());
        let next = now + ms(20);
        got.extend(frames(&run_until(&mut s, &mut now, next, ms(20))));
    }
    got.extend(frames(&run_until(&mut s, &mut now, t0 + ms(600), ms(20))));
    assert_eq!(got.len(), 20);
    for w in got.windows(2) {
        assert_eq!(w[1].pts_us - w[0].pts_us, 20_000);
    }
}
