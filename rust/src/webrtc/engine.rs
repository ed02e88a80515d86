//! The WebRTC viewer engine: every viewer of every stream on one UDP port,
//! driven by one thread.
//!
//! - Datagrams are routed to their viewer by a hash map keyed by the remote
//!   address; an address not seen before is accepted only with a STUN
//!   request naming a viewer's ICE username fragment (no linear scan).
//! - Once per tick (10 ms) the engine takes each stream's packets from its
//!   [`StreamFeed`] and each viewer of that stream seals them (its own
//!   header and SRTP, see [`super::srtp`]); everything goes out with
//!   `sendmmsg`. str0m runs only on what the viewer sends (STUN, DTLS,
//!   RTCP) and on its own timers, a bounded number per tick.
//! - NACKed video packets are sent again from the stream's history (one per
//!   stream, shared by its viewers); keyframe requests from any number of
//!   viewers become one request upstream per tick.
//! - A viewer that does not connect in time, whose ICE consent lapses (no
//!   datagram for a while: [`Timeouts`]), or whose stream ends is closed and
//!   freed.
//!
//! Python only adds and removes viewers and reads events and stats.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::mem;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use str0m::net::{Protocol, Receive};
use str0m::Input;

use super::feed::{FeedPacket, StreamFeed};
use super::plain::{PlainDatagram, PlainTrackConfig, PlainViewer, TcpOut};
use super::tcp::{SendResult, TcpLimits, TcpMux};
use super::viewer::{Datagram, StreamCodecs, Viewer, ViewerCounters};
use crate::io::{
    clear, epoll_add, eventfd, set_socket_buffer, signal, std_to_sockaddr, RecvBatch, BATCH,
};
use crate::session::MediaKind;

/// How often each stream's packets go out (the added latency's bound).
pub const TICK: Duration = Duration::from_millis(10);
/// Timeouts of the engine's viewers.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    /// A viewer not connected (ICE + DTLS) by then is closed.
    pub connect: Duration,
    /// A connected viewer that sent nothing for this long lost ICE consent
    /// (browsers check every 5 s or so; RFC 7675 allows 30 s).
    pub consent: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(30),
            consent: Duration::from_secs(20),
        }
    }
}
/// How often timeouts are checked and stats published.
const HOUSEKEEPING: Duration = Duration::from_secs(1);
/// Video packets of each stream kept for viewers' NACKs (about 2 s of a
/// 1 Mbit/s stream; the payloads are shared with the viewers' queues).
const NACK_HISTORY: usize = 512;
/// str0m timer runs per tick at most; the rest wait for the next tick (a
/// few ms late does not matter to them, and a tick stays short).
const TIMEOUTS_PER_TICK: usize = 128;
/// `recvmmsg` batches read before the engine looks at its tick again.
const RECEIVE_BATCHES: usize = 16;
/// Datagrams per `sendmmsg`.
const SEND_BATCH: usize = 64;
/// SO_SNDBUF / SO_RCVBUF asked for (the kernel caps them at wmem_max /
/// rmem_max).
const SOCKET_BUFFER: usize = 4 << 20;
const WAKE: u64 = 0;
const SOCKET: u64 = 1;
/// The ICE-TCP listener, and its connections from this token on.
const TCP_LISTENER: u64 = 2;
const TCP_CONNECTIONS: u64 = 1 << 32;
/// The plain-RTP (RTSP over UDP) socket pair.
const PLAIN_RTP: u64 = 3;
const PLAIN_RTCP: u64 = 4;
/// Datagrams read from a plain-RTP socket per readiness event (the rest
/// wait for the next loop: the epoll registration is level-triggered).
const PLAIN_RECEIVE_MAX: usize = 64;
/// Readiness events taken per `epoll_wait`.
const EPOLL_EVENTS: usize = 64;

/// Where a viewer's datagrams come from: a UDP address, or an ICE-TCP
/// connection (RFC 6544) by its remote address.
pub type Route = (Protocol, SocketAddr);

static NEXT_VIEWER: AtomicU64 = AtomicU64::new(1);

/// What Python hears from the engine.
#[derive(Clone, Debug)]
pub enum EngineEvent {
    /// ICE and DTLS are up: media flows.
    Connected { viewer: u64 },
    /// The viewer is gone (its resources are freed).
    Closed { viewer: u64, reason: String },
    /// Viewers of this feed asked for a keyframe (PLI/FIR, or a viewer
    /// joined and needs a picture).
    KeyframeRequest { feed: u64 },
}

/// A viewer as the stats show it.
#[derive(Clone, Debug, Default)]
pub struct ViewerInfo {
    pub feed: u64,
    pub remote: Option<SocketAddr>,
    pub connected: bool,
    pub waiting_keyframe: bool,
    pub counters: ViewerCounters,
}

/// Engine-wide counters.
#[derive(Clone, Debug, Default)]
pub struct EngineStats {
    pub viewers: u64,
    pub connected: u64,
    pub datagrams_in: u64,
    /// Datagrams from addresses no viewer owns (and not a STUN request
    /// naming one): dropped.
    pub unroutable: u64,
    pub datagrams_out: u64,
    pub bytes_out: u64,
    pub send_errors: u64,
    pub rtc_errors: u64,
    pub ticks: u64,
    /// str0m timer runs (ICE, DTLS, its stats): work besides the media.
    pub rtc_timeouts: u64,
    /// Latency of every packet sent (µs), from the call's RTP socket (the
    /// hub for generated frames) to the viewer's socket, as a histogram.
    pub latency: LatencyHistogram,
}

/// Microsecond latencies in 100 µs buckets up to 200 ms.
#[derive(Clone, Debug)]
pub struct LatencyHistogram {
    buckets: Vec<u64>,
    count: u64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram {
            buckets: vec![0; 2001],
            count: 0,
        }
    }
}

impl LatencyHistogram {
    pub fn record(&mut self, latency: Duration, n: u64) {
        let i = ((latency.as_micros() / 100) as usize).min(self.buckets.len() - 1);
        self.buckets[i] += n;
        self.count += n;
    }

