//! WHEP load client: N simulated WebRTC viewers of one stream, or of one
//! stream each when the URL holds `{i}` (viewer i watches the URL with `{i}`
//! replaced by i: `--url http://HOST:PORT/whep/load{i}`).
//!
//! Each viewer does real WHEP (POST offer, 201 + answer + Location), full
//! ICE (controlling) and DTLS through its own str0m `Rtc` and its own UDP
//! socket (the server routes by remote address, so every viewer needs its
//! own 5-tuple). Media is counted, never decrypted: only STUN and DTLS
//! datagrams reach str0m, while SRTP/SRTCP are classified by their clear RTP
//! header (SSRC, sequence number) and counted per viewer and SSRC. That keeps
//! the client far cheaper than the server it measures.
//!
//! One thread (the main one) owns every viewer's `Rtc` and socket: one epoll
//! set, `recvmmsg` per ready socket, and a scan of the `Rtc` deadlines at
//! most every millisecond. Once everyone has joined it wakes at most every
//! `ROUND_PERIOD` so each wake-up serves many datagrams. `--threads` worker
//! threads do the blocking WHEP POSTs (and the final DELETEs) and hand each
//! answered `Rtc` to the main thread.
//!
//! After all viewers have connected or failed (no ICE+DTLS within 15 s of the
//! POST) and `--warmup` seconds more (a viewer that joined last may wait up
//! to a keyframe interval for its first picture), the counters are
//! snapshotted and measured for `--duration` seconds;
//! delivery (RTP received / expected from sequence numbers) is reported for
//! that window and for the whole session, with the client's own CPU time.
//!
//! cargo run --release --example whep_load -- --url http://127.0.0.1:9091/whep/demo \
//!     [--viewers 10] [--duration 10] [--warmup 0] [--bind 127.0.0.1] [--rate 0] [--threads 4] \
//!     [--audio true] [--video true] [--token SECRET] [--json PATH] [--summary-only] \
//!     [--print-sdp]
//!
//! Exit code 0 when every viewer connected, 1 when some did not, 2 on bad usage.

use sipstream_core::io::RecvBatch;
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};
use std::{env, fs, io, mem, process, thread};
use str0m::change::{SdpAnswer, SdpPendingOffer};
use str0m::config::{CryptoProvider, DtlsCert};
use str0m::media::{Direction, MediaKind};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc};

/// A viewer that has not reached `Event::Connected` this long after its
/// POST started has failed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// Longest sleep in `epoll_wait`, and longest gap between deadline scans.
const MAX_TICK: Duration = Duration::from_millis(10);
/// Shortest gap between two scans of all viewers' deadlines, so a flood of
/// media wake-ups does not turn into N-viewer scans per packet.
const MIN_TICK: Duration = Duration::from_millis(1);
/// HTTP timeout for one WHEP request.
const HTTP_TIMEOUT: Duration = Duration::from_secs(15);
/// Shortest time between two receive rounds once every viewer has joined.
/// Waking up for every datagram would cost a context switch per packet,
/// which is most of this client's CPU otherwise.
const ROUND_PERIOD: Duration = Duration::from_millis(2);
const EPOLL_EVENTS: usize = 1024;
/// epoll token of the eventfd that join workers signal.
const WAKE_TOKEN: u64 = u64::MAX;

// ---------------------------------------------------------------- options

struct Options {
    url: String,
    viewers: usize,
    duration: Duration,
    /// After the joins, before the window: the last viewers' first pictures.
    warmup: Duration,
    bind: IpAddr,
    /// Joins per second; 0 = as fast as the join threads go.
    rate: f64,
    threads: usize,
    audio: bool,
    video: bool,
    token: Option<String>,
    json: Option<String>,
    summary_only: bool,
    /// Print viewer 0's offer and answer to stderr.
    print_sdp: bool,
}

const USAGE: &str = "usage: whep_load --url http://HOST:PORT/whep/STREAM [--viewers N (10)] \
[--duration S (10)] [--warmup S (0)] [--bind IP (127.0.0.1)] [--rate JOINS_PER_S (0 = all at once)] \
[--threads T (4)] [--audio true|false] [--video true|false] [--token BEARER] \
[--json PATH] [--summary-only] [--print-sdp]";

fn parse_bool(v: &str) -> Result<bool, String> {
    match v {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        _ => Err(format!("expected true or false, got {v:?}")),
    }
}

