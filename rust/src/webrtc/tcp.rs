//! ICE-TCP passive candidates (RFC 6544) for viewers behind firewalls that
//! block UDP: one non-blocking TCP listener and its connections, driven by
//! the WebRTC engine's epoll loop like its UDP socket.
//!
//! On the wire each STUN, DTLS or RTP packet is one RFC 4571 frame: a 2-byte
//! big-endian length, then that many bytes. [`Deframer`] cuts a byte stream
//! into frames (sans-IO, bounded, never panics); [`TcpMux`] owns the sockets,
//! keyed by the client's address so the engine can route frames exactly as
//! it routes datagrams.
//!
//! TCP lets a client make us hold memory and file descriptors, so every
//! resource is bounded ([`TcpLimits`]): the number of connections, what is
//! queued for a client that does not read (it is cut off, never buffered
//! without bound), and how long a connection may stay silent.
//!
//! Epoll is level-triggered, as for the engine's other fds: reads and
//! accepts are capped per event for fairness and the rest is reported again.
//! A connection is watched for EPOLLOUT only while output is queued, so an
//! idle writable socket never wakes the loop.

use std::collections::HashMap;
use std::fmt;
use std::io::{self, Read, Write};
use std::mem;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

/// Largest RFC 4571 frame: its length field has 16 bits.
pub const MAX_FRAME: usize = u16::MAX as usize;
/// Bytes read per `read` call.
const READ_CHUNK: usize = 64 * 1024;
/// Reads per readiness event; level-triggered epoll reports the rest again.
const READS_PER_EVENT: usize = 4;
/// Accepts per readiness event of the listener.
const ACCEPTS_PER_EVENT: usize = 64;
/// An emptied output queue or frame buffer bigger than this is freed, so a
/// burst does not pin memory for the connection's lifetime.
const KEEP_CAPACITY: usize = 16 * 1024;

/// What one client may cost.
#[derive(Clone, Copy, Debug)]
pub struct TcpLimits {
    /// Connections open at once; more are accepted and closed at once.
    pub max_connections: usize,
    /// Longest frame taken from a client (at most [`MAX_FRAME`]); longer
    /// ones are skipped and counted as bad.
    pub max_frame: usize,
    /// Bytes queued for one client beyond what its socket takes; a client
    /// that falls further behind is cut off.
    pub max_pending_out: usize,
    /// A connection with no frame from its client for this long is closed.
    pub idle: Duration,
    /// A connection whose client sent no frame this long after it was
    /// accepted is closed.
    pub first_frame: Duration,
}

impl Default for TcpLimits {
    fn default() -> Self {
        TcpLimits {
            max_connections: 1000,
            max_frame: MAX_FRAME,
            max_pending_out: 1 << 20,
            idle: Duration::from_secs(30),
            first_frame: Duration::from_secs(10),
        }
    }
}

/// Why [`TcpMux`] closed a connection on its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// The client closed its end.
    Eof,
    /// A read or write failed (connection reset, ...).
    Failed(io::ErrorKind),
    /// More than `max_pending_out` bytes waited for the client.
    CutOff,
    /// No frame for `idle`.
    Idle,
    /// No frame within `first_frame` of the connection.
    NoFirstFrame,
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseReason::Eof => f.write_str("the client closed the TCP connection"),
            CloseReason::Failed(kind) => write!(f, "TCP connection failed: {kind}"),
            CloseReason::CutOff => f.write_str("the client did not keep up with the stream"),
            CloseReason::Idle => f.write_str("the TCP connection was idle"),
            CloseReason::NoFirstFrame => f.write_str("the client sent no frame in time"),
        }
    }
}

/// What [`TcpMux::send`] did with a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendResult {
    /// The socket took all of it.
    Sent,
    /// Some or all of it waits in the connection's queue (sent on EPOLLOUT).
    Queued,
    /// Longer than [`MAX_FRAME`]: nothing was sent, the connection is kept.
    TooLarge,
    /// No connection from that address.
    NoConnection,
    /// The connection was closed now (cut off or failed); it is also
    /// reported by [`TcpMux::drain_closed`].
    Closed(CloseReason),
}

