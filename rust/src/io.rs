//! Rust-owned RTP I/O for one call: a thread that owns the call's UDP
//! sockets (fds handed over from Python), reads them with `recvmmsg` in
//! batches, drives a [`MediaSession`], sends its RTCP, and hands whole
//! frames to the consumer in batches. The consumer waits on an eventfd
//! (`notify_fd`) and calls [`MediaIo::drain`]. This is the I/O driver, not
//! the core: the locks here only guard the hand-off queues.

use crate::media::Frame;
use crate::session::{Event, LocalSocket, MediaSession, Output, SessionConfig, SessionStats};
use std::io;
use std::mem;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Datagrams read per `recvmmsg` call.
pub const BATCH: usize = 64;
/// Largest datagram kept (bigger ones are truncated and then fail to parse).
const DATAGRAM: usize = 2048;
/// Batches read per socket before the others get a turn.
const MAX_BATCHES: usize = 16;
/// Stats snapshot period.
const STATS_EVERY: Duration = Duration::from_millis(200);

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
}

#[derive(Default)]
struct Queues {
    frames: Vec<Frame>,
    events: Vec<Event>,
    commands: Vec<Command>,
    stats: SessionStats,
    io_errors: u64,
    sent: u64,
}

struct Shared {
    queues: Mutex<Queues>,
    stop: AtomicBool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queues> {
        // a panic while holding the lock cannot corrupt plain Vec pushes:
        // keep going with the data as it is
        self.queues.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Handle to the I/O thread of one call.
pub struct MediaIo {
    shared: Arc<Shared>,
    notify: OwnedFd,
    wake: Arc<OwnedFd>,
    thread: Option<JoinHandle<()>>,
}

fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: plain syscall; a non-negative result is a new fd we own
    let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is valid and owned by nobody else
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn signal(fd: RawFd) {
    let one: u64 = 1;
    // SAFETY: writes 8 bytes from a valid u64; EAGAIN (counter full) is fine
    unsafe { libc::write(fd, (&one as *const u64).cast(), 8) };
}

fn clear(fd: RawFd) {
    let mut v: u64 = 0;
    // SAFETY: reads 8 bytes into a valid u64; EAGAIN (not signalled) is fine
    unsafe { libc::read(fd, (&mut v as *mut u64).cast(), 8) };
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
            let v = libc::c_int::try_from(size).unwrap_or(libc::c_int::MAX);
            // SAFETY: setsockopt with a valid c_int pointer and its size
            let rc = unsafe {
                libc::setsockopt(
                    dup,
                    libc::SOL_SOCKET,
                    opt,
                    (&v as *const libc::c_int).cast(),
                    mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            if rc < 0 {
                return Err(io::Error::last_os_error());
            }
        }
    }
    Ok(owned)
}

impl MediaIo {
    /// Start the thread. `sockets[i]` is the socket for
    /// `LocalSocket::from_index(i)` (audio RTP, audio RTCP, video RTP, video
    /// RTCP); the fds are duplicated, so the caller may close its own.
    pub fn start(
        sockets: &[Option<RawFd>],
        config: SessionConfig,
        options: IoOptions,
    ) -> io::Result<MediaIo> {
        let mut owned: Vec<Option<OwnedFd>> = Vec::new();
        for s in sockets.iter().take(4) {
            owned.push(match s {
                Some(fd) => Some(take_socket(*fd, &options)?),
                None => None,
            });
        }
        let notify = eventfd()?;
        let wake = Arc::new(eventfd()?);
        let shared = Arc::new(Shared {
            queues: Mutex::new(Queues::default()),
            stop: AtomicBool::new(false),
        });
        let notify_fd = notify.as_raw_fd();
        let thread = {
            let shared = shared.clone();
            let wake = wake.clone();
            std::thread::Builder::new()
                .name("sipstream-rtp".into())
                .spawn(move || {
                    let session = MediaSession::new(Instant::now(), config);
                    run(session, owned, &shared, notify_fd, wake.as_raw_fd());
                })?
        };
        Ok(MediaIo {
            shared,
            notify,
            wake,
            thread: Some(thread),
        })
    }

    /// The fd to watch for readability (asyncio `loop.add_reader`).
    pub fn notify_fd(&self) -> RawFd {
        self.notify.as_raw_fd()
    }

    /// Frames completed since the last call (clears the notification).
    pub fn drain(&self) -> Vec<Frame> {
        clear(self.notify.as_raw_fd());
        mem::take(&mut self.shared.lock().frames)
    }

    /// Events since the last call.
    pub fn drain_events(&self) -> Vec<Event> {
        mem::take(&mut self.shared.lock().events)
    }

    fn command(&self, c: Command) {
        self.shared.lock().commands.push(c);
        signal(self.wake.as_raw_fd());
    }

    pub fn request_keyframe(&self) {
        self.command(Command::RequestKeyframe);
    }

    pub fn reconfigure(&self, config: SessionConfig) {
        self.command(Command::Reconfigure(Box::new(config)));
    }

    /// Latest stats snapshot (at most 200 ms old), send errors and datagrams sent.
    pub fn stats(&self) -> (SessionStats, u64, u64) {
        let q = self.shared.lock();
        (q.stats.clone(), q.io_errors, q.sent)
    }

    /// Stop and join the thread; the sockets are closed by it.
    pub fn close(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        signal(self.wake.as_raw_fd());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    pub fn is_closed(&self) -> bool {
        self.thread.is_none()
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

fn std_to_sockaddr(addr: &SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
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

fn run(
    mut session: MediaSession,
    sockets: Vec<Option<OwnedFd>>,
    shared: &Shared,
    notify_fd: RawFd,
    wake_fd: RawFd,
) {
    let mut batch = RecvBatch::new();
    let mut frames: Vec<Frame> = Vec::new();
    let mut events: Vec<Event> = Vec::new();
    let mut next_stats = Instant::now();
    let mut io_errors = 0u64;
    let mut sent = 0u64;
    let unspecified = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0);
    let socket_fd = |local: LocalSocket| -> Option<RawFd> {
        let mut i = local.index();
        if sockets.get(i).and_then(|s| s.as_ref()).is_none() {
            i &= !1; // fall back to the RTP socket of that kind (rtcp-mux)
        }
        sockets
            .get(i)
            .and_then(|s| s.as_ref())
            .map(|s| s.as_raw_fd())
    };
    let mut pollfds: Vec<libc::pollfd> = Vec::new();
    let mut poll_index: Vec<usize> = Vec::new();
    for (i, s) in sockets.iter().enumerate() {
        if let Some(s) = s {
            pollfds.push(libc::pollfd {
                fd: s.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            });
            poll_index.push(i);
        }
    }
    pollfds.push(libc::pollfd {
        fd: wake_fd,
        events: libc::POLLIN,
        revents: 0,
    });
    let mut next_timeout = Instant::now();
    while !shared.stop.load(Ordering::SeqCst) {
        let now = Instant::now();
        let wait = next_timeout
            .saturating_duration_since(now)
            .min(Duration::from_millis(100));
        let wait_ms = libc::c_int::try_from(wait.as_micros().div_ceil(1000)).unwrap_or(100);
        for p in pollfds.iter_mut() {
            p.revents = 0;
        }
        // SAFETY: pollfds is a valid array of its length
        let rc =
            unsafe { libc::poll(pollfds.as_mut_ptr(), pollfds.len() as libc::nfds_t, wait_ms) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                io_errors += 1;
            }
        }
        for (k, &i) in poll_index.iter().enumerate() {
            let readable = pollfds.get(k).is_some_and(|p| p.revents != 0);
            if !readable {
                continue;
            }
            let Some(local) = LocalSocket::from_index(i) else {
                continue;
            };
            let Some(fd) = sockets
                .get(i)
                .and_then(|s| s.as_ref())
                .map(|s| s.as_raw_fd())
            else {
                continue;
            };
            for _ in 0..MAX_BATCHES {
                let n = match batch.recv(fd) {
                    Ok(n) => n,
                    Err(_) => {
                        io_errors += 1;
                        break;
                    }
                };
                let now = Instant::now();
                for j in 0..n {
                    if let Some((data, from)) = batch.get(j) {
                        session.handle_receive(now, local, from.unwrap_or(unspecified), data);
                    }
                }
                if n < BATCH {
                    break;
                }
            }
        }
        if pollfds.last().is_some_and(|p| p.revents != 0) {
            clear(wake_fd);
            let commands = mem::take(&mut shared.lock().commands);
            for c in commands {
                match c {
                    Command::RequestKeyframe => session.request_keyframe(Instant::now()),
                    Command::Reconfigure(cfg) => session.reconfigure(Instant::now(), *cfg),
                }
            }
        }
        let now = Instant::now();
        if now >= next_timeout {
            session.handle_timeout(now);
        }
        loop {
            match session.poll_output() {
                Output::Frame(f) => frames.push(f),
                Output::Event(e) => events.push(e),
                Output::Transmit(t) => match socket_fd(t.from) {
                    Some(fd) => match send_to(fd, &t.to, &t.data) {
                        Ok(()) => sent += 1,
                        Err(_) => io_errors += 1,
                    },
                    None => io_errors += 1,
                },
                Output::Timeout(t) => {
                    next_timeout = t;
                    break;
                }
            }
        }
        let stats_due = now >= next_stats;
        if !frames.is_empty() || !events.is_empty() || stats_due {
            let notify = !frames.is_empty() || !events.is_empty();
            {
                let mut q = shared.lock();
                q.frames.append(&mut frames);
                q.events.append(&mut events);
                if stats_due {
                    q.stats = session.stats();
                    q.io_errors = io_errors;
                    q.sent = sent;
                }
            }
            if stats_due {
                next_stats = now + STATS_EVERY;
            }
            if notify {
                signal(notify_fd);
            }
        }
    }
    let mut q = shared.lock();
    q.stats = session.stats();
    q.io_errors = io_errors;
    q.sent = sent;
    // sockets (OwnedFd) close when dropped here
}
