//! PyO3 bindings: `sipstream._core`. Conversion only; all logic lives in the
//! Rust modules.

use crate::auth::{self, Challenge};
use crate::error::{AuthError, RtpError, SdpError, SipError};
use crate::h264;
use crate::media;
use crate::rtp;
use crate::sdp;
use crate::sip::{self, Params};
use crate::{g711, generator, io, jitter, session};
use pyo3::create_exception;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use pyo3::types::PyDict;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

create_exception!(
    sipstream._core,
    SipParseError,
    PyValueError,
    "Malformed SIP message; the message says what and at which byte offset."
);
create_exception!(
    sipstream._core,
    SdpParseError,
    PyValueError,
    "Malformed SDP; the message says which line."
);
create_exception!(
    sipstream._core,
    RtpParseError,
    PyValueError,
    "Malformed RTP/RTCP packet."
);

fn sip_err(e: SipError) -> PyErr {
    SipParseError::new_err(e.to_string())
}

fn sdp_err(e: SdpError) -> PyErr {
    SdpParseError::new_err(e.to_string())
}

fn rtp_err(e: RtpError) -> PyErr {
    RtpParseError::new_err(e.to_string())
}

fn auth_err(e: AuthError) -> PyErr {
    PyValueError::new_err(e.to_string())
}

fn params_to_dict<'py>(py: Python<'py>, params: &Params) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    for (k, v) in params {
        d.set_item(k, v)?;
    }
    Ok(d)
}

fn dict_to_params(d: &Bound<'_, PyDict>) -> PyResult<Params> {
    d.iter()
        .map(|(k, v)| Ok((k.extract::<String>()?, v.extract::<Option<String>>()?)))
        .collect()
}

// ------------------------------------------------------------------- SIP

#[pyclass(module = "sipstream._core", name = "SipMessage")]
#[derive(Clone)]
struct PySipMessage {
    #[pyo3(get, set)]
    is_request: bool,
    #[pyo3(get, set)]
    method: Option<String>,
    #[pyo3(get, set)]
    uri: Option<String>,
    #[pyo3(get, set)]
    status: Option<u16>,
    #[pyo3(get, set)]
    reason: Option<String>,
    /// Exposed as a list of `(name, value)` tuples (built on access).
    headers: sip::Headers,
    #[pyo3(get, set)]
    body: Vec<u8>,
}

impl PySipMessage {
    fn from_rust(m: sip::SipMessage) -> Self {
        let (is_request, method, uri, status, reason) = match m.start {
            sip::StartLine::Request { method, uri } => (true, Some(method), Some(uri), None, None),
            sip::StartLine::Response { status, reason } => {
                (false, None, None, Some(status), Some(reason))
            }
        };
        PySipMessage {
            is_request,
            method,
            uri,
            status,
            reason,
            headers: m.headers,
            body: m.body,
        }
    }

    fn start_line(&self) -> PyResult<sip::StartLine> {
        if self.is_request {
            match (&self.method, &self.uri) {
                (Some(method), Some(uri)) => Ok(sip::StartLine::Request {
                    method: method.clone(),
                    uri: uri.clone(),
                }),
                _ => Err(PyValueError::new_err("a request needs method and uri")),
            }
        } else {
            match self.status {
                Some(status) => Ok(sip::StartLine::Response {
                    status,
                    reason: self.reason.clone().unwrap_or_default(),
                }),
                None => Err(PyValueError::new_err("a response needs a status")),
            }
        }
    }
}

#[pymethods]
impl PySipMessage {
    #[staticmethod]
    fn parse(data: &[u8]) -> PyResult<Self> {
        sip::SipMessage::parse(data)
            .map(Self::from_rust)
            .map_err(sip_err)
    }

    #[staticmethod]
    #[pyo3(signature = (method, uri, headers, body = Vec::new()))]
    fn request(method: String, uri: String, headers: Vec<(String, String)>, body: Vec<u8>) -> Self {
        Self::from_rust(sip::SipMessage::request(method, uri, headers, body))
    }

    #[staticmethod]
    #[pyo3(signature = (status, reason, headers, body = Vec::new()))]
    fn response(
        status: u16,
        reason: String,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    ) -> Self {
        Self::from_rust(sip::SipMessage::response(status, reason, headers, body))
    }

    #[getter]
    fn headers(&self) -> Vec<(&str, &str)> {
        self.headers.iter().collect()
    }

    #[setter]
    fn set_headers(&mut self, headers: Vec<(String, String)>) {
        self.headers = headers.into();
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name)
    }

    fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers.get_all(name)
    }

    #[getter]
    fn call_id(&self) -> Option<&str> {
        self.headers.call_id()
    }

    #[getter]
    fn cseq(&self) -> Option<(u32, &str)> {
        self.headers.cseq()
    }

    /// The From tag, parsed in Rust without building a `NameAddr`.
    #[getter(from_tag)]
    fn get_from_tag(&self) -> PyResult<Option<&str>> {
        self.headers.from_tag().map_err(sip_err)
    }

    /// The To tag, parsed in Rust without building a `NameAddr`.
    #[getter(to_tag)]
    fn get_to_tag(&self) -> PyResult<Option<&str>> {
        self.headers.to_tag().map_err(sip_err)
    }

    fn to_bytes(&self) -> PyResult<Vec<u8>> {
        Ok(sip::serialize(
            &self.start_line()?,
            &self.headers,
            &self.body,
        ))
    }

    fn __repr__(&self) -> String {
        if self.is_request {
            format!(
                "<SipMessage {} {}>",
                self.method.as_deref().unwrap_or("?"),
                self.uri.as_deref().unwrap_or("?")
            )
        } else {
            format!(
                "<SipMessage {} {}>",
                self.status.unwrap_or(0),
                self.reason.as_deref().unwrap_or("")
            )
        }
    }
}

#[pyclass(module = "sipstream._core", name = "NameAddr")]
#[derive(Clone)]
struct PyNameAddr {
    #[pyo3(get, set)]
    display: Option<String>,
    #[pyo3(get, set)]
    uri: String,
    params: Params,
}

impl PyNameAddr {
    fn to_rust(&self) -> sip::NameAddr {
        sip::NameAddr {
            display: self.display.clone(),
            uri: self.uri.clone(),
            params: self.params.clone(),
        }
    }
}