fn parse_options(args: impl Iterator<Item = String>) -> Result<Options, String> {
    let mut o = Options {
        url: String::new(),
        viewers: 10,
        duration: Duration::from_secs(10),
        warmup: Duration::ZERO,
        bind: IpAddr::from([127, 0, 0, 1]),
        rate: 0.0,
        threads: 4,
        audio: true,
        video: true,
        token: None,
        json: None,
        summary_only: false,
        print_sdp: false,
    };
    let mut args = args;
    while let Some(arg) = args.next() {
        // accept both `--flag value` and `--flag=value`
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) => (f.to_string(), Some(v.to_string())),
            None => (arg.clone(), None),
        };
        if flag == "--summary-only" {
            o.summary_only = true;
            continue;
        }
        if flag == "--print-sdp" {
            o.print_sdp = true;
            continue;
        }
        if flag == "--help" || flag == "-h" {
            return Err(String::new());
        }
        let value = match inline.or_else(|| args.next()) {
            Some(v) => v,
            None => return Err(format!("{flag} needs a value")),
        };
        let bad = |e: &dyn std::fmt::Display| format!("{flag} {value}: {e}");
        match flag.as_str() {
            "--url" => o.url = value.clone(),
            "--viewers" => o.viewers = value.parse().map_err(|e| bad(&e))?,
            "--duration" => {
                let s: f64 = value.parse().map_err(|e| bad(&e))?;
                o.duration = Duration::try_from_secs_f64(s).map_err(|e| bad(&e))?;
            }
            "--warmup" => {
                let s: f64 = value.parse().map_err(|e| bad(&e))?;
                o.warmup = Duration::try_from_secs_f64(s).map_err(|e| bad(&e))?;
            }
            "--bind" => o.bind = value.parse().map_err(|e| bad(&e))?,
            "--rate" => o.rate = value.parse().map_err(|e| bad(&e))?,
            "--threads" => o.threads = value.parse().map_err(|e| bad(&e))?,
            "--audio" => o.audio = parse_bool(&value).map_err(|e| bad(&e))?,
            "--video" => o.video = parse_bool(&value).map_err(|e| bad(&e))?,
            "--token" => o.token = Some(value.clone()),
            "--json" => o.json = Some(value.clone()),
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    if !o.url.starts_with("http://") {
        return Err("--url http://HOST:PORT/whep/STREAM is required (plain HTTP)".into());
    }
    if o.viewers == 0 || o.threads == 0 {
        return Err("--viewers and --threads must be at least 1".into());
    }
    if !o.audio && !o.video {
        return Err("offer at least one of --audio and --video".into());
    }
    if !(o.rate >= 0.0 && o.rate.is_finite()) {
        return Err("--rate must be >= 0".into());
    }
    Ok(o)
}

// ---------------------------------------------------------------- joining

/// What a join worker hands to the driver thread.
enum JoinMsg {
    /// The answer was accepted; ICE and DTLS are the driver's job.
    Answered(Box<Answered>),
    /// No usable answer; `location` is set when the server created a session
    /// anyway, so it still gets its DELETE.
    Failed {
        index: usize,
        reason: String,
        location: Option<String>,
    },
}

struct Answered {
    index: usize,
    socket: UdpSocket,
    rtc: Rtc,
    location: String,
    /// The SSRCs the answer announces (`a=ssrc:`): RTP with another SSRC is
    /// not this viewer's (e.g. left over from an earlier user of the port).
    ssrcs: Vec<u32>,
    /// When the POST started: the join time runs from here to Connected.
    started: Instant,
}

/// State shared by the join workers.
struct Joiner {
    opts: Arc<Options>,
    agent: ureq::Agent,
    crypto: Arc<CryptoProvider>,
    /// One certificate for all viewers: generating one per `Rtc` would cost
    /// key generation per join for nothing.
    cert: DtlsCert,
}

impl Joiner {
    /// POST an offer for viewer `index` and accept the answer.
    fn join(&self, index: usize) -> JoinMsg {
        let fail = |reason: String, location: Option<String>| JoinMsg::Failed {
            index,
            reason,
            location,
        };
        let socket = match UdpSocket::bind((self.opts.bind, 0)).and_then(|s| {
            s.set_nonblocking(true)?;
            Ok(s)
        }) {
            Ok(s) => s,
            Err(e) => return fail(format!("socket: {e}"), None),
        };
        let local = match socket.local_addr() {
            Ok(a) => a,
            Err(e) => return fail(format!("socket: {e}"), None),
        };
        let (mut rtc, offer, pending) = match self.offer(local) {
            Ok(x) => x,
            Err(e) => return fail(e, None),
        };

        let started = Instant::now();
        let url = viewer_url(&self.opts.url, index);
        let mut request = self
            .agent
            .post(&url)
            .header("Content-Type", "application/sdp");
        if let Some(token) = &self.opts.token {
            request = request.header("Authorization", format!("Bearer {token}"));
        }
        let mut response = match request.send(&offer) {
            Ok(r) => r,
            Err(e) => return fail(format!("POST: {e}"), None),
        };
        let status = response.status().as_u16();
        let location = response
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .map(|l| absolute_url(&url, l));
        let body = response.body_mut().read_to_string().unwrap_or_default();
        if self.opts.print_sdp && index == 0 {
            eprintln!("--- offer (viewer 0)\n{offer}--- answer: HTTP {status}\n{body}---");
        }
        if status != 201 {
            let body: String = body.trim().chars().take(200).collect();
            return fail(format!("HTTP {status}: {body}"), location);
        }
        let Some(location) = location else {
            return fail("201 without a Location header".into(), None);
        };
        let answer = match SdpAnswer::from_sdp_string(&reachable_candidates(&body, self.opts.bind))
        {
            Ok(a) => a,
            Err(e) => return fail(format!("bad SDP answer: {e}"), Some(location)),
        };
        if let Err(e) = rtc.sdp_api().accept_answer(pending, answer) {
            return fail(format!("answer not accepted: {e}"), Some(location));
        }
        JoinMsg::Answered(Box::new(Answered {
            index,
            socket,
            rtc,
            location,
            ssrcs: announced_ssrcs(&body),
            started,
        }))
    }

