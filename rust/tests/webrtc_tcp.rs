//! ICE-TCP's `TcpMux` on loopback, driven by an epoll as the engine drives
//! it: frames from clients arrive with their address, frames sent arrive
//! framed, queued output is flushed and then no longer watched, and every
//! limit holds: a client that does not read is cut off, connections over
//! the maximum are closed at once, silent ones time out, and no fd is left
//! behind.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::{mpsc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use sipstream_core::webrtc::tcp::{
    CloseReason, Deframer, SendResult, TcpLimits, TcpMux, MAX_FRAME,
};

const LISTENER: u64 = 2;
const CONN_BASE: u64 = 1 << 32;
/// Longest wait for anything to happen on loopback.
const PATIENCE: Duration = Duration::from_secs(10);

/// The tests count this process's fds: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// The mux in its own epoll, with what it delivered.
struct Server {
    mux: TcpMux,
    epoll: OwnedFd,
    frames: Vec<(SocketAddr, Vec<u8>)>,
}

impl Server {
    fn new(limits: TcpLimits) -> Server {
        // SAFETY: epoll_create1 returns a new fd or -1 (checked)
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        assert!(fd >= 0, "epoll_create1");
        // SAFETY: a fresh fd owned by nothing else
        let epoll = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut mux = TcpMux::bind("127.0.0.1:0".parse().unwrap(), limits).unwrap();
        mux.register(epoll.as_raw_fd(), LISTENER, CONN_BASE)
            .unwrap();
        Server {
            mux,
            epoll,
            frames: Vec::new(),
        }
    }

    fn connect(&self) -> TcpStream {
        let client = TcpStream::connect(self.mux.local_addr()).unwrap();
        client.set_read_timeout(Some(PATIENCE)).unwrap();
        client
    }

    /// One `epoll_wait` of up to `wait_ms`, its events handled at `now`;
    /// returns how many events there were.
    fn poll(&mut self, now: Instant, wait_ms: i32) -> usize {
        let mut ready = [libc::epoll_event { events: 0, u64: 0 }; 16];
        // SAFETY: `ready` is a valid buffer of 16 events
        let n =
            unsafe { libc::epoll_wait(self.epoll.as_raw_fd(), ready.as_mut_ptr(), 16, wait_ms) };
        let frames = &mut self.frames;
        for e in &ready[..n.max(0) as usize] {
            // epoll_event is packed: copy the fields out
            let (token, events) = (e.u64, e.events);
            assert!(self.mux.owns_token(token), "token {token} is not the mux's");
            self.mux.on_ready(token, events, now, |from, frame| {
                frames.push((from, frame.to_vec()))
            });
        }
        n.max(0) as usize
    }

    fn poll_until(&mut self, now: Instant, what: &str, done: impl Fn(&Server) -> bool) {
        let give_up = Instant::now() + PATIENCE;
        while !done(self) {
            assert!(Instant::now() < give_up, "gave up waiting: {what}");
            self.poll(now, 20);
        }
    }

    /// Connect a client and wait until the mux has accepted it.
    fn accept(&mut self, now: Instant) -> TcpStream {
        let before = self.mux.stats().accepted + self.mux.stats().refused;
        let client = self.connect();
        self.poll_until(now, "accept", |s| {
            s.mux.stats().accepted + s.mux.stats().refused > before
        });
        client
    }
}

fn framed(frame: &[u8]) -> Vec<u8> {
    let mut wire = (frame.len() as u16).to_be_bytes().to_vec();
    wire.extend_from_slice(frame);
    wire
}

/// Read until the server closes (EOF) or resets the connection.
fn assert_closed_by_server(client: &mut TcpStream) {
    let mut buf = [0; 65536];
    loop {
        match client.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return,
            Err(e) => panic!("expected EOF or reset, got {e}"),
        }
    }
}