/// Counters since [`TcpMux::bind`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpStats {
    pub accepted: u64,
    /// Connections closed on accept: over `max_connections`, or they could
    /// not be set up.
    pub refused: u64,
    /// `accept` failures other than "nothing waiting" (out of fds, ...);
    /// the listener then rests until the next housekeeping.
    pub accept_errors: u64,
    /// Connections closed by either timeout (`idle`, `first_frame`).
    pub closed_idle: u64,
    /// Connections cut off for falling more than `max_pending_out` behind.
    pub cut_off: u64,
    /// Frames delivered (not counting empty ones).
    pub frames_in: u64,
    /// Frames sent or queued.
    pub frames_out: u64,
    /// Bytes read from clients, framing included.
    pub bytes_in: u64,
    /// Bytes written to sockets, framing included.
    pub bytes_out: u64,
    /// Frames longer than `max_frame`, skipped.
    pub bad_frames: u64,
}

/// Cuts an RFC 4571 byte stream into frames. Holds at most one incomplete
/// frame (≤ `max_frame` bytes); frames that arrive whole are handed out
/// without a copy. Empty frames are skipped, longer than `max_frame` ones
/// are skipped and counted.
#[derive(Debug)]
pub struct Deframer {
    max_frame: usize,
    header: [u8; 2],
    header_len: usize,
    /// The frame being read; None while reading a length.
    body: Option<Body>,
    /// The received part of the current frame when it spans pushes.
    partial: Vec<u8>,
    skipped: u64,
}

#[derive(Clone, Copy, Debug)]
struct Body {
    remaining: usize,
    /// Longer than `max_frame`: its bytes are dropped, not kept.
    skip: bool,
}

impl Deframer {
    /// A de-framer taking frames up to `max_frame` bytes (capped at
    /// [`MAX_FRAME`]).
    pub fn new(max_frame: usize) -> Deframer {
        Deframer {
            max_frame: max_frame.min(MAX_FRAME),
            header: [0; 2],
            header_len: 0,
            body: None,
            partial: Vec::new(),
            skipped: 0,
        }
    }

    /// Take the next bytes of the stream; `on_frame` gets every frame they
    /// complete, in order.
    pub fn push(&mut self, mut bytes: &[u8], mut on_frame: impl FnMut(&[u8])) {
        while !bytes.is_empty() {
            match self.body {
                None => {
                    // header_len is 0 or 1 here: it is reset once it reaches 2
                    let take = (2 - self.header_len).min(bytes.len());
                    let (head, rest) = bytes.split_at(take);
                    self.header[self.header_len..self.header_len + take].copy_from_slice(head);
                    self.header_len += take;
                    bytes = rest;
                    if self.header_len < 2 {
                        return;
                    }
                    self.header_len = 0;
                    let len = usize::from(u16::from_be_bytes(self.header));
                    if len == 0 {
                        continue;
                    }
                    let skip = len > self.max_frame;
                    self.skipped += u64::from(skip);
                    self.body = Some(Body {
                        remaining: len,
                        skip,
                    });
                }
                Some(Body { remaining, skip }) => {
                    let take = remaining.min(bytes.len());
                    let (chunk, rest) = bytes.split_at(take);
                    bytes = rest;
                    let done = take == remaining;
                    if !skip {
                        if done && self.partial.is_empty() {
                            on_frame(chunk);
                        } else {
                            self.partial.extend_from_slice(chunk);
                            if done {
                                on_frame(&self.partial);
                                self.partial.clear();
                                if self.partial.capacity() > KEEP_CAPACITY {
                                    self.partial = Vec::new();
                                }
                            }
                        }
                    }
                    self.body = (!done).then_some(Body {
                        remaining: remaining - take,
                        skip,
                    });
                }
            }
        }
    }

