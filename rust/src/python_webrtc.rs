//! PyO3 glue for the WebRTC viewer engine (`sipstream._core.WebrtcEngine`,
//! `StreamFeed`). Thin: answers are built with the GIL released, events and
//! stats come back as plain tuples and dicts.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use pyo3::exceptions::{PyOSError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};

use std::time::Duration;

use crate::webrtc::plain::{PlainTrackConfig, TrackDest};
use crate::webrtc::{Engine, EngineEvent, StreamCodecs, StreamFeed, Timeouts};

/// A plain track from Python: (payload type, clock rate, SSRC, first
/// sequence number, RTP port or channel, RTCP port or channel).
type PyTrack = (u8, u32, u32, u16, u16, u16);

/// One stream's packetized media for its WebRTC viewers. Attach it to the
/// call's receive path with `MediaIo.set_feed(feed)`.
#[pyclass(module = "sipstream._core", name = "StreamFeed", frozen)]
pub(crate) struct PyStreamFeed {
    pub(crate) inner: Arc<StreamFeed>,
}

#[pymethods]
impl PyStreamFeed {
    #[new]
    fn new() -> Self {
        PyStreamFeed {
            inner: StreamFeed::new(),
        }
    }

    #[getter]
    fn id(&self) -> u64 {
        self.inner.id()
    }

    /// Viewers attached by the engine.
    #[getter]
    fn viewers(&self) -> usize {
        self.inner.viewers()
    }

    /// (frames, packets) packetized while viewers were attached.
    fn counters(&self) -> (u64, u64) {
        self.inner.counters()
    }

    /// The hub's view of the stream: {"frames": [audio, video], "generated":
    /// [audio, video], "keyframes", "audio_codec", "video_codec", "width",
    /// "height"}.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.inner.stats();
        let d = PyDict::new(py);
        d.set_item("frames", s.frames)?;
        d.set_item("generated", s.generated)?;
        d.set_item("keyframes", s.keyframes)?;
        d.set_item("audio_codec", s.codecs[0])?;
        d.set_item("video_codec", s.codecs[1])?;
        d.set_item("width", s.width)?;
        d.set_item("height", s.height)?;
        Ok(d)
    }

    /// The access units (Annex-B bytes) from the latest keyframe on.
    fn gop<'py>(&self, py: Python<'py>) -> Vec<Bound<'py, PyBytes>> {
        self.inner
            .gop()
            .iter()
            .map(|au| PyBytes::new(py, au))
            .collect()
    }

    /// The stream ended: the engine closes its viewers.
    fn close(&self) {
        self.inner.close();
    }
}

/// Every WebRTC viewer on one UDP port, served by a Rust thread.
#[pyclass(module = "sipstream._core", name = "WebrtcEngine")]
pub(crate) struct PyWebrtcEngine {
    inner: Option<Engine>,
}

impl PyWebrtcEngine {
    fn engine(&self) -> PyResult<&Engine> {
        self.inner
            .as_ref()
            .ok_or_else(|| PyValueError::new_err("the WebRTC engine is closed"))
    }
}

fn ip(s: &str, what: &str) -> PyResult<IpAddr> {
    s.parse()
        .map_err(|_| PyValueError::new_err(format!("{what}: {s:?} is not an IP address")))
}

#[pymethods]
impl PyWebrtcEngine {
    /// Bind `bind_ip:port` (0: ephemeral); viewers are given
    /// `advertised_ip` and the bound port as our ICE candidate. A viewer
    /// not connected within `connect_timeout_s`, or silent (no ICE consent)
    /// for `consent_timeout_s`, is closed. With `tcp_port` (0: ephemeral),
    /// a passive ICE-TCP candidate on that TCP port is offered too. With
    /// `plain_udp_port`, an RTP/RTCP port pair for plain-RTP (RTSP) viewers
    /// over UDP: that even port and the next (0: any free pair).
    #[new]
    #[pyo3(signature = (bind_ip, port, advertised_ip, connect_timeout_s = 30.0, consent_timeout_s = 20.0, tcp_port = None, plain_udp_port = None))]
    fn new(
        bind_ip: &str,
        port: u16,
        advertised_ip: &str,
        connect_timeout_s: f64,
        consent_timeout_s: f64,
        tcp_port: Option<u16>,
        plain_udp_port: Option<u16>,
    ) -> PyResult<Self> {
        let bind = SocketAddr::new(ip(bind_ip, "bind address")?, port);
        let seconds = |s: f64, what: &str| {
            Duration::try_from_secs_f64(s)
                .map_err(|_| PyValueError::new_err(format!("{what}: {s} is not a duration")))
        };
        let timeouts = Timeouts {
            connect: seconds(connect_timeout_s, "connect_timeout_s")?,
            consent: seconds(consent_timeout_s, "consent_timeout_s")?,
        };
        let engine = Engine::start_with_plain(
            bind,
            ip(advertised_ip, "advertised address")?,
            timeouts,
            tcp_port,
            plain_udp_port,
        )
        .map_err(|e| {
            let ports = match plain_udp_port {
                Some(p) => format!("the WebRTC port {bind} or the RTSP UDP port pair {p}"),
                None => format!("the WebRTC port {bind}"),
            };
            PyOSError::new_err(format!("cannot open {ports}: {e}"))
        })?;
        Ok(PyWebrtcEngine {
            inner: Some(engine),
        })
    }