#[pymethods]
impl PyNameAddr {
    #[new]
    #[pyo3(signature = (uri, display = None, params = None))]
    fn new(
        uri: String,
        display: Option<String>,
        params: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Self> {
        Ok(PyNameAddr {
            display,
            uri,
            params: params.map(dict_to_params).transpose()?.unwrap_or_default(),
        })
    }

    #[staticmethod]
    fn parse(value: &str) -> PyResult<Self> {
        let n = sip::NameAddr::parse(value).map_err(sip_err)?;
        Ok(PyNameAddr {
            display: n.display,
            uri: n.uri,
            params: n.params,
        })
    }

    #[getter]
    fn params<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        params_to_dict(py, &self.params)
    }

    #[setter]
    fn set_params(&mut self, params: &Bound<'_, PyDict>) -> PyResult<()> {
        self.params = dict_to_params(params)?;
        Ok(())
    }

    fn tag(&self) -> Option<&str> {
        sip::find_param(&self.params, "tag").flatten()
    }

    #[pyo3(name = "to_string")]
    fn py_to_string(&self) -> String {
        self.to_rust().to_string()
    }

    fn __str__(&self) -> String {
        self.to_rust().to_string()
    }

    fn __repr__(&self) -> String {
        format!("NameAddr({:?})", self.to_rust().to_string())
    }
}

#[pyclass(module = "sipstream._core", name = "SipUri")]
#[derive(Clone)]
struct PySipUri {
    #[pyo3(get, set)]
    scheme: String,
    #[pyo3(get, set)]
    user: Option<String>,
    #[pyo3(get, set)]
    host: String,
    #[pyo3(get, set)]
    port: Option<u16>,
    #[pyo3(get, set)]
    headers: Option<String>,
    params: Params,
}

impl PySipUri {
    fn to_rust(&self) -> sip::SipUri {
        sip::SipUri {
            scheme: self.scheme.clone(),
            user: self.user.clone(),
            host: self.host.clone(),
            port: self.port,
            params: self.params.clone(),
            headers: self.headers.clone(),
        }
    }
}

#[pymethods]
impl PySipUri {
    #[new]
    #[pyo3(signature = (host, user = None, port = None, scheme = "sip".to_string(), params = None, headers = None))]
    fn new(
        host: String,
        user: Option<String>,
        port: Option<u16>,
        scheme: String,
        params: Option<&Bound<'_, PyDict>>,
        headers: Option<String>,
    ) -> PyResult<Self> {
        Ok(PySipUri {
            scheme,
            user,
            host,
            port,
            headers,
            params: params.map(dict_to_params).transpose()?.unwrap_or_default(),
        })
    }

    #[staticmethod]
    fn parse(value: &str) -> PyResult<Self> {
        let u = sip::SipUri::parse(value).map_err(sip_err)?;
        Ok(PySipUri {
            scheme: u.scheme,
            user: u.user,
            host: u.host,
            port: u.port,
            headers: u.headers,
            params: u.params,
        })
    }

    #[getter]
    fn params<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        params_to_dict(py, &self.params)
    }

    #[setter]
    fn set_params(&mut self, params: &Bound<'_, PyDict>) -> PyResult<()> {
        self.params = dict_to_params(params)?;
        Ok(())
    }

    #[pyo3(name = "to_string")]
    fn py_to_string(&self) -> String {
        self.to_rust().to_string()
    }

    fn __str__(&self) -> String {
        self.to_rust().to_string()
    }

    fn __repr__(&self) -> String {
        format!("SipUri({:?})", self.to_rust().to_string())
    }
}

#[pyclass(module = "sipstream._core", name = "Via")]
#[derive(Clone)]
struct PyVia {
    #[pyo3(get, set)]
    transport: String,
    #[pyo3(get, set)]
    host: String,
    #[pyo3(get, set)]
    port: Option<u16>,
    params: Params,
}

impl PyVia {
    fn to_rust(&self) -> sip::Via {
        sip::Via {
            transport: self.transport.clone(),
            host: self.host.clone(),
            port: self.port,
            params: self.params.clone(),
        }
    }
}

#[pymethods]
impl PyVia {
    #[new]
    #[pyo3(signature = (transport, host, port = None, params = None))]
    fn new(
        transport: String,
        host: String,
        port: Option<u16>,
        params: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Self> {
        Ok(PyVia {
            transport,
            host,
            port,
            params: params.map(dict_to_params).transpose()?.unwrap_or_default(),
        })
    }

    #[staticmethod]
    fn parse(value: &str) -> PyResult<Self> {
        let v = sip::Via::parse(value).map_err(sip_err)?;
        Ok(PyVia {
            transport: v.transport,
            host: v.host,
            port: v.port,
            params: v.params,
        })
    }

    #[getter]
    fn params<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        params_to_dict(py, &self.params)
    }

    #[setter]
    fn set_params(&mut self, params: &Bound<'_, PyDict>) -> PyResult<()> {
        self.params = dict_to_params(params)?;
        Ok(())
    }

    fn branch(&self) -> Option<&str> {
        sip::find_param(&self.params, "branch").flatten()
    }

    #[pyo3(name = "to_string")]
    fn py_to_string(&self) -> String {
        self.to_rust().to_string()
    }

    fn __str__(&self) -> String {
        self.to_rust().to_string()
    }

    fn __repr__(&self) -> String {
        format!("Via({:?})", self.to_rust().to_string())
    }
}

// ----------------------------------------------------------------- digest

#[pyfunction]
fn parse_challenge(value: &str) -> PyResult<HashMap<String, String>> {
    Ok(auth::parse_challenge(value)
        .map_err(auth_err)?
        .params
        .into_iter()
        .collect())
}

#[pyfunction]
fn digest_authorization(
    username: &str,
    password: &str,
    method: &str,
    uri: &str,
    challenge: HashMap<String, String>,
    cnonce: &str,
    nc: u32,
) -> PyResult<String> {
    let ch = Challenge::from_pairs(challenge);
    auth::digest_authorization(username, password, method, uri, &ch, cnonce, nc).map_err(auth_err)
}

