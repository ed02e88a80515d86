//! Latency is bounded: a hole is given up after the wait; packets arriving
//! after that are counted as late and dropped.
mod common;
use common::*;
use sipstream_core::session::*;
use std::time::Instant;

#[test]
fn packets_later_than_the_buffer_delay_are_counted_and_dropped() {
    let t0 = Instant::now();
    let mut s = MediaSession::new(t0, config(Feedback::default()));
    let mut a = AudioSender {
        ssrc: 1,
        seq: 0,
        ts: 0,
    };
    let pkts: Vec<Vec<u8>> = (0..10).map(|_| a.next()).collect();
    let mut now = t0;
    let mut got = Vec::new();
    for (i, p) in pkts.iter().enumerate() {
        if i != 3 {
            s.handle_receive(now, LocalSocket::AUDIO_RTP, far(), p);
        }
        let next = now + ms(20);
        got.extend(frames(&run_until(&mut s, &mut now, next, ms(5))));
    }
    // packet 3 shows up 300 ms late: far beyond the 80 ms target delay
    s.handle_receive(now + ms(300), LocalSocket::AUDIO_RTP, far(), &pkts[3]);
    got.extend(frames(&run_until(&mut s, &mut now, t0 + ms(1000), ms(5))));
    assert_eq!(got.len(), 9);
    assert!(got.iter().all(|f| f.timestamp != 3 * 160));
    let st = s.stats().audio.unwrap();
    assert_eq!((st.lost, st.late), (1, 1));
}

#[test]
fn in_order_frames_are_not_delayed_after_startup() {
    let t0 = Instant::now();
    let mut s = MediaSession::new(t0, config(Feedback::default()));
    let mut a = AudioSender {
        ssrc: 1,
        seq: 0,
        ts: 0,
    };
    s.handle_receive(t0, LocalSocket::AUDIO_RTP, far(), &a.next());
    s.handle_timeout(t0 + ms(80));
    drain(&mut s);
    for i in 1..50u64 {
        s.handle_receive(
            t0 + ms(80 + i * 20),
            LocalSocket::AUDIO_RTP,
            far(),
            &a.next(),
        );
        assert_eq!(frames(&drain(&mut s)).len(), 1, "released on arrival");
    }
}

#[test]
fn disabled_buffer_delivers_at_once_and_reordered_packets_become_late() {
    let t0 = Instant::now();
    let mut cfg = config(Feedback::default());
    cfg.jitter.enabled = false;
    let mut s = MediaSession::new(t0, cfg);
    let mut a = AudioSender {
        ssrc: 1,
        seq: 0,
        ts: 0,
    };
    let p: Vec<Vec<u8>> = (0..3).map(|_| a.next()).collect();
    s.handle_receive(t0, LocalSocket::AUDIO_RTP, far(), &p[0]);
    assert_eq!(frames(&drain(&mut s)).len(), 1);
    s.handle_receive(t0, LocalSocket::AUDIO_RTP, far(), &p[2]);
    assert_eq!(frames(&drain(&mut s)).len(), 1);
    s.handle_receive(t0, LocalSocket::AUDIO_RTP, far(), &p[1]);
    assert!(frames(&drain(&mut s)).is_empty());
    assert_eq!(s.stats().audio.unwrap().late, 1);
}

/// With the jitter buffer off, frames flow with minimum delay: a frame whose
/// packets arrive reordered among themselves (30 ms per-packet jitter on a
/// 25 fps stream) is still emitted as soon as its last packet is in hand,
/// and a frame with a lost packet is dropped until the next keyframe (PLI).
mod jitter_off {
    use super::*;
    use sipstream_core::h264::h264_packetize;
    use sipstream_core::rtp::{build_rtp, RtcpPacket};
    use std::time::Duration;

    fn pli() -> Feedback {
        Feedback {
            nack: false,
            pli: true,
            fir: false,
        }
    }

    fn jitter_off() -> MediaSession {
        let mut cfg = config(pli());
        cfg.jitter.enabled = false;
        cfg.keyframe_interval = ms(300);
        MediaSession::new(Instant::now(), cfg)
    }

    /// A far end like the loopback callee: keyframes only at the start and
    /// when asked for (PLI), 25 fps, back-to-back packets per frame.
    struct Sender {
        seq: u16,
        ts: u32,
        frame: u32,
        force_key: bool,
    }

    impl Sender {
        fn new() -> Self {
            Sender {
                seq: 65000,
                ts: 1000,
                frame: 0,
                force_key: true,
            }
        }