    #[getter]
    fn port(&self) -> PyResult<u16> {
        Ok(self.engine()?.local_addr().port())
    }

    /// The ICE-TCP port, when offered.
    #[getter]
    fn tcp_port(&self) -> PyResult<Option<u16>> {
        Ok(self.engine()?.tcp_candidate().map(|a| a.port()))
    }

    /// eventfd readable while events wait (`drain_events`).
    fn fileno(&self) -> PyResult<i32> {
        Ok(self.engine()?.notify_fd())
    }

    /// Answer `offer` for `feed`'s stream: (viewer id, answer SDP).
    /// `audio`: the stream's audio codec (PCMU, PCMA, opus) or None;
    /// `video`: it carries H.264 (`video_profile`: its profile-level-id).
    /// ValueError when the offer cannot be answered.
    #[pyo3(signature = (feed, offer, audio = None, video = false, video_profile = None))]
    fn add_viewer(
        &self,
        py: Python<'_>,
        feed: &PyStreamFeed,
        offer: &str,
        audio: Option<String>,
        video: bool,
        video_profile: Option<u32>,
    ) -> PyResult<(u64, String)> {
        let engine = self.engine()?;
        let codecs = StreamCodecs {
            audio,
            video: video.then_some(video_profile),
        };
        let feed = feed.inner.clone();
        py.detach(|| engine.add_viewer(offer, &codecs, feed))
            .map_err(PyValueError::new_err)
    }

    /// The (RTP, RTCP) ports plain viewers over UDP are sent from, or None.
    #[getter]
    fn plain_ports(&self) -> PyResult<Option<(u16, u16)>> {
        Ok(self.engine()?.plain_ports())
    }

