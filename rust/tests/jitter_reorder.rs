//! Reordered and duplicated packets still give every access unit, whole and in order.
mod common;
use common::*;
use sipstream_core::session::*;
use std::time::Instant;

#[test]
fn reordered_packets_within_and_between_frames_yield_every_au_in_order() {
    let t0 = Instant::now();
    let mut s = MediaSession::new(t0, config(Feedback::default()));
    let mut tx = VideoSender::new(0xabc, 1000, 0);
    let mut sent = Vec::new();
    let mut got = Vec::new();
    let mut now = t0;
    let mut pending: Vec<Vec<u8>> = Vec::new();
    for _ in 0..60 {
        let (au, pkts) = tx.next_frame(4000);
        sent.push(au);
        pending.extend(pkts);
        // deliver with swaps: every pair reversed, and frames interleaved
        pending.reverse();
        now += ms(33);
        for p in pending.drain(..) {
            s.handle_receive(now, video_rtp(), far_video(), &p);
        }
        got.extend(frames(&drain(&mut s)));
    }
    got.extend(frames(&run_until(&mut s, &mut now, t0 + ms(5000), ms(10))));
    assert_eq!(got.len(), sent.len());
    assert!(got.iter().zip(&sent).all(|(f, au)| &f.data == au));
    let st = s.stats().video.unwrap();
    assert_eq!((st.lost, st.late, st.dropped_frames), (0, 0, 0));
    assert_eq!((st.width, st.height), (640, 480));
    assert_eq!(st.codec, Some("H264"));
    assert!(got.windows(2).all(|w| w[1].pts_us > w[0].pts_us));
}

#[test]
fn duplicates_are_counted_and_ignored() {
    let t0 = Instant::now();
    let mut s = MediaSession::new(t0, config(Feedback::default()));
    let mut tx = VideoSender::new(7, 10, 0);
    let mut got = Vec::new();
    let mut sent = Vec::new();
    for i in 0..10u64 {
        let (au, pkts) = tx.next_frame(3000);
        sent.push(au);
        for p in &pkts {
            s.handle_receive(t0 + ms(i * 33), video_rtp(), far_video(), p);
            s.handle_receive(t0 + ms(i * 33), video_rtp(), far_video(), p);
        }
        got.extend(frames(&drain(&mut s)));
    }
    got.extend(frames(&run_until(
        &mut s,
        &mut t0.clone(),
        t0 + ms(2000),
        ms(20),
    )));
    assert_eq!(got.len(), sent.len());
    assert!(got.iter().zip(&sent).all(|(f, au)| &f.data == au));
    let st = s.stats().video.unwrap();
    assert!(st.duplicates >= 30, "{st:?}");
    assert_eq!(st.lost, 0);
}

#[test]
fn audio_is_reordered_and_flows_without_delay_in_order() {
    let t0 = Instant::now();
    let mut s = MediaSession::new(t0, config(Feedback::default()));
    let mut a = AudioSender {
        ssrc: 5,
        seq: 100,
        ts: 0,
    };
    let p: Vec<Vec<u8>> = (0..4).map(|_| a.next()).collect();
    s.handle_receive(t0, LocalSocket::AUDIO_RTP, far(), &p[0]);
    // the stream's head waits one target delay (80 ms) for reordered packets
    assert!(frames(&drain(&mut s)).is_empty());
    s.handle_timeout(t0 + ms(80));
    assert_eq!(frames(&drain(&mut s)).len(), 1);
    s.handle_receive(t0 + ms(90), LocalSocket::AUDIO_RTP, far(), &p[2]);
    assert!(frames(&drain(&mut s)).is_empty());
    s.handle_receive(t0 + ms(95), LocalSocket::AUDIO_RTP, far(), &p[1]);
    s.handle_receive(t0 + ms(100), LocalSocket::AUDIO_RTP, far(), &p[3]);
    let f = frames(&drain(&mut s));
    assert_eq!(
        f.iter().map(|f| f.timestamp).collect::<Vec<_>>(),
        vec![160, 320, 480]
    );
    assert!(f.iter().all(|f| f.codec == "PCMU" && !f.generated));
}