#[pyfunction]
#[allow(clippy::too_many_arguments)] // the Python signature from the stub
#[pyo3(signature = (algorithm, username, realm, password, method, uri, nonce, qop = None, cnonce = None, nc = None))]
fn digest_response(
    algorithm: &str,
    username: &str,
    realm: &str,
    password: &str,
    method: &str,
    uri: &str,
    nonce: &str,
    qop: Option<&str>,
    cnonce: Option<&str>,
    nc: Option<u32>,
) -> PyResult<String> {
    auth::digest_response(
        algorithm, username, realm, password, method, uri, nonce, qop, cnonce, nc,
    )
    .map_err(auth_err)
}

// -------------------------------------------------------------------- SDP

#[pyclass(module = "sipstream._core", name = "Codec", get_all, set_all)]
#[derive(Clone)]
struct PyCodec {
    payload_type: u8,
    name: String,
    clock_rate: u32,
    channels: Option<u16>,
    fmtp: Option<String>,
    rtcp_fb: Vec<String>,
}

impl PyCodec {
    fn from_rust(c: sdp::Codec) -> Self {
        PyCodec {
            payload_type: c.payload_type,
            name: c.name,
            clock_rate: c.clock_rate,
            channels: c.channels,
            fmtp: c.fmtp,
            rtcp_fb: c.rtcp_fb,
        }
    }

    fn to_rust(&self) -> sdp::Codec {
        sdp::Codec {
            payload_type: self.payload_type,
            name: self.name.clone(),
            clock_rate: self.clock_rate,
            channels: self.channels,
            fmtp: self.fmtp.clone(),
            rtcp_fb: self.rtcp_fb.clone(),
        }
    }
}

#[pymethods]
impl PyCodec {
    #[new]
    #[pyo3(signature = (payload_type, name, clock_rate, channels = None, fmtp = None, rtcp_fb = None))]
    fn new(
        payload_type: u8,
        name: String,
        clock_rate: u32,
        channels: Option<u16>,
        fmtp: Option<String>,
        rtcp_fb: Option<Vec<String>>,
    ) -> Self {
        PyCodec {
            payload_type,
            name,
            clock_rate,
            channels,
            fmtp,
            rtcp_fb: rtcp_fb.unwrap_or_default(),
        }
    }

    fn __repr__(&self) -> String {
        format!(
            "Codec({} {}/{})",
            self.payload_type, self.name, self.clock_rate
        )
    }
}

/// Nested pyclass values are held as `Py<...>` so that
/// `sd.media[0].codecs[0].fmtp = ...` changes the description itself.
#[pyclass(
    module = "sipstream._core",
    name = "MediaDescription",
    get_all,
    set_all
)]
struct PyMediaDescription {
    kind: String,
    port: u16,
    proto: String,
    formats: Vec<u8>,
    extra_formats: Vec<String>,
    connection: Option<String>,
    direction: String,
    rtcp_port: Option<u16>,
    rtcp_mux: bool,
    codecs: Vec<Py<PyCodec>>,
    attributes: Vec<(String, Option<String>)>,
}

impl PyMediaDescription {
    fn from_rust(py: Python<'_>, m: sdp::MediaDescription) -> PyResult<Self> {
        Ok(PyMediaDescription {
            kind: m.kind,
            port: m.port,
            proto: m.proto,
            formats: m.formats,
            extra_formats: m.extra_formats,
            connection: m.connection,
            direction: m.direction,
            rtcp_port: m.rtcp_port,
            rtcp_mux: m.rtcp_mux,
            codecs: m
                .codecs
                .into_iter()
                .map(|c| Py::new(py, PyCodec::from_rust(c)))
                .collect::<PyResult<_>>()?,
            attributes: m.attributes,
        })
    }

    fn to_rust(&self, py: Python<'_>) -> sdp::MediaDescription {
        sdp::MediaDescription {
            kind: self.kind.clone(),
            port: self.port,
            proto: self.proto.clone(),
            formats: self.formats.clone(),
            extra_formats: self.extra_formats.clone(),
            connection: self.connection.clone(),
            direction: self.direction.clone(),
            rtcp_port: self.rtcp_port,
            rtcp_mux: self.rtcp_mux,
            codecs: self.codecs.iter().map(|c| c.borrow(py).to_rust()).collect(),
            attributes: self.attributes.clone(),
        }
    }
}

#[pymethods]
impl PyMediaDescription {
    #[new]
    #[allow(clippy::too_many_arguments)] // the Python signature from the stub
    #[pyo3(signature = (kind, port, proto, codecs, direction = "sendrecv".to_string(), connection = None, rtcp_port = None, rtcp_mux = false, attributes = None))]
    fn new(
        py: Python<'_>,
        kind: String,
        port: u16,
        proto: String,
        codecs: Vec<Py<PyCodec>>,
        direction: String,
        connection: Option<String>,
        rtcp_port: Option<u16>,
        rtcp_mux: bool,
        attributes: Option<Vec<(String, Option<String>)>>,
    ) -> Self {
        PyMediaDescription {
            kind,
            port,
            proto,
            formats: codecs.iter().map(|c| c.borrow(py).payload_type).collect(),
            extra_formats: Vec::new(),
            connection,
            direction,
            rtcp_port,
            rtcp_mux,
            codecs,
            attributes: attributes.unwrap_or_default(),
        }
    }

    fn __repr__(&self) -> String {
        format!(
            "<MediaDescription {} {} {} {:?}>",
            self.kind, self.port, self.proto, self.formats
        )
    }
}

#[pyclass(
    module = "sipstream._core",
    name = "SessionDescription",
    get_all,
    set_all
)]
struct PySessionDescription {
    origin_username: String,
    session_id: u64,
    session_version: u64,
    origin_address: String,
    session_name: String,
    connection: Option<String>,
    attributes: Vec<(String, Option<String>)>,
    media: Vec<Py<PyMediaDescription>>,
}

#[pymethods]
impl PySessionDescription {
    #[new]
    #[allow(clippy::too_many_arguments)] // the Python signature from the stub
    #[pyo3(signature = (origin_address, media, session_id = 0, session_version = 0, origin_username = "-".to_string(), session_name = "-".to_string(), connection = None, attributes = None))]
    fn new(
        origin_address: String,
        media: Vec<Py<PyMediaDescription>>,
        session_id: u64,
        session_version: u64,
        origin_username: String,
        session_name: String,
        connection: Option<String>,
        attributes: Option<Vec<(String, Option<String>)>>,
    ) -> Self {
        PySessionDescription {
            origin_username,
            session_id,
            session_version,
            origin_address,
            session_name,
            connection,
            attributes: attributes.unwrap_or_default(),
            media,
        }
    }

