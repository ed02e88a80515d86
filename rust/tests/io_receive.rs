//! The I/O thread takes over a real loopback socket, receives RTP with
//! recvmmsg, sends RTCP back to the latched source, hands frames in batches
//! through the eventfd, and closes cleanly.
mod common;
use common::*;
use sipstream_core::io::{IoOptions, MediaIo};
use sipstream_core::session::*;
use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

#[test]
fn io_thread_receives_from_loopback_and_drains_frames() {
    let audio = UdpSocket::bind("127.0.0.1:0").unwrap();
    let video = UdpSocket::bind("127.0.0.1:0").unwrap();
    let video_rtcp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let far_end = UdpSocket::bind("127.0.0.1:0").unwrap();
    far_end
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let mut cfg = config(Feedback {
        pli: true,
        ..Feedback::default()
    });
    cfg.jitter.enabled = false;
    cfg.video.remote_rtp = None;
    cfg.audio.remote_rtp = None;
    let mut io = MediaIo::start(
        &[
            Some(audio.as_raw_fd()),
            None,
            Some(video.as_raw_fd()),
            Some(video_rtcp.as_raw_fd()),
        ],
        cfg,
        IoOptions {
            receive_buffer: Some(1 << 20),
            send_buffer: Some(1 << 18),
        },
    )
    .unwrap();
    let notify = io.notify_fd();
    assert!(notify >= 0);
    // our copies can go: the thread owns dups
    let audio_addr = audio.local_addr().unwrap();
    let video_addr = video.local_addr().unwrap();
    drop(audio);
    drop(video);

    let mut a = AudioSender {
        ssrc: 1,
        seq: 0,
        ts: 0,
    };
    let mut v = VideoSender::new(2, 0, 0);
    let mut sent_video = Vec::new();
    for _ in 0..20 {
        far_end.send_to(&a.next(), audio_addr).unwrap();
        let (au, pkts) = v.next_frame(4000);
        sent_video.push(au);
        for p in pkts {
            far_end.send_to(&p, video_addr).unwrap();
        }
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut got = Vec::new();
    while got.len() < 40 && Instant::now() < deadline {
        let mut pfd = libc::pollfd {
            fd: notify,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd
        unsafe { libc::poll(&mut pfd, 1, 100) };
        got.extend(io.drain());
    }
    assert_eq!(got.iter().filter(|f| f.kind == "audio").count(), 20);
    let video_frames: Vec<_> = got.iter().filter(|f| f.kind == "video").collect();
    assert_eq!(video_frames.len(), 20);
    assert!(video_frames
        .iter()
        .zip(&sent_video)
        .all(|(f, au)| &f.data == au));

    // keyframe request: PLI over RTCP to the latched source (rtcp port = +1
    // of the far end's RTP port is not bound here, so latch via RTCP first)
    far_end
        .send_to(
            &sender_report(2, 1 << 32, 0),
            video_rtcp.local_addr().unwrap(),
        )
        .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    io.request_keyframe();
    let mut buf = [0u8; 1500];
    let (n, from) = far_end.recv_from(&mut buf).unwrap();
    assert_eq!(from, video_rtcp.local_addr().unwrap());
    let p = sipstream_core::rtp::parse_rtcp_compound(&buf[..n]).unwrap();
    assert!(p.iter().any(|p| matches!(
        p,
        sipstream_core::rtp::RtcpPacket::Pli { media_ssrc: 2, .. }
    )));

    std::thread::sleep(Duration::from_millis(250));
    let (stats, _errors, sent) = io.stats();
    assert_eq!(stats.audio.unwrap().packets, 20);
    assert!(sent >= 1);
    io.close();
    assert!(io.is_closed());
    // the dup'ed sockets are closed: the port can be bound again
    UdpSocket::bind(video_addr).unwrap();
}