    /// Add a plain-RTP (RTSP) viewer of `feed`. Each track is (pt, clock,
    /// ssrc, first seq, rtp, rtcp): over UDP (`client_ip` given) `rtp` and
    /// `rtcp` are the client's ports; interleaved (`tcp_fd` given: a dup of
    /// the RTSP connection, which the engine then owns and writes) they are
    /// channels (at most `max_backlog` bytes unsent, else the client is cut
    /// off; 2 MiB by default, about 8 s of a 2 Mbit/s stream, as
    /// `rtsp_tcp_max_backlog_bytes`). Returns the viewer id. ValueError on a bad set-up. The
    /// engine owns `tcp_fd` from the call on, even when it fails.
    #[pyo3(signature = (feed, audio = None, video = None, client_ip = None, tcp_fd = None, max_backlog = 2_097_152))]
    fn add_plain_viewer(
        &self,
        feed: &PyStreamFeed,
        audio: Option<PyTrack>,
        video: Option<PyTrack>,
        client_ip: Option<&str>,
        tcp_fd: Option<i32>,
        max_backlog: usize,
    ) -> PyResult<u64> {
        // owned from here on, whatever follows (closed on an error)
        let fd = match tcp_fd {
            Some(fd) if fd >= 0 => {
                use std::os::fd::FromRawFd;
                // SAFETY: the caller hands over a dup it no longer uses.
                Some(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
            }
            Some(_) => return Err(PyValueError::new_err("bad file descriptor")),
            None => None,
        };
        let engine = self.engine()?;
        let client = client_ip.map(|s| ip(s, "client address")).transpose()?;
        if client.is_some() == tcp_fd.is_some() {
            return Err(PyValueError::new_err(
                "give client_ip (UDP) or tcp_fd (TCP)",
            ));
        }
        let track = |t: PyTrack| -> PyResult<PlainTrackConfig> {
            let (pt, clock, ssrc, seq, rtp, rtcp) = t;
            let dest = match client {
                Some(ip) => TrackDest::Udp {
                    rtp: SocketAddr::new(ip, rtp),
                    rtcp: SocketAddr::new(ip, rtcp),
                },
                None => TrackDest::Interleaved {
                    rtp: u8::try_from(rtp)
                        .map_err(|_| PyValueError::new_err("channel out of range"))?,
                    rtcp: u8::try_from(rtcp)
                        .map_err(|_| PyValueError::new_err("channel out of range"))?,
                },
            };
            if pt > 127 || clock == 0 {
                return Err(PyValueError::new_err("bad payload type or clock"));
            }
            Ok(PlainTrackConfig {
                pt,
                clock,
                ssrc,
                seq,
                dest,
            })
        };
        let audio = audio.map(track).transpose()?;
        let video = video.map(track).transpose()?;
        engine
            .add_plain_viewer(feed.inner.clone(), audio, video, fd, max_backlog)
            .map_err(PyValueError::new_err)
    }

    /// Write `data` (an RTSP response) on a TCP plain viewer's connection.
    fn send_text(&self, viewer: u64, data: &[u8]) -> PyResult<()> {
        self.engine()?.send_text(viewer, data.to_vec());
        Ok(())
    }

    /// An RTCP packet a TCP plain viewer sent interleaved (its loss and jitter).
    fn plain_rtcp(&self, viewer: u64, data: &[u8]) -> PyResult<()> {
        self.engine()?.plain_rtcp(viewer, data.to_vec());
        Ok(())
    }

    /// End a viewer; a ("closed", id, reason) event follows.
    fn remove_viewer(&self, viewer: u64) -> PyResult<()> {
        self.engine()?.remove_viewer(viewer);
        Ok(())
    }

    /// [(type, id, reason)]: ("connected", viewer, ""), ("closed", viewer,
    /// reason), ("keyframe", feed id, "").
    fn drain_events(&self) -> PyResult<Vec<(&'static str, u64, String)>> {
        Ok(self
            .engine()?
            .drain_events()
            .into_iter()
            .map(|e| match e {
                EngineEvent::Connected { viewer } => ("connected", viewer, String::new()),
                EngineEvent::Closed { viewer, reason } => ("closed", viewer, reason),
                EngineEvent::KeyframeRequest { feed } => ("keyframe", feed, String::new()),
            })
            .collect())
    }

    /// A viewer's state and counters (a snapshot at most a second old), or
    /// None when it is gone.
    fn viewer<'py>(&self, py: Python<'py>, viewer: u64) -> PyResult<Option<Bound<'py, PyDict>>> {
        let Some(info) = self.engine()?.viewer(viewer) else {
            return Ok(None);
        };
        let d = PyDict::new(py);
        d.set_item("connected", info.connected)?;
        d.set_item(
            "remote",
            info.remote.map(|a| (a.ip().to_string(), a.port())),
        )?;
        d.set_item("waiting_keyframe", info.waiting_keyframe)?;
        d.set_item("packets", info.counters.packets)?;
        d.set_item("bytes", info.counters.bytes)?;
        d.set_item("keyframe_requests", info.counters.keyframe_requests)?;
        d.set_item("skipped", info.counters.skipped)?;
        d.set_item("nacks", info.counters.nacks)?;
        d.set_item("lost", info.counters.lost)?;
        d.set_item("loss", info.counters.loss)?;
        d.set_item("jitter_ms", info.counters.jitter_ms)?;
        d.set_item("rtt_ms", info.counters.rtt_ms)?;
        d.set_item("reports", info.counters.reports)?;
        Ok(Some(d))
    }

    /// Engine-wide counters and the latency quantiles (µs) from the call's
    /// RTP socket to the viewer's socket, a snapshot at most a second old.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.engine()?.stats();
        let d = PyDict::new(py);
        d.set_item("viewers", s.viewers)?;
        d.set_item("connected", s.connected)?;
        d.set_item("datagrams_in", s.datagrams_in)?;
        d.set_item("unroutable", s.unroutable)?;
        d.set_item("datagrams_out", s.datagrams_out)?;
        d.set_item("bytes_out", s.bytes_out)?;
        d.set_item("send_errors", s.send_errors)?;
        d.set_item("rtc_errors", s.rtc_errors)?;
        d.set_item("ticks", s.ticks)?;
        d.set_item("rtc_timeouts", s.rtc_timeouts)?;
        d.set_item("latency_samples", s.latency.count())?;
        d.set_item("latency_p50_us", s.latency.quantile_us(0.5))?;
        d.set_item("latency_p99_us", s.latency.quantile_us(0.99))?;
        Ok(d)
    }

    /// Measure the latency afresh from now.
    fn reset_latency(&self) -> PyResult<()> {
        self.engine()?.reset_latency();
        Ok(())
    }

    /// Stop the engine thread (its viewers end) and close the port. Idempotent.
    fn close(&mut self, py: Python<'_>) {
        if let Some(mut engine) = self.inner.take() {
            py.detach(move || engine.close());
        }
    }
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyStreamFeed>()?;
    m.add_class::<PyWebrtcEngine>()?;
    Ok(())
}