    #[staticmethod]
    fn parse(py: Python<'_>, text: &str) -> PyResult<Self> {
        let sd = sdp::SessionDescription::parse(text).map_err(sdp_err)?;
        Ok(PySessionDescription {
            origin_username: sd.origin_username,
            session_id: sd.session_id,
            session_version: sd.session_version,
            origin_address: sd.origin_address,
            session_name: sd.session_name,
            connection: sd.connection,
            attributes: sd.attributes,
            media: sd
                .media
                .into_iter()
                .map(|m| Py::new(py, PyMediaDescription::from_rust(py, m)?))
                .collect::<PyResult<_>>()?,
        })
    }

    #[pyo3(name = "to_string")]
    fn py_to_string(&self, py: Python<'_>) -> String {
        sdp::SessionDescription {
            origin_username: self.origin_username.clone(),
            session_id: self.session_id,
            session_version: self.session_version,
            origin_address: self.origin_address.clone(),
            session_name: self.session_name.clone(),
            connection: self.connection.clone(),
            attributes: self.attributes.clone(),
            media: self
                .media
                .iter()
                .map(|m| m.borrow(py).to_rust(py))
                .collect(),
        }
        .to_sdp_string()
    }

    fn __str__(&self, py: Python<'_>) -> String {
        self.py_to_string(py)
    }
}

// --------------------------------------------------------------- RTP/RTCP

#[pyclass(module = "sipstream._core", name = "RtpPacket", get_all, set_all)]
struct PyRtpPacket {
    marker: bool,
    payload_type: u8,
    sequence: u16,
    timestamp: u32,
    ssrc: u32,
    csrcs: Vec<u32>,
    payload: Vec<u8>,
}

#[pymethods]
impl PyRtpPacket {
    #[staticmethod]
    fn parse(data: &[u8]) -> PyResult<Self> {
        let p = rtp::RtpPacket::parse(data).map_err(rtp_err)?;
        Ok(PyRtpPacket {
            marker: p.marker,
            payload_type: p.payload_type,
            sequence: p.sequence,
            timestamp: p.timestamp,
            ssrc: p.ssrc,
            csrcs: p.csrcs,
            payload: p.payload,
        })
    }

    fn to_bytes(&self) -> Vec<u8> {
        rtp::RtpPacket {
            marker: self.marker,
            payload_type: self.payload_type,
            sequence: self.sequence,
            timestamp: self.timestamp,
            ssrc: self.ssrc,
            csrcs: self.csrcs.clone(),
            payload: self.payload.clone(),
        }
        .to_bytes()
    }

    fn __repr__(&self) -> String {
        format!(
            "<RtpPacket pt={} seq={} ts={} ssrc={:#x} marker={} len={}>",
            self.payload_type,
            self.sequence,
            self.timestamp,
            self.ssrc,
            self.marker,
            self.payload.len()
        )
    }
}

#[pyfunction]
fn build_rtp(
    payload_type: u8,
    sequence: u16,
    timestamp: u32,
    ssrc: u32,
    marker: bool,
    payload: &[u8],
) -> Vec<u8> {
    rtp::build_rtp(payload_type, sequence, timestamp, ssrc, marker, payload)
}

#[pyfunction]
fn is_rtcp(data: &[u8]) -> bool {
    rtp::is_rtcp(data)
}

#[pyfunction]
fn build_pli(sender_ssrc: u32, media_ssrc: u32) -> Vec<u8> {
    rtp::build_pli(sender_ssrc, media_ssrc)
}

/// `seq_nr` is taken modulo 256 (it is an 8-bit field).
#[pyfunction]
fn build_fir(sender_ssrc: u32, media_ssrc: u32, seq_nr: u64) -> Vec<u8> {
    rtp::build_fir(sender_ssrc, media_ssrc, (seq_nr % 256) as u8)
}

#[pyfunction]
fn build_receiver_report(sender_ssrc: u32) -> Vec<u8> {
    rtp::build_receiver_report(sender_ssrc)
}

#[pyfunction]
fn parse_rtcp(data: &[u8]) -> PyResult<Vec<(u8, u8, u32)>> {
    Ok(rtp::parse_rtcp(data)
        .map_err(rtp_err)?
        .into_iter()
        .map(|i| (i.packet_type, i.fmt, i.media_ssrc))
        .collect())
}

// ------------------------------------------------------------------ H.264

#[pyclass(module = "sipstream._core", name = "AccessUnit", get_all)]
struct PyAccessUnit {
    data: Vec<u8>,
    timestamp: u32,
    keyframe: bool,
}

#[pymethods]
impl PyAccessUnit {
    fn __repr__(&self) -> String {
        format!(
            "<AccessUnit ts={} keyframe={} len={}>",
            self.timestamp,
            self.keyframe,
            self.data.len()
        )
    }
}

#[pyclass(module = "sipstream._core", name = "H264Depacketizer")]
struct PyH264Depacketizer {
    inner: h264::H264Depacketizer,
}

#[pymethods]
impl PyH264Depacketizer {
    #[new]
    fn new() -> Self {
        PyH264Depacketizer {
            inner: h264::H264Depacketizer::new(),
        }
    }

    #[getter]
    fn needs_keyframe(&self) -> bool {
        self.inner.needs_keyframe
    }

    #[setter]
    fn set_needs_keyframe(&mut self, value: bool) {
        self.inner.needs_keyframe = value;
    }

    #[getter]
    fn dropped(&self) -> u64 {
        self.inner.dropped
    }

    #[getter]
    fn ignored(&self) -> u64 {
        self.inner.ignored
    }

    #[getter]
    fn malformed(&self) -> u64 {
        self.inner.malformed
    }

    fn push(
        &mut self,
        payload: &[u8],
        sequence: u16,
        timestamp: u32,
        marker: bool,
    ) -> Vec<PyAccessUnit> {
        self.inner
            .push(payload, sequence, timestamp, marker)
            .into_iter()
            .map(|au| PyAccessUnit {
                data: au.data,
                timestamp: au.timestamp,
                keyframe: au.keyframe,
            })
            .collect()
    }
}

