"""Headless Chromium (Debian's /usr/bin/chromium) driven by Playwright.

    async with launch_chromium() as ctx:              # BrowserContext (persistent, fresh profile)
        stats = await whep_play("http://127.0.0.1:8080/health",
                                "http://127.0.0.1:8080/whep/cam1", seconds=10, context=ctx)
        s = await page_stats("http://127.0.0.1:8080/player/cam1", "window.sipstreamStats",
                             timeout=15, context=ctx, until="s => s && s.framesDecoded > 0")

Never run ``playwright install``: the Debian Chromium is used through
``executable_path``.

WebRTC on loopback: Chromium gathers no 127.0.0.1 candidate; the server's
answer carries its 127.0.0.1 host candidate and Chromium reaches it through a
peer-reflexive 127.0.0.1 candidate. The server must ignore the offer's
non-loopback candidates so no check goes to the machine's other addresses.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import AsyncIterator
from typing import Any

CHROMIUM_PATH = "/usr/bin/chromium"

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
    "--disable-features=WebRtcHideLocalIpsWithMdns",
    # one argv element: no shell quoting here
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1",
]


def chromium_available() -> bool:
    if not os.path.exists(CHROMIUM_PATH):
        return False
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        return False
    return True


@contextlib.asynccontextmanager
async def launch_chromium(user_data_dir: str | None = None, headless: bool = True,
                          extra_args: list | None = None, preferences: dict | None = None) -> AsyncIterator[Any]:
    """Yield a Playwright BrowserContext of a fresh headless Chromium profile
    (its ``Default/Preferences`` set to ``preferences`` first, when given).
    Everything (browser, driver, temp profile) is gone on exit."""
    from playwright.async_api import async_playwright

    own_dir = user_data_dir is None
    udd = user_data_dir or tempfile.mkdtemp(prefix="sipstream-chromium-")
    if preferences is not None:
        os.makedirs(os.path.join(udd, "Default"), exist_ok=True)
        with open(os.path.join(udd, "Default", "Preferences"), "w") as f:
            json.dump(preferences, f)
    try:
        async with async_playwright() as pw:
            ctx = await pw.chromium.launch_persistent_context(
                udd,
                executable_path=CHROMIUM_PATH,
                headless=headless,
                args=CHROMIUM_ARGS + list(extra_args or []),
            )
            try:
                yield ctx
            finally:
                await ctx.close()
    finally:
        if own_dir:
            shutil.rmtree(udd, ignore_errors=True)


@contextlib.asynccontextmanager
async def _context(context) -> AsyncIterator[Any]:
    if context is not None:
        yield context
    else:
        async with launch_chromium() as ctx:
            yield ctx


async def new_page(context) -> Any:
    """A fresh page; console messages are kept in ``page.console_log`` (list of str)."""
    page = await context.new_page()
    page.console_log = []
    page.on("console", lambda m: page.console_log.append(f"{m.type}: {m.text}"))
    page.on("pageerror", lambda e: page.console_log.append(f"pageerror: {e}"))
    return page


# Chromium's view of a receiving RTCPeerConnection, shared by the players below.
STATS_JS = r"""
async function readStats(pc, out) {  // inbound-rtp, codecs, transport: into out
  const stats = await pc.getStats();
  const codecs = {};
  stats.forEach(s => { if (s.type === 'codec') codecs[s.id] = s.mimeType; });
  stats.forEach(s => {  // the SRTP cipher and the server's address that ICE chose
    if (s.type !== 'transport' || !s.selectedCandidatePairId) return;
    out.srtpCipher = s.srtpCipher || null;
    const pair = stats.get(s.selectedCandidatePairId);
    const remote = pair && stats.get(pair.remoteCandidateId);
    if (remote) out.remoteAddress = remote.address + ':' + remote.port;
  });
  stats.forEach(s => {
    if (s.type !== 'inbound-rtp') return;
    if (s.kind === 'video') {
      out.framesDecoded = s.framesDecoded || 0;
      out.framesReceived = s.framesReceived || 0;
      out.frameWidth = s.frameWidth || 0;
      out.frameHeight = s.frameHeight || 0;
      out.videoPacketsReceived = s.packetsReceived || 0;
      out.videoCodec = codecs[s.codecId] || null;
      out.keyFramesDecoded = s.keyFramesDecoded || 0;
      out.framesDropped = s.framesDropped || 0;
      out.freezeCount = s.freezeCount || 0;
      out.totalFreezesDuration = s.totalFreezesDuration || 0;
      out.pliCount = s.pliCount || 0;
      out.firCount = s.firCount || 0;
      out.nackCount = s.nackCount || 0;
      out.videoPacketsLost = s.packetsLost || 0;
    } else if (s.kind === 'audio') {
      out.audioSamplesReceived = s.totalSamplesReceived || 0;
      out.audioPacketsReceived = s.packetsReceived || 0;
      out.audioCodec = codecs[s.codecId] || null;
    }
  });
}
"""

# Web Audio on a received audio track: its level and its strongest frequency.
# (Headless Chromium plays no audio out, so the stats' totalAudioEnergy stays 0.)
TONE_JS = r"""
function toneAnalyser(track) {
  const ac = new AudioContext();
  const analyser = ac.createAnalyser();
  analyser.fftSize = 8192;
  ac.createMediaStreamSource(new MediaStream([track])).connect(analyser);
  ac.resume().catch(() => {});
  return analyser;
}
function readTone(analyser) {  // [RMS (full scale 1.0), peak frequency in Hz]
  const wave = new Float32Array(analyser.fftSize);
  analyser.getFloatTimeDomainData(wave);
  const spectrum = new Float32Array(analyser.frequencyBinCount);
  analyser.getFloatFrequencyData(spectrum);
  let peak = 1;
  for (let i = 2; i < spectrum.length; i++) if (spectrum[i] > spectrum[peak]) peak = i;
  return [Math.sqrt(wave.reduce((a, x) => a + x * x, 0) / wave.length),
          peak * analyser.context.sampleRate / analyser.fftSize];
}
"""

WHEP_JS = r"""
async ({whepUrl, seconds, waitForMedia, measureS, iceWaitMs, teardown}) => {
""" + TONE_JS + STATS_JS + r"""
  const out = {framesDecoded: 0, framesReceived: 0, frameWidth: 0, frameHeight: 0,
               audioSamplesReceived: 0, audioPacketsReceived: 0, videoPacketsReceived: 0,
               connectionState: 'new', iceConnectionState: 'new',
               whepStatus: 0, location: null, error: null, videoCodec: null, audioCodec: null,
               keyFramesDecoded: 0, framesDropped: 0, freezeCount: 0, totalFreezesDuration: 0,
               pliCount: 0, firCount: 0, nackCount: 0, videoPacketsLost: 0,
               fps: 0, measuredS: 0, audioRms: 0, audioPeakHz: 0,
               srtpCipher: null, remoteAddress: null};
  let mark = null;  // {t, frames} when media was first seen
  let pc;
  try {
    pc = new RTCPeerConnection();
    pc.addTransceiver('audio', {direction: 'recvonly'});
    pc.addTransceiver('video', {direction: 'recvonly'});
    const video = document.createElement('video');
    video.muted = true; video.autoplay = true; video.playsInline = true;
    (document.body || document.documentElement).appendChild(video);
    const ms = new MediaStream();
    let analyser = null;  // Web Audio on the received audio: its level and pitch
    pc.ontrack = (e) => {
      ms.addTrack(e.track); video.srcObject = ms; video.play().catch(() => {});
      if (e.track.kind === 'audio') analyser = toneAnalyser(e.track);
    };
    await pc.setLocalDescription(await pc.createOffer());
    // wait for ICE gathering (bounded): the offer then carries the candidates
    await new Promise((resolve) => {
      if (pc.iceGatheringState === 'complete') return resolve();
      const t = setTimeout(resolve, iceWaitMs);
      pc.addEventListener('icegatheringstatechange', () => {
        if (pc.iceGatheringState === 'complete') { clearTimeout(t); resolve(); }
      });
    });
    const resp = await fetch(whepUrl, {method: 'POST', headers: {'Content-Type': 'application/sdp'},
                                       body: pc.localDescription.sdp});
    out.whepStatus = resp.status;
    out.location = resp.headers.get('Location');
    const answer = await resp.text();
    if (resp.status !== 201) {
      out.error = 'WHEP POST returned ' + resp.status + ': ' + answer.slice(0, 500);
      return out;
    }
    await pc.setRemoteDescription({type: 'answer', sdp: answer});
    const deadline = performance.now() + seconds * 1000;
    while (performance.now() < deadline) {
      await new Promise(r => setTimeout(r, 250));
      await readStats(pc, out);
      out.connectionState = pc.connectionState;
      out.iceConnectionState = pc.iceConnectionState;
      if (analyser !== null) [out.audioRms, out.audioPeakHz] = readTone(analyser);
      if (waitForMedia && out.framesDecoded > 0 && out.audioSamplesReceived > 0) {
        // then measure the frames decoded per second over measureS seconds
        const now = performance.now();
        if (mark === null) mark = {t: now, frames: out.framesDecoded};
        out.measuredS = (now - mark.t) / 1000;
        if (out.measuredS > 0) {
          out.fps = (out.framesDecoded - mark.frames) / out.measuredS;
        }
        if (out.measuredS >= measureS) break;
      }
      if (pc.connectionState === 'failed') break;
    }
  } catch (e) {
    out.error = String(e && e.stack || e);
  } finally {
    if (pc) { out.connectionState = pc.connectionState; pc.close(); }
    if (teardown && out.location) {
      try { await fetch(new URL(out.location, whepUrl).href, {method: 'DELETE'}); } catch (e) {}
    }
  }
  return out;
}
"""


async def whep_play(page_url_base: str, whep_url: str, seconds: float, *, context=None,
                    wait_for_media: bool = True, measure_s: float = 0.0, ice_wait_ms: int = 2000,
                    teardown: bool = True) -> dict:
    """Play a WHEP stream in Chromium and return its inbound-rtp stats.

    ``page_url_base``: a URL of the WHEP server's origin to open first (e.g.
    ``http://127.0.0.1:8080/health``) so the WHEP fetch is same-origin (a
    bare origin is opened as is).  Returns ``{framesDecoded, framesReceived,
    frameWidth, frameHeight, audioSamplesReceived, audioPacketsReceived,
    videoPacketsReceived, connectionState, iceConnectionState, whepStatus,
    location, error, videoCodec, audioCodec, console}`` after ``seconds`` or as
    soon as video frames were decoded and audio samples received
    (``wait_for_media``), then ``measure_s`` seconds more, over which ``fps``
    (frames decoded a second) is measured (``measuredS``: how long it was).
    ``audioRms`` and ``audioPeakHz`` are the received audio's level and
    strongest frequency at the end, from Web Audio (``TONE_JS``).
    With ``teardown`` the WHEP resource is DELETEd."""
    async with _context(context) as ctx:
        page = await new_page(ctx)
        try:
            await page.goto(page_url_base, wait_until="domcontentloaded")
            res = await page.evaluate(WHEP_JS, {
                "whepUrl": whep_url, "seconds": float(seconds), "waitForMedia": wait_for_media,
                "measureS": float(measure_s),
                "iceWaitMs": int(ice_wait_ms), "teardown": teardown,
            })
            res["console"] = list(page.console_log)
            return res
        finally:
            await page.close()


# What the WCS Web SDK does to play a stream (shared/reference/wcs-websdk-protocol.md
# §2): the Player's `connection`, then an offer taken right after
# setLocalDescription (no candidates: the SDK never trickles) in `playStream`;
# the answer from `setRemoteSDP`; PLAYING from `notifyStreamStatusEvent`;
# `pong` to every server `ping`; `stopStream` at the end.
WCS_JS = r"""
async ({wsUrl, stream, seconds, measureS, connection, transport, stop}) => {
""" + TONE_JS + STATS_JS + r"""
  const out = {framesDecoded: 0, framesReceived: 0, frameWidth: 0, frameHeight: 0,
               audioSamplesReceived: 0, audioPacketsReceived: 0, videoPacketsReceived: 0,
               connectionState: 'new', error: null, videoCodec: null, audioCodec: null,
               keyFramesDecoded: 0, framesDropped: 0, freezeCount: 0, totalFreezesDuration: 0,
               pliCount: 0, firCount: 0, nackCount: 0, videoPacketsLost: 0,
               fps: 0, measuredS: 0, audioRms: 0, audioPeakHz: 0, srtpCipher: null, remoteAddress: null,
               messages: [], statuses: [], userData: null, answer: null, offerHasCandidates: null,
               pings: 0, wsClose: null, playingAfterMs: null};
  const inbox = [];
  let wake = null;
  let pc = null;
  const ws = new WebSocket(wsUrl);
  const send = (message, data) => ws.send(JSON.stringify({message: message, data: [data]}));
  ws.onmessage = (e) => {
    const m = JSON.parse(e.data);
    out.messages.push(m.message);
    if (m.message === 'ping') { out.pings++; send('pong', null); return; }
    if (m.message === 'notifyStreamStatusEvent') {
      out.statuses.push({status: m.data[0].status, info: m.data[0].info || null});
    }
    inbox.push(m);
    if (wake) wake();
  };
  ws.onclose = (e) => { out.wsClose = {code: e.code, reason: e.reason}; if (wake) wake(); };
  const next = async (accept, ms) => {  // the first queued message accept() takes, or null
    const deadline = performance.now() + ms;
    while (performance.now() < deadline) {
      const i = inbox.findIndex(accept);
      if (i >= 0) return inbox.splice(i, 1)[0];
      if (out.wsClose) return null;
      await new Promise(r => { wake = r; setTimeout(r, 100); });
      wake = null;
    }
    return null;
  };
  try {
    await new Promise((resolve, reject) => {
      ws.onopen = resolve;
      ws.onerror = () => reject(new Error('WebSocket error'));
    });
    send('connection', Object.assign({appKey: 'defaultApp', mediaProviders: ['WebRTC', 'WSPlayer'],
          clientVersion: '2.0', clientOSVersion: navigator.appVersion, clientBrowserVersion: navigator.userAgent,
          msePacketizationVersion: 2}, connection));
    const userData = await next(m => m.message === 'getUserData', 5000);
    if (!userData) { out.error = 'no getUserData'; return out; }
    out.userData = userData.data[0];
    pc = new RTCPeerConnection({iceServers: [], bundlePolicy: 'max-compat'});
    const video = document.createElement('video');
    video.muted = true; video.autoplay = true; video.playsInline = true;
    document.body.appendChild(video);
    let analyser = null;
    pc.ontrack = (e) => {
      video.srcObject = e.streams[0] || new MediaStream([e.track]); video.play().catch(() => {});
      if (e.track.kind === 'audio') analyser = toneAnalyser(e.track);
    };
    const offer = await pc.createOffer({offerToReceiveAudio: 1, offerToReceiveVideo: 1});
    await pc.setLocalDescription(offer);
    out.offerHasCandidates = offer.sdp.includes('a=candidate');
    const id = Array.from(crypto.getRandomValues(new Uint8Array(16)), b => b.toString(16).padStart(2, '0')).join('');
    const request = {mediaSessionId: id, name: stream, published: false, hasVideo: true, hasAudio: true,
                     status: 'PENDING', record: false, width: 0, height: 0, mediaProvider: 'WebRTC',
                     sdp: offer.sdp, bitrate: 0, minBitrate: 0, maxBitrate: 0, quality: 0};
    if (transport) request.transport = transport;
    const t0 = performance.now();
    send('playStream', request);
    const reply = await next(m => (m.message === 'setRemoteSDP' && m.data[0] === id)
                             || (m.message === 'notifyStreamStatusEvent' && m.data[0].status === 'FAILED'), 10000);
    if (!reply || reply.message !== 'setRemoteSDP') { out.error = 'no setRemoteSDP'; return out; }
    out.answer = reply.data[1];
    await pc.setRemoteDescription({type: 'answer', sdp: reply.data[1]});
    let mark = null;
    const deadline = performance.now() + seconds * 1000;
    while (performance.now() < deadline) {
      await new Promise(r => setTimeout(r, 250));
      if (out.playingAfterMs === null && out.statuses.some(x => x.status === 'PLAYING')) {
        out.playingAfterMs = performance.now() - t0;
      }
      await readStats(pc, out);
      out.connectionState = pc.connectionState;
      if (analyser !== null) [out.audioRms, out.audioPeakHz] = readTone(analyser);
      if (out.playingAfterMs !== null && out.framesDecoded > 0 && out.audioSamplesReceived > 0) {
        const now = performance.now();
        if (mark === null) mark = {t: now, frames: out.framesDecoded};
        out.measuredS = (now - mark.t) / 1000;
        if (out.measuredS > 0) out.fps = (out.framesDecoded - mark.frames) / out.measuredS;
        if (out.measuredS >= measureS) break;
      }
      if (pc.connectionState === 'failed' || out.wsClose) break;
    }
    if (stop) {
      send('stopStream', {mediaSessionId: id, name: stream, published: false, hasVideo: true, hasAudio: true,
                          status: 'PLAYING', record: false});
      await next(m => m.message === 'notifyStreamStatusEvent' && m.data[0].status === 'STOPPED', 5000);
    }
  } catch (e) {
    out.error = String(e && e.stack || e);
  } finally {
    if (pc) { out.connectionState = pc.connectionState; pc.close(); }
    ws.close();
  }
  return out;
}
"""


async def wcs_play(page_url: str, ws_url: str, stream: str, seconds: float, *, context=None,
                   measure_s: float = 0.0, connection: dict | None = None, transport: str | None = None,
                   stop: bool = True) -> dict:
    """Play ``stream`` in Chromium over the WCS WebSocket at ``ws_url`` as the
    Web SDK's Player does (``WCS_JS``), from a page at ``page_url``. Returns
    WHEP_JS's stats plus the protocol's view: ``messages`` (server message
    names in order), ``statuses`` (each notifyStreamStatusEvent's status and
    info), ``userData``, ``answer``, ``offerHasCandidates``, ``pings``,
    ``playingAfterMs`` (playStream → PLAYING seen) and ``wsClose``.
    ``connection``: fields added to the ``connection`` message (appKey,
    authToken, custom)."""
    async with _context(context) as ctx:
        page = await new_page(ctx)
        try:
            await page.goto(page_url, wait_until="domcontentloaded")
            res = await page.evaluate(WCS_JS, {
                "wsUrl": ws_url, "stream": stream, "seconds": float(seconds), "measureS": float(measure_s),
                "connection": connection or {}, "transport": transport, "stop": stop,
            })
            res["console"] = list(page.console_log)
            return res
        finally:
            await page.close()


TRACK_TONE_JS = "async (selector) => {" + TONE_JS + r"""
  const track = document.querySelector(selector).srcObject.getAudioTracks()[0];
  const analyser = toneAnalyser(track);
  await new Promise(r => setTimeout(r, 1000));
  const out = readTone(analyser);
  await analyser.context.close();
  return out;
}"""


async def track_tone(page: Any, selector: str) -> tuple[float, float]:
    """(RMS, peak Hz) over about 1 s of the audio the page's media element
    ``selector`` plays (a remote track must be attached to one for Web Audio)."""
    rms, hz = await page.evaluate(TRACK_TONE_JS, selector)
    return float(rms), float(hz)


async def page_stats(url: str, js_expr: str, timeout: float, *, context=None,
                     until: str | None = None, interval: float = 0.25) -> Any:
    """Open ``url`` and poll the JS expression ``js_expr`` (e.g.
    ``"window.sipstreamStats"``) until ``until`` (a JS function source taking
    the value, e.g. ``"s => s && s.framesDecoded > 0"``) is truthy, or until
    ``timeout`` seconds; returns the last value (JSON-serializable).  Without
    ``until``, returns the first non-null value."""
    async with _context(context) as ctx:
        page = await new_page(ctx)
        try:
            await page.goto(url, wait_until="domcontentloaded")
            deadline = time.monotonic() + timeout
            value = None
            pred = until or "v => v !== null && v !== undefined"
            while True:
                value, ok = await page.evaluate(
                    f"() => {{ let v; try {{ v = ({js_expr}); }} catch (e) {{ v = null; }}"
                    f" let ok = false; try {{ ok = !!(({pred})(v)); }} catch (e) {{}}"
                    f" return [v === undefined ? null : JSON.parse(JSON.stringify(v)), ok]; }}"
                )
                if ok or time.monotonic() >= deadline:
                    return value
                await page.wait_for_timeout(interval * 1000)
        finally:
            await page.close()
