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