    /// Bytes of an incomplete frame held (at most `max_frame`).
    pub fn buffered(&self) -> usize {
        self.partial.len()
    }

    /// Frames skipped for being longer than `max_frame`.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }
}

/// Bytes a TCP connection has not taken yet (ICE-TCP connections here, and
/// RTSP clients' interleaved output in `plain.rs`): written from the
/// front, compacted once half is written, freed when emptied if big.
#[derive(Debug, Default)]
pub struct Backlog {
    buf: Vec<u8>,
    /// Bytes of `buf` already written.
    start: usize,
}

impl Backlog {
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes not written yet.
    pub fn pending(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    pub fn len(&self) -> usize {
        self.buf.len() - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `n` more bytes were written.
    pub fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.buf.len());
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
            if self.buf.capacity() > KEEP_CAPACITY {
                self.buf = Vec::new();
            }
        } else if self.start > self.buf.len() / 2 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
    }
}

/// One accepted connection.
struct Connection {
    stream: TcpStream,
    remote: SocketAddr,
    token: u64,
    deframer: Deframer,
    /// Bytes the socket did not take yet.
    out: Backlog,
    /// EPOLLOUT is in the connection's interest set.
    watching_out: bool,
    accepted: Instant,
    /// When the client's last frame arrived.
    last_frame: Option<Instant>,
}

impl Connection {
    fn pending(&self) -> usize {
        self.out.len()
    }

    /// Write queued bytes until the queue is empty or the socket is full.
    fn flush(&mut self, stats: &mut TcpStats) -> Result<(), CloseReason> {
        while !self.out.is_empty() {
            match (&self.stream).write(self.out.pending()) {
                Ok(0) => return Err(CloseReason::Failed(io::ErrorKind::WriteZero)),
                Ok(n) => {
                    self.out.consume(n);
                    stats.bytes_out += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(CloseReason::Failed(e.kind())),
            }
        }
        Ok(())
    }

    /// Queue bytes behind what is already waiting.
    fn queue(&mut self, bytes: &[u8]) {
        self.out.push(bytes);
    }
}

/// Where the mux sits in the engine's epoll set.
#[derive(Clone, Copy)]
struct Registration {
    epoll: RawFd,
    listener_token: u64,
    conn_token_base: u64,
}

/// The ICE-TCP listener and its connections, keyed by the client's address.
/// Single-threaded: the engine thread drives it with [`TcpMux::on_ready`],
/// [`TcpMux::send`] and [`TcpMux::housekeeping`].
pub struct TcpMux {
    listener: TcpListener,
    local: SocketAddr,
    limits: TcpLimits,
    registration: Option<Registration>,
    /// The listener is out of the epoll set after an accept error.
    listener_resting: bool,
    conns: HashMap<u64, Connection>,
    by_remote: HashMap<SocketAddr, u64>,
    next_id: u64,
    closed: Vec<(SocketAddr, CloseReason)>,
    stats: TcpStats,
    read_buf: Box<[u8]>,
    frame_buf: Vec<u8>,
}

impl TcpMux {
    /// Listen on `addr` (port 0: ephemeral), non-blocking.
    pub fn bind(addr: SocketAddr, limits: TcpLimits) -> io::Result<TcpMux> {
        let listener = TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let local = listener.local_addr()?;
        Ok(TcpMux {
            listener,
            local,
            limits,
            registration: None,
            listener_resting: false,
            conns: HashMap::new(),
            by_remote: HashMap::new(),
            next_id: 0,
            closed: Vec::new(),
            stats: TcpStats::default(),
            read_buf: vec![0; READ_CHUNK].into_boxed_slice(),
            frame_buf: Vec::new(),
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Add the listener to `epoll` (level-triggered, token `listener_token`);
    /// connections join it as they are accepted, with token
    /// `conn_token_base + id`. Every token from `conn_token_base` up is the
    /// mux's ([`TcpMux::owns_token`]), so `listener_token` must be below it.
    /// Call once, before the first [`TcpMux::on_ready`].
    pub fn register(
        &mut self,
        epoll: RawFd,
        listener_token: u64,
        conn_token_base: u64,
    ) -> io::Result<()> {
        if listener_token >= conn_token_base || self.registration.is_some() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "register once, with listener_token below conn_token_base",
            ));
        }
        epoll_ctl(
            epoll,
            libc::EPOLL_CTL_ADD,
            self.listener.as_raw_fd(),
            libc::EPOLLIN as u32,
            listener_token,
        )?;
        self.registration = Some(Registration {
            epoll,
            listener_token,
            conn_token_base,
        });
        Ok(())
    }

