//! The kernel's floor under WebRTC fan-out (benches/test_bench_viewers.py):
//! what the WebRTC engine's sending would cost with nothing but the
//! syscalls. One thread sends the same kind of load as the engine does to N
//! viewers: every destination `--rate` datagrams a second of 1100-1200 B
//! (sizes cycle through the range), from one UDP socket, collected once per
//! 10 ms tick and written with `sendmmsg` in batches of 64. No per-packet
//! work at all: no RTP, no SRTP, no allocation (the payloads are built once).
//!
//! The N destinations are UDP sockets of this process drained by a receiver
//! thread the way the WHEP load client drains its viewers (one epoll set, a
//! round every 2 ms, one `recvmmsg` per ready socket), so the kernel's
//! receive work is the same. Pin the receiver to the load core
//! (`--recv-cpu`) and the sender to the measured one (`--send-cpu`); on
//! loopback the receive softirq runs in the sender's context and counts
//! as its CPU, as it does for the engine.
//!
//! The sender thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`) is measured over
//! `--duration` seconds after `--warmup`; delivery is received / sent over
//! the whole run, after a short drain.
//!
//! cargo run --release --example sendmmsg_floor -- --destinations 1000 \
//!     [--rate 92] [--bytes 1100-1200] [--warmup 2] [--duration 10] \
//!     [--send-cpu C] [--recv-cpu C] [--json PATH]
//!
//! Prints one summary line; `--json` also writes the figures as JSON.

use sipstream_core::io::RecvBatch;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};
use std::{env, fs, io, mem, process, thread};

/// One round of the sender: the engine's tick.
const TICK: Duration = Duration::from_millis(10);
/// Datagrams per `sendmmsg`, as the engine sends them.
const SEND_BATCH: usize = 64;
/// Shortest time between two receive rounds (as the WHEP load client).
const ROUND_PERIOD: Duration = Duration::from_millis(2);
/// After the last send, how long the receiver keeps reading.
const DRAIN: Duration = Duration::from_millis(200);
const EPOLL_EVENTS: usize = 1024;

const WARMUP: u8 = 0;
const WINDOW: u8 = 1;
const DRAINING: u8 = 2;
const STOP: u8 = 3;

struct Options {
    destinations: usize,
    rate: f64,
    min_bytes: usize,
    max_bytes: usize,
    warmup: Duration,
    duration: Duration,
    send_cpu: Option<usize>,
    recv_cpu: Option<usize>,
    json: Option<String>,
}

const USAGE: &str = "usage: sendmmsg_floor --destinations N [--rate PACKETS_PER_S_EACH (92)] \
[--bytes MIN-MAX (1100-1200)] [--warmup S (2)] [--duration S (10)] [--send-cpu C] [--recv-cpu C] \
[--json PATH]";

