//! Rust-owned RTP I/O: a few reactor threads (one per core) each own the
//! UDP sockets of many calls (fds handed over from Python), wait on all of
//! them with one epoll, read them with `recvmmsg` in batches, drive each
//! call's [`MediaSession`], send its RTCP, and hand whole frames to the
//! call's consumer in batches. The consumer waits on the call's eventfd
//! (`notify_fd`) and calls [`MediaIo::drain`]. One thread per call would
//! cost a wake-up and a context switch per packet burst per call; shared
//! reactors turn many calls' bursts into one `epoll_wait`. This is the I/O
//! driver, not the core: the locks here only guard the hand-off queues.

use crate::media::Frame;
use crate::session::{
    Event, LocalSocket, MediaKind, MediaSession, Output, SessionConfig, SessionStats,
};
use crate::webrtc::StreamFeed;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::io;
use std::mem;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Datagrams read per `recvmmsg` call.
pub const BATCH: usize = 64;
/// Largest datagram kept (bigger ones are truncated and then fail to parse).
const DATAGRAM: usize = 2048;
/// Batches read per socket before the others get a turn.
const MAX_BATCHES: usize = 16;
/// Stats snapshot period.
const STATS_EVERY: Duration = Duration::from_millis(200);
/// Longest sleep of a reactor with nothing due.
const MAX_WAIT: Duration = Duration::from_millis(100);
/// Readiness events taken per `epoll_wait`.
const EPOLL_EVENTS: usize = 512;
/// epoll token of a reactor's own wake-up eventfd; socket tokens are
/// `slot << 2 | socket index`.
const WAKE_TOKEN: u64 = u64::MAX;
/// How long `close` waits for the reactor to let go of the sockets.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// Socket options applied when the sockets are taken over.
#[derive(Debug, Clone, Copy, Default)]
pub struct IoOptions {
    /// `rtp_receive_buffer_size` → SO_RCVBUF.
    pub receive_buffer: Option<usize>,
    /// `rtp_send_buffer_size` → SO_SNDBUF.
    pub send_buffer: Option<usize>,
}

enum Command {
    RequestKeyframe,
    Reconfigure(Box<SessionConfig>),
    /// RTP sent from outside (kind, RTP timestamp, payload bytes, when).
    RtpSent(MediaKind, u32, usize, Instant),
}

#[derive(Default)]
struct Queues {
    frames: Vec<Frame>,
    events: Vec<Event>,
    commands: Vec<Command>,
    stats: SessionStats,
    io_errors: u64,
    sent: u64,
    /// The stream's WebRTC feed: every frame is packetized into it too.
    feed: Option<Arc<StreamFeed>>,
}

/// What one call's handle and its reactor share.
struct Shared {
    queues: Mutex<Queues>,
    /// Set by the handle: the reactor drops the session and its sockets.
    stop: AtomicBool,
    /// Set by the reactor once the sockets are closed.
    closed: Mutex<bool>,
    closed_signal: Condvar,
    /// The consumer was notified and has not drained since: a busy call
    /// costs one notification per drain, not one per batch.
    notified: AtomicBool,
    /// Notify through this queue (shared by many calls) instead of the
    /// call's own eventfd.
    ready: Option<Arc<ReadyInner>>,
    /// Frames go to the consumer (`drain`) too, not only to the feed.
    python_frames: AtomicBool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queues> {
        // a panic while holding the lock cannot corrupt plain Vec pushes:
        // keep going with the data as it is
        self.queues.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set_closed(&self) {
        *self.closed.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.closed_signal.notify_all();
    }
}

/// One notification for many calls: a consumer with thousands of calls
/// takes one wake-up and one [`ReadyQueue::drain`] for all those with frames,
/// instead of one eventfd, wake-up and `drain` per call.
#[derive(Clone)]
pub struct ReadyQueue {
    inner: Arc<ReadyInner>,
}

struct ReadyInner {
    fd: OwnedFd,
    calls: Mutex<Vec<(u64, Arc<Shared>)>>,
    notified: AtomicBool,
}

impl ReadyInner {
    fn push(&self, id: u64, shared: &Arc<Shared>) {
        self.calls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((id, shared.clone()));
        if !self.notified.swap(true, Ordering::SeqCst) {
            signal(self.fd.as_raw_fd());
        }
    }
}

/// Frames of one call from [`ReadyQueue::drain`].
pub struct ReadyFrames {
    /// [`MediaIo::token`] of the call.
    pub token: u64,
    pub frames: Vec<Frame>,
    /// The call has events waiting: [`MediaIo::drain_events`].
    pub has_events: bool,
}

impl ReadyQueue {
    pub fn new() -> io::Result<ReadyQueue> {
        Ok(ReadyQueue {
            inner: Arc::new(ReadyInner {
                fd: eventfd()?,
                calls: Mutex::new(Vec::new()),
                notified: AtomicBool::new(false),
            }),
        })
    }