    /// The `q` quantile (0..1) in microseconds; 0 when empty.
    pub fn quantile_us(&self, q: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        let target = ((self.count as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= target {
                return (i as u64 + 1) * 100;
            }
        }
        self.buckets.len() as u64 * 100
    }

    pub fn count(&self) -> u64 {
        self.count
    }
}

enum Command {
    Add(Box<Viewer>),
    AddPlain(Box<PlainViewer>),
    /// Bytes for a plain viewer's RTSP connection (a response after PLAY).
    Text(u64, Vec<u8>),
    /// An interleaved RTCP packet a TCP plain viewer sent (read by the
    /// control plane, which owns the connection's reading side).
    Rtcp(u64, Vec<u8>),
    Remove(u64),
    ResetLatency,
}

struct Shared {
    commands: Mutex<Vec<Command>>,
    wake: OwnedFd,
    events: Mutex<Vec<EngineEvent>>,
    notify: OwnedFd,
    notified: AtomicBool,
    stop: AtomicBool,
    stats: Mutex<EngineStats>,
    viewers: Mutex<HashMap<u64, ViewerInfo>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    fn emit(&self, events: &mut Vec<EngineEvent>) {
        if events.is_empty() {
            return;
        }
        lock(&self.events).append(events);
        if !self.notified.swap(true, Ordering::SeqCst) {
            signal(self.notify.as_raw_fd());
        }
    }
}

/// Handle to the engine thread; dropping it stops the thread.
pub struct Engine {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    local: SocketAddr,
    candidate: SocketAddr,
    tcp_candidate: Option<SocketAddr>,
    /// The RTP and RTCP ports plain-RTP (RTSP) viewers are sent from over UDP.
    plain_ports: Option<(u16, u16)>,
}

/// Bind an even RTP port and the next one for RTCP on `ip` (RFC 3550
/// §11's convention, which some players assume).
fn bind_rtp_pair(
    ip: std::net::IpAddr,
    port: u16,
) -> io::Result<(std::net::UdpSocket, std::net::UdpSocket)> {
    if port % 2 == 1 || port == u16::MAX {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the RTP port of a pair is even",
        ));
    }
    let mut last = io::Error::new(io::ErrorKind::AddrInUse, "no free RTP port pair");
    // a given pair is tried once; an ephemeral one until a free pair is found
    for _ in 0..if port == 0 { 64 } else { 1 } {
        let rtp = std::net::UdpSocket::bind(SocketAddr::new(ip, port))?;
        let port = rtp.local_addr()?.port();
        if port % 2 == 1 || port == u16::MAX {
            continue;
        }
        match std::net::UdpSocket::bind(SocketAddr::new(ip, port + 1)) {
            Ok(rtcp) => {
                rtp.set_nonblocking(true)?;
                rtcp.set_nonblocking(true)?;
                // a tick's packets to every UDP client leave in one burst
                // (best effort: the kernel caps it at wmem_max)
                let _ = set_socket_buffer(rtp.as_raw_fd(), libc::SO_SNDBUF, SOCKET_BUFFER);
                return Ok((rtp, rtcp));
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

impl Engine {
    /// Bind `bind` (port 0: ephemeral) and start the engine thread. Viewers
    /// are told to reach it at `advertised` (its IP, the bound port). With
    /// `tcp_port`, a passive ICE-TCP candidate on that TCP port (0:
    /// ephemeral) is offered too.
    pub fn start(
        bind: SocketAddr,
        advertised: std::net::IpAddr,
        timeouts: Timeouts,
        tcp_port: Option<u16>,
    ) -> io::Result<Engine> {
        Engine::start_with_plain(bind, advertised, timeouts, tcp_port, None)
    }

    /// [`Engine::start`], and with `plain_udp` an RTP/RTCP socket pair on
    /// the bind address for plain-RTP (RTSP) viewers over UDP: that even
    /// RTP port and the next for RTCP, or any free pair for 0. The engine
    /// reads the pair too: the clients' RTCP reports (their loss and
    /// jitter, and a keep-alive of their RTSP session).
    pub fn start_with_plain(
        bind: SocketAddr,
        advertised: std::net::IpAddr,
        timeouts: Timeouts,
        tcp_port: Option<u16>,
        plain_udp: Option<u16>,
    ) -> io::Result<Engine> {
        let plain = match plain_udp {
            Some(port) => Some(bind_rtp_pair(bind.ip(), port)?),
            None => None,
        };
        let plain_ports = match &plain {
            Some((a, b)) => Some((a.local_addr()?.port(), b.local_addr()?.port())),
            None => None,
        };
        let socket = std::net::UdpSocket::bind(bind)?;
        socket.set_nonblocking(true)?;
        // a tick sends about one datagram per viewer in a burst
        // (best effort: the kernel caps them at wmem_max / rmem_max)
        let _ = set_socket_buffer(socket.as_raw_fd(), libc::SO_SNDBUF, SOCKET_BUFFER);
        let _ = set_socket_buffer(socket.as_raw_fd(), libc::SO_RCVBUF, SOCKET_BUFFER);
        let local = socket.local_addr()?;
        let candidate = SocketAddr::new(advertised, local.port());
        let shared = Arc::new(Shared {
            commands: Mutex::new(Vec::new()),
            wake: eventfd()?,
            events: Mutex::new(Vec::new()),
            notify: eventfd()?,
            notified: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            stats: Mutex::new(EngineStats::default()),
            viewers: Mutex::new(HashMap::new()),
        });
        // SAFETY: epoll_create1 returns a new fd or -1.
        let epoll = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if epoll < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh fd owned by nothing else.
        let epoll = unsafe { OwnedFd::from_raw_fd(epoll) };
        epoll_add(epoll.as_raw_fd(), shared.wake.as_raw_fd(), WAKE)?;
        epoll_add(epoll.as_raw_fd(), socket.as_raw_fd(), SOCKET)?;
        if let Some((rtp, rtcp)) = &plain {
            epoll_add(epoll.as_raw_fd(), rtp.as_raw_fd(), PLAIN_RTP)?;
            epoll_add(epoll.as_raw_fd(), rtcp.as_raw_fd(), PLAIN_RTCP)?;
        }
        let tcp = match tcp_port {
            Some(port) => {
                let mut mux = TcpMux::bind(SocketAddr::new(bind.ip(), port), TcpLimits::default())?;
                mux.register(epoll.as_raw_fd(), TCP_LISTENER, TCP_CONNECTIONS)?;
                Some(mux)
            }
            None => None,
        };
        let tcp_candidate = tcp
            .as_ref()
            .map(|t| SocketAddr::new(advertised, t.local_addr().port()));
        let thread_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("sipstream-webrtc".into())
            .spawn(move || {
                let mut run = Run::new(thread_shared, socket, local, epoll, timeouts, tcp);
                run.plain_sockets = plain;
                run.run();
            })?;
        Ok(Engine {
            shared,
            thread: Some(thread),
            local,
            candidate,
            tcp_candidate,
            plain_ports,
        })
    }

    /// The (RTP, RTCP) ports plain viewers over UDP are sent from.
    pub fn plain_ports(&self) -> Option<(u16, u16)> {
        self.plain_ports
    }

    /// Add a plain-RTP (RTSP) viewer of `feed`: its tracks as its RTSP
    /// session set them up, and for TCP-interleaved transport its
    /// connection (a dup the engine owns and writes; the control plane
    /// keeps reading it), written while at most `max_backlog` bytes wait
    /// unsent. Returns the viewer id; a ("closed") event
    /// follows when it ends (a write failure, a slow client cut off, the
    /// stream's end).
    pub fn add_plain_viewer(
        &self,
        feed: Arc<StreamFeed>,
        audio: Option<PlainTrackConfig>,
        video: Option<PlainTrackConfig>,
        tcp: Option<OwnedFd>,
        max_backlog: usize,
    ) -> Result<u64, String> {
        if feed.is_closed() {
            return Err("the stream has ended".into());
        }
        if audio.is_none() && video.is_none() {
            return Err("no track set up".into());
        }
        let udp = [audio, video]
            .iter()
            .flatten()
            .any(|t| matches!(t.dest, super::plain::TrackDest::Udp { .. }));
        if udp && self.plain_ports.is_none() {
            return Err("RTP over UDP is not enabled".into());
        }
        if !udp && tcp.is_none() {
            return Err("interleaved tracks need the connection".into());
        }
        let id = NEXT_VIEWER.fetch_add(1, Ordering::Relaxed);
        let tcp = tcp.map(|fd| TcpOut::new(fd, max_backlog));
        let viewer = PlainViewer::new(id, feed, audio, video, tcp, Instant::now());
        lock(&self.shared.viewers).insert(
            id,
            ViewerInfo {
                feed: viewer.feed.id(),
                connected: true,
                waiting_keyframe: viewer.waiting_keyframe(),
                ..ViewerInfo::default()
            },
        );
        self.command(Command::AddPlain(Box::new(viewer)));
        Ok(id)
    }

    /// Write `text` (an RTSP response) on a TCP plain viewer's connection,
    /// between two interleaved frames.
    pub fn send_text(&self, id: u64, text: Vec<u8>) {
        self.command(Command::Text(id, text));
    }

    /// An RTCP packet a TCP plain viewer sent interleaved: its reports give
    /// the viewer's loss and jitter, as a UDP viewer's do.
    pub fn plain_rtcp(&self, id: u64, data: Vec<u8>) {
        self.command(Command::Rtcp(id, data));
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The address viewers are given as our ICE candidate.
    pub fn candidate(&self) -> SocketAddr {
        self.candidate
    }

    /// The passive ICE-TCP candidate's address, when offered.
    pub fn tcp_candidate(&self) -> Option<SocketAddr> {
        self.tcp_candidate
    }

    /// Answer a WHEP offer for `feed`'s stream: (viewer id, answer SDP). The
    /// answer is built here, on the caller's thread; the viewer then moves to
    /// the engine thread.
    pub fn add_viewer(
        &self,
        offer_sdp: &str,
        codecs: &StreamCodecs,
        feed: Arc<StreamFeed>,
    ) -> Result<(u64, String), String> {
        if feed.is_closed() {
            return Err("the stream has ended".into());
        }
        let id = NEXT_VIEWER.fetch_add(1, Ordering::Relaxed);
        let (viewer, answer) = Viewer::answer(
            id,
            offer_sdp,
            self.candidate,
            self.tcp_candidate,
            codecs,
            feed,
            Instant::now(),
        )?;
        lock(&self.shared.viewers).insert(
            id,
            ViewerInfo {
                feed: viewer.feed.id(),
                ..ViewerInfo::default()
            },
        );
        self.command(Command::Add(Box::new(viewer)));
        Ok((id, answer))
    }

    /// End a viewer (a Closed event follows when it existed).
    pub fn remove_viewer(&self, id: u64) {
        self.command(Command::Remove(id));
    }

    fn command(&self, c: Command) {
        lock(&self.shared.commands).push(c);
        signal(self.shared.wake.as_raw_fd());
    }

    /// The fd that becomes readable when events wait (asyncio `add_reader`).
    pub fn notify_fd(&self) -> RawFd {
        self.shared.notify.as_raw_fd()
    }

    pub fn drain_events(&self) -> Vec<EngineEvent> {
        clear(self.shared.notify.as_raw_fd());
        self.shared.notified.store(false, Ordering::SeqCst);
        mem::take(&mut *lock(&self.shared.events))
    }

    pub fn stats(&self) -> EngineStats {
        lock(&self.shared.stats).clone()
    }

    /// Start the latency histogram afresh (benchmarks measure a window).
    pub fn reset_latency(&self) {
        self.command(Command::ResetLatency);
    }

    pub fn viewer(&self, id: u64) -> Option<ViewerInfo> {
        lock(&self.shared.viewers).get(&id).cloned()
    }

    pub fn close(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        signal(self.shared.wake.as_raw_fd());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.close();
    }
}

/// The viewers of one stream, and its recent video packets for NACKs.
struct FeedViewers {
    feed: Arc<StreamFeed>,
    viewers: Vec<u64>,
    /// Some viewer asked for a keyframe this tick.
    keyframe_wanted: bool,
    /// The last [`NACK_HISTORY`] video packets, by stream sequence number.
    history: VecDeque<FeedPacket>,
}

impl FeedViewers {
    fn remember(&mut self, packets: &[FeedPacket]) {
        for p in packets.iter().filter(|p| p.kind == MediaKind::Video) {
            if self.history.len() == NACK_HISTORY {
                self.history.pop_front();
            }
            self.history.push_back(p.clone());
        }
    }

    fn find(&self, seq: u64) -> Option<&FeedPacket> {
        let i = self.history.binary_search_by_key(&seq, |p| p.seq).ok()?;
        self.history.get(i)
    }
}

/// The engine thread's state.
struct Run {
    shared: Arc<Shared>,
    socket: std::net::UdpSocket,
    local: SocketAddr,
    epoll: OwnedFd,
    /// ICE-TCP connections, when offered.
    tcp: Option<TcpMux>,
    viewers: HashMap<u64, Viewer>,
    /// Plain-RTP (RTSP) viewers, and the UDP pair they are sent from.
    plain: HashMap<u64, PlainViewer>,
    plain_sockets: Option<(std::net::UdpSocket, std::net::UdpSocket)>,
    plain_out: Vec<PlainDatagram>,
    /// A UDP plain viewer's RTCP addresses → the viewer.
    plain_by_addr: HashMap<SocketAddr, u64>,
    by_addr: HashMap<Route, u64>,
    by_ufrag: HashMap<String, u64>,
    feeds: HashMap<u64, FeedViewers>,
    stats: EngineStats,
    events: Vec<EngineEvent>,
    out: Vec<Datagram>,
    /// UDP GSO works on this socket (cleared on the first refusal).
    gso: bool,
    batch: RecvBatch,
    timeouts: Timeouts,
}

impl Run {
    fn new(
        shared: Arc<Shared>,
        socket: std::net::UdpSocket,
        local: SocketAddr,
        epoll: OwnedFd,
        timeouts: Timeouts,
        tcp: Option<TcpMux>,
    ) -> Run {
        Run {
            shared,
            socket,
            local,
            epoll,
            tcp,
            viewers: HashMap::new(),
            plain: HashMap::new(),
            plain_sockets: None,
            plain_out: Vec::new(),
            plain_by_addr: HashMap::new(),
            by_addr: HashMap::new(),
            by_ufrag: HashMap::new(),
            feeds: HashMap::new(),
            stats: EngineStats::default(),
            events: Vec::new(),
            out: Vec::new(),
            gso: true,
            batch: RecvBatch::new(),
            timeouts,
        }
    }

    fn run(&mut self) {
        let mut next_tick = Instant::now() + TICK;
        let mut next_housekeeping = Instant::now() + HOUSEKEEPING;
        let mut ready: [libc::epoll_event; EPOLL_EVENTS] = unsafe { mem::zeroed() };
        while !self.shared.stop.load(Ordering::SeqCst) {
            let wait = next_tick.saturating_duration_since(Instant::now());
            // rounded up: a 0 ms wait before the tick would spin
            let ms = wait.as_micros().div_ceil(1000).min(1000) as i32;
            // SAFETY: `ready` is a valid buffer of EPOLL_EVENTS events.
            let n = unsafe {
                libc::epoll_wait(
                    self.epoll.as_raw_fd(),
                    ready.as_mut_ptr(),
                    ready.len() as i32,
                    ms,
                )
            };
            for e in ready.iter().take(n.max(0) as usize) {
                let (token, flags) = (e.u64, e.events);
                match token {
                    WAKE => {
                        clear(self.shared.wake.as_raw_fd());
                        self.run_commands();
                    }
                    SOCKET => self.receive(),
                    PLAIN_RTP => self.receive_plain(false),
                    PLAIN_RTCP => self.receive_plain(true),
                    _ => self.receive_tcp(token, flags),
                }
            }
            let now = Instant::now();
            if now >= next_tick {
                self.tick(now);
                next_tick += TICK;
                if next_tick <= now {
                    next_tick = now + TICK;
                }
            }
            if now >= next_housekeeping {
                self.housekeeping(now);
                next_housekeeping = now + HOUSEKEEPING;
            }
            self.send();
            let mut events = mem::take(&mut self.events);
            self.shared.emit(&mut events);
            self.events = events;
        }
        let ids: Vec<u64> = self
            .viewers
            .keys()
            .chain(self.plain.keys())
            .copied()
            .collect();
        for id in ids {
            self.close_viewer(id, "the server stopped");
        }
        let mut events = mem::take(&mut self.events);
        self.shared.emit(&mut events);
    }

    /// Count viewer `id` among `feed`'s, which this engine starts taking
    /// packets from with its first viewer.
    fn join_feed(&mut self, feed: Arc<StreamFeed>, id: u64) -> &mut FeedViewers {
        let fv = self.feeds.entry(feed.id()).or_insert_with(|| FeedViewers {
            feed,
            viewers: Vec::new(),
            keyframe_wanted: false,
            history: VecDeque::new(),
        });
        fv.viewers.push(id);
        fv
    }

    fn run_commands(&mut self) {
        let commands = mem::take(&mut *lock(&self.shared.commands));
        for c in commands {
            match c {
                Command::Add(viewer) => {
                    let viewer = *viewer;
                    let id = viewer.id;
                    self.by_ufrag.insert(viewer.local_ufrag.clone(), id);
                    self.join_feed(viewer.feed.clone(), id);
                    self.viewers.insert(id, viewer);
                }
                Command::AddPlain(viewer) => {
                    let viewer = *viewer;
                    let id = viewer.id;
                    let fv = self.join_feed(viewer.feed.clone(), id);
                    // a new viewer needs a picture
                    fv.keyframe_wanted |= viewer.waiting_keyframe();
                    for addr in viewer.udp_rtcp_sources() {
                        self.plain_by_addr.insert(addr, id);
                    }
                    self.plain.insert(id, viewer);
                }
                Command::Text(id, text) => {
                    if let Some(v) = self.plain.get_mut(&id) {
                        v.push_text(&text);
                        if let Err(reason) = v.flush_tcp() {
                            self.close_viewer(id, &reason);
                        }
                    }
                }
                Command::Rtcp(id, data) => {
                    if let Some(v) = self.plain.get_mut(&id) {
                        v.receive_rtcp(&data);
                    }
                }
                Command::Remove(id) => self.close_viewer(id, "ended by request"),
                Command::ResetLatency => self.stats.latency = Default::default(),
            }
        }
    }

    fn receive(&mut self) {
        for _ in 0..RECEIVE_BATCHES {
            let n = match self.batch.recv(self.socket.as_raw_fd()) {
                Ok(n) => n,
                Err(_) => return,
            };
            let now = Instant::now();
            for j in 0..n {
                let Some((data, Some(from))) = self.batch.get(j) else {
                    continue;
                };
                // the batch's buffer is borrowed: the datagram is handed on
                // before the next one is read
                let data = data.to_vec();
                self.deliver((Protocol::Udp, from), &data, now);
            }
            if n < BATCH {
                return;
            }
        }
    }

    /// ICE-TCP: accept, read frames (each one a datagram to demultiplex),
    /// flush queued output. A connection that is bound to no viewer and
    /// sends a frame that binds it to none is closed.
    fn receive_tcp(&mut self, token: u64, flags: u32) {
        let Some(tcp) = self.tcp.as_mut() else {
            return;
        };
        if !tcp.owns_token(token) {
            return;
        }
        let now = Instant::now();
        let mut frames: Vec<(SocketAddr, Vec<u8>)> = Vec::new();
        tcp.on_ready(token, flags, now, |from, frame| {
            frames.push((from, frame.to_vec()))
        });
        for (from, data) in frames {
            let route = (Protocol::Tcp, from);
            if !self.deliver(route, &data, now) && !self.by_addr.contains_key(&route) {
                if let Some(tcp) = self.tcp.as_mut() {
                    tcp.close(from);
                }
            }
        }
        self.tcp_closed();
    }

    /// One datagram (or ICE-TCP frame) from `from` to its viewer; false
    /// when it had none.
    fn deliver(&mut self, from: Route, data: &[u8], now: Instant) -> bool {
        self.stats.datagrams_in += 1;
        let local = match from.0 {
            Protocol::Tcp => self.tcp.as_ref().map_or(self.local, |t| t.local_addr()),
            _ => self.local,
        };
        let routes = Routes {
            by_addr: &mut self.by_addr,
            by_ufrag: &self.by_ufrag,
        };
        let id = match demux(&mut self.viewers, routes, now, from, local, data) {
            Demuxed::Unroutable => {
                self.stats.unroutable += 1;
                return false;
            }
            Demuxed::Delivered {
                viewer,
                new_address,
                error,
            } => {
                if new_address {
                    if let Some(info) = lock(&self.shared.viewers).get_mut(&viewer) {
                        info.remote = Some(from.1);
                    }
                }
                self.stats.rtc_errors += u64::from(error);
                viewer
            }
        };
        self.poll(id, now);
        true
    }

    /// Forget the routes of ICE-TCP connections that closed (EOF, error, a
    /// slow reader cut off, timeouts); a viewer left with no path is closed.
    fn tcp_closed(&mut self) {
        let Some(tcp) = self.tcp.as_mut() else {
            return;
        };
        for (addr, reason) in tcp.drain_closed() {
            if let Some(id) = self.by_addr.remove(&(Protocol::Tcp, addr)) {
                if !self.by_addr.values().any(|v| *v == id) {
                    self.close_viewer(id, &format!("ICE-TCP connection closed: {reason}"));
                }
            }
        }
    }

    /// Drain one viewer's str0m output (datagrams, events) and do what its
    /// feedback asks: announce it connected, ask for a keyframe, resend
    /// NACKed packets from the stream's history, close it.
    fn poll(&mut self, id: u64, now: Instant) {
        let Some(viewer) = self.viewers.get_mut(&id) else {
            return;
        };
        let feedback = viewer.poll(now, &mut self.out);
        if feedback.connected {
            self.events.push(EngineEvent::Connected { viewer: id });
        }
        if let Some(fv) = self.feeds.get_mut(&viewer.feed.id()) {
            fv.keyframe_wanted |= feedback.keyframe;
            for seq in &feedback.resend {
                if let Some(packet) = fv.find(*seq) {
                    viewer.resend(packet, &mut self.out);
                }
            }
        }
        self.stats.rtc_errors += u64::from(feedback.error);
        if let Some(reason) = feedback.close {
            self.close_viewer(id, reason);
        }
    }

    /// Send each stream's new packets to its viewers; then, for at most
    /// [`TIMEOUTS_PER_TICK`] viewers with something due, their sender
    /// reports and str0m's timers (DTLS, ICE, stats).
    fn tick(&mut self, now: Instant) {
        self.stats.ticks += 1;
        let wall = std::time::SystemTime::now();
        let mut ended: Vec<u64> = Vec::new();
        let mut latencies: Vec<(Instant, u64)> = Vec::new();
        for (feed_id, fv) in self.feeds.iter_mut() {
            if fv.feed.is_closed() {
                ended.push(*feed_id);
                continue;
            }
            let taken = fv.feed.take();
            if taken.packets.is_empty() && !taken.overflowed {
                continue;
            }
            fv.remember(&taken.packets);
            let mut sent_to = 0u64;
            for id in &fv.viewers {
                if let Some(v) = self.viewers.get_mut(id) {
                    if v.connected {
                        v.forward(&taken.packets, taken.overflowed, &mut self.out);
                        sent_to += 1;
                    }
                } else if let Some(v) = self.plain.get_mut(id) {
                    let feedback = v.forward(
                        &taken.packets,
                        taken.overflowed,
                        (now, wall),
                        &mut self.plain_out,
                    );
                    fv.keyframe_wanted |= feedback.keyframe;
                    sent_to += 1;
                }
            }
            if taken.overflowed {
                fv.keyframe_wanted = true;
            }
            if sent_to > 0 {
                latencies.extend(
                    taken
                        .packets
                        .iter()
                        .map(|p: &FeedPacket| (p.arrival, sent_to)),
                );
            }
        }
        for feed_id in ended {
            let ids = self
                .feeds
                .get(&feed_id)
                .map(|f| f.viewers.clone())
                .unwrap_or_default();
            for id in ids {
                self.close_viewer(id, "the stream ended");
            }
            self.feeds.remove(&feed_id);
        }
        // sender reports of plain viewers, and their TCP connections flushed
        let mut cut: Vec<(u64, String)> = Vec::new();
        for (id, v) in self.plain.iter_mut() {
            v.sender_reports(now, wall, &mut self.plain_out);
            if let Err(reason) = v.flush_tcp() {
                cut.push((*id, reason));
            }
        }
        for (id, reason) in cut {
            self.close_viewer(id, &reason);
        }
        // the media first: its latency ends when it is on the socket
        self.send();
        let done = Instant::now();
        for (arrival, n) in latencies {
            self.stats
                .latency
                .record(done.saturating_duration_since(arrival), n);
        }
        let due: Vec<u64> = self
            .viewers
            .iter()
            .filter(|(_, v)| v.next_timeout <= now || (v.connected && v.next_report <= now))
            .map(|(id, _)| *id)
            .take(TIMEOUTS_PER_TICK)
            .collect();
        for id in due {
            let Some(v) = self.viewers.get_mut(&id) else {
                continue;
            };
            if v.connected && v.next_report <= now {
                v.sender_reports(now, &mut self.out);
            }
            if v.next_timeout <= now {
                self.stats.rtc_timeouts += 1;
                if v.rtc.handle_input(Input::Timeout(now)).is_err() {
                    self.stats.rtc_errors += 1;
                }
                self.poll(id, now);
            }
        }
        for fv in self.feeds.values_mut() {
            if mem::take(&mut fv.keyframe_wanted) {
                self.events
                    .push(EngineEvent::KeyframeRequest { feed: fv.feed.id() });
            }
        }
    }

    /// Once a second: timeouts, keyframe requests for viewers still waiting
    /// for a picture, and the stats Python reads.
    fn housekeeping(&mut self, now: Instant) {
        if let Some(tcp) = self.tcp.as_mut() {
            tcp.housekeeping(now);
        }
        self.tcp_closed();
        let mut expired = Vec::new();
        for (id, v) in &self.viewers {
            if !v.connected && now.duration_since(v.created) > self.timeouts.connect {
                expired.push((*id, "not connected in time"));
            } else if v.connected && now.duration_since(v.last_input) > self.timeouts.consent {
                expired.push((*id, "ICE consent expired"));
            }
        }
        for (id, reason) in expired {
            self.close_viewer(id, reason);
        }
        // a viewer still without a picture asks again (the request or the
        // keyframe may have been lost on the SIP side)
        for fv in self.feeds.values_mut() {
            let waiting = fv
                .viewers
                .iter()
                .filter_map(|id| self.viewers.get(id))
                .any(|v| v.connected && v.waiting_keyframe())
                || fv
                    .viewers
                    .iter()
                    .filter_map(|id| self.plain.get(id))
                    .any(|v| v.waiting_keyframe());
            fv.keyframe_wanted |= waiting;
        }
        let mut infos = lock(&self.shared.viewers);
        for (id, v) in &self.viewers {
            if let Some(info) = infos.get_mut(id) {
                info.connected = v.connected;
                info.waiting_keyframe = v.waiting_keyframe();
                info.counters = v.counters;
            }
        }
        for (id, v) in &self.plain {
            if let Some(info) = infos.get_mut(id) {
                info.waiting_keyframe = v.waiting_keyframe();
                info.counters.packets = v.packets;
                info.counters.bytes = v.bytes;
                info.counters.skipped = v.skipped;
                info.counters.reports = v.reports.reports;
                info.counters.lost = v.reports.lost;
                info.counters.loss = v.reports.loss;
                info.counters.jitter_ms = v.reports.jitter_ms;
            }
        }
        drop(infos);
        self.stats.viewers = (self.viewers.len() + self.plain.len()) as u64;
        self.stats.connected =
            self.viewers.values().filter(|v| v.connected).count() as u64 + self.plain.len() as u64;
        *lock(&self.shared.stats) = self.stats.clone();
    }

    fn close_viewer(&mut self, id: u64, reason: &str) {
        if let Some(mut viewer) = self.plain.remove(&id) {
            let feed = viewer.feed.id();
            for addr in viewer.udp_rtcp_sources() {
                if self.plain_by_addr.get(&addr) == Some(&id) {
                    self.plain_by_addr.remove(&addr);
                }
            }
            // its last bytes (a response queued before) go out if they can
            let _ = viewer.flush_tcp();
            drop(viewer);
            if let Some(fv) = self.feeds.get_mut(&feed) {
                fv.viewers.retain(|v| *v != id);
                if fv.viewers.is_empty() {
                    self.feeds.remove(&feed);
                }
            }
            lock(&self.shared.viewers).remove(&id);
            self.events.push(EngineEvent::Closed {
                viewer: id,
                reason: reason.to_string(),
            });
            return;
        }
        let Some(mut viewer) = self.viewers.remove(&id) else {
            return;
        };
        viewer.rtc.disconnect();
        self.by_ufrag.remove(&viewer.local_ufrag);
        let tcp = &mut self.tcp;
        self.by_addr.retain(|(proto, addr), v| {
            if *v != id {
                return true;
            }
            if let (Protocol::Tcp, Some(tcp)) = (proto, tcp.as_mut()) {
                tcp.close(*addr);
            }
            false
        });
        if let Some(fv) = self.feeds.get_mut(&viewer.feed.id()) {
            fv.viewers.retain(|v| *v != id);
            if fv.viewers.is_empty() {
                self.feeds.remove(&viewer.feed.id());
            }
        }
        lock(&self.shared.viewers).remove(&id);
        self.events.push(EngineEvent::Closed {
            viewer: id,
            reason: reason.to_string(),
        });
    }

    /// Send what the viewers produced: UDP `SEND_BATCH` datagrams a
    /// syscall, ICE-TCP framed on its connection.
    fn send(&mut self) {
        if !self.plain_out.is_empty() {
            self.send_plain();
        }
        if self.out.is_empty() {
            return;
        }
        if self.out.iter().any(|d| d.proto == Protocol::Tcp) {
            let (tcp, udp): (Vec<Datagram>, Vec<Datagram>) = mem::take(&mut self.out)
                .into_iter()
                .partition(|d| d.proto == Protocol::Tcp);
            self.out = udp;
            for d in tcp {
                match self.tcp.as_mut().map(|t| t.send(d.to, &d.data)) {
                    Some(SendResult::Sent | SendResult::Queued) => {
                        self.stats.datagrams_out += 1;
                        self.stats.bytes_out += d.data.len() as u64;
                    }
                    _ => self.stats.send_errors += 1,
                }
            }
        }
        let fd = self.socket.as_raw_fd();
        for chunk in self.out.chunks(SEND_BATCH) {
            let (sent, errors, bytes, gso) = sendmmsg(fd, chunk, self.gso);
            self.gso = gso;
            self.stats.datagrams_out += sent;
            self.stats.send_errors += errors;
            self.stats.bytes_out += bytes;
        }
        self.out.clear();
    }
}

impl Run {
    /// What UDP clients send to the plain-RTP pair: RTCP reports go to the
    /// viewer whose RTCP address sent them; the rest (NAT openers on the
    /// RTP port, strangers) is read and dropped.
    fn receive_plain(&mut self, rtcp: bool) {
        let Some((rtp_socket, rtcp_socket)) = self.plain_sockets.as_ref() else {
            return;
        };
        let socket = if rtcp { rtcp_socket } else { rtp_socket };
        let mut buf = [0u8; 2048];
        for _ in 0..PLAIN_RECEIVE_MAX {
            let Ok((n, from)) = socket.recv_from(&mut buf) else {
                return;
            };
            self.stats.datagrams_in += 1;
            let viewer = if rtcp {
                self.plain_by_addr
                    .get(&from)
                    .and_then(|id| self.plain.get_mut(id))
            } else {
                None
            };
            match viewer {
                Some(v) => v.receive_rtcp(&buf[..n]),
                None if rtcp => self.stats.unroutable += 1,
                None => {}
            }
        }
    }

    /// Plain viewers' UDP datagrams, RTP and RTCP each from its socket.
    fn send_plain(&mut self) {
        let out = mem::take(&mut self.plain_out);
        let Some((rtp, rtcp)) = self.plain_sockets.as_ref() else {
            self.stats.send_errors += out.len() as u64;
            return;
        };
        let (reports, media): (Vec<PlainDatagram>, Vec<PlainDatagram>) =
            out.into_iter().partition(|d| d.rtcp);
        for (datagrams, fd) in [(media, rtp.as_raw_fd()), (reports, rtcp.as_raw_fd())] {
            let datagrams: Vec<Datagram> = datagrams
                .into_iter()
                .map(|d| Datagram {
                    proto: Protocol::Udp,
                    to: d.to,
                    data: d.data,
                })
                .collect();
            for chunk in datagrams.chunks(SEND_BATCH) {
                let (sent, errors, bytes, _) = sendmmsg(fd, chunk, false);
                self.stats.datagrams_out += sent;
                self.stats.send_errors += errors;
                self.stats.bytes_out += bytes;
            }
        }
    }
}

/// The demultiplexer's maps: remote address (UDP, or ICE-TCP connection) →
/// viewer, and our ICE ufrag → viewer for STUN from addresses not seen yet.
pub struct Routes<'a> {
    pub by_addr: &'a mut HashMap<Route, u64>,
    pub by_ufrag: &'a HashMap<String, u64>,
}

/// Where [`demux`] put a datagram.
#[derive(Debug, PartialEq, Eq)]
pub enum Demuxed {
    /// No viewer's: an unknown address, and not a STUN request that str0m
    /// accepts for the viewer whose ufrag it names.
    Unroutable,
    /// Handed to `viewer` (`new_address`: first from this address; `error`:
    /// str0m refused its content).
    Delivered {
        viewer: u64,
        new_address: bool,
        error: bool,
    },
}

/// The sans-IO core of the engine's receive path: hand one datagram from
/// `from` to its viewer, if any. A hash lookup by address; a new address
/// is bound to a viewer only by a STUN request with that viewer's ufrag
/// and a valid MESSAGE-INTEGRITY (str0m's `accepts`). Never panics on any
/// input (fuzz target `webrtc_demux`).
pub fn demux(
    viewers: &mut HashMap<u64, Viewer>,
    routes: Routes<'_>,
    now: Instant,
    from: Route,
    local: SocketAddr,
    data: &[u8],
) -> Demuxed {
    let Some(id) = route(routes.by_addr, routes.by_ufrag, from, data) else {
        return Demuxed::Unroutable;
    };
    let Some(viewer) = viewers.get_mut(&id) else {
        return Demuxed::Unroutable;
    };
    let Ok(receive) = Receive::new(from.0, from.1, local, data) else {
        return Demuxed::Unroutable;
    };
    let input = Input::Receive(now, receive);
    let new_address = !routes.by_addr.contains_key(&from);
    if new_address {
        if !viewer.rtc.accepts(&input) {
            return Demuxed::Unroutable;
        }
        routes.by_addr.insert(from, id);
    }
    viewer.last_input = now;
    let error = viewer.rtc.handle_input(input).is_err();
    Demuxed::Delivered {
        viewer: id,
        new_address,
        error,
    }
}

/// The viewer a datagram belongs to: its source, or for a STUN request
/// from a new one, the ufrag its USERNAME names.
fn route(
    by_addr: &HashMap<Route, u64>,
    by_ufrag: &HashMap<String, u64>,
    from: Route,
    data: &[u8],
) -> Option<u64> {
    if let Some(id) = by_addr.get(&from) {
        return Some(*id);
    }
    if data.first().is_some_and(|b| *b < 2) {
        let msg = str0m::ice::StunMessage::parse(data).ok()?;
        let (a, b) = msg.split_username()?;
        return by_ufrag.get(a).or_else(|| by_ufrag.get(b)).copied();
    }
    None
}

/// Consecutive datagrams to one address sent as one UDP GSO message
/// (`UDP_SEGMENT`): the kernel cuts it into datagrams, after one trip
/// through its stack instead of one each. A keyframe is a run of equal-size
/// packets to every viewer.
const GSO_SEGMENTS: usize = 32;
/// A GSO message's payload limit (IP's 64 KB, with room for headers).
const GSO_BYTES: usize = 60_000;

/// Runs of `datagrams` that can go as one GSO message each: same address,
/// same size (the last may be shorter), bounded. Without `gso`, one each.
fn gso_runs(datagrams: &[Datagram], gso: bool) -> Vec<std::ops::Range<usize>> {
    let mut runs = Vec::new();
    let mut i = 0;
    while i < datagrams.len() {
        let (to, size) = (datagrams[i].to, datagrams[i].data.len());
        let mut j = i + 1;
        let mut bytes = size;
        while gso && j < datagrams.len() && j - i < GSO_SEGMENTS {
            let d = &datagrams[j];
            if d.to != to || d.data.len() > size || bytes + d.data.len() > GSO_BYTES {
                break;
            }
            bytes += d.data.len();
            j += 1;
            if d.data.len() < size {
                break; // a shorter one ends a run
            }
        }
        runs.push(i..j);
        i = j;
    }
    runs
}

/// Send `datagrams` with `sendmmsg` (GSO runs as one message each when
/// `gso`): (sent, failed, bytes, whether GSO still works).
fn sendmmsg(fd: RawFd, datagrams: &[Datagram], gso: bool) -> (u64, u64, u64, bool) {
    let runs = gso_runs(datagrams, gso);
    let mut addrs: Vec<(libc::sockaddr_storage, libc::socklen_t)> = runs
        .iter()
        .map(|r| std_to_sockaddr(&datagrams[r.start].to))
        .collect();
    let mut iovs: Vec<libc::iovec> = datagrams
        .iter()
        .map(|d| libc::iovec {
            iov_base: d.data.as_ptr() as *mut libc::c_void,
            iov_len: d.data.len(),
        })
        .collect();
    // one control message per run: UDP_SEGMENT and the segment size
    // SAFETY: CMSG_SPACE only computes a size.
    let space = unsafe { libc::CMSG_SPACE(mem::size_of::<u16>() as u32) } as usize;
    let mut control: Vec<u64> = vec![0; runs.len() * space.div_ceil(8)];
    // SAFETY: zeroed mmsghdr is a valid empty header; pointers set below
    // stay valid (addrs, iovs, control outlive the call).
    let mut msgs: Vec<libc::mmsghdr> = (0..runs.len()).map(|_| unsafe { mem::zeroed() }).collect();
    for (k, (m, run)) in msgs.iter_mut().zip(&runs).enumerate() {
        let h = &mut m.msg_hdr;
        h.msg_name = &mut addrs[k].0 as *mut _ as *mut libc::c_void;
        h.msg_namelen = addrs[k].1;
        h.msg_iov = &mut iovs[run.start];
        h.msg_iovlen = run.len();
        if run.len() > 1 {
            h.msg_control = control[k * space.div_ceil(8)..].as_mut_ptr() as *mut libc::c_void;
            h.msg_controllen = space;
            // SAFETY: msg_control points at `space` zeroed, aligned bytes,
            // room for one header with a u16.
            unsafe {
                let c = libc::CMSG_FIRSTHDR(h);
                (*c).cmsg_level = libc::SOL_UDP;
                (*c).cmsg_type = libc::UDP_SEGMENT;
                (*c).cmsg_len = libc::CMSG_LEN(mem::size_of::<u16>() as u32) as usize;
                let size = datagrams[run.start].data.len() as u16;
                std::ptr::write_unaligned(libc::CMSG_DATA(c) as *mut u16, size);
            }
        }
    }
    let (mut sent, mut errors, mut bytes, mut gso_works) = (0u64, 0u64, 0u64, gso);
    let mut start = 0;
    while start < msgs.len() {
        // SAFETY: msgs[start..] are initialised headers.
        let n = unsafe {
            libc::sendmmsg(
                fd,
                msgs[start..].as_mut_ptr(),
                (msgs.len() - start) as u32,
                libc::MSG_DONTWAIT,
            )
        };
        if n <= 0 {
            // the first of the rest failed (full buffer, unreachable): skip
            // it; a kernel or route without GSO refuses its messages
            let err = io::Error::last_os_error().raw_os_error();
            if runs[start].len() > 1
                && matches!(err, Some(libc::EIO | libc::EINVAL | libc::ENOPROTOOPT))
            {
                gso_works = false;
            }
            errors += runs[start].len() as u64;
            start += 1;
            continue;
        }
        for run in &runs[start..start + n as usize] {
            sent += run.len() as u64;
            bytes += datagrams[run.clone()]
                .iter()
                .map(|d| d.data.len() as u64)
                .sum::<u64>();
        }
        start += n as usize;
    }
    (sent, errors, bytes, gso_works)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn datagram(port: u16, len: usize) -> Datagram {
        Datagram {
            proto: Protocol::Udp,
            to: SocketAddr::from(([127, 0, 0, 1], port)),
            data: vec![0; len],
        }
    }

    #[test]
    fn gso_runs_join_equal_sizes_to_one_address_and_end_at_a_shorter_one() {
        // a keyframe to one viewer (equal FU-As, a shorter last one), audio,
        // then the next viewer
        let mut d: Vec<Datagram> = (0..5).map(|_| datagram(1, 1128)).collect();
        d.push(datagram(1, 700));
        d.push(datagram(1, 188));
        d.extend((0..3).map(|_| datagram(2, 1128)));
        assert_eq!(gso_runs(&d, true), vec![0..6, 6..7, 7..10]);
        // a longer datagram after a run starts a new one
        let d = vec![datagram(1, 188), datagram(1, 1128)];
        assert_eq!(gso_runs(&d, true), vec![0..1, 1..2]);
        // bounded by segments and bytes; without GSO one each
        let d: Vec<Datagram> = (0..70).map(|_| datagram(1, 1128)).collect();
        let runs = gso_runs(&d, true);
        assert!(runs
            .iter()
            .all(|r| r.len() <= GSO_SEGMENTS && r.len() * 1128 <= GSO_BYTES));
        assert_eq!(runs.iter().map(|r| r.len()).sum::<usize>(), 70);
        assert_eq!(gso_runs(&d, false).len(), 70);
    }

    #[test]
    fn a_gso_message_arrives_as_separate_datagrams() {
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = rx.local_addr().unwrap();
        let mut d: Vec<Datagram> = (0..4u8)
            .map(|i| Datagram {
                proto: Protocol::Udp,
                to,
                data: vec![i; 1000],
            })
            .collect();
        d.push(Datagram {
            proto: Protocol::Udp,
            to,
            data: vec![9; 300],
        });
        let (sent, errors, bytes, gso) = sendmmsg(tx.as_raw_fd(), &d, true);
        assert_eq!((sent, errors, bytes, gso), (5, 0, 4300, true));
        let mut buf = [0u8; 2048];
        for want in &d {
            let n = rx.recv(&mut buf).unwrap();
            assert_eq!(&buf[..n], &want.data[..]);
        }
    }
}
