//! Socket → frame throughput of the Rust receive path on loopback, in
//! packets per CPU-second of the receiving thread: `recvmmsg` alone vs
//! `recvmmsg` + MediaSession (parse, jitter buffer, H.264 depacketize,
//! sync, stats). A sender thread replays a 720p-ish H.264 (FU-A, ~1200 B)
//! and PCMU packet sequence; the session's clock follows the media's, so
//! its jitter buffer holds what it would on a live call.
//!
//! cargo run --release --example rtp_receive_throughput

use sipstream_core::h264::h264_packetize;
use sipstream_core::io::RecvBatch;
use sipstream_core::rtp::build_rtp;
use sipstream_core::session::*;
use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid timespec pointer
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// 30 fps 720p-ish: IDR ~60 KB every 60 frames, P ~12 KB; PCMU every 20 ms.
fn packets(seconds: u32) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let (mut vseq, mut aseq) = (0u16, 0u16);
    for f in 0..seconds * 30 {
        let key = f % 60 == 0;
        let size = if key { 60_000 } else { 12_000 };
        let mut au = vec![0, 0, 0, 1, if key { 0x65 } else { 0x41 }];
        au.extend((0..size).map(|i| (i % 251) as u8 + 1));
        let p = h264_packetize(&au, 1200);
        let n = p.len();
        for (k, payload) in p.iter().enumerate() {
            out.push(build_rtp(96, vseq, f * 3000, 0xbbbb, k + 1 == n, payload));
            vseq = vseq.wrapping_add(1);
        }
        // 1.5 audio packets per video frame
        for _ in 0..if f % 2 == 0 { 2 } else { 1 } {
            out.push(build_rtp(
                0,
                aseq,
                u32::from(aseq) * 160,
                0xaaaa,
                false,
                &[0xff; 160],
            ));
            aseq = aseq.wrapping_add(1);
        }
    }
    out
}

fn run(with_session: bool, pkts: Arc<Vec<Vec<u8>>>) -> (u64, u64, Duration) {
    let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
    let size: libc::c_int = 64 << 20;
    // SAFETY: setsockopt with a valid int
    unsafe {
        libc::setsockopt(
            rx.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&size as *const libc::c_int).cast(),
            4,
        );
        libc::setsockopt(
            rx.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&size as *const libc::c_int).cast(),
            4,
        );
    }
    rx.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let addr = rx.local_addr().unwrap();
    // queue the sequence in the socket in chunks that fit its buffer, then
    // drain each: the measurement is the receiving thread's own CPU with
    // full batches (no idle wake-ups), sender cost excluded
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    let t0 = Instant::now();
    let mut config = SessionConfig {
        payload_types: vec![
            PayloadType::new(0, "PCMU", 8000).unwrap(),
            PayloadType::new(96, "H264", 90000).unwrap(),
        ],
        ..SessionConfig::default()
    };
    config.video.feedback = Feedback {
        nack: true,
        pli: true,
        fir: false,
    };
    let mut session = MediaSession::new(t0, config);
    let mut batch = RecvBatch::new();
    let from = "127.0.0.1:1".parse().unwrap();
    let (mut received, mut frames) = (0u64, 0u64);
    let mut cpu = Duration::ZERO;
    // The session runs on media time: 20 s of packets arrive over 20 s of
    // its clock, so the jitter buffer holds what it would on a live call
    // (replayed at wall-clock speed it would hold the whole sequence).
    let media_us_per_packet = 20_000_000 / pkts.len() as u64;
    for (c, chunk) in pkts.chunks(1000).enumerate() {
        for p in chunk {
            let _ = tx.send_to(p, addr);
        }
        let cpu0 = thread_cpu();
        let mut index = (c * 1000) as u64;
        loop {
            let n = batch.recv(rx.as_raw_fd()).unwrap_or(0);
            if n == 0 {
                break;
            }
            received += n as u64;
            if with_session {
                let now = t0 + Duration::from_micros(index * media_us_per_packet);
                index += n as u64;
                for i in 0..n {
                    if let Some((data, _)) = batch.get(i) {
                        session.handle_receive(now, LocalSocket::AUDIO_RTP, from, data);
                    }
                }
                session.handle_timeout(now);
                while let Some(o) = session.poll_event() {
                    if let Output::Frame(f) = o {
                        frames += 1;
                        std::hint::black_box(&f.data);
                    }
                }
            }
        }
        cpu += thread_cpu() - cpu0;
    }
    let cpu0 = thread_cpu();
    if with_session {
        // release what the jitter buffer still holds (startup wait)
        session.handle_timeout(t0 + Duration::from_secs(22));
        while let Some(o) = session.poll_event() {
            if let Output::Frame(_) = o {
                frames += 1;
            }
        }
    }
    cpu += thread_cpu() - cpu0;
    (received, frames, cpu)
}

fn main() {
    let pkts = Arc::new(packets(20));
    println!("replaying {} packets per run", pkts.len());
    let mut results = Vec::new();
    for (name, with_session) in [("recvmmsg only", false), ("recvmmsg + MediaSession", true)] {
        let mut best = 0.0f64;
        for _ in 0..3 {
            let (n, frames, cpu) = run(with_session, pkts.clone());
            let rate = n as f64 / cpu.as_secs_f64();
            best = best.max(rate);
            println!(
                "{name:28} received {n:7} frames {frames:6} cpu {:7.1} ms  {:>10.0} packets/CPU-s",
                cpu.as_secs_f64() * 1e3,
                rate
            );
        }
        results.push(best);
    }
    println!(
        "best: recvmmsg {:.0} pkt/CPU-s, whole path {:.0} pkt/CPU-s, ratio {:.2}x",
        results[0],
        results[1],
        results[0] / results[1]
    );
}