    /// Whether an epoll token is the mux's: its listener, or any connection
    /// token (closed ones too: their stale events are ignored here).
    pub fn owns_token(&self, token: u64) -> bool {
        self.registration
            .is_some_and(|r| token == r.listener_token || token >= r.conn_token_base)
    }

    /// Handle one epoll event (`events` is its mask): accept connections,
    /// read and de-frame what arrived, calling `deliver(client, frame)` for
    /// each frame, and send queued output. `deliver` may not call back into
    /// the mux: collect replies and [`TcpMux::send`] them afterwards.
    pub fn on_ready(
        &mut self,
        token: u64,
        events: u32,
        now: Instant,
        mut deliver: impl FnMut(SocketAddr, &[u8]),
    ) {
        let Some(reg) = self.registration else {
            return;
        };
        if token == reg.listener_token {
            self.accept(reg, now);
            return;
        }
        let Some(id) = token.checked_sub(reg.conn_token_base) else {
            return;
        };
        // HUP and ERR too: the read then sees the EOF or the error, where
        // ignoring them would leave a level-triggered event firing forever
        let input = (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR) as u32;
        if events & input != 0 {
            if let Err(reason) = self.read(id, now, &mut deliver) {
                self.close_id(id, reason);
                return;
            }
        }
        if events & libc::EPOLLOUT as u32 != 0 {
            self.flush(id);
        }
    }

    /// Send one frame (its length prefix added here) to the client at `to`.
    pub fn send(&mut self, to: SocketAddr, frame: &[u8]) -> SendResult {
        let Ok(len) = u16::try_from(frame.len()) else {
            return SendResult::TooLarge;
        };
        let Some(&id) = self.by_remote.get(&to) else {
            return SendResult::NoConnection;
        };
        let Some(conn) = self.conns.get_mut(&id) else {
            return SendResult::NoConnection;
        };
        self.frame_buf.clear();
        self.frame_buf.extend_from_slice(&len.to_be_bytes());
        self.frame_buf.extend_from_slice(frame);
        let mut written = 0;
        if conn.pending() == 0 {
            // one write for prefix and frame (TcpStream::write uses
            // MSG_NOSIGNAL; writev would not and could raise SIGPIPE)
            match (&conn.stream).write(&self.frame_buf) {
                Ok(n) => written = n,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                    ) => {}
                Err(e) => {
                    let reason = CloseReason::Failed(e.kind());
                    self.close_id(id, reason);
                    return SendResult::Closed(reason);
                }
            }
            self.stats.bytes_out += written as u64;
        }
        let rest = &self.frame_buf[written..];
        if rest.is_empty() {
            self.stats.frames_out += 1;
            return SendResult::Sent;
        }
        if conn.pending() + rest.len() > self.limits.max_pending_out {
            self.close_id(id, CloseReason::CutOff);
            return SendResult::Closed(CloseReason::CutOff);
        }
        conn.queue(rest);
        self.stats.frames_out += 1;
        self.watch_out(id);
        SendResult::Queued
    }

    /// Close the connection from `remote` (not reported by
    /// [`TcpMux::drain_closed`]); false when there was none.
    pub fn close(&mut self, remote: SocketAddr) -> bool {
        match self.by_remote.get(&remote) {
            Some(&id) => self.remove(id).is_some(),
            None => false,
        }
    }