/// Send `frame` to `to` until the mux gives up on the client; the results
/// before that.
fn send_until_closed(server: &mut Server, to: SocketAddr, frame: &[u8]) -> Vec<SendResult> {
    let mut results = Vec::new();
    for _ in 0..1_000_000 {
        let r = server.mux.send(to, frame);
        if let SendResult::Closed(_) = r {
            results.push(r);
            return results;
        }
        results.push(r);
        server.poll(Instant::now(), 0);
    }
    panic!("the client was never cut off");
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

#[test]
fn frames_from_a_client_arrive_whole_with_its_address() {
    let _serial = serial();
    let mut server = Server::new(TcpLimits::default());
    let now = Instant::now();
    let mut client = server.accept(now);
    let me = client.local_addr().unwrap();
    // three frames in one write, then one split inside its length and body
    let mut wire = framed(b"binding request");
    wire.extend(framed(b""));
    wire.extend(framed(&[0x16; 300]));
    wire.extend(framed(b"rtp"));
    client.write_all(&wire).unwrap();
    let big = framed(&vec![0x80; MAX_FRAME]);
    for piece in [&big[..1], &big[1..1000], &big[1000..]] {
        client.write_all(piece).unwrap();
        client.flush().unwrap();
        server.poll(now, 20);
    }
    server.poll_until(now, "4 frames", |s| s.frames.len() == 4);
    let expected: Vec<(SocketAddr, Vec<u8>)> = [
        b"binding request".to_vec(),
        vec![0x16; 300],
        b"rtp".to_vec(),
        vec![0x80; MAX_FRAME],
    ]
    .into_iter()
    .map(|f| (me, f))
    .collect();
    assert_eq!(server.frames, expected);
    let stats = server.mux.stats();
    assert_eq!(stats.frames_in, 4);
    assert_eq!(stats.bytes_in, (wire.len() + big.len()) as u64);
    assert_eq!(stats.bad_frames, 0);
}

#[test]
fn frames_sent_reach_the_client_with_their_length() {
    let _serial = serial();
    let mut server = Server::new(TcpLimits::default());
    let mut client = server.accept(Instant::now());
    let me = client.local_addr().unwrap();
    assert_eq!(server.mux.send(me, b"hello"), SendResult::Sent);
    let mut got = [0; 7];
    client.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"\x00\x05hello");

    assert_eq!(
        server.mux.send(me, &vec![1; MAX_FRAME + 1]),
        SendResult::TooLarge
    );
    let stranger: SocketAddr = "127.0.0.1:9".parse().unwrap();
    assert_eq!(server.mux.send(stranger, b"x"), SendResult::NoConnection);
    // the refused frame left the connection as it was
    assert_eq!(server.mux.send(me, b""), SendResult::Sent);
    client.read_exact(&mut got[..2]).unwrap();
    assert_eq!(&got[..2], b"\x00\x00");
    let stats = server.mux.stats();
    assert_eq!((stats.frames_out, stats.bytes_out), (2, 9));
}

#[test]
fn queued_output_is_sent_when_writable_and_then_no_longer_watched() {
    let _serial = serial();
    let limits = TcpLimits {
        max_pending_out: 64 << 20,
        ..TcpLimits::default()
    };
    let mut server = Server::new(limits);
    let client = server.accept(Instant::now());
    let me = client.local_addr().unwrap();
    // more than loopback's socket buffers take while the client waits
    let frames: Vec<Vec<u8>> = (0..270u32).map(|i| vec![i as u8; 60_000]).collect();
    let total: usize = frames.iter().map(|f| f.len() + 2).sum();
    let (go, wait) = mpsc::channel::<()>();
    let reader = std::thread::spawn(move || {
        let mut client = client;
        wait.recv().unwrap();
        let mut wire = vec![0; total];
        client.read_exact(&mut wire).unwrap();
        (client, wire)
    });
    let mut queued = 0;
    for f in &frames {
        match server.mux.send(me, f) {
            SendResult::Sent => {}
            SendResult::Queued => queued += 1,
            other => panic!("send: {other:?}"),
        }
        server.poll(Instant::now(), 0);
    }
    assert!(queued > 0, "the socket took everything: nothing was queued");
    go.send(()).unwrap();
    let give_up = Instant::now() + PATIENCE;
    while !reader.is_finished() {
        assert!(Instant::now() < give_up, "the client never got everything");
        server.poll(Instant::now(), 20);
    }
    let (client, wire) = reader.join().unwrap();
    let mut received = Vec::new();
    Deframer::new(MAX_FRAME).push(&wire, |f| received.push(f.to_vec()));
    assert_eq!(received, frames);
    // all sent: EPOLLOUT is out of the interest set, the loop sleeps
    assert_eq!(server.poll(Instant::now(), 50), 0);
    assert_eq!(server.mux.stats().bytes_out, total as u64);
    drop(client);
}

#[test]
fn a_client_that_never_reads_is_cut_off() {
    let _serial = serial();
    let limits = TcpLimits {
        max_pending_out: 64 * 1024,
        ..TcpLimits::default()
    };
    let mut server = Server::new(limits);
    let mut client = server.accept(Instant::now());
    let me = client.local_addr().unwrap();
    let results = send_until_closed(&mut server, me, &[0x80; 1200]);
    assert_eq!(
        results.last(),
        Some(&SendResult::Closed(CloseReason::CutOff))
    );
    // frames queued between a full socket and the cut-off: about what
    // max_pending_out holds (the first may be partly written, and the
    // kernel may take a little more meanwhile), not megabytes
    let queued = results.iter().filter(|r| **r == SendResult::Queued).count();
    assert!(
        (1..=2 * 64 * 1024 / 1202).contains(&queued),
        "{queued} queued"
    );
    assert_eq!(server.mux.drain_closed(), [(me, CloseReason::CutOff)]);
    assert_eq!(server.mux.stats().cut_off, 1);
    assert_eq!(server.mux.connections(), 0);
    assert_eq!(server.mux.send(me, b"late"), SendResult::NoConnection);
    assert_closed_by_server(&mut client);
}