        fn next_frame(&mut self) -> (Vec<u8>, bool, Vec<Vec<u8>>) {
            let key = std::mem::take(&mut self.force_key);
            let au = access_unit(self.frame, key, if key { 9000 } else { 2500 });
            let payloads = h264_packetize(&au, 1200);
            let n = payloads.len();
            let pkts = payloads
                .iter()
                .enumerate()
                .map(|(k, p)| {
                    let pkt = build_rtp(96, self.seq, self.ts, 0x5eed, k + 1 == n, p);
                    self.seq = self.seq.wrapping_add(1);
                    pkt
                })
                .collect();
            self.ts = self.ts.wrapping_add(3600);
            self.frame += 1;
            (au, key, pkts)
        }
    }

    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> f64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    fn plis(out: &[Output]) -> usize {
        rtcp(out)
            .iter()
            .filter(|p| matches!(p, RtcpPacket::Pli { .. }))
            .count()
    }

    #[test]
    fn packets_of_one_frame_reordered_among_themselves_still_give_the_frame_at_once() {
        let mut s = jitter_off();
        let t0 = s.epoch();
        let mut tx = Sender::new();
        // the stream's head arrives reordered: the keyframe's packets as
        // 1, 3, 0, 2, 4, ...; it is emitted whole once the next frame starts
        let (key, _, kp) = tx.next_frame();
        assert!(kp.len() >= 4);
        let order: Vec<usize> = [1, 3, 0, 2].into_iter().chain(4..kp.len()).collect();
        for (i, &k) in order.iter().enumerate() {
            s.handle_receive(t0 + ms(i as u64), video_rtp(), far_video(), &kp[k]);
            assert!(frames(&drain(&mut s)).is_empty());
        }
        // P frames: first packet last, then middle packet first
        let (p1, _, pp1) = tx.next_frame();
        let (p2, _, pp2) = tx.next_frame();
        assert!(pp1.len() >= 3 && pp2.len() >= 3);
        let mut now = t0 + ms(40);
        s.handle_receive(now, video_rtp(), far_video(), &pp1[1]);
        let f = frames(&drain(&mut s));
        assert_eq!(f.len(), 1, "the keyframe, as soon as the next frame began");
        assert_eq!(f[0].data, key);
        for k in (2..pp1.len()).chain([0]) {
            assert!(frames(&drain(&mut s)).is_empty());
            s.handle_receive(now, video_rtp(), far_video(), &pp1[k]);
        }
        let f = frames(&drain(&mut s));
        assert_eq!(f.len(), 1, "emitted on its last packet, without waiting");
        assert_eq!(f[0].data, p1);
        now += ms(40);
        let n = pp2.len();
        for k in [1, 0].into_iter().chain(2..n) {
            assert!(frames(&drain(&mut s)).is_empty());
            s.handle_receive(now, video_rtp(), far_video(), &pp2[k]);
        }
        let f = frames(&drain(&mut s));
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].data, p2);
        let st = s.stats().video.unwrap();
        assert_eq!((st.lost, st.late, st.dropped_frames), (0, 0, 0), "{st:?}");
    }
    #[test]
    fn a_frame_with_a_lost_packet_is_dropped_and_a_keyframe_requested() {
        let mut s = jitter_off();
        let t0 = s.epoch();
        let mut tx = Sender::new();
        let (_, _, kp) = tx.next_frame();
        for p in &kp {
            s.handle_receive(t0, video_rtp(), far_video(), p);
        }
        // the first frame waits once for a reordered head (target delay)
        let t1 = t0 + s.config().jitter.target_delay;
        s.handle_timeout(t1);
        assert_eq!(frames(&drain(&mut s)).len(), 1);
        // P frame 1 loses its middle packet; frame 2 arrives whole 40 ms later
        let (_, _, p1) = tx.next_frame();
        assert!(p1.len() >= 3);
        for (k, p) in p1.iter().enumerate() {
            if k != 1 {
                s.handle_receive(t1 + ms(40), video_rtp(), far_video(), p);
            }
        }
        let out = drain(&mut s);
        assert!(frames(&out).is_empty());
        let (_, _, p2) = tx.next_frame();
        let mut out = Vec::new();
        for p in &p2 {
            s.handle_receive(t1 + ms(80), video_rtp(), far_video(), p);
            out.extend(drain(&mut s));
        }
        // frame 1 is broken, frame 2 references it: neither is emitted
        assert!(frames(&out).is_empty());
        assert!(plis(&out) >= 1, "loss asks for a keyframe");
        let st = s.stats().video.unwrap();
        assert_eq!(st.lost, 1);
        assert!(st.dropped_frames >= 2, "{st:?}");
        // the late middle packet is refused
        s.handle_receive(t1 + ms(90), video_rtp(), far_video(), &p1[1]);
        assert!(frames(&drain(&mut s)).is_empty());
        // the requested keyframe restores the picture
        tx.force_key = true;
        let (k2, _, kp2) = tx.next_frame();
        for p in &kp2 {
            s.handle_receive(t1 + ms(120), video_rtp(), far_video(), p);
        }
        let f = frames(&drain(&mut s));
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].data, k2);
    }

    #[test]
    fn a_hole_is_not_waited_for_longer_than_the_target_delay() {
        let mut s = jitter_off();
        let t0 = s.epoch();
        let mut tx = Sender::new();
        let (_, _, kp) = tx.next_frame();
        for p in &kp {
            s.handle_receive(t0, video_rtp(), far_video(), p);
        }
        // the first frame waits once for a reordered head (target delay)
        let t1 = t0 + s.config().jitter.target_delay;
        s.handle_timeout(t1);
        assert_eq!(frames(&drain(&mut s)).len(), 1);
        // the stream pauses after a frame whose first packet was lost
        let (_, _, p1) = tx.next_frame();
        for p in &p1[1..] {
            s.handle_receive(t1 + ms(40), video_rtp(), far_video(), p);
        }
        let Output::Timeout(at) = s.poll_output() else {
            panic!("expected a timeout");
        };
        assert!(at <= t1 + ms(40) + s.config().jitter.target_delay);
        s.handle_timeout(t1 + ms(40) + s.config().jitter.target_delay);
        let out = drain(&mut s);
        assert!(frames(&out).is_empty());
        assert_eq!(s.stats().video.unwrap().lost, 1);
    }

    /// The aiortc-like bad network of tests/test_media_impairment.py: 1% loss,
    /// each packet held uniform(0, 30 ms), 2% of them another 30 ms; the far end
    /// answers PLI with a keyframe.
    #[test]
    fn jittered_stream_flows_and_every_emitted_frame_is_whole_and_decodable() {
        let mut s = jitter_off();
        let t0 = s.epoch();
        let mut tx = Sender::new();
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut sent: Vec<(Vec<u8>, bool)> = Vec::new();
        // (arrival, order, packet)
        let mut wire: Vec<(Instant, usize, Vec<u8>)> = Vec::new();
        let mut got = Vec::new();
        let mut lost = 0;
        let mut plis_seen = 0;
        let mut now = t0;
        let frame_interval = ms(40);
        let mut next_frame_at = t0;
        let end = t0 + Duration::from_secs(20);
        let mut order = 0;
        while now < end {
            if now >= next_frame_at {
                let (au, key, pkts) = tx.next_frame();
                sent.push((au, key));
                for p in pkts {
                    if rng.next() < 0.01 {
                        lost += 1;
                        continue;
                    }
                    let mut d = rng.next() * 30.0;
                    if rng.next() < 0.02 {
                        d += 30.0;
                    }
                    order += 1;
                    wire.push((now + Duration::from_secs_f64(d / 1000.0), order, p));
                }
                next_frame_at += frame_interval;
            }
            wire.sort_by_key(|(t, o, _)| (*t, *o));
            let due = wire.iter().take_while(|(t, _, _)| *t <= now).count();
            for (t, _, p) in wire.drain(..due) {
                s.handle_receive(t, video_rtp(), far_video(), &p);
            }
            s.handle_timeout(now);
            let out = drain(&mut s);
            let n = plis(&out);
            if n > 0 {
                plis_seen += n;
                tx.force_key = true;
            }
            got.extend(frames(&out));
            now += ms(1);
        }
        assert!(lost > 0);
        let index_of = |d: &Vec<u8>| sent.iter().position(|(a, _)| a == d);
        let mut prev: Option<usize> = None;
        for f in &got {
            let i = index_of(&f.data).expect("emitted frame is one that was sent, whole");
            assert_eq!(f.keyframe, sent[i].1);
            if !f.keyframe {
                assert_eq!(
                    prev.map(|p| p + 1),
                    Some(i),
                    "P frame follows its reference"
                );
            }
            prev = Some(i);
        }
        let st = s.stats().video.unwrap();
        // 500 frames sent; loss costs a few keyframe round trips
        assert!(
            got.len() > 250,
            "{} frames, {plis_seen} PLIs, {st:?}",
            got.len()
        );
        assert!(plis_seen > 0);
    }
}