    /// A client `Rtc` with one host candidate and recvonly m-lines, and its
    /// offer. str0m makes the offerer the controlling ICE agent (full ICE,
    /// not lite) and offers `a=setup:actpass`, so the server picks the DTLS
    /// role.
    fn offer(&self, local: SocketAddr) -> Result<(Rtc, String, SdpPendingOffer), String> {
        // str0m offers only Opus audio by default; a browser also offers
        // G.711 and G.722, and a SIP-fed stream is usually G.711.
        let mut rtc = Rtc::builder()
            .enable_pcmu(true, false)
            .enable_pcma(true, false)
            .enable_g722(true, false)
            .set_crypto_provider(self.crypto.clone())
            .set_dtls_cert(self.cert.clone())
            .build(Instant::now());
        let candidate = Candidate::host(local, "udp").map_err(|e| format!("candidate: {e}"))?;
        if rtc.add_local_candidate(candidate).is_none() {
            return Err(format!("str0m rejected the host candidate {local}"));
        }
        let mut sdp = rtc.sdp_api();
        if self.opts.video {
            sdp.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
        }
        if self.opts.audio {
            sdp.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
        }
        let (offer, pending) = sdp.apply().ok_or("str0m made no offer")?;
        Ok((rtc, offer.to_sdp_string(), pending))
    }

    /// Best-effort DELETE of one WHEP session.
    fn delete(&self, location: &str) -> bool {
        let mut request = self.agent.delete(location);
        if let Some(token) = &self.opts.token {
            request = request.header("Authorization", format!("Bearer {token}"));
        }
        matches!(request.call(), Ok(r) if r.status().is_success())
    }
}

/// The WHEP URL of viewer `index`: `{i}` in the URL becomes the index.
fn viewer_url(template: &str, index: usize) -> String {
    template.replace("{i}", &index.to_string())
}

/// Resolve a Location header (usually a path) against the POST URL.
fn absolute_url(base: &str, location: &str) -> String {
    if location.contains("://") {
        return location.to_string();
    }
    // base is http://host:port/...; keep scheme and authority
    let authority_end = base[7..].find('/').map_or(base.len(), |i| i + 7);
    if location.starts_with('/') {
        format!("{}{location}", &base[..authority_end])
    } else {
        let dir_end = base
            .rfind('/')
            .filter(|&i| i >= authority_end)
            .unwrap_or(base.len());
        format!("{}/{location}", &base[..dir_end])
    }
}

/// Drop the answer's candidates that our sockets cannot reach: non-UDP ones,
/// the other address family, and non-loopback ones when we bind to loopback.
/// Without this str0m would send connectivity checks to them.
fn reachable_candidates(sdp: &str, bind: IpAddr) -> String {
    let mut out = String::with_capacity(sdp.len());
    for line in sdp.split_inclusive('\n') {
        if let Some(rest) = line.trim_end().strip_prefix("a=candidate:") {
            // foundation component transport priority address port typ ...
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let reachable = fields.len() >= 6
                && fields[2].eq_ignore_ascii_case("udp")
                && fields[4].parse::<IpAddr>().is_ok_and(|ip| {
                    ip.is_ipv4() == bind.is_ipv4() && (!bind.is_loopback() || ip.is_loopback())
                });
            if !reachable {
                continue;
            }
        }
        out.push_str(line);
    }
    out
}

/// Run the joins on `threads` workers, each viewer starting at its slot
/// (`rate` > 0) or as soon as a worker is free; results go to `tx`, and the
/// driver is woken through `wake`.
fn spawn_joins(joiner: Arc<Joiner>, tx: mpsc::Sender<JoinMsg>, wake: Arc<EventFd>) {
    let next = Arc::new(AtomicUsize::new(0));
    let t0 = Instant::now();
    for _ in 0..joiner.opts.threads.min(joiner.opts.viewers) {
        let (joiner, tx, wake, next) = (joiner.clone(), tx.clone(), wake.clone(), next.clone());
        thread::spawn(move || loop {
            let index = next.fetch_add(1, Ordering::Relaxed);
            if index >= joiner.opts.viewers {
                break;
            }
            if joiner.opts.rate > 0.0 {
                let slot = t0 + Duration::from_secs_f64(index as f64 / joiner.opts.rate);
                thread::sleep(slot.saturating_duration_since(Instant::now()));
            }
            if tx.send(joiner.join(index)).is_err() {
                break;
            }
            wake.signal();
        });
    }
}