#[pyfunction]
#[pyo3(signature = (access_unit, mtu = 1200))]
fn h264_packetize(access_unit: &[u8], mtu: usize) -> Vec<Vec<u8>> {
    h264::h264_packetize(access_unit, mtu)
}

#[pyfunction]
fn h264_sps_resolution(sps: &[u8]) -> Option<(u32, u32)> {
    h264::h264_sps_resolution(sps)
}

// ------------------------------------------------------------------ media

#[pyclass(module = "sipstream._core", name = "Frame", get_all)]
struct PyFrame {
    kind: String,
    codec: String,
    payload_type: u8,
    clock_rate: u32,
    data: Vec<u8>,
    timestamp: u32,
    keyframe: bool,
    ssrc: u32,
    pts_us: i64,
    generated: bool,
}

impl PyFrame {
    fn from_rust(f: media::Frame) -> Self {
        PyFrame {
            kind: f.kind.to_string(),
            codec: f.codec.to_string(),
            payload_type: f.payload_type,
            clock_rate: f.clock_rate,
            data: f.data,
            timestamp: f.timestamp,
            keyframe: f.keyframe,
            ssrc: f.ssrc,
            pts_us: f.pts_us,
            generated: f.generated,
        }
    }
}

#[pymethods]
impl PyFrame {
    fn __repr__(&self) -> String {
        format!(
            "<Frame {} {} pt={} ts={} pts_us={} keyframe={} generated={} len={}>",
            self.kind,
            self.codec,
            self.payload_type,
            self.timestamp,
            self.pts_us,
            self.keyframe,
            self.generated,
            self.data.len()
        )
    }
}

#[pyclass(module = "sipstream._core", name = "MediaReceiver")]
struct PyMediaReceiver {
    inner: media::MediaReceiver,
}

#[pymethods]
impl PyMediaReceiver {
    #[new]
    fn new(payload_types: HashMap<u8, (String, u32)>) -> Self {
        PyMediaReceiver {
            inner: media::MediaReceiver::new(payload_types),
        }
    }

    fn push(&mut self, packet: &[u8]) -> Vec<PyFrame> {
        self.inner
            .push(packet)
            .into_iter()
            .map(PyFrame::from_rust)
            .collect()
    }

    fn needs_keyframe(&self) -> bool {
        self.inner.needs_keyframe()
    }

    #[getter]
    fn packets(&self) -> u64 {
        self.inner.packets
    }

    #[getter]
    fn bytes(&self) -> u64 {
        self.inner.bytes
    }

    #[getter]
    fn malformed(&self) -> u64 {
        self.inner.malformed
    }

    #[getter]
    fn unknown_payload_type(&self) -> u64 {
        self.inner.unknown_payload_type
    }

    #[getter]
    fn lost(&self) -> u64 {
        self.inner.lost
    }

    #[getter]
    fn rtcp(&self) -> u64 {
        self.inner.rtcp
    }

    #[getter]
    fn video_ssrc(&self) -> Option<u32> {
        self.inner.video_ssrc
    }

    #[getter]
    fn audio_ssrc(&self) -> Option<u32> {
        self.inner.audio_ssrc
    }

    #[getter]
    fn dropped_frames(&self) -> u64 {
        self.inner.depacketizer().dropped
    }
}

// --------------------------------------------------------- media session

fn socket_addr(addr: Option<(String, u16)>) -> PyResult<Option<SocketAddr>> {
    addr.map(|(host, port)| {
        host.trim_matches(|c| c == '[' || c == ']')
            .parse::<IpAddr>()
            .map(|ip| SocketAddr::new(ip, port))
            .map_err(|_| PyValueError::new_err(format!("not an IP address: {host:?}")))
    })
    .transpose()
}

fn addr_tuple(a: SocketAddr) -> (String, u16) {
    (a.ip().to_string(), a.port())
}

/// Negotiated media of one call (built from the SDP answer and settings).
#[pyclass(module = "sipstream._core", name = "MediaConfig")]
#[derive(Clone)]
struct PyMediaConfig {
    inner: session::SessionConfig,
}

#[pymethods]
impl PyMediaConfig {
    #[new]
    #[pyo3(signature = (
        payload_types,
        *,
        audio_rtp = None,
        audio_rtcp = None,
        audio_rtcp_mux = false,
        audio_rtcp_fb = Vec::new(),
        video_rtp = None,
        video_rtcp = None,
        video_rtcp_mux = false,
        video_rtcp_fb = Vec::new(),
        jitter_buffer = true,
        jitter_target_ms = 80,
        jitter_max_ms = 500,
        generate_av_start_delay_ms = None,
        generate_video_interval_ms = 1000,
        ssrc = 0x5195_7ea3,
        cname = "sipstream".to_string(),
        rtcp_interval_ms = 5000,
        keyframe_interval_ms = 1000,
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        payload_types: HashMap<u8, (String, u32)>,
        audio_rtp: Option<(String, u16)>,
        audio_rtcp: Option<(String, u16)>,
        audio_rtcp_mux: bool,
        audio_rtcp_fb: Vec<String>,
        video_rtp: Option<(String, u16)>,
        video_rtcp: Option<(String, u16)>,
        video_rtcp_mux: bool,
        video_rtcp_fb: Vec<String>,
        jitter_buffer: bool,
        jitter_target_ms: u64,
        jitter_max_ms: u64,
        generate_av_start_delay_ms: Option<u64>,
        generate_video_interval_ms: u64,
        ssrc: u32,
        cname: String,
        rtcp_interval_ms: u64,
        keyframe_interval_ms: u64,
    ) -> PyResult<Self> {
        let mut pts: Vec<session::PayloadType> = payload_types
            .iter()
            .filter_map(|(pt, (name, rate))| session::PayloadType::new(*pt, name, *rate))
            .collect();
        pts.sort_by_key(|p| p.pt);
        let ms = std::time::Duration::from_millis;
        Ok(PyMediaConfig {
            inner: session::SessionConfig {
                payload_types: pts,
                audio: session::TrackConfig {
                    remote_rtp: socket_addr(audio_rtp)?,
                    remote_rtcp: socket_addr(audio_rtcp)?,
                    rtcp_mux: audio_rtcp_mux,
                    feedback: session::Feedback::from_rtcp_fb(&audio_rtcp_fb),
                },
                video: session::TrackConfig {
                    remote_rtp: socket_addr(video_rtp)?,
                    remote_rtcp: socket_addr(video_rtcp)?,
                    rtcp_mux: video_rtcp_mux,
                    feedback: session::Feedback::from_rtcp_fb(&video_rtcp_fb),
                },
                jitter: jitter::JitterConfig {
                    enabled: jitter_buffer,
                    target_delay: ms(jitter_target_ms),
                    max_delay: ms(jitter_max_ms.max(jitter_target_ms)),
                },
                generator: generate_av_start_delay_ms.map(|d| generator::GeneratorConfig {
                    start_delay: ms(d),
                    video_interval: ms(generate_video_interval_ms.max(10)),
                }),
                local_ssrc: ssrc,
                cname,
                rtcp_interval: ms(rtcp_interval_ms.max(100)),
                keyframe_interval: ms(keyframe_interval_ms),
            },
        })
    }

    fn __repr__(&self) -> String {
        format!("<MediaConfig {:?}>", self.inner.payload_types)
    }
}

