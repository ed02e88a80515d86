//! RTP load generator for the whole-process receive benchmark
//! (benches/test_bench_calls.py), run as its own process so its CPU does not
//! count against the receiver. Per call: PCMU every 20 ms (50 packets/s) and
//! H.264 at 25 fps, ~10 FU-A packets of ~1000 B per frame (250 packets/s),
//! IDR (with SPS/PPS) every 2 s. Calls are spread evenly over the 40 ms
//! frame period and sent with `sendmmsg` from one socket.
//!
//! cargo run --release --example rtp_blaster -- PORTS_FILE SECONDS [HOST] [SLICE_BYTES]
//!
//! PORTS_FILE: one call per line, `AUDIO_PORT [VIDEO_PORT]` (video RTP is
//! AUDIO_PORT + 2 when the line has one port). `-` reads the lines from
//! stdin as they come (benches/sip_load.py adds each call once it is up);
//! a call starts on its first frame period after its line is read.
//! SLICE_BYTES: the size of each H.264 picture (default 9,950: 10 packets
//! per frame, ~2 Mbit/s; 2,500 gives 3 packets per frame, ~0.5 Mbit/s).
//! Prints a JSON line with what was sent and the sender's CPU.

use sipstream_core::h264::h264_packetize;
use sipstream_core::rtp::build_rtp;
use std::io::{self, BufRead};
use std::net::{Ipv4Addr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::mpsc;
use std::time::{Duration, Instant};
use std::{env, fs, mem, process};

/// 320x240 constrained baseline.
const SPS: &[u8] = &[0x67, 0x42, 0xc0, 0x1e, 0xd9, 0x00, 0xa0, 0x3d, 0xa1];
const PPS: &[u8] = &[0x68, 0xce, 0x3c, 0x80];
const FRAME_MS: u64 = 40;
const AUDIO_MS: u64 = 20;
const GOP: u32 = 50;
const SLICE_BYTES: usize = 9_950;
const MTU: usize = 1_000;
const SENDMMSG_BATCH: usize = 256;

fn access_unit(key: bool, slice_bytes: usize) -> Vec<Vec<u8>> {
    let mut au = Vec::new();
    if key {
        for nal in [SPS, PPS] {
            au.extend_from_slice(&[0, 0, 0, 1]);
            au.extend_from_slice(nal);
        }
    }
    au.extend_from_slice(&[0, 0, 0, 1, if key { 0x65 } else { 0x41 }]);
    // no 0x00 bytes, so no start code can appear inside the slice
    au.extend((0..slice_bytes).map(|i| (i % 251) as u8 + 1));
    h264_packetize(&au, MTU)
}

struct Call {
    audio: libc::sockaddr_in,
    video: libc::sockaddr_in,
    /// when its first packets are due
    t0: Instant,
    aseq: u16,
    vseq: u16,
    next_audio: u64,
    next_frame: u32,
}

/// `AUDIO_PORT [VIDEO_PORT]`; None for a blank or unreadable line.
fn parse_ports(line: &str) -> Option<(u16, u16)> {
    let mut words = line.split_whitespace();
    let audio: u16 = words.next()?.parse().ok()?;
    let video = match words.next() {
        Some(w) => w.parse().ok()?,
        None => audio.checked_add(2)?,
    };
    Some((audio, video))
}

fn sockaddr(ip: Ipv4Addr, port: u16) -> libc::sockaddr_in {
    // SAFETY: all-zero is a valid sockaddr_in
    let mut a: libc::sockaddr_in = unsafe { mem::zeroed() };
    a.sin_family = libc::AF_INET as libc::sa_family_t;
    a.sin_port = port.to_be();
    a.sin_addr.s_addr = u32::from(ip).to_be();
    a
}

fn cpu_seconds() -> f64 {
    // SAFETY: all-zero is a valid rusage; getrusage fills it
    let mut ru: libc::rusage = unsafe { mem::zeroed() };
    // SAFETY: valid pointer to a rusage
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Sends queued datagrams with `sendmmsg`, retrying on a full send buffer.
struct Sender {
    fd: i32,
    packets: Vec<(Vec<u8>, libc::sockaddr_in)>,
    sent: u64,
    errors: u64,
}

impl Sender {
    fn push(&mut self, packet: Vec<u8>, to: libc::sockaddr_in) {
        self.packets.push((packet, to));
        if self.packets.len() == SENDMMSG_BATCH {
            self.flush();
        }
    }

    fn flush(&mut self) {
        let mut iovecs: Vec<libc::iovec> = self
            .packets
            .iter()
            .map(|(p, _)| libc::iovec {
                iov_base: p.as_ptr() as *mut libc::c_void,
                iov_len: p.len(),
            })
            .collect();
        let mut msgs: Vec<libc::mmsghdr> = Vec::with_capacity(iovecs.len());
        for (i, (_, to)) in self.packets.iter().enumerate() {
            // SAFETY: all-zero is a valid mmsghdr
            let mut m: libc::mmsghdr = unsafe { mem::zeroed() };
            m.msg_hdr.msg_name = to as *const libc::sockaddr_in as *mut libc::c_void;
            m.msg_hdr.msg_namelen = mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            m.msg_hdr.msg_iov = &mut iovecs[i];
            m.msg_hdr.msg_iovlen = 1;
            msgs.push(m);
        }
        let mut done = 0;
        while done < msgs.len() {
            let rest = &mut msgs[done..];
            // SAFETY: msgs point into iovecs/packets, alive for this call
            let n = unsafe {
                libc::sendmmsg(self.fd, rest.as_mut_ptr(), rest.len() as libc::c_uint, 0)
            };
            if n <= 0 {
                // a datagram the kernel refused (e.g. a port nobody listens
                // on any more): count it and go on with the rest
                self.errors += 1;
                done += 1;
            } else {
                done += n as usize;
                self.sent += n as u64;
            }
        }
        self.packets.clear();
    }
}

fn main() {
    let args: Vec<String> = env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: rtp_blaster PORTS_FILE|- SECONDS [HOST] [SLICE_BYTES]");
        process::exit(2);
    }
    let seconds: f64 = args[2].parse().expect("SECONDS is a number");
    let host: Ipv4Addr = args
        .get(3)
        .map(|h| h.parse().expect("HOST is an IPv4 address"))
        .unwrap_or(Ipv4Addr::LOCALHOST);
    let slice_bytes: usize = args
        .get(4)
        .map(|b| b.parse().expect("SLICE_BYTES is a number"))
        .unwrap_or(SLICE_BYTES);
    let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).expect("bind the sending socket");
    let fd = socket.as_raw_fd();
    let buf: libc::c_int = 4 << 20;
    // SAFETY: setsockopt with a valid c_int pointer and its size
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            (&buf as *const libc::c_int).cast(),
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    let key = access_unit(true, slice_bytes);
    let delta = access_unit(false, slice_bytes);
    let start = Instant::now();
    let new_call = |(audio, video): (u16, u16), t0: Instant| Call {
        audio: sockaddr(host, audio),
        video: sockaddr(host, video),
        t0,
        aseq: 0,
        vseq: 0,
        next_audio: 0,
        next_frame: 0,
    };
    let mut calls: Vec<Call> = Vec::new();
    let mut added: Option<mpsc::Receiver<(u16, u16)>> = None;
    if args[1] == "-" {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in io::stdin().lock().lines() {
                let Ok(line) = line else { return };
                if let Some(ports) = parse_ports(&line) {
                    if tx.send(ports).is_err() {
                        return;
                    }
                }
            }
        });
        added = Some(rx);
    } else {
        let ports: Vec<(u16, u16)> = fs::read_to_string(&args[1])
            .expect("ports file is readable")
            .lines()
            .filter_map(parse_ports)
            .collect();
        // spread evenly over the frame period
        let n = ports.len().max(1) as u64;
        calls = ports
            .iter()
            .enumerate()
            .map(|(i, &p)| {
                new_call(
                    p,
                    start + Duration::from_micros(i as u64 * FRAME_MS * 1000 / n),
                )
            })
            .collect();
    }
    let mut sender = Sender {
        fd,
        packets: Vec::with_capacity(SENDMMSG_BATCH),
        sent: 0,
        errors: 0,
    };
    let (mut audio_frames, mut video_frames) = (0u64, 0u64);
    let mut max_lag = Duration::ZERO;
    let cpu0 = cpu_seconds();
    let end = start + Duration::from_secs_f64(seconds);
    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        if let Some(rx) = &added {
            for ports in rx.try_iter() {
                // calls added one by one land on a spread of phases (a prime step in µs)
                let phase = (calls.len() as u64 * 7_919) % (FRAME_MS * 1000);
                calls.push(new_call(ports, now + Duration::from_micros(phase)));
            }
        }
        for (i, c) in calls.iter_mut().enumerate() {
            let ssrc = 0x1000_0000 + i as u32 * 2;
            while c.t0 + Duration::from_millis(c.next_audio * AUDIO_MS) <= now {
                let ts = (c.next_audio as u32).wrapping_mul(160);
                sender.push(build_rtp(0, c.aseq, ts, ssrc, false, &[0xff; 160]), c.audio);
                c.aseq = c.aseq.wrapping_add(1);
                c.next_audio += 1;
                audio_frames += 1;
            }
            loop {
                let due = c.t0 + Duration::from_millis(u64::from(c.next_frame) * FRAME_MS);
                if due > now {
                    break;
                }
                max_lag = max_lag.max(now - due);
                let payloads = if c.next_frame % GOP == 0 {
                    &key
                } else {
                    &delta
                };
                let ts = c.next_frame.wrapping_mul(3600);
                let last = payloads.len() - 1;
                for (k, p) in payloads.iter().enumerate() {
                    sender.push(build_rtp(96, c.vseq, ts, ssrc + 1, k == last, p), c.video);
                    c.vseq = c.vseq.wrapping_add(1);
                }
                c.next_frame += 1;
                video_frames += 1;
            }
        }
        sender.flush();
        std::thread::sleep(Duration::from_millis(1));
    }
    let elapsed = start.elapsed().as_secs_f64();
    println!(
        "{{\"calls\": {}, \"seconds\": {:.3}, \"packets\": {}, \"send_errors\": {}, \
         \"audio_frames\": {}, \"video_frames\": {}, \"max_lag_ms\": {:.1}, \"cpu_s\": {:.3}}}",
        calls.len(),
        elapsed,
        sender.sent,
        sender.errors,
        audio_frames,
        video_frames,
        max_lag.as_secs_f64() * 1e3,
        cpu_seconds() - cpu0
    );
}