    /// Close connections past their `idle` or `first_frame` limit (reported
    /// by [`TcpMux::drain_closed`]) and let a resting listener accept again.
    /// Once a second or so is enough.
    pub fn housekeeping(&mut self, now: Instant) {
        let limits = self.limits;
        let expired: Vec<(u64, CloseReason)> = self
            .conns
            .iter()
            .filter_map(|(&id, c)| match c.last_frame {
                None if now.saturating_duration_since(c.accepted) >= limits.first_frame => {
                    Some((id, CloseReason::NoFirstFrame))
                }
                Some(t) if now.saturating_duration_since(t) >= limits.idle => {
                    Some((id, CloseReason::Idle))
                }
                _ => None,
            })
            .collect();
        for (id, reason) in expired {
            self.close_id(id, reason);
        }
        if let Some(reg) = self.registration.filter(|_| self.listener_resting) {
            let fd = self.listener.as_raw_fd();
            let events = libc::EPOLLIN as u32;
            if epoll_ctl(
                reg.epoll,
                libc::EPOLL_CTL_ADD,
                fd,
                events,
                reg.listener_token,
            )
            .is_ok()
            {
                self.listener_resting = false;
            }
        }
    }

    /// Connections the mux closed on its own since the last call (EOF,
    /// error, cut off, timeouts) and why, so their routes can be dropped.
    pub fn drain_closed(&mut self) -> Vec<(SocketAddr, CloseReason)> {
        mem::take(&mut self.closed)
    }

    /// Open connections.
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    pub fn stats(&self) -> TcpStats {
        self.stats
    }

    fn accept(&mut self, reg: Registration, now: Instant) {
        for _ in 0..ACCEPTS_PER_EVENT {
            let (stream, remote) = match self.listener.accept() {
                Ok(accepted) => accepted,
                Err(e) => match e.kind() {
                    io::ErrorKind::WouldBlock => return,
                    io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted => continue,
                    _ => {
                        // out of fds or memory: the connection stays queued
                        // and a level-triggered listener would spin, so it
                        // rests until housekeeping
                        self.stats.accept_errors += 1;
                        let fd = self.listener.as_raw_fd();
                        let _ = epoll_ctl(reg.epoll, libc::EPOLL_CTL_DEL, fd, 0, 0);
                        self.listener_resting = true;
                        return;
                    }
                },
            };
            // dropping `stream` closes it: the client sees EOF
            if self.conns.len() >= self.limits.max_connections
                || self.by_remote.contains_key(&remote)
            {
                self.stats.refused += 1;
                continue;
            }
            let Some(token) = reg.conn_token_base.checked_add(self.next_id) else {
                self.stats.refused += 1;
                continue;
            };
            let set_up = stream.set_nonblocking(true).and_then(|()| {
                // frames are media packets: send each at once
                stream.set_nodelay(true)?;
                let events = libc::EPOLLIN as u32;
                epoll_ctl(
                    reg.epoll,
                    libc::EPOLL_CTL_ADD,
                    stream.as_raw_fd(),
                    events,
                    token,
                )
            });
            if set_up.is_err() {
                self.stats.refused += 1;
                continue;
            }
            let id = self.next_id;
            self.next_id += 1;
            self.stats.accepted += 1;
            self.by_remote.insert(remote, id);
            self.conns.insert(
                id,
                Connection {
                    stream,
                    remote,
                    token,
                    deframer: Deframer::new(self.limits.max_frame),
                    out: Backlog::default(),
                    watching_out: false,
                    accepted: now,
                    last_frame: None,
                },
            );
        }
    }