#[test]
fn connections_over_the_maximum_are_closed_at_once() {
    let _serial = serial();
    let limits = TcpLimits {
        max_connections: 2,
        ..TcpLimits::default()
    };
    let mut server = Server::new(limits);
    let now = Instant::now();
    let first = server.accept(now);
    let mut second = server.accept(now);
    let mut third = server.accept(now);
    assert_eq!(
        (server.mux.stats().accepted, server.mux.stats().refused),
        (2, 1)
    );
    assert_closed_by_server(&mut third);
    // the admitted ones still work
    second.write_all(&framed(b"still here")).unwrap();
    server.poll_until(now, "a frame", |s| s.frames.len() == 1);
    // a closed connection frees its place
    let first_addr = first.local_addr().unwrap();
    drop(first);
    server.poll_until(now, "EOF", |s| s.mux.connections() == 1);
    assert_eq!(server.mux.drain_closed(), [(first_addr, CloseReason::Eof)]);
    let _fourth = server.accept(now);
    assert_eq!(
        (server.mux.stats().accepted, server.mux.stats().refused),
        (3, 1)
    );
}

#[test]
fn a_client_closing_mid_frame_is_reported_and_the_partial_frame_dropped() {
    let _serial = serial();
    let mut server = Server::new(TcpLimits::default());
    let now = Instant::now();
    let mut client = server.accept(now);
    let me = client.local_addr().unwrap();
    client.write_all(&framed(b"whole")).unwrap();
    client.write_all(&framed(b"cut short")[..5]).unwrap();
    drop(client);
    server.poll_until(now, "EOF", |s| s.mux.connections() == 0);
    assert_eq!(server.frames, [(me, b"whole".to_vec())]);
    assert_eq!(server.mux.drain_closed(), [(me, CloseReason::Eof)]);
}

#[test]
fn silent_connections_close_after_the_first_frame_and_idle_limits() {
    let _serial = serial();
    let limits = TcpLimits {
        first_frame: Duration::from_secs(1),
        idle: Duration::from_secs(2),
        ..TcpLimits::default()
    };
    let mut server = Server::new(limits);
    let t0 = Instant::now();
    let mut silent = server.accept(t0);
    let mut empty = server.accept(t0);
    let mut talker = server.accept(t0);
    // an empty frame is no frame
    empty.write_all(&framed(b"")).unwrap();
    talker.write_all(&framed(b"stun")).unwrap();
    server.poll_until(t0, "a frame", |s| s.frames.len() == 1);
    let at = |ms| t0 + Duration::from_millis(ms);

    server.mux.housekeeping(at(900));
    assert_eq!(server.mux.drain_closed(), []);
    server.mux.housekeeping(at(1000));
    let mut closed = server.mux.drain_closed();
    closed.sort_by_key(|(addr, _)| addr.port());
    let mut expected = [
        (silent.local_addr().unwrap(), CloseReason::NoFirstFrame),
        (empty.local_addr().unwrap(), CloseReason::NoFirstFrame),
    ];
    expected.sort_by_key(|(addr, _)| addr.port());
    assert_eq!(closed, expected);

    // a frame at 1.5 s keeps the talker until 3.5 s
    talker.write_all(&framed(b"consent")).unwrap();
    server.poll_until(at(1500), "a frame", |s| s.frames.len() == 2);
    server.mux.housekeeping(at(3000));
    assert_eq!(server.mux.drain_closed(), []);
    server.mux.housekeeping(at(3500));
    let talker_addr = talker.local_addr().unwrap();
    assert_eq!(
        server.mux.drain_closed(),
        [(talker_addr, CloseReason::Idle)]
    );
    assert_eq!(server.mux.stats().closed_idle, 3);
    for client in [&mut silent, &mut empty, &mut talker] {
        assert_closed_by_server(client);
    }
}

#[test]
fn no_fd_outlives_its_connection_or_the_mux() {
    let _serial = serial();
    let before = open_fds();
    let limits = TcpLimits {
        max_connections: 3,
        max_pending_out: 64 * 1024,
        first_frame: Duration::from_secs(1),
        ..TcpLimits::default()
    };
    let mut server = Server::new(limits);
    let now = Instant::now();
    let mut talker = server.accept(now);
    let slow = server.accept(now);
    let silent = server.accept(now);
    let mut refused = server.accept(now);
    assert_closed_by_server(&mut refused);
    talker.write_all(&framed(b"hi")).unwrap();
    server.poll_until(now, "a frame", |s| s.frames.len() == 1);
    assert_eq!(
        server.mux.send(talker.local_addr().unwrap(), b"hello"),
        SendResult::Sent
    );
    send_until_closed(&mut server, slow.local_addr().unwrap(), &[0; 1200]);
    server.mux.housekeeping(now + Duration::from_secs(1));
    assert!(server.mux.close(talker.local_addr().unwrap()));
    assert_eq!(server.mux.connections(), 0);
    drop((talker, slow, silent, refused));
    // the mux keeps its listener and the test its epoll
    assert_eq!(open_fds(), before + 2);
    drop(server);
    assert_eq!(open_fds(), before);
}
