//! Random and mutated datagrams never panic the session, and a valid stream
//! keeps flowing around them.
mod common;
use common::*;
use sipstream_core::session::*;
use std::time::Instant;

#[test]
fn random_bytes_and_mutations_never_panic_and_never_break_frames() {
    let t0 = Instant::now();
    let mut cfg = config(Feedback {
        nack: true,
        pli: true,
        fir: true,
    });
    cfg.generator = Some(Default::default());
    let mut s = MediaSession::new(t0, cfg);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut tx = VideoSender::new(0x55, 0, 0);
    let mut sent = Vec::new();
    let mut now = t0;
    for i in 0..3000u64 {
        let r = rnd();
        let len = (r % 1400) as usize;
        let mut junk: Vec<u8> = (0..len).map(|k| (rnd() >> (k % 8)) as u8).collect();
        if let Some(b) = junk.first_mut() {
            *b = 0x80 | (*b & 0x3f); // mostly version 2, to get past the first check
        }
        if let Some(b) = junk.get_mut(1) {
            *b = [0u8, 96, 101, 200, 201, 202, 203, 205, 206, 0xe0][(r >> 40) as usize % 10];
        }
        let socket = LocalSocket::from_index((r >> 20) as usize % 4).unwrap();
        s.handle_receive(now, socket, far(), &junk);
        // a valid packet with one byte flipped
        if i % 3 == 0 {
            let (au, pkts) = tx.next_frame(1500);
            sent.push(au);
            for (k, mut p) in pkts.into_iter().enumerate() {
                if i % 9 == 3 && k == 0 {
                    // header damage that parsing notices or that changes the
                    // payload type (payload bytes and the marker bit carry no
                    // checksum: flipping those makes a different but whole frame)
                    if rnd() % 2 == 0 {
                        p[0] = 0x40 | (p[0] & 0x3f);
                    } else {
                        p[1] ^= 1 << (rnd() % 7);
                    }
                }
                s.handle_receive(now, video_rtp(), far_video(), &p);
            }
        }
        now += ms(3);
        s.handle_timeout(now);
        for f in frames(&drain(&mut s)) {
            if f.kind == "video" && !f.generated {
                assert!(
                    sent.contains(&f.data),
                    "emitted video is always a whole sent AU: ssrc {:x} len {} i {i}",
                    f.ssrc,
                    f.data.len()
                );
            }
        }
    }
    let st = s.stats();
    assert!(st.malformed > 0 && st.unknown_payload_type > 0);
    let _ = s.poll_output();
}