/// Something to send: RTCP from local socket index `socket` to `to`.
#[pyclass(module = "sipstream._core", name = "Transmit", get_all)]
struct PyTransmit {
    socket: usize,
    to: (String, u16),
    data: Vec<u8>,
}

/// `type` is "keyframe_needed", "ssrc_changed", "bye" or "stream_changed".
#[pyclass(module = "sipstream._core", name = "MediaEvent", get_all)]
struct PyMediaEvent {
    #[pyo3(name = "type")]
    kind_of: String,
    kind: Option<String>,
    ssrc: u32,
    old_ssrc: Option<u32>,
    reason: Option<String>,
}

#[pymethods]
impl PyMediaEvent {
    fn __repr__(&self) -> String {
        format!(
            "<MediaEvent {} kind={:?} ssrc={:#x}>",
            self.kind_of, self.kind, self.ssrc
        )
    }
}

impl PyMediaEvent {
    fn from_rust(e: session::Event) -> Self {
        match e {
            session::Event::KeyframeNeeded { ssrc } => PyMediaEvent {
                kind_of: "keyframe_needed".into(),
                kind: Some("video".into()),
                ssrc,
                old_ssrc: None,
                reason: None,
            },
            session::Event::SsrcChanged { kind, old, new } => PyMediaEvent {
                kind_of: "ssrc_changed".into(),
                kind: Some(kind.as_str().into()),
                ssrc: new,
                old_ssrc: Some(old),
                reason: None,
            },
            session::Event::Bye { kind, ssrc, reason } => PyMediaEvent {
                kind_of: "bye".into(),
                kind: kind.map(|k| k.as_str().to_string()),
                ssrc,
                old_ssrc: None,
                reason,
            },
            session::Event::StreamChanged => PyMediaEvent {
                kind_of: "stream_changed".into(),
                kind: None,
                ssrc: 0,
                old_ssrc: None,
                reason: None,
            },
        }
    }
}

fn track_stats_dict<'py>(py: Python<'py>, t: &session::TrackStats) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("ssrc", t.ssrc)?;
    d.set_item("codec", t.codec)?;
    d.set_item("packets", t.packets)?;
    d.set_item("bytes", t.bytes)?;
    d.set_item("frames", t.frames)?;
    d.set_item("keyframes", t.keyframes)?;
    d.set_item("lost", t.lost)?;
    d.set_item("late", t.late)?;
    d.set_item("duplicates", t.duplicates)?;
    d.set_item("dropped_frames", t.dropped_frames)?;
    d.set_item("jitter_ms", t.jitter_ms)?;
    d.set_item("rtt_ms", t.rtt_ms)?;
    d.set_item("bitrate_bps", t.bitrate_bps)?;
    d.set_item("fps", t.fps)?;
    d.set_item("width", t.width)?;
    d.set_item("height", t.height)?;
    d.set_item("keyframe_requests", t.keyframe_requests)?;
    d.set_item("nacks_sent", t.nacks_sent)?;
    d.set_item("generated_frames", t.generated_frames)?;
    d.set_item("ssrc_changes", t.ssrc_changes)?;
    d.set_item("sender_reports", t.sender_reports)?;
    Ok(d)
}

fn stats_dict<'py>(py: Python<'py>, s: &session::SessionStats) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("packets", s.packets)?;
    d.set_item("bytes", s.bytes)?;
    d.set_item("rtcp_packets", s.rtcp_packets)?;
    d.set_item("malformed", s.malformed)?;
    d.set_item("unknown_payload_type", s.unknown_payload_type)?;
    d.set_item("stale_ssrc", s.stale_ssrc)?;
    d.set_item("probation", s.probation)?;
    d.set_item("foreign_source", s.foreign_source)?;
    for (name, t) in [("audio", &s.audio), ("video", &s.video)] {
        match t {
            Some(t) => d.set_item(name, track_stats_dict(py, t)?)?,
            None => d.set_item(name, py.None())?,
        }
    }
    Ok(d)
}

/// Sans-IO media session (tests, embedding, batch feeding). Times are
/// float seconds on any monotonic clock (e.g. `loop.time()`); `pts_us`
/// counts from the `now` given to the constructor.
#[pyclass(module = "sipstream._core", name = "MediaSession")]
struct PyMediaSession {
    inner: session::MediaSession,
    epoch: Instant,
    epoch_s: f64,
    pending: std::collections::VecDeque<session::Output>,
}

impl PyMediaSession {
    fn instant(&self, now: f64) -> Instant {
        let d = (now - self.epoch_s).max(0.0);
        self.epoch + std::time::Duration::from_secs_f64(if d.is_finite() { d } else { 0.0 })
    }

    fn seconds(&self, t: Instant) -> f64 {
        self.epoch_s + t.saturating_duration_since(self.epoch).as_secs_f64()
    }

    fn output_to_py(&self, py: Python<'_>, o: session::Output) -> PyResult<Py<PyAny>> {
        Ok(match o {
            session::Output::Frame(f) => Py::new(py, PyFrame::from_rust(f))?.into_any(),
            session::Output::Transmit(t) => Py::new(
                py,
                PyTransmit {
                    socket: t.from.index(),
                    to: addr_tuple(t.to),
                    data: t.data,
                },
            )?
            .into_any(),
            session::Output::Event(e) => Py::new(py, PyMediaEvent::from_rust(e))?.into_any(),
            session::Output::Timeout(t) => self.seconds(t).into_pyobject(py)?.into_any().unbind(),
        })
    }
}