fn parse_options(mut args: impl Iterator<Item = String>) -> Result<Options, String> {
    let mut o = Options {
        destinations: 0,
        rate: 92.0,
        min_bytes: 1100,
        max_bytes: 1200,
        warmup: Duration::from_secs(2),
        duration: Duration::from_secs(10),
        send_cpu: None,
        recv_cpu: None,
        json: None,
    };
    let seconds = |v: &str| {
        v.parse::<f64>()
            .ok()
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(Duration::from_secs_f64)
            .ok_or_else(|| format!("not a number of seconds: {v:?}"))
    };
    while let Some(flag) = args.next() {
        if flag == "--help" || flag == "-h" {
            return Err(String::new());
        }
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let bad = |what: &str| format!("{flag}: not {what}: {value:?}");
        match flag.as_str() {
            "--destinations" => o.destinations = value.parse().map_err(|_| bad("a count"))?,
            "--rate" => {
                o.rate = value
                    .parse()
                    .ok()
                    .filter(|r: &f64| r.is_finite() && *r > 0.0)
                    .ok_or_else(|| bad("a rate"))?
            }
            "--bytes" => {
                let (lo, hi) = value.split_once('-').unwrap_or((&value, &value));
                o.min_bytes = lo.parse().map_err(|_| bad("MIN-MAX"))?;
                o.max_bytes = hi.parse().map_err(|_| bad("MIN-MAX"))?;
                if o.min_bytes == 0 || o.min_bytes > o.max_bytes || o.max_bytes > 65_000 {
                    return Err(bad("MIN-MAX with 0 < MIN <= MAX <= 65000"));
                }
            }
            "--warmup" => o.warmup = seconds(&value)?,
            "--duration" => o.duration = seconds(&value)?,
            "--send-cpu" => o.send_cpu = Some(value.parse().map_err(|_| bad("a CPU"))?),
            "--recv-cpu" => o.recv_cpu = Some(value.parse().map_err(|_| bad("a CPU"))?),
            "--json" => o.json = Some(value),
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    if o.destinations == 0 {
        return Err("--destinations is required (at least 1)".into());
    }
    Ok(o)
}

/// Run the calling thread on `cpu` only.
fn pin(cpu: usize) -> io::Result<()> {
    // SAFETY: all-zero is an empty cpu_set_t; CPU_SET writes inside it
    let mut set: libc::cpu_set_t = unsafe { mem::zeroed() };
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: pid 0 is the calling thread; set is valid for its size
    if unsafe { libc::sched_setaffinity(0, mem::size_of::<libc::cpu_set_t>(), &set) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// CPU time of the calling thread (user + system).
fn thread_cpu() -> Duration {
    // SAFETY: all-zero is a valid timespec; clock_gettime fills it
    let mut ts: libc::timespec = unsafe { mem::zeroed() };
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

// ---------------------------------------------------------------- receiver

/// What the receiver thread saw.
#[derive(Default)]
struct Received {
    total: AtomicU64,
    /// Receiver CPU over the sender's window (ns).
    window_cpu_ns: AtomicU64,
}

struct Epoll(RawFd);

impl Epoll {
    fn new() -> io::Result<Self> {
        // SAFETY: plain syscall
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Epoll(fd))
    }

    fn add(&self, fd: RawFd, token: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: token,
        };
        // SAFETY: ev is valid for the call
        if unsafe { libc::epoll_ctl(self.0, libc::EPOLL_CTL_ADD, fd, &mut ev) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

impl Drop for Epoll {
    fn drop(&mut self) {
        // SAFETY: we own the fd
        unsafe { libc::close(self.0) };
    }
}

/// Bind the destinations, tell the sender their addresses, then drain them
/// until the phase is `STOP`.
fn receive(
    opts: &Options,
    phase: &AtomicU8,
    seen: &Received,
    ready: mpsc::Sender<io::Result<Vec<SocketAddr>>>,
) {
    let setup = || -> io::Result<(Epoll, Vec<UdpSocket>)> {
        if let Some(cpu) = opts.recv_cpu {
            pin(cpu)?;
        }
        let epoll = Epoll::new()?;
        let mut sockets = Vec::with_capacity(opts.destinations);
        for i in 0..opts.destinations {
            let s = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
            s.set_nonblocking(true)?;
            epoll.add(s.as_raw_fd(), i as u64)?;
            sockets.push(s);
        }
        Ok((epoll, sockets))
    };
    let (epoll, sockets) = match setup() {
        Ok(x) => x,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let addrs = sockets.iter().map(|s| s.local_addr()).collect();
    if ready.send(addrs).is_err() {
        return;
    }
    let mut batch = RecvBatch::new();
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; EPOLL_EVENTS];
    let mut last_round = Instant::now();
    let mut seen_phase = WARMUP;
    let mut window_cpu = Duration::ZERO;
    let mut total = 0u64;
    loop {
        let now_phase = phase.load(Ordering::Acquire);
        if now_phase != seen_phase {
            if seen_phase == WARMUP {
                window_cpu = thread_cpu();
            }
            if seen_phase == WINDOW {
                window_cpu = thread_cpu().saturating_sub(window_cpu);
                seen.window_cpu_ns
                    .store(window_cpu.as_nanos() as u64, Ordering::Relaxed);
            }
            seen_phase = seen_phase.max(now_phase.min(seen_phase + 1));
            continue;
        }
        if seen_phase == STOP {
            break;
        }
        let since = last_round.elapsed();
        if since < ROUND_PERIOD {
            thread::sleep(ROUND_PERIOD - since);
        }
        last_round = Instant::now();
        // SAFETY: events has EPOLL_EVENTS valid entries
        let n = unsafe { libc::epoll_wait(epoll.0, events.as_mut_ptr(), EPOLL_EVENTS as i32, 10) };
        for e in events.iter().take(n.max(0) as usize) {
            let token = e.u64 as usize;
            // one batch per ready socket per round: level-triggered epoll
            // reports it again when more is waiting
            let got = batch.recv(sockets[token].as_raw_fd()).unwrap_or(0);
            total += got as u64;
        }
        seen.total.store(total, Ordering::Relaxed);
    }
}

// ---------------------------------------------------------------- sender

fn sockaddr(a: &SocketAddr) -> libc::sockaddr_in {
    let SocketAddr::V4(v4) = a else {
        unreachable!("destinations are IPv4 loopback sockets")
    };
    // SAFETY: all-zero is a valid sockaddr_in
    let mut s: libc::sockaddr_in = unsafe { mem::zeroed() };
    s.sin_family = libc::AF_INET as libc::sa_family_t;
    s.sin_port = v4.port().to_be();
    s.sin_addr.s_addr = u32::from(*v4.ip()).to_be();
    s
}

/// `sendmmsg` of `(destination, payload)` pairs in batches of `SEND_BATCH`:
/// (sent, failed).
fn send_all(
    fd: RawFd,
    out: &[(usize, usize)],
    dests: &[libc::sockaddr_in],
    payloads: &[Vec<u8>],
) -> (u64, u64) {
    let (mut sent, mut errors) = (0u64, 0u64);
    // SAFETY: all-zero is a valid iovec/mmsghdr; the pointers set below stay
    // valid during each call (dests, payloads and these arrays outlive it)
    let mut iovs: [libc::iovec; SEND_BATCH] = unsafe { mem::zeroed() };
    let mut msgs: [libc::mmsghdr; SEND_BATCH] = unsafe { mem::zeroed() };
    for chunk in out.chunks(SEND_BATCH) {
        for (i, &(dest, payload)) in chunk.iter().enumerate() {
            let p = &payloads[payload];
            iovs[i] = libc::iovec {
                iov_base: p.as_ptr() as *mut libc::c_void,
                iov_len: p.len(),
            };
            let h = &mut msgs[i].msg_hdr;
            h.msg_name = &dests[dest] as *const libc::sockaddr_in as *mut libc::c_void;
            h.msg_namelen = mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            h.msg_iov = &mut iovs[i];
            h.msg_iovlen = 1;
        }
        let mut start = 0;
        while start < chunk.len() {
            // SAFETY: msgs[start..chunk.len()] are initialised headers
            let n = unsafe {
                libc::sendmmsg(
                    fd,
                    msgs[start..].as_mut_ptr(),
                    (chunk.len() - start) as libc::c_uint,
                    libc::MSG_DONTWAIT,
                )
            };
            if n <= 0 {
                // the first of the rest failed (full buffer): skip it, as the engine does
                errors += 1;
                start += 1;
            } else {
                sent += n as u64;
                start += n as usize;
            }
        }
    }
    (sent, errors)
}

fn main() {
    let opts = match parse_options(env::args().skip(1)) {
        Ok(o) => Arc::new(o),
        Err(e) => {
            if !e.is_empty() {
                eprintln!("sendmmsg_floor: {e}");
            }
            eprintln!("{USAGE}");
            process::exit(2);
        }
    };
    let phase = Arc::new(AtomicU8::new(WARMUP));
    let seen = Arc::new(Received::default());
    let (tx, rx) = mpsc::channel();
    let receiver = {
        let (opts, phase, seen) = (opts.clone(), phase.clone(), seen.clone());
        thread::spawn(move || receive(&opts, &phase, &seen, tx))
    };
    let addrs = match rx.recv() {
        Ok(Ok(a)) => a,
        Ok(Err(e)) => {
            eprintln!("sendmmsg_floor: cannot set up the destinations: {e}");
            process::exit(1);
        }
        Err(_) => {
            eprintln!("sendmmsg_floor: the receiver thread died");
            process::exit(1);
        }
    };
    if let Some(cpu) = opts.send_cpu {
        if let Err(e) = pin(cpu) {
            eprintln!("sendmmsg_floor: cannot pin the sender to CPU {cpu}: {e}");
            process::exit(1);
        }
    }
    let dests: Vec<libc::sockaddr_in> = addrs.iter().map(sockaddr).collect();
    let payloads: Vec<Vec<u8>> = (opts.min_bytes..=opts.max_bytes)
        .map(|len| {
            // an RTP-looking header (version 2), then filler
            let mut p = vec![0xa5u8; len];
            p[0] = 0x80;
            p
        })
        .collect();
    let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind the sending socket");
    socket.set_nonblocking(true).expect("non-blocking socket");
    let fd = socket.as_raw_fd();

    // Every tick sends what is due since the start at `rate` per destination,
    // round-robin over the destinations, so each gets `rate` a second, spread.
    let per_s = opts.rate * opts.destinations as f64;
    let mut out: Vec<(usize, usize)> = Vec::with_capacity(per_s as usize / 50 + SEND_BATCH);
    let (mut next_dest, mut next_payload) = (0usize, 0usize);
    let (mut due_total, mut sent, mut errors) = (0u64, 0u64, 0u64);
    let start = Instant::now();
    let window_start_at = start + opts.warmup;
    let end = window_start_at + opts.duration;
    let mut window: Option<(Instant, Duration, u64)> = None; // (start, cpu, sent)
    let mut window_result = None; // (wall, cpu, sent)
    let mut max_lag = Duration::ZERO;
    let mut next_tick = start + TICK;
    loop {
        let now = Instant::now();
        if now < next_tick {
            thread::sleep(next_tick - now);
        }
        let now = Instant::now();
        max_lag = max_lag.max(now - next_tick);
        if window.is_none() && now >= window_start_at {
            window = Some((now, thread_cpu(), sent));
            phase.store(WINDOW, Ordering::Release);
        }
        if now >= end {
            if let Some((t0, cpu0, sent0)) = window {
                window_result = Some((now - t0, thread_cpu() - cpu0, sent - sent0));
            }
            phase.store(DRAINING, Ordering::Release);
            break;
        }
        let due = ((now - start).as_secs_f64() * per_s) as u64;
        out.clear();
        while due_total < due {
            out.push((next_dest, next_payload));
            next_dest = (next_dest + 1) % dests.len();
            next_payload = (next_payload + 1) % payloads.len();
            due_total += 1;
        }
        let (s, e) = send_all(fd, &out, &dests, &payloads);
        sent += s;
        errors += e;
        next_tick += TICK;
        if next_tick <= now {
            next_tick = now + TICK;
        }
    }
    thread::sleep(DRAIN);
    phase.store(STOP, Ordering::Release);
    let _ = receiver.join();

    let (wall, cpu, window_sent) = window_result.unwrap_or((Duration::ZERO, Duration::ZERO, 0));
    let received = seen.total.load(Ordering::Relaxed);
    let us_per_packet = cpu.as_secs_f64() * 1e6 / window_sent.max(1) as f64;
    let delivery = received as f64 / sent.max(1) as f64;
    let recv_cpu = Duration::from_nanos(seen.window_cpu_ns.load(Ordering::Relaxed));
    println!(
        "sendmmsg_floor: {} destinations x {:.1} packets/s of {}-{} B: {} sent in {:.2} s, \
         sender CPU {:.3} s ({:.1}% of a core) = {:.3} us/packet; delivery {:.5} ({} of {}), \
         {} send errors, max tick lag {:.1} ms; receiver CPU {:.3} s",
        opts.destinations,
        opts.rate,
        opts.min_bytes,
        opts.max_bytes,
        window_sent,
        wall.as_secs_f64(),
        cpu.as_secs_f64(),
        100.0 * cpu.as_secs_f64() / wall.as_secs_f64().max(1e-9),
        us_per_packet,
        delivery,
        received,
        sent,
        errors,
        max_lag.as_secs_f64() * 1e3,
        recv_cpu.as_secs_f64()
    );
    if let Some(path) = &opts.json {
        let json = format!(
            "{{\"destinations\": {}, \"rate_per_destination\": {}, \"min_bytes\": {}, \"max_bytes\": {}, \
             \"window_s\": {:.4}, \"window_packets\": {}, \"sender_cpu_s\": {:.6}, \"us_per_packet\": {:.4}, \
             \"packets_per_s\": {:.1}, \"sent\": {}, \"received\": {}, \"delivery\": {:.6}, \
             \"send_errors\": {}, \"max_tick_lag_ms\": {:.2}, \"receiver_cpu_s\": {:.6}}}\n",
            opts.destinations,
            opts.rate,
            opts.min_bytes,
            opts.max_bytes,
            wall.as_secs_f64(),
            window_sent,
            cpu.as_secs_f64(),
            us_per_packet,
            window_sent as f64 / wall.as_secs_f64().max(1e-9),
            sent,
            received,
            delivery,
            errors,
            max_lag.as_secs_f64() * 1e3,
            recv_cpu.as_secs_f64()
        );
        if let Err(e) = fs::write(path, json) {
            eprintln!("sendmmsg_floor: cannot write {path}: {e}");
            process::exit(1);
        }
    }
}