/// DELETE every session on `threads` workers; returns how many succeeded.
fn delete_all(joiner: &Arc<Joiner>, locations: Vec<String>) -> usize {
    let locations = Arc::new(locations);
    let next = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..joiner.opts.threads.min(locations.len()))
        .map(|_| {
            let (joiner, locations) = (joiner.clone(), locations.clone());
            let (next, done) = (next.clone(), done.clone());
            thread::spawn(move || {
                while let Some(location) = locations.get(next.fetch_add(1, Ordering::Relaxed)) {
                    if joiner.delete(location) {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for w in workers {
        let _ = w.join();
    }
    done.load(Ordering::Relaxed)
}

// ---------------------------------------------------------------- counting

/// Receive counters of one SSRC. Sequence numbers are extended to 64 bits
/// (16-bit wraps counted); the first one starts at 2^32 so packets older
/// than the first can still move `first` down.
#[derive(Clone, Copy)]
struct SsrcCount {
    ssrc: u32,
    packets: u64,
    bytes: u64,
    first: u64,
    highest: u64,
}

impl SsrcCount {
    fn new(ssrc: u32, seq: u16) -> Self {
        let ext = (1u64 << 32) + u64::from(seq);
        SsrcCount {
            ssrc,
            packets: 0,
            bytes: 0,
            first: ext,
            highest: ext,
        }
    }

    fn add(&mut self, seq: u16, len: usize) {
        self.packets += 1;
        self.bytes += len as u64;
        let delta = seq.wrapping_sub(self.highest as u16);
        if delta < 0x8000 {
            // newer (or a duplicate of the highest)
            self.highest += u64::from(delta);
        } else {
            // older than the highest: reordered, or from before the first
            let ext = self.highest - u64::from(delta.wrapping_neg());
            self.first = self.first.min(ext);
        }
    }

    fn expected(&self) -> u64 {
        self.highest - self.first + 1
    }
}

/// What one viewer received: RTP per SSRC, RTCP, and anything else.
#[derive(Clone, Default)]
struct Counts {
    ssrcs: Vec<SsrcCount>,
    rtcp: u64,
    /// RTP + RTCP datagram bytes (as on the wire, SRTP tag included).
    bytes: u64,
    /// Datagrams that are neither STUN, DTLS nor RTP/RTCP of this viewer's
    /// announced SSRCs.
    other: u64,
    /// The answer's SSRCs (empty: count every SSRC).
    announced: Vec<u32>,
}

impl Counts {
    /// Count one SRTP/SRTCP datagram by its clear header.
    fn add(&mut self, d: &[u8]) {
        if d.len() < 12 || d[0] >> 6 != 2 {
            self.other += 1;
            return;
        }
        self.bytes += d.len() as u64;
        // RFC 5761 §4: a second byte of 192..=223 is RTCP (SR 200, RR 201,
        // SDES 202, BYE 203, APP 204, RTPFB 205, PSFB 206, XR 207, ...).
        if (192..=223).contains(&d[1]) {
            self.rtcp += 1;
            return;
        }
        let seq = u16::from_be_bytes([d[2], d[3]]);
        let ssrc = u32::from_be_bytes([d[8], d[9], d[10], d[11]]);
        if !self.announced.is_empty() && !self.announced.contains(&ssrc) {
            self.other += 1;
            return;
        }
        let entry = match self.ssrcs.iter().position(|s| s.ssrc == ssrc) {
            Some(i) => &mut self.ssrcs[i],
            None => {
                self.ssrcs.push(SsrcCount::new(ssrc, seq));
                self.ssrcs.last_mut().expect("just pushed")
            }
        };
        entry.add(seq, d.len());
    }
}

/// Delivery between two snapshots of one viewer's counters.
#[derive(Clone, Copy, Default)]
struct Delivery {
    rtp: u64,
    rtcp: u64,
    bytes: u64,
    expected: u64,
    ssrcs: usize,
}

impl Delivery {
    /// `end` minus `start` (`None` = since the session began). An SSRC first
    /// seen inside the window counts from its first packet.
    fn between(start: Option<&Counts>, end: &Counts) -> Self {
        let mut d = Delivery {
            rtcp: end.rtcp - start.map_or(0, |s| s.rtcp),
            bytes: end.bytes - start.map_or(0, |s| s.bytes),
            ssrcs: end.ssrcs.len(),
            ..Default::default()
        };
        for s in &end.ssrcs {
            match start.and_then(|c| c.ssrcs.iter().find(|b| b.ssrc == s.ssrc)) {
                Some(b) => {
                    d.rtp += s.packets - b.packets;
                    d.expected += s.highest - b.highest;
                }
                None => {
                    d.rtp += s.packets;
                    d.expected += s.expected();
                }
            }
        }
        d
    }

    /// Lost packets (negative with duplicates, as in RFC 3550).
    fn lost(&self) -> i64 {
        self.expected as i64 - self.rtp as i64
    }
}

// ---------------------------------------------------------------- viewers

struct Viewer {
    socket: UdpSocket,
    local: SocketAddr,
    rtc: Rtc,
    /// In the epoll set and driven; cleared once the viewer has failed.
    registered: bool,
    location: String,
    started: Instant,
    /// When str0m next wants `Input::Timeout`.
    deadline: Instant,
    connected_at: Option<Instant>,
    ice: IceConnectionState,
    /// ICE disconnects after having connected.
    disconnects: u32,
    /// Set when the viewer has failed; it is then no longer driven.
    failed: Option<String>,
    counts: Counts,
    send_errors: u64,
}

impl Viewer {
    /// Drain str0m's output: send transmits, note events, keep the deadline.
    fn drive(&mut self, now: Instant) {
        loop {
            if !self.rtc.is_alive() {
                self.failed
                    .get_or_insert_with(|| "the session closed (DTLS close or error)".into());
                return;
            }
            match self.rtc.poll_output() {
                Ok(Output::Timeout(t)) => {
                    self.deadline = t;
                    return;
                }
                Ok(Output::Transmit(t)) => {
                    if self.socket.send_to(&t.contents, t.destination).is_err() {
                        self.send_errors += 1;
                    }
                }
                Ok(Output::Event(e)) => self.on_event(e, now),
                Err(e) => {
                    self.failed.get_or_insert_with(|| format!("str0m: {e}"));
                    self.rtc.disconnect();
                    return;
                }
            }
        }
    }

    fn on_event(&mut self, event: Event, now: Instant) {
        match event {
            Event::Connected => {
                self.connected_at.get_or_insert(now);
            }
            Event::IceConnectionStateChange(state) => {
                if state == IceConnectionState::Disconnected && self.connected_at.is_some() {
                    self.disconnects += 1;
                }
                self.ice = state;
            }
            // No media reaches str0m, so there is nothing else to act on.
            _ => {}
        }
    }

    /// Handle one datagram from the socket.
    fn on_datagram(&mut self, data: &[u8], source: Option<SocketAddr>, now: Instant) {
        let Some(&first) = data.first() else { return };
        match first {
            // STUN (0..=3) and DTLS (20..=63), RFC 7983: ICE and DTLS need str0m.
            0..=3 | 20..=63 => {
                let Some(source) = source else { return };
                if let Ok(receive) = Receive::new(Protocol::Udp, source, self.local, data) {
                    if self.rtc.handle_input(Input::Receive(now, receive)).is_ok() {
                        self.drive(now);
                    }
                }
            }
            // SRTP/SRTCP: counted by the clear header, never decrypted. str0m
            // needs none of it for ICE or DTLS, so this holds before
            // `Connected` too (the server may start sending as soon as its
            // own side of DTLS is up).
            128..=191 => self.counts.add(data),
            _ => self.counts.other += 1,
        }
    }
}

// ---------------------------------------------------------------- epoll

/// An eventfd the join workers use to wake the driver.
struct EventFd(RawFd);

impl EventFd {
    fn new() -> io::Result<Self> {
        // SAFETY: plain syscall
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(EventFd(fd))
    }

    fn signal(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a valid u64
        unsafe { libc::write(self.0, (&one as *const u64).cast(), 8) };
    }

    fn clear(&self) {
        let mut n: u64 = 0;
        // SAFETY: reads 8 bytes into a valid u64
        unsafe { libc::read(self.0, (&mut n as *mut u64).cast(), 8) };
    }
}

impl Drop for EventFd {
    fn drop(&mut self) {
        // SAFETY: we own the fd
        unsafe { libc::close(self.0) };
    }
}

struct Epoll {
    fd: RawFd,
    events: Vec<libc::epoll_event>,
}

impl Epoll {
    fn new() -> io::Result<Self> {
        // SAFETY: plain syscall
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Epoll {
            fd,
            events: vec![libc::epoll_event { events: 0, u64: 0 }; EPOLL_EVENTS],
        })
    }

    fn add(&self, fd: RawFd, token: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: token,
        };
        // SAFETY: ev is valid for the call
        if unsafe { libc::epoll_ctl(self.fd, libc::EPOLL_CTL_ADD, fd, &mut ev) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn remove(&self, fd: RawFd) {
        // SAFETY: a null event is allowed for EPOLL_CTL_DEL
        unsafe { libc::epoll_ctl(self.fd, libc::EPOLL_CTL_DEL, fd, std::ptr::null_mut()) };
    }

    /// Wait up to `timeout`; returns the ready tokens' count (tokens via `token`).
    fn wait(&mut self, timeout: Duration) -> usize {
        let ms = timeout.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
        // SAFETY: events has EPOLL_EVENTS valid entries
        let n =
            unsafe { libc::epoll_wait(self.fd, self.events.as_mut_ptr(), EPOLL_EVENTS as i32, ms) };
        n.max(0) as usize
    }

    fn token(&self, i: usize) -> u64 {
        self.events[i].u64
    }
}

impl Drop for Epoll {
    fn drop(&mut self) {
        // SAFETY: we own the fd
        unsafe { libc::close(self.fd) };
    }
}

/// This process's user + system CPU time so far.
fn cpu_time() -> Duration {
    // SAFETY: getrusage fills a zeroed rusage
    let mut ru: libc::rusage = unsafe { mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

// ---------------------------------------------------------------- driver

/// Owns every viewer and the receive loop.
struct Driver {
    epoll: Epoll,
    batch: RecvBatch,
    /// Indexed by viewer number (also the epoll token); `None` until the
    /// viewer's answer arrives, or when its join failed before that.
    viewers: Vec<Option<Viewer>>,
    /// Joins that failed before reaching the driver: (viewer, reason).
    early_failures: Vec<(usize, String)>,
    /// Sessions the server created for viewers that never got a `Viewer`.
    orphan_locations: Vec<String>,
    /// Join messages received so far (answered or failed).
    joins_done: usize,
    next_scan: Instant,
    /// Shortest time between two rounds; `None` = react to every datagram
    /// at once (while joining, so handshakes are not delayed).
    round_period: Option<Duration>,
    last_round: Instant,
}

impl Driver {
    /// Viewers that are not connected and not failed yet.
    fn pending(&self) -> usize {
        let joined_pending = self
            .viewers
            .iter()
            .flatten()
            .filter(|v| v.connected_at.is_none() && v.failed.is_none())
            .count();
        joined_pending + (self.viewers.len() - self.joins_done)
    }

    fn accept(&mut self, msg: JoinMsg, now: Instant) {
        self.joins_done += 1;
        match msg {
            JoinMsg::Failed {
                index,
                reason,
                location,
            } => {
                self.early_failures.push((index, reason));
                self.orphan_locations.extend(location);
            }
            JoinMsg::Answered(a) => {
                let Answered {
                    index,
                    socket,
                    mut rtc,
                    location,
                    ssrcs,
                    started,
                } = *a;
                let local = socket.local_addr().expect("bound socket");
                // str0m's clock starts at `build`; bring it to now
                let _ = rtc.handle_input(Input::Timeout(now));
                let mut viewer = Viewer {
                    socket,
                    local,
                    rtc,
                    registered: false,
                    location,
                    started,
                    deadline: now,
                    connected_at: None,
                    ice: IceConnectionState::New,
                    disconnects: 0,
                    failed: None,
                    counts: Counts {
                        announced: ssrcs,
                        ..Counts::default()
                    },
                    send_errors: 0,
                };
                match self.epoll.add(viewer.socket.as_raw_fd(), index as u64) {
                    Ok(()) => viewer.registered = true,
                    Err(e) => viewer.failed = Some(format!("epoll: {e}")),
                }
                viewer.drive(now);
                self.next_scan = self.next_scan.min(viewer.deadline.max(now + MIN_TICK));
                self.viewers[index] = Some(viewer);
            }
        }
    }

    /// One round: wait for datagrams or the next deadline, read, drive.
    fn step(&mut self, rx: &mpsc::Receiver<JoinMsg>, wake: &EventFd) {
        if let Some(period) = self.round_period {
            // Paced: let datagrams pile up for a moment so one wake-up and
            // one `recvmmsg` serve many of them, instead of one each.
            let since = self.last_round.elapsed();
            if since < period {
                thread::sleep(period - since);
            }
            self.last_round = Instant::now();
        }
        let now = Instant::now();
        let n = self
            .epoll
            .wait(self.next_scan.saturating_duration_since(now));
        let now = Instant::now();
        for i in 0..n {
            let token = self.epoll.token(i);
            if token == WAKE_TOKEN {
                wake.clear();
                while let Ok(msg) = rx.try_recv() {
                    self.accept(msg, now);
                }
                continue;
            }
            let Some(viewer) = self.viewers[token as usize].as_mut() else {
                continue;
            };
            // one batch per ready socket per round (level-triggered epoll
            // reports it again if more is waiting): fair across viewers
            let got = self.batch.recv(viewer.socket.as_raw_fd()).unwrap_or(0);
            for j in 0..got {
                if let Some((data, source)) = self.batch.get(j) {
                    viewer.on_datagram(data, source, now);
                }
            }
            if viewer.deadline < self.next_scan {
                self.next_scan = viewer.deadline.max(now + MIN_TICK);
            }
        }
        if now >= self.next_scan {
            self.scan(now);
        }
    }

    /// Feed timeouts to every due `Rtc`, fail viewers that are too slow to
    /// connect, and plan the next scan.
    fn scan(&mut self, now: Instant) {
        let mut earliest = now + MAX_TICK;
        for viewer in self.viewers.iter_mut().flatten() {
            if !viewer.registered {
                continue;
            }
            if viewer.failed.is_none() && viewer.deadline <= now {
                let _ = viewer.rtc.handle_input(Input::Timeout(now));
                viewer.drive(now);
            }
            if viewer.failed.is_none()
                && viewer.connected_at.is_none()
                && now - viewer.started > CONNECT_TIMEOUT
            {
                viewer.failed = Some(format!(
                    "ICE/DTLS not connected within {} s (ICE {:?})",
                    CONNECT_TIMEOUT.as_secs(),
                    viewer.ice
                ));
            }
            if viewer.failed.is_some() {
                // stop reading and driving it; its counters stay for the report
                self.epoll.remove(viewer.socket.as_raw_fd());
                viewer.registered = false;
                viewer.rtc.disconnect();
                continue;
            }
            earliest = earliest.min(viewer.deadline);
        }
        self.next_scan = earliest.max(now + MIN_TICK);
    }

    /// Everyone's counters, for the window snapshots.
    fn snapshot(&self) -> Vec<Option<Counts>> {
        self.viewers
            .iter()
            .map(|v| v.as_ref().map(|v| v.counts.clone()))
            .collect()
    }
}

// ---------------------------------------------------------------- report

/// One viewer's line in the report.
struct ViewerRow {
    index: usize,
    /// Still connected at the end.
    ok: bool,
    window: Delivery,
    disconnects: u32,
}

/// Everything the run measured.
struct Report {
    viewers: usize,
    failed: Vec<(usize, String)>,
    /// Join times of the viewers that connected, sorted.
    join_ms: Vec<f64>,
    joins_per_s: f64,
    join_wall: Duration,
    window: Duration,
    rows: Vec<ViewerRow>,
    session: Delivery,
    send_errors: u64,
    other: u64,
    cpu_window: Duration,
    cpu_total: Duration,
    deleted: usize,
    delete_tried: usize,
}

impl Report {
    /// Collect the per-viewer results; `start` holds the counters at the
    /// beginning of the measurement window.
    fn new(
        driver: &Driver,
        start: &[Option<Counts>],
        join_wall: Duration,
        window: Duration,
    ) -> Self {
        let mut r = Report {
            viewers: driver.viewers.len(),
            failed: driver.early_failures.clone(),
            join_ms: Vec::new(),
            joins_per_s: 0.0,
            join_wall,
            window,
            rows: Vec::new(),
            session: Delivery::default(),
            send_errors: 0,
            other: 0,
            cpu_window: Duration::ZERO,
            cpu_total: Duration::ZERO,
            deleted: 0,
            delete_tried: 0,
        };
        let mut first_post = None::<Instant>;
        let mut last_connect = None::<Instant>;
        for (index, viewer) in driver.viewers.iter().enumerate() {
            let Some(v) = viewer else { continue };
            first_post = Some(first_post.map_or(v.started, |t| t.min(v.started)));
            r.send_errors += v.send_errors;
            r.other += v.counts.other;
            if let Some(reason) = &v.failed {
                r.failed.push((index, reason.clone()));
            }
            let Some(at) = v.connected_at else { continue };
            r.join_ms.push((at - v.started).as_secs_f64() * 1e3);
            last_connect = Some(last_connect.map_or(at, |t| t.max(at)));
            r.rows.push(ViewerRow {
                index,
                ok: v.failed.is_none(),
                window: Delivery::between(start[index].as_ref(), &v.counts),
                disconnects: v.disconnects,
            });
            let whole = Delivery::between(None, &v.counts);
            r.session.rtp += whole.rtp;
            r.session.expected += whole.expected;
        }
        r.failed.sort();
        r.join_ms.sort_by(f64::total_cmp);
        if let (Some(a), Some(b)) = (first_post, last_connect) {
            if b > a {
                r.joins_per_s = r.join_ms.len() as f64 / (b - a).as_secs_f64();
            }
        }
        r
    }

    fn connected(&self) -> usize {
        self.join_ms.len()
    }

    fn all_ok(&self) -> bool {
        self.failed.is_empty() && self.connected() == self.viewers
    }

    /// `x` per second of the window (0 without a window).
    fn per_s(&self, x: f64) -> f64 {
        let s = self.window.as_secs_f64();
        if s > 0.0 {
            x / s
        } else {
            0.0
        }
    }

    /// Window RTP packets per viewer: min, median, max.
    fn rtp_spread(&self) -> (u64, u64, u64) {
        let mut rtp: Vec<u64> = self.rows.iter().map(|r| r.window.rtp).collect();
        rtp.sort_unstable();
        let at = |i: usize| rtp.get(i).copied().unwrap_or(0);
        (at(0), at(rtp.len() / 2), at(rtp.len().saturating_sub(1)))
    }

    fn lost_total(&self) -> i64 {
        self.rows.iter().map(|r| r.window.lost()).sum()
    }

    /// Received / expected RTP over all viewers during the window.
    fn delivery(&self) -> f64 {
        let rtp: u64 = self.rows.iter().map(|r| r.window.rtp).sum();
        let expected: u64 = self.rows.iter().map(|r| r.window.expected).sum();
        rtp as f64 / expected.max(1) as f64
    }

    fn session_delivery(&self) -> f64 {
        self.session.rtp as f64 / self.session.expected.max(1) as f64
    }

    fn disconnects(&self) -> u32 {
        self.rows.iter().map(|r| r.disconnects).sum()
    }

    /// (p50, p99, max) join time in ms.
    fn join_percentiles(&self) -> (f64, f64, f64) {
        let p = |q: f64| {
            let n = self.join_ms.len();
            if n == 0 {
                return 0.0;
            }
            self.join_ms[((q * (n - 1) as f64).round() as usize).min(n - 1)]
        };
        (p(0.5), p(0.99), p(1.0))
    }

    fn print_summary(&self) {
        let (p50, p99, max) = self.join_percentiles();
        let (lo, mid, hi) = self.rtp_spread();
        println!(
            "whep_load: {} of {} viewers connected ({} failed) in {:.2} s; \
             join p50 {p50:.0} ms, p99 {p99:.0} ms, max {max:.0} ms; {:.1} joins/s",
            self.connected(),
            self.viewers,
            self.failed.len(),
            self.join_wall.as_secs_f64(),
            self.joins_per_s
        );
        println!(
            "  window {:.2} s: RTP per viewer min {lo} / median {mid} / max {hi} \
             ({:.1} / {:.1} / {:.1} packets/s); lost {}; delivery {:.5} (whole session {:.5})",
            self.window.as_secs_f64(),
            self.per_s(lo as f64),
            self.per_s(mid as f64),
            self.per_s(hi as f64),
            self.lost_total(),
            self.delivery(),
            self.session_delivery()
        );
        println!(
            "  client CPU {:.3} s in the window ({:.1}% of one core), {:.3} s in all; \
             {} ICE disconnects, {} send errors, {} unknown datagrams; {} of {} DELETEs ok",
            self.cpu_window.as_secs_f64(),
            100.0 * self.per_s(self.cpu_window.as_secs_f64()),
            self.cpu_total.as_secs_f64(),
            self.disconnects(),
            self.send_errors,
            self.other,
            self.deleted,
            self.delete_tried
        );
        for (index, reason) in self.failed.iter().take(10) {
            println!("  viewer {index} failed: {reason}");
        }
        if self.failed.len() > 10 {
            println!("  ... and {} more failures", self.failed.len() - 10);
        }
    }

    fn json(&self, url: &str, per_viewer: bool) -> String {
        let mut j = String::new();
        let (p50, p99, max) = self.join_percentiles();
        let (lo, mid, hi) = self.rtp_spread();
        let failed: Vec<String> = self
            .failed
            .iter()
            .map(|(i, reason)| format!("{{\"viewer\": {i}, \"reason\": {}}}", json_str(reason)))
            .collect();
        let _ = write!(
            j,
            "{{\"url\": {}, \"viewers\": {}, \"connected\": {}, \"failed\": [{}], \
             \"join_ms\": {{\"p50\": {}, \"p99\": {}, \"max\": {}}}, \"joins_per_s\": {}, \
             \"join_wall_s\": {}, \"window_s\": {}, ",
            json_str(url),
            self.viewers,
            self.connected(),
            failed.join(", "),
            num(p50),
            num(p99),
            num(max),
            num(self.joins_per_s),
            num(self.join_wall.as_secs_f64()),
            num(self.window.as_secs_f64())
        );
        if per_viewer {
            let rows: Vec<String> = self
                .rows
                .iter()
                .map(|r| {
                    let w = &r.window;
                    format!(
                        "{{\"viewer\": {}, \"ok\": {}, \"rtp\": {}, \"rtcp\": {}, \"bytes\": {}, \
                         \"lost\": {}, \"ssrcs\": {}, \"disconnects\": {}}}",
                        r.index,
                        r.ok,
                        w.rtp,
                        w.rtcp,
                        w.bytes,
                        w.lost(),
                        w.ssrcs,
                        r.disconnects
                    )
                })
                .collect();
            let _ = write!(j, "\"per_viewer\": [{}], ", rows.join(", "));
        }
        let _ = writeln!(
            j,
            "\"rtp_min\": {lo}, \"rtp_median\": {mid}, \"rtp_max\": {hi}, \
             \"rtp_per_viewer_per_s\": {}, \"lost_total\": {}, \"delivery\": {}, \
             \"session_rtp\": {}, \"session_delivery\": {}, \"ice_disconnects\": {}, \
             \"deleted\": {}, \"client_cpu_s\": {}, \"client_cpu_window_s\": {}, \
             \"client_cpu_window_frac\": {}}}",
            num(self.per_s(mid as f64)),
            self.lost_total(),
            num(self.delivery()),
            self.session.rtp,
            num(self.session_delivery()),
            self.disconnects(),
            self.deleted,
            num(self.cpu_total.as_secs_f64()),
            num(self.cpu_window.as_secs_f64()),
            num(self.per_s(self.cpu_window.as_secs_f64()))
        );
        j
    }
}

fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A JSON number with at most four decimals (JSON has no NaN or infinity).
fn num(x: f64) -> String {
    if !x.is_finite() {
        return "null".into();
    }
    let s = format!("{x:.4}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

// ---------------------------------------------------------------- main

fn main() {
    let opts = match parse_options(env::args().skip(1)) {
        Ok(o) => Arc::new(o),
        Err(e) => {
            if !e.is_empty() {
                eprintln!("whep_load: {e}");
            }
            eprintln!("{USAGE}");
            process::exit(2);
        }
    };
    let cpu_start = cpu_time();

    let crypto = Arc::new(str0m::crypto::from_feature_flags());
    let cert = crypto
        .dtls_provider
        .generate_certificate()
        .expect("the aws-lc-rs provider generates DTLS certificates");
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(HTTP_TIMEOUT))
        .max_idle_connections(opts.threads)
        .max_idle_connections_per_host(opts.threads)
        .build()
        .into();
    let joiner = Arc::new(Joiner {
        opts: opts.clone(),
        agent,
        crypto,
        cert,
    });

    let wake = Arc::new(EventFd::new().expect("eventfd"));
    let mut driver = Driver {
        epoll: Epoll::new().expect("epoll"),
        batch: RecvBatch::new(),
        viewers: (0..opts.viewers).map(|_| None).collect(),
        early_failures: Vec::new(),
        orphan_locations: Vec::new(),
        joins_done: 0,
        next_scan: Instant::now(),
        round_period: None,
        last_round: Instant::now(),
    };
    driver.epoll.add(wake.0, WAKE_TOKEN).expect("epoll add");

    // ---- joins, until every viewer has connected or failed
    let (tx, rx) = mpsc::channel();
    let join_start = Instant::now();
    spawn_joins(joiner.clone(), tx, wake.clone());
    let mut last_progress = Instant::now();
    while driver.pending() > 0 {
        driver.step(&rx, &wake);
        if last_progress.elapsed() >= Duration::from_secs(2) {
            last_progress = Instant::now();
            eprintln!(
                "whep_load: {} of {} viewers joined, {} pending",
                driver.joins_done,
                opts.viewers,
                driver.pending()
            );
        }
    }
    let join_wall = join_start.elapsed();
    let warmup_start = Instant::now();
    while warmup_start.elapsed() < opts.warmup {
        driver.step(&rx, &wake);
    }

    // ---- measurement window
    let any_connected = driver
        .viewers
        .iter()
        .flatten()
        .any(|v| v.connected_at.is_some() && v.failed.is_none());
    let window_start_counts = driver.snapshot();
    let cpu_window_start = cpu_time();
    driver.round_period = Some(ROUND_PERIOD);
    let window_start = Instant::now();
    let mut window = Duration::ZERO;
    if any_connected {
        while window_start.elapsed() < opts.duration {
            driver.step(&rx, &wake);
        }
        window = window_start.elapsed();
    }
    let cpu_window = cpu_time() - cpu_window_start;
    let mut report = Report::new(&driver, &window_start_counts, join_wall, window);
    report.cpu_window = cpu_window;

    // ---- DELETE every session the server created (best effort)
    let mut locations = driver.orphan_locations.clone();
    locations.extend(driver.viewers.iter().flatten().map(|v| v.location.clone()));
    report.delete_tried = locations.len();
    report.deleted = delete_all(&joiner, locations);
    report.cpu_total = cpu_time() - cpu_start;

    report.print_summary();
    if let Some(path) = &opts.json {
        if let Err(e) = fs::write(path, report.json(&opts.url, !opts.summary_only)) {
            eprintln!("whep_load: cannot write {path}: {e}");
        }
    }
    process::exit(if report.all_ok() { 0 } else { 1 });
}

/// The SSRCs an SDP announces in `a=ssrc:<ssrc> ...` lines.
fn announced_ssrcs(sdp: &str) -> Vec<u32> {
    let mut out: Vec<u32> = sdp
        .lines()
        .filter_map(|l| l.strip_prefix("a=ssrc:"))
        .filter_map(|rest| rest.split_whitespace().next()?.parse().ok())
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}
