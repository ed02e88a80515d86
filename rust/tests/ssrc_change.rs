//! A new SSRC on a track replaces the old one: event, fresh state, pts continue.
mod common;
use common::*;
use sipstream_core::session::*;
use std::time::Instant;

#[test]
fn ssrc_change_emits_event_restarts_and_keeps_pts_monotonic() {
    let t0 = Instant::now();
    let mut s = MediaSession::new(t0, config(Feedback::default()));
    let mut old = AudioSender {
        ssrc: 0x1111,
        seq: 10,
        ts: 1_000_000,
    };
    let mut new = AudioSender {
        ssrc: 0x2222,
        seq: 40_000,
        ts: 7,
    };
    let mut now = t0;
    let mut out = Vec::new();
    for _ in 0..10 {
        s.handle_receive(now, LocalSocket::AUDIO_RTP, far(), &old.next());
        let next = now + ms(20);
        out.extend(run_until(&mut s, &mut now, next, ms(20)));
    }
    for _ in 0..10 {
        s.handle_receive(now, LocalSocket::AUDIO_RTP, far(), &new.next());
        let next = now + ms(20);
        out.extend(run_until(&mut s, &mut now, next, ms(20)));
    }
    // a straggler from the old source is dropped, not a flip back
    s.handle_receive(now, LocalSocket::AUDIO_RTP, far(), &old.next());
    out.extend(run_until(&mut s, &mut now, t0 + ms(1000), ms(20)));
    assert_eq!(
        events(&out),
        vec![Event::SsrcChanged {
            kind: MediaKind::Audio,
            old: 0x1111,
            new: 0x2222
        }]
    );
    let f = frames(&out);
    assert_eq!(f.len(), 20);
    assert_eq!(f.iter().filter(|f| f.ssrc == 0x2222).count(), 10);
    assert!(f.windows(2).all(|w| w[1].pts_us > w[0].pts_us));
    let st = s.stats();
    assert_eq!(st.stale_ssrc, 1);
    let audio = st.audio.unwrap();
    assert_eq!(audio.ssrc_changes, 1);
    assert_eq!(audio.codec, Some("PCMU"));
}

#[test]
fn video_ssrc_change_waits_for_a_keyframe_of_the_new_source() {
    let t0 = Instant::now();
    let mut s = MediaSession::new(t0, config(Feedback::default()));
    let mut a = VideoSender::new(1, 0, 0);
    let mut b = VideoSender::new(2, 500, 0);
    b.frame = 10; // joins mid-GOP: first frames are P frames
    let mut now = t0;
    let mut got = Vec::new();
    for _ in 0..5 {
        for p in a.next_frame(1000).1 {
            s.handle_receive(now, video_rtp(), far_video(), &p);
        }
        let next = now + ms(33);
        got.extend(frames(&run_until(&mut s, &mut now, next, ms(11))));
    }
    for _ in 0..25 {
        for p in b.next_frame(1000).1 {
            s.handle_receive(now, video_rtp(), far_video(), &p);
        }
        let next = now + ms(33);
        got.extend(frames(&run_until(&mut s, &mut now, next, ms(11))));
    }
    let from_b: Vec<_> = got.iter().filter(|f| f.ssrc == 2).collect();
    assert!(
        from_b[0].keyframe,
        "first frame of the new source is its IDR"
    );
    assert_eq!(from_b.len(), 5, "frames 30..35 of b");
}