fn media_kind(kind: &str) -> PyResult<session::MediaKind> {
    match kind {
        "audio" => Ok(session::MediaKind::Audio),
        "video" => Ok(session::MediaKind::Video),
        _ => Err(PyValueError::new_err(format!(
            "kind must be audio or video, got {kind:?}"
        ))),
    }
}

fn local_socket(index: usize) -> PyResult<session::LocalSocket> {
    session::LocalSocket::from_index(index)
        .ok_or_else(|| PyValueError::new_err(format!("socket index {index} is not 0..=3")))
}

#[pymethods]
impl PyMediaSession {
    #[new]
    fn new(config: &PyMediaConfig, now: f64) -> Self {
        let epoch = Instant::now();
        PyMediaSession {
            inner: session::MediaSession::new(epoch, config.inner.clone()),
            epoch,
            epoch_s: now,
            pending: std::collections::VecDeque::new(),
        }
    }

    /// One datagram from `source` on local socket `socket` (0 audio RTP,
    /// 1 audio RTCP, 2 video RTP, 3 video RTCP).
    #[pyo3(signature = (now, data, source, socket = 0))]
    fn handle_receive(
        &mut self,
        now: f64,
        data: &[u8],
        source: (String, u16),
        socket: usize,
    ) -> PyResult<()> {
        let from =
            socket_addr(Some(source))?.unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
        let t = self.instant(now);
        self.inner
            .handle_receive(t, local_socket(socket)?, from, data);
        Ok(())
    }

    /// Feed many datagrams at once and return the frames they completed;
    /// other outputs stay queued for `poll_output`.
    #[pyo3(signature = (now, datagrams, source, socket = 0))]
    fn receive_batch(
        &mut self,
        now: f64,
        datagrams: Vec<PyBackedBytes>,
        source: (String, u16),
        socket: usize,
    ) -> PyResult<Vec<PyFrame>> {
        let from =
            socket_addr(Some(source))?.unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
        let local = local_socket(socket)?;
        let t = self.instant(now);
        let mut frames = Vec::new();
        for d in &datagrams {
            self.inner.handle_receive(t, local, from, d);
            while let Some(o) = self.inner.poll_event() {
                match o {
                    session::Output::Frame(f) => frames.push(PyFrame::from_rust(f)),
                    other => self.pending.push_back(other),
                }
            }
        }
        Ok(frames)
    }

    fn handle_timeout(&mut self, now: f64) {
        let t = self.instant(now);
        self.inner.handle_timeout(t);
    }

    /// Frame | Transmit | MediaEvent, or a float: call `handle_timeout` then.
    fn poll_output(&mut self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let o = match self.pending.pop_front() {
            Some(o) => o,
            None => self.inner.poll_output(),
        };
        self.output_to_py(py, o)
    }

    fn request_keyframe(&mut self, now: f64) {
        let t = self.instant(now);
        self.inner.request_keyframe(t);
    }

    fn reconfigure(&mut self, now: f64, config: &PyMediaConfig) {
        let t = self.instant(now);
        self.inner.reconfigure(t, config.inner.clone());
    }

    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        stats_dict(py, &self.inner.stats())
    }

    /// (host, port) the session currently sends RTP / RTCP to for a kind.
    fn remote_rtp(&self, kind: &str) -> Option<(String, u16)> {
        session::MediaKind::parse(kind)
            .and_then(|k| self.inner.remote_rtp(k))
            .map(addr_tuple)
    }

    fn remote_rtcp(&self, kind: &str) -> Option<(String, u16)> {
        session::MediaKind::parse(kind)
            .and_then(|k| self.inner.remote_rtcp(k))
            .map(addr_tuple)
    }
}

/// The call's RTP receive path on a Rust thread: owns dups of the sockets.
#[pyclass(module = "sipstream._core", name = "MediaIo")]
struct PyMediaIo {
    inner: Option<io::MediaIo>,
}

impl PyMediaIo {
    fn io(&self) -> PyResult<&io::MediaIo> {
        self.inner
            .as_ref()
            .ok_or_else(|| PyValueError::new_err("MediaIo is closed"))
    }
}

#[pymethods]
impl PyMediaIo {
    /// `sockets`: fds for [audio RTP, audio RTCP, video RTP, video RTCP]
    /// (None where absent); they are duplicated, the caller keeps its own.
    /// `ready`: notify through this shared queue instead of `fileno()`.
    #[new]
    #[pyo3(signature = (sockets, config, rtp_receive_buffer_size = None, rtp_send_buffer_size = None, ready = None))]
    fn new(
        sockets: Vec<Option<i32>>,
        config: &PyMediaConfig,
        rtp_receive_buffer_size: Option<usize>,
        rtp_send_buffer_size: Option<usize>,
        ready: Option<PyRef<'_, PyMediaReadyQueue>>,
    ) -> PyResult<Self> {
        let io = io::MediaIo::start_with(
            &sockets,
            config.inner.clone(),
            io::IoOptions {
                receive_buffer: rtp_receive_buffer_size,
                send_buffer: rtp_send_buffer_size,
            },
            ready.as_ref().map(|r| &r.inner),
        )
        .map_err(|e| pyo3::exceptions::PyOSError::new_err(format!("cannot start RTP I/O: {e}")))?;
        Ok(PyMediaIo { inner: Some(io) })
    }

    /// eventfd that becomes readable when frames or events are waiting.
    fn fileno(&self) -> PyResult<i32> {
        Ok(self.io()?.notify_fd())
    }

    /// This call's token in `MediaReadyQueue.drain()`.
    #[getter]
    fn token(&self) -> PyResult<u64> {
        Ok(self.io()?.token())
    }

    /// Frames completed since the last call, oldest first.
    fn drain(&self) -> PyResult<Vec<PyFrame>> {
        Ok(self
            .io()?
            .drain()
            .into_iter()
            .map(PyFrame::from_rust)
            .collect())
    }

    fn drain_events(&self) -> PyResult<Vec<PyMediaEvent>> {
        Ok(self
            .io()?
            .drain_events()
            .into_iter()
            .map(PyMediaEvent::from_rust)
            .collect())
    }

    fn request_keyframe(&self) -> PyResult<()> {
        self.io()?.request_keyframe();
        Ok(())
    }