    /// Read what connection `id` has and deliver its frames; Err: close it.
    fn read(
        &mut self,
        id: u64,
        now: Instant,
        deliver: &mut impl FnMut(SocketAddr, &[u8]),
    ) -> Result<(), CloseReason> {
        let Some(conn) = self.conns.get_mut(&id) else {
            return Ok(());
        };
        let stats = &mut self.stats;
        for _ in 0..READS_PER_EVENT {
            let n = match (&conn.stream).read(&mut self.read_buf) {
                Ok(0) => return Err(CloseReason::Eof),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(CloseReason::Failed(e.kind())),
            };
            stats.bytes_in += n as u64;
            let skipped = conn.deframer.skipped();
            let remote = conn.remote;
            let last_frame = &mut conn.last_frame;
            conn.deframer.push(&self.read_buf[..n], |frame| {
                stats.frames_in += 1;
                *last_frame = Some(now);
                deliver(remote, frame);
            });
            stats.bad_frames += conn.deframer.skipped() - skipped;
            if n < self.read_buf.len() {
                // a short read emptied the socket: spare the EAGAIN read
                return Ok(());
            }
        }
        Ok(())
    }

    /// Send what connection `id` has queued.
    fn flush(&mut self, id: u64) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        match conn.flush(&mut self.stats) {
            Ok(()) => self.watch_out(id),
            Err(reason) => self.close_id(id, reason),
        }
    }

    /// Watch EPOLLOUT exactly while connection `id` has output queued.
    fn watch_out(&mut self, id: u64) {
        let (Some(reg), Some(conn)) = (self.registration, self.conns.get_mut(&id)) else {
            return;
        };
        let want = conn.pending() > 0;
        if want == conn.watching_out {
            return;
        }
        let events = if want {
            (libc::EPOLLIN | libc::EPOLLOUT) as u32
        } else {
            libc::EPOLLIN as u32
        };
        let fd = conn.stream.as_raw_fd();
        match epoll_ctl(reg.epoll, libc::EPOLL_CTL_MOD, fd, events, conn.token) {
            Ok(()) => conn.watching_out = want,
            // without EPOLLOUT the queue would never be sent
            Err(e) if want => self.close_id(id, CloseReason::Failed(e.kind())),
            // still watching EPOLLOUT: spurious wake-ups until the next try
            Err(_) => {}
        }
    }

    /// Close connection `id` for `reason` and report it in `drain_closed`.
    fn close_id(&mut self, id: u64, reason: CloseReason) {
        let Some(conn) = self.remove(id) else {
            return;
        };
        match reason {
            CloseReason::CutOff => {
                self.stats.cut_off += 1;
                // reset rather than close: the kernel would otherwise keep
                // trying to deliver a full send buffer to a stalled client
                abort_on_close(&conn.stream);
            }
            CloseReason::Idle | CloseReason::NoFirstFrame => self.stats.closed_idle += 1,
            CloseReason::Eof | CloseReason::Failed(_) => {}
        }
        self.closed.push((conn.remote, reason));
    }

    /// Take connection `id` out of the maps and the epoll set; dropping the
    /// result closes its socket.
    fn remove(&mut self, id: u64) -> Option<Connection> {
        let conn = self.conns.remove(&id)?;
        self.by_remote.remove(&conn.remote);
        if let Some(reg) = self.registration {
            let _ = epoll_ctl(
                reg.epoll,
                libc::EPOLL_CTL_DEL,
                conn.stream.as_raw_fd(),
                0,
                0,
            );
        }
        Some(conn)
    }
}