    /// The fd to watch for readability (asyncio `loop.add_reader`).
    pub fn notify_fd(&self) -> RawFd {
        self.inner.fd.as_raw_fd()
    }

    /// The frames of every call that has some, oldest first per call
    /// (clears the notification).
    pub fn drain(&self) -> Vec<ReadyFrames> {
        // clear before re-arming: a call queued after this point signals again
        clear(self.inner.fd.as_raw_fd());
        self.inner.notified.store(false, Ordering::SeqCst);
        let calls = mem::take(&mut *self.inner.calls.lock().unwrap_or_else(|e| e.into_inner()));
        calls
            .into_iter()
            .map(|(token, shared)| {
                shared.notified.store(false, Ordering::SeqCst);
                let mut q = shared.lock();
                ReadyFrames {
                    token,
                    frames: mem::take(&mut q.frames),
                    has_events: !q.events.is_empty(),
                }
            })
            .collect()
    }
}

/// A call handed to a reactor, or a call whose handle has something for it.
enum Request {
    Add(Box<NewCall>),
    Touch(u64),
}

struct NewCall {
    id: u64,
    config: SessionConfig,
    sockets: Vec<Option<OwnedFd>>,
    shared: Arc<Shared>,
    notify: Arc<OwnedFd>,
}

/// One reactor thread's mailbox.
struct Reactor {
    epoll: OwnedFd,
    wake: OwnedFd,
    inbox: Mutex<Vec<Request>>,
}

impl Reactor {
    fn send(&self, r: Request) {
        self.inbox.lock().unwrap_or_else(|e| e.into_inner()).push(r);
        signal(self.wake.as_raw_fd());
    }
}

/// The reactors, started with the first call and kept for the process.
static REACTORS: Mutex<Vec<Arc<Reactor>>> = Mutex::new(Vec::new());
static NEXT_ID: AtomicU64 = AtomicU64::new(0);

fn reactor_for(id: u64) -> io::Result<Arc<Reactor>> {
    let mut reactors = REACTORS.lock().unwrap_or_else(|e| e.into_inner());
    if reactors.is_empty() {
        let count = std::thread::available_parallelism().map_or(1, |n| n.get());
        for k in 0..count {
            // SAFETY: plain syscall; a non-negative result is a new fd we own
            let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
            if ep < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: ep is valid and owned by nobody else
            let epoll = unsafe { OwnedFd::from_raw_fd(ep) };
            let wake = eventfd()?;
            epoll_add(epoll.as_raw_fd(), wake.as_raw_fd(), WAKE_TOKEN)?;
            let reactor = Arc::new(Reactor {
                epoll,
                wake,
                inbox: Mutex::new(Vec::new()),
            });
            let r = reactor.clone();
            std::thread::Builder::new()
                .name(format!("sipstream-rtp-{k}"))
                .spawn(move || run(&r))?;
            reactors.push(reactor);
        }
    }
    let i = usize::try_from(id).unwrap_or(0) % reactors.len();
    // i < len, and len > 0 after the block above
    Ok(reactors[i].clone())
}

/// Handle to one call's RTP I/O on a reactor thread.
pub struct MediaIo {
    id: u64,
    shared: Arc<Shared>,
    notify: Arc<OwnedFd>,
    reactor: Option<Arc<Reactor>>,
}

pub(crate) fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: plain syscall; a non-negative result is a new fd we own
    let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is valid and owned by nobody else
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

pub(crate) fn signal(fd: RawFd) {
    let one: u64 = 1;
    // SAFETY: writes 8 bytes from a valid u64; EAGAIN (counter full) is fine
    unsafe { libc::write(fd, (&one as *const u64).cast(), 8) };
}

pub(crate) fn clear(fd: RawFd) {
    let mut v: u64 = 0;
    // SAFETY: reads 8 bytes into a valid u64; EAGAIN (not signalled) is fine
    unsafe { libc::read(fd, (&mut v as *mut u64).cast(), 8) };
}

pub(crate) fn epoll_add(epoll: RawFd, fd: RawFd, token: u64) -> io::Result<()> {
    let mut ev = libc::epoll_event {
        events: libc::EPOLLIN as u32,
        u64: token,
    };
    // SAFETY: valid epoll fd, fd and event pointer
    if unsafe { libc::epoll_ctl(epoll, libc::EPOLL_CTL_ADD, fd, &mut ev) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn epoll_del(epoll: RawFd, fd: RawFd) {
    // SAFETY: valid epoll fd; the event argument is ignored for DEL. It must
    // be explicit: Python holds another fd of the same socket, so closing
    // ours would not take the socket out of the epoll set.
    unsafe { libc::epoll_ctl(epoll, libc::EPOLL_CTL_DEL, fd, std::ptr::null_mut()) };
}

/// Duplicate `fd` (close-on-exec), make it non-blocking and apply buffers.
pub fn take_socket(fd: RawFd, options: &IoOptions) -> io::Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC on a caller-provided fd; checked below
    let dup = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
    if dup < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: dup is a new fd we own
    let owned = unsafe { OwnedFd::from_raw_fd(dup) };
    // SAFETY: fcntl on our fd
    unsafe {
        let flags = libc::fcntl(dup, libc::F_GETFL);
        libc::fcntl(dup, libc::F_SETFL, flags | libc::O_NONBLOCK);
    }
    for (opt, size) in [
        (libc::SO_RCVBUF, options.receive_buffer),
        (libc::SO_SNDBUF, options.send_buffer),
    ] {
        if let Some(size) = size {
            set_socket_buffer(dup, opt, size)?;
        }
    }
    Ok(owned)
}

/// SO_RCVBUF / SO_SNDBUF (`opt`) of `fd` to `size` bytes (the kernel caps it).
pub(crate) fn set_socket_buffer(fd: RawFd, opt: libc::c_int, size: usize) -> io::Result<()> {
    let v = libc::c_int::try_from(size).unwrap_or(libc::c_int::MAX);
    // SAFETY: setsockopt with a valid c_int pointer and its size
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            opt,
            (&v as *const libc::c_int).cast(),
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

impl MediaIo {
    /// Hand the call to a reactor thread. `sockets[i]` is the socket for
    /// `LocalSocket::from_index(i)` (audio RTP, audio RTCP, video RTP, video
    /// RTCP); the fds are duplicated, so the caller may close its own.
    pub fn start(
        sockets: &[Option<RawFd>],
        config: SessionConfig,
        options: IoOptions,
    ) -> io::Result<MediaIo> {
        Self::start_with(sockets, config, options, None)
    }

    /// As [`MediaIo::start`], notifying through `ready` (when given) rather
    /// than the call's own eventfd.
    pub fn start_with(
        sockets: &[Option<RawFd>],
        config: SessionConfig,
        options: IoOptions,
        ready: Option<&ReadyQueue>,
    ) -> io::Result<MediaIo> {
        let mut owned: Vec<Option<OwnedFd>> = Vec::new();
        for s in sockets.iter().take(4) {
            owned.push(match s {
                Some(fd) => Some(take_socket(*fd, &options)?),
                None => None,
            });
        }
        let notify = Arc::new(eventfd()?);
        let shared = Arc::new(Shared {
            queues: Mutex::new(Queues::default()),
            stop: AtomicBool::new(false),
            closed: Mutex::new(false),
            closed_signal: Condvar::new(),
            notified: AtomicBool::new(false),
            ready: ready.map(|r| r.inner.clone()),
            python_frames: AtomicBool::new(true),
        });
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let reactor = reactor_for(id)?;
        reactor.send(Request::Add(Box::new(NewCall {
            id,
            config,
            sockets: owned,
            shared: shared.clone(),
            notify: notify.clone(),
        })));
        Ok(MediaIo {
            id,
            shared,
            notify,
            reactor: Some(reactor),
        })
    }

    /// The fd to watch for readability (asyncio `loop.add_reader`); never
    /// signalled when the call notifies through a [`ReadyQueue`].
    pub fn notify_fd(&self) -> RawFd {
        self.notify.as_raw_fd()
    }

    /// This call's token in [`ReadyQueue::drain`].
    pub fn token(&self) -> u64 {
        self.id
    }

    /// Frames completed since the last call (clears the notification).
    pub fn drain(&self) -> Vec<Frame> {
        // clear before re-arming: a frame queued after this point signals again
        clear(self.notify.as_raw_fd());
        self.shared.notified.store(false, Ordering::SeqCst);
        mem::take(&mut self.shared.lock().frames)
    }

    /// Events since the last call.
    pub fn drain_events(&self) -> Vec<Event> {
        mem::take(&mut self.shared.lock().events)
    }

    fn command(&self, c: Command) {
        self.shared.lock().commands.push(c);
        if let Some(r) = &self.reactor {
            r.send(Request::Touch(self.id));
        }
    }

    /// Packetize this call's frames into `feed` for its WebRTC viewers
    /// (None: stop).
    pub fn set_feed(&self, feed: Option<Arc<StreamFeed>>) {
        self.shared.lock().feed = feed;
    }

    /// Whether frames are queued for [`MediaIo::drain`] (the default); with a
    /// feed attached they need not be: the stream hub counts them and the
    /// WebRTC viewers get them without the consumer.
    pub fn set_python_frames(&self, on: bool) {
        self.shared.python_frames.store(on, Ordering::Relaxed);
    }

    pub fn request_keyframe(&self) {
        self.command(Command::RequestKeyframe);
    }

    pub fn reconfigure(&self, config: SessionConfig) {
        self.command(Command::Reconfigure(Box::new(config)));
    }

    /// RTP the owner sent itself with the session's SSRC (priming, DTMF):
    /// the session counts it in its sender reports.
    pub fn note_rtp_sent(&self, kind: MediaKind, rtp_timestamp: u32, payload_len: usize) {
        self.command(Command::RtpSent(
            kind,
            rtp_timestamp,
            payload_len,
            Instant::now(),
        ));
    }

    /// Latest stats snapshot (at most 200 ms old), send errors and datagrams sent.
    pub fn stats(&self) -> (SessionStats, u64, u64) {
        let q = self.shared.lock();
        (q.stats.clone(), q.io_errors, q.sent)
    }

    /// Take the call off its reactor and wait until its sockets are closed.
    pub fn close(&mut self) {
        let Some(reactor) = self.reactor.take() else {
            return;
        };
        self.shared.stop.store(true, Ordering::SeqCst);
        reactor.send(Request::Touch(self.id));
        let closed = self.shared.closed.lock().unwrap_or_else(|e| e.into_inner());
        // a reactor that died cannot answer: give up after CLOSE_WAIT
        let _ = self
            .shared
            .closed_signal
            .wait_timeout_while(closed, CLOSE_WAIT, |closed| !*closed);
    }

    pub fn is_closed(&self) -> bool {
        self.reactor.is_none()
    }
}

impl Drop for MediaIo {
    fn drop(&mut self) {
        self.close();
    }
}

fn sockaddr_to_std(ss: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match i32::from(ss.ss_family) {
        libc::AF_INET => {
            // SAFETY: family says this storage holds a sockaddr_in
            let a: &libc::sockaddr_in = unsafe { &*(ss as *const _ as *const libc::sockaddr_in) };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: family says this storage holds a sockaddr_in6
            let a: &libc::sockaddr_in6 = unsafe { &*(ss as *const _ as *const libc::sockaddr_in6) };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(a.sin6_addr.s6_addr),
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

pub(crate) fn std_to_sockaddr(addr: &SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: all-zero is a valid sockaddr_storage
    let mut ss: libc::sockaddr_storage = unsafe { mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            // SAFETY: sockaddr_storage is large and aligned enough for sockaddr_in
            let sin = unsafe { &mut *(&mut ss as *mut _ as *mut libc::sockaddr_in) };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = a.port().to_be();
            sin.sin_addr.s_addr = u32::from(*a.ip()).to_be();
            mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            // SAFETY: sockaddr_storage is large and aligned enough for sockaddr_in6
            let sin6 = unsafe { &mut *(&mut ss as *mut _ as *mut libc::sockaddr_in6) };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = a.port().to_be();
            sin6.sin6_addr.s6_addr = a.ip().octets();
            sin6.sin6_flowinfo = a.flowinfo();
            sin6.sin6_scope_id = a.scope_id();
            mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (ss, len as libc::socklen_t)
}

/// Reusable `recvmmsg` buffers.
pub struct RecvBatch {
    bufs: Vec<[u8; DATAGRAM]>,
    addrs: Vec<libc::sockaddr_storage>,
    iovecs: Vec<libc::iovec>,
    msgs: Vec<libc::mmsghdr>,
}

impl Default for RecvBatch {
    fn default() -> Self {
        Self::new()
    }
}

impl RecvBatch {
    pub fn new() -> Self {
        // SAFETY: all-zero is valid for these plain C structs
        let zero_addr: libc::sockaddr_storage = unsafe { mem::zeroed() };
        RecvBatch {
            bufs: vec![[0u8; DATAGRAM]; BATCH],
            addrs: vec![zero_addr; BATCH],
            iovecs: Vec::with_capacity(BATCH),
            // SAFETY: as above
            msgs: (0..BATCH).map(|_| unsafe { mem::zeroed() }).collect(),
        }
    }

    /// One non-blocking `recvmmsg`; returns how many datagrams arrived
    /// (0 when none are waiting).
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        self.iovecs.clear();
        for b in self.bufs.iter_mut() {
            self.iovecs.push(libc::iovec {
                iov_base: b.as_mut_ptr().cast(),
                iov_len: DATAGRAM,
            });
        }
        for (i, m) in self.msgs.iter_mut().enumerate() {
            // pointers into vectors that are not resized while in use
            m.msg_hdr.msg_name = (&mut self.addrs[i] as *mut libc::sockaddr_storage).cast();
            m.msg_hdr.msg_namelen = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            m.msg_hdr.msg_iov = &mut self.iovecs[i];
            m.msg_hdr.msg_iovlen = 1;
            m.msg_hdr.msg_control = std::ptr::null_mut();
            m.msg_hdr.msg_controllen = 0;
            m.msg_hdr.msg_flags = 0;
            m.msg_len = 0;
        }
        // SAFETY: msgs/iovecs/bufs/addrs are valid for BATCH entries
        let n = unsafe {
            libc::recvmmsg(
                fd,
                self.msgs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::WouldBlock {
                return Ok(0);
            }
            return Err(e);
        }
        Ok(n as usize)
    }

    /// Datagram `i` of the last `recv` and its source.
    pub fn get(&self, i: usize) -> Option<(&[u8], Option<SocketAddr>)> {
        let m = self.msgs.get(i)?;
        let len = (m.msg_len as usize).min(DATAGRAM);
        let data = self.bufs.get(i)?.get(..len)?;
        Some((data, self.addrs.get(i).and_then(sockaddr_to_std)))
    }
}

fn send_to(fd: RawFd, to: &SocketAddr, data: &[u8]) -> io::Result<()> {
    let (ss, len) = std_to_sockaddr(to);
    // SAFETY: data and address are valid for their lengths
    let rc = unsafe {
        libc::sendto(
            fd,
            data.as_ptr().cast(),
            data.len(),
            libc::MSG_DONTWAIT,
            (&ss as *const libc::sockaddr_storage).cast(),
            len,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// One call on a reactor.
struct Call {
    id: u64,
    session: MediaSession,
    sockets: Vec<Option<OwnedFd>>,
    shared: Arc<Shared>,
    notify: Arc<OwnedFd>,
    next_timeout: Instant,
    /// `next_timeout` is in the reactor's timer heap.
    armed: bool,
    /// In the reactor's `touched` list for this round.
    touched: bool,
    frames: Vec<Frame>,
    events: Vec<Event>,
    io_errors: u64,
    sent: u64,
}

impl Call {
    fn socket_fd(&self, local: LocalSocket) -> Option<RawFd> {
        let mut i = local.index();
        if self.sockets.get(i).and_then(|s| s.as_ref()).is_none() {
            i &= !1; // fall back to the RTP socket of that kind (rtcp-mux)
        }
        self.sockets
            .get(i)
            .and_then(|s| s.as_ref())
            .map(|s| s.as_raw_fd())
    }

    fn receive(&mut self, i: usize, batch: &mut RecvBatch) {
        let unspecified = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0);
        let Some(local) = LocalSocket::from_index(i) else {
            return;
        };
        let Some(fd) = self
            .sockets
            .get(i)
            .and_then(|s| s.as_ref())
            .map(|s| s.as_raw_fd())
        else {
            return;
        };
        for _ in 0..MAX_BATCHES {
            let n = match batch.recv(fd) {
                Ok(n) => n,
                Err(_) => {
                    self.io_errors += 1;
                    break;
                }
            };
            let now = Instant::now();
            for j in 0..n {
                if let Some((data, from)) = batch.get(j) {
                    self.session
                        .handle_receive(now, local, from.unwrap_or(unspecified), data);
                }
            }
            if n < BATCH {
                break;
            }
        }
    }

    fn run_commands(&mut self) {
        let commands = mem::take(&mut self.shared.lock().commands);
        for c in commands {
            match c {
                Command::RequestKeyframe => self.session.request_keyframe(Instant::now()),
                Command::Reconfigure(cfg) => self.session.reconfigure(Instant::now(), *cfg),
                Command::RtpSent(kind, ts, len, at) => {
                    self.session.note_rtp_sent(at, kind, ts, len)
                }
            }
        }
    }

    /// Drain the session's outputs: send, queue frames and events for the
    /// consumer (one eventfd write until it drains). Returns the next
    /// wake-up when the timer heap needs it.
    fn flush(&mut self) -> Option<Instant> {
        let mut changed = None;
        loop {
            match self.session.poll_output() {
                Output::Frame(f) => self.frames.push(f),
                Output::Event(e) => self.events.push(e),
                Output::Transmit(t) => match self.socket_fd(t.from) {
                    Some(fd) => match send_to(fd, &t.to, &t.data) {
                        Ok(()) => self.sent += 1,
                        Err(_) => self.io_errors += 1,
                    },
                    None => self.io_errors += 1,
                },
                Output::Timeout(t) => {
                    if t != self.next_timeout || !self.armed {
                        self.next_timeout = t;
                        self.armed = true;
                        changed = Some(t);
                    }
                    break;
                }
            }
        }
        if !self.frames.is_empty() || !self.events.is_empty() {
            let deliver = {
                let mut q = self.shared.lock();
                if let Some(feed) = &q.feed {
                    if feed.push_frames(&self.frames) {
                        self.events.push(Event::StreamChanged);
                    }
                }
                if self.shared.python_frames.load(Ordering::Relaxed) {
                    q.frames.append(&mut self.frames);
                } else {
                    self.frames.clear();
                }
                q.events.append(&mut self.events);
                !q.frames.is_empty() || !q.events.is_empty()
            };
            if deliver && !self.shared.notified.swap(true, Ordering::SeqCst) {
                match &self.shared.ready {
                    Some(ready) => ready.push(self.id, &self.shared),
                    None => signal(self.notify.as_raw_fd()),
                }
            }
        }
        changed
    }

    fn publish_stats(&self) {
        let mut q = self.shared.lock();
        q.stats = self.session.stats();
        q.io_errors = self.io_errors;
        q.sent = self.sent;
    }
}

/// The calls of one reactor, indexed by slot (the epoll token's high bits).
#[derive(Default)]
struct Calls {
    slots: Vec<Option<Call>>,
    free: Vec<usize>,
    by_id: HashMap<u64, usize>,
    /// (wake-up, slot, call id); stale entries are skipped when popped.
    timers: BinaryHeap<Reverse<(Instant, usize, u64)>>,
    touched: Vec<usize>,
}

impl Calls {
    fn touch(&mut self, slot: usize) {
        if let Some(Some(c)) = self.slots.get_mut(slot) {
            if !c.touched {
                c.touched = true;
                self.touched.push(slot);
            }
        }
    }

    fn add(&mut self, epoll: RawFd, new: NewCall) {
        let slot = self.free.pop().unwrap_or(self.slots.len());
        let now = Instant::now();
        let mut call = Call {
            id: new.id,
            session: MediaSession::new(now, new.config),
            sockets: new.sockets,
            shared: new.shared,
            notify: new.notify,
            next_timeout: now,
            armed: true,
            touched: false,
            frames: Vec::new(),
            events: Vec::new(),
            io_errors: 0,
            sent: 0,
        };
        for (i, s) in call.sockets.iter().enumerate() {
            if let Some(s) = s {
                let token = (slot as u64) << 2 | i as u64;
                if epoll_add(epoll, s.as_raw_fd(), token).is_err() {
                    call.io_errors += 1;
                }
            }
        }
        call.publish_stats();
        if slot == self.slots.len() {
            self.slots.push(Some(call));
        } else {
            self.slots[slot] = Some(call);
        }
        self.by_id.insert(new.id, slot);
        self.timers.push(Reverse((now, slot, new.id)));
        self.touch(slot);
    }

    fn remove(&mut self, epoll: RawFd, slot: usize) {
        let Some(call) = self.slots.get_mut(slot).and_then(Option::take) else {
            return;
        };
        for s in call.sockets.iter().flatten() {
            epoll_del(epoll, s.as_raw_fd());
        }
        self.by_id.remove(&call.id);
        self.free.push(slot);
        call.publish_stats();
        let shared = call.shared.clone();
        drop(call); // closes the sockets
        shared.set_closed();
    }

    /// Run `f` on a call; a call whose session panics is closed rather
    /// than taking every other call of the reactor with it.
    fn guarded(&mut self, epoll: RawFd, slot: usize, f: impl FnOnce(&mut Call)) {
        let Some(Some(call)) = self.slots.get_mut(slot) else {
            return;
        };
        if catch_unwind(AssertUnwindSafe(|| f(call))).is_err() {
            self.remove(epoll, slot);
        }
    }
}

fn run(reactor: &Reactor) {
    let epoll = reactor.epoll.as_raw_fd();
    let mut calls = Calls::default();
    let mut batch = RecvBatch::new();
    let mut ready: Vec<libc::epoll_event> =
        vec![libc::epoll_event { events: 0, u64: 0 }; EPOLL_EVENTS];
    let mut next_stats = Instant::now() + STATS_EVERY;
    loop {
        let now = Instant::now();
        let mut deadline = next_stats.min(now + MAX_WAIT);
        if let Some(Reverse((t, _, _))) = calls.timers.peek() {
            deadline = deadline.min(*t);
        }
        let wait = deadline.saturating_duration_since(now);
        let wait_ms = libc::c_int::try_from(wait.as_micros().div_ceil(1000)).unwrap_or(100);
        // SAFETY: `ready` is a valid array of EPOLL_EVENTS entries
        let n = unsafe {
            libc::epoll_wait(
                epoll,
                ready.as_mut_ptr(),
                EPOLL_EVENTS as libc::c_int,
                wait_ms,
            )
        };
        let mut woken = false;
        for ev in ready.iter().take(usize::try_from(n).unwrap_or(0)) {
            let token = ev.u64;
            if token == WAKE_TOKEN {
                woken = true;
                continue;
            }
            let (slot, i) = ((token >> 2) as usize, (token & 3) as usize);
            calls.guarded(epoll, slot, |c| c.receive(i, &mut batch));
            calls.touch(slot);
        }
        // requests after the socket events: a slot freed or reused here
        // has no readiness left over from this round
        if woken {
            clear(reactor.wake.as_raw_fd());
            let requests = mem::take(&mut *reactor.inbox.lock().unwrap_or_else(|e| e.into_inner()));
            for r in requests {
                match r {
                    Request::Add(new) => calls.add(epoll, *new),
                    Request::Touch(id) => {
                        let Some(&slot) = calls.by_id.get(&id) else {
                            continue;
                        };
                        let stop = calls.slots[slot]
                            .as_ref()
                            .is_some_and(|c| c.shared.stop.load(Ordering::SeqCst));
                        if stop {
                            calls.remove(epoll, slot);
                        } else {
                            calls.guarded(epoll, slot, Call::run_commands);
                            calls.touch(slot);
                        }
                    }
                }
            }
        }
        let now = Instant::now();
        while let Some(&Reverse((t, slot, id))) = calls.timers.peek() {
            if t > now {
                break;
            }
            calls.timers.pop();
            let due = calls
                .slots
                .get(slot)
                .and_then(Option::as_ref)
                .is_some_and(|c| c.id == id && c.next_timeout == t);
            if due {
                calls.guarded(epoll, slot, |c| {
                    c.armed = false;
                    c.session.handle_timeout(now);
                });
                calls.touch(slot);
            }
        }
        let touched = mem::take(&mut calls.touched);
        for &slot in &touched {
            let mut next = None;
            calls.guarded(epoll, slot, |c| {
                c.touched = false;
                next = c.flush().map(|t| (t, c.id));
            });
            if let Some((t, id)) = next {
                calls.timers.push(Reverse((t, slot, id)));
            }
        }
        calls.touched = touched;
        calls.touched.clear();
        if calls.timers.len() > 4 * calls.by_id.len() + 1024 {
            // stale entries pile up when wake-ups keep moving: rebuild
            calls.timers = calls
                .slots
                .iter()
                .enumerate()
                .filter_map(|(slot, c)| c.as_ref().map(|c| Reverse((c.next_timeout, slot, c.id))))
                .collect();
        }
        if now >= next_stats {
            for c in calls.slots.iter().flatten() {
                c.publish_stats();
            }
            next_stats = now + STATS_EVERY;
        }
    }
}