    /// Packetize this call's frames into `feed` (a `StreamFeed`) for its
    /// WebRTC viewers; None stops.
    fn set_feed(
        &self,
        feed: Option<PyRef<'_, crate::python_webrtc::PyStreamFeed>>,
    ) -> PyResult<()> {
        self.io()?.set_feed(feed.map(|f| f.inner.clone()));
        Ok(())
    }

    /// Whether `drain` gets the frames (default True). Off, frames only go
    /// to the feed: Python sees none while nothing of it subscribed.
    fn set_python_frames(&self, on: bool) -> PyResult<()> {
        self.io()?.set_python_frames(on);
        Ok(())
    }

    fn reconfigure(&self, config: &PyMediaConfig) -> PyResult<()> {
        self.io()?.reconfigure(config.inner.clone());
        Ok(())
    }

    /// RTP sent from Python with the session's SSRC (priming, DTMF) on
    /// `kind` ("audio" / "video"): counted in the session's sender reports,
    /// whose echo gives the RTT in the stats.
    fn note_rtp_sent(&self, kind: &str, rtp_timestamp: u32, payload_len: usize) -> PyResult<()> {
        self.io()?
            .note_rtp_sent(media_kind(kind)?, rtp_timestamp, payload_len);
        Ok(())
    }

    /// Stats dict (snapshot at most 200 ms old) plus io_errors and rtcp_sent.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let (s, errors, sent) = self.io()?.stats();
        let d = stats_dict(py, &s)?;
        d.set_item("io_errors", errors)?;
        d.set_item("rtcp_sent", sent)?;
        Ok(d)
    }

    /// Stop the thread (joined with the GIL released) and close its sockets.
    /// Idempotent.
    fn close(&mut self, py: Python<'_>) {
        if let Some(mut io) = self.inner.take() {
            py.detach(move || io.close());
        }
    }

    #[getter]
    fn closed(&self) -> bool {
        self.inner.is_none()
    }
}

/// One wake-up for many calls' frames (`MediaIo(..., ready=queue)`).
#[pyclass(module = "sipstream._core", name = "MediaReadyQueue")]
struct PyMediaReadyQueue {
    inner: io::ReadyQueue,
}

#[pymethods]
impl PyMediaReadyQueue {
    #[new]
    fn new() -> PyResult<Self> {
        let inner = io::ReadyQueue::new().map_err(|e| {
            pyo3::exceptions::PyOSError::new_err(format!("cannot create the RTP ready queue: {e}"))
        })?;
        Ok(PyMediaReadyQueue { inner })
    }

    /// eventfd that becomes readable when any of its calls has frames or events.
    fn fileno(&self) -> i32 {
        self.inner.notify_fd()
    }

    /// `(token, frames, has_events)` for every call with something waiting.
    fn drain(&self) -> Vec<(u64, Vec<PyFrame>, bool)> {
        self.inner
            .drain()
            .into_iter()
            .map(|r| {
                let frames = r.frames.into_iter().map(PyFrame::from_rust).collect();
                (r.token, frames, r.has_events)
            })
            .collect()
    }
}

/// G.711 → little-endian 16-bit PCM bytes (`numpy.frombuffer(b, "<i2")`).
/// `codec` is "PCMU" (µ-law) or "PCMA" (A-law).
#[pyfunction]
fn g711_decode(data: &[u8], codec: &str) -> PyResult<Vec<u8>> {
    let alaw = if codec.eq_ignore_ascii_case("PCMA") {
        true
    } else if codec.eq_ignore_ascii_case("PCMU") {
        false
    } else {
        return Err(PyValueError::new_err(format!(
            "not a G.711 codec: {codec:?}"
        )));
    };
    Ok(g711::decode_to_le_bytes(data, alaw))
}

/// The generator's black 320x240 H.264 IDR access unit (Annex-B).
#[pyfunction]
fn black_keyframe() -> &'static [u8] {
    generator::BLACK_IDR_320X240
}

// ----------------------------------------------------------------- module

#[pymodule]
#[pyo3(name = "_core")]
fn core_module(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("__version__", crate::VERSION)?;
    m.add("SipParseError", py.get_type::<SipParseError>())?;
    m.add("SdpParseError", py.get_type::<SdpParseError>())?;
    m.add("RtpParseError", py.get_type::<RtpParseError>())?;

    m.add_class::<PySipMessage>()?;
    m.add_class::<PyNameAddr>()?;
    m.add_class::<PySipUri>()?;
    m.add_class::<PyVia>()?;

    m.add_function(wrap_pyfunction!(parse_challenge, m)?)?;
    m.add_function(wrap_pyfunction!(digest_authorization, m)?)?;
    m.add_function(wrap_pyfunction!(digest_response, m)?)?;

    m.add_class::<PyCodec>()?;
    m.add_class::<PyMediaDescription>()?;
    m.add_class::<PySessionDescription>()?;

    m.add_class::<PyRtpPacket>()?;
    m.add_function(wrap_pyfunction!(build_rtp, m)?)?;
    m.add_function(wrap_pyfunction!(is_rtcp, m)?)?;
    m.add_function(wrap_pyfunction!(build_pli, m)?)?;
    m.add_function(wrap_pyfunction!(build_fir, m)?)?;
    m.add_function(wrap_pyfunction!(build_receiver_report, m)?)?;
    m.add_function(wrap_pyfunction!(parse_rtcp, m)?)?;

    m.add_class::<PyAccessUnit>()?;
    m.add_class::<PyH264Depacketizer>()?;
    m.add_function(wrap_pyfunction!(h264_packetize, m)?)?;
    m.add_function(wrap_pyfunction!(h264_sps_resolution, m)?)?;

    m.add_class::<PyFrame>()?;
    m.add_class::<PyMediaReceiver>()?;
    m.add_class::<PyMediaConfig>()?;
    m.add_class::<PyMediaSession>()?;
    m.add_class::<PyTransmit>()?;
    m.add_class::<PyMediaEvent>()?;
    m.add_class::<PyMediaIo>()?;
    m.add_class::<PyMediaReadyQueue>()?;
    m.add_function(wrap_pyfunction!(g711_decode, m)?)?;
    m.add_function(wrap_pyfunction!(black_keyframe, m)?)?;
    crate::python_webrtc::register(m)?;
    Ok(())
}