fn epoll_ctl(epoll: RawFd, op: libc::c_int, fd: RawFd, events: u32, token: u64) -> io::Result<()> {
    let mut ev = libc::epoll_event { events, u64: token };
    // SAFETY: epoll_ctl with fds we hold and a valid event pointer (ignored
    // by EPOLL_CTL_DEL)
    if unsafe { libc::epoll_ctl(epoll, op, fd, &mut ev) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// SO_LINGER 0: closing the socket resets the connection and frees its
/// buffers at once.
fn abort_on_close(stream: &TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt on our socket with a valid linger and its size;
    // on failure the socket is closed normally
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(frames: &[&[u8]]) -> Vec<u8> {
        let mut wire = Vec::new();
        for f in frames {
            wire.extend_from_slice(&(f.len() as u16).to_be_bytes());
            wire.extend_from_slice(f);
        }
        wire
    }

    /// Push `wire` in pieces of the given sizes (the last piece takes the
    /// rest) and collect the frames.
    fn deframe(d: &mut Deframer, wire: &[u8], sizes: &[usize]) -> Vec<Vec<u8>> {
        let mut frames = Vec::new();
        let mut rest = wire;
        for &size in sizes {
            let (piece, tail) = rest.split_at(size.min(rest.len()));
            d.push(piece, |f| frames.push(f.to_vec()));
            rest = tail;
        }
        d.push(rest, |f| frames.push(f.to_vec()));
        frames
    }

    #[test]
    fn frames_split_byte_by_byte_are_reassembled() {
        let wire = framed(&[b"stun", b"x", b"dtls record"]);
        let mut d = Deframer::new(MAX_FRAME);
        let frames = deframe(&mut d, &wire, &vec![1; wire.len()]);
        assert_eq!(
            frames,
            [b"stun".to_vec(), b"x".to_vec(), b"dtls record".to_vec()]
        );
        assert_eq!(d.buffered(), 0);
    }

    #[test]
    fn many_frames_in_one_read_come_out_in_order() {
        let payloads: Vec<Vec<u8>> = (0..100u8).map(|i| vec![i; usize::from(i) + 1]).collect();
        let refs: Vec<&[u8]> = payloads.iter().map(Vec::as_slice).collect();
        let mut d = Deframer::new(MAX_FRAME);
        assert_eq!(deframe(&mut d, &framed(&refs), &[]), payloads);
    }

    #[test]
    fn zero_length_frames_are_skipped() {
        let wire = framed(&[b"", b"a", b"", b"", b"b", b""]);
        let mut d = Deframer::new(MAX_FRAME);
        assert_eq!(deframe(&mut d, &wire, &[3]), [b"a".to_vec(), b"b".to_vec()]);
        assert_eq!(d.skipped(), 0);
    }

    #[test]
    fn a_65535_byte_frame_is_delivered_whole() {
        let big: Vec<u8> = (0..MAX_FRAME).map(|i| i as u8).collect();
        let wire = framed(&[&big, b"after"]);
        // in one push, and split inside the length and inside the body
        for sizes in [&[][..], &[1, 40_000, 30_000][..]] {
            let mut d = Deframer::new(MAX_FRAME);
            let frames = deframe(&mut d, &wire, sizes);
            assert_eq!(frames, [big.clone(), b"after".to_vec()]);
            assert_eq!(d.buffered(), 0);
        }
    }

    #[test]
    fn frames_over_max_frame_are_skipped_without_buffering() {
        let long = vec![7; 1000];
        let wire = framed(&[b"ok", &long, b"next"]);
        let mut d = Deframer::new(100);
        let mut frames = Vec::new();
        for b in &wire {
            d.push(std::slice::from_ref(b), |f| frames.push(f.to_vec()));
            assert!(d.buffered() <= 100);
        }
        assert_eq!(frames, [b"ok".to_vec(), b"next".to_vec()]);
        assert_eq!(d.skipped(), 1);
    }

    #[test]
    fn random_bytes_never_panic_and_chunking_does_not_change_frames() {
        // xorshift64: deterministic, no dependency
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..300 {
            let len = (next() % 4096) as usize;
            let mut wire: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            // small lengths now and then, so frames do complete
            for i in (0..wire.len()).step_by(97) {
                wire[i] = 0;
            }
            let max_frame = (next() % 2000) as usize;
            let whole = deframe(&mut Deframer::new(max_frame), &wire, &[]);
            let sizes: Vec<usize> = (0..20).map(|_| (next() % 300) as usize).collect();
            let mut d = Deframer::new(max_frame);
            let chunked = deframe(&mut d, &wire, &sizes);
            assert_eq!(whole, chunked);
            assert!(whole.iter().all(|f| !f.is_empty() && f.len() <= max_frame));
            assert!(d.buffered() <= max_frame);
        }
    }
}
