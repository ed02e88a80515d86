"""How far behind the call HLS playback is (issue 13): a call from the
loopback callee (352x288 H.264 at 25 fps and PCMU, ``sipstream.testing``)
played from an in-process server's HLS port by two clients, together:

- an LL-HLS client that asks for each next part with a blocking reload
  (``_HLS_msn``/``_HLS_part``), then downloads it. Its figure: when the part
  is in the client's hands, minus the wall-clock instant the server received
  the part's last frame (the part's EXT-X-PROGRAM-DATE-TIME plus its
  duration). An LL-HLS player that plays PART-HOLD-BACK behind the live edge
  shows a frame about PART-HOLD-BACK plus that delay after it arrived.
- Debian's Chromium playing the playlist natively in a <video> (it loads
  whole segments and ignores the parts): its figure is the wall clock
  minus the arrival time of the frame it shows. Its ``currentTime`` counts
  from the start of the first segment it loaded (whose
  EXT-X-PROGRAM-DATE-TIME is known), so the server's answers are watched
  for that segment.

"Glass-to-glass-ish": from the server receiving a frame to the client having
it (or showing it), without the far end's capture, encoding and network,
and without the browser's decoding and display (a frame or two).

    .venv/bin/python benches/hls_latency.py [--seconds 30] [--segment 2.0] [--part 0.5] [--segments 6]
                                            [--no-chromium] [--join-after 20]

Prints the figures and their JSON, also written to
``benches/results/hls-latency-<UTC time>.json``."""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import re
import statistics
import sys
import time
import urllib.parse
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sipstream.egress.hls import HlsServer  # noqa: E402
from sipstream.server import Server  # noqa: E402
from sipstream.settings import Settings  # noqa: E402
from sipstream.testing import LoopbackCallee  # noqa: E402

from tests.peers.chromium import chromium_available, launch_chromium, new_page  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
STREAM = "latency"


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {"n": len(values), "p50": statistics.median(ordered), "p90": ordered[int(0.9 * (len(ordered) - 1))],
            "min": ordered[0], "max": ordered[-1]}


def _part_times(text: str) -> dict[str, tuple[float, float]]:
    """URI of each part -> (wall-clock start, duration), from the playlist's
    program date times and part durations."""
    out: dict[str, tuple[float, float]] = {}
    start: float | None = None
    for line in text.splitlines():
        if line.startswith("#EXT-X-PROGRAM-DATE-TIME:"):
            start = datetime.datetime.fromisoformat(line.split(":", 1)[1].replace("Z", "+00:00")).timestamp()
        elif line.startswith("#EXT-X-PART:") and start is not None:
            duration = float(re.search(r"DURATION=([\d.]+)", line).group(1))  # type: ignore[union-attr]
            uri = re.search(r'URI="([^"]+)"', line).group(1)  # type: ignore[union-attr]
            out[uri] = (start, duration)
            start += duration
        elif line.startswith("#EXTINF:"):
            start = None  # the next segment has its own date
    return out


async def ll_hls_client(base: str, seconds: float) -> dict[str, Any]:
    """Blocking reloads for each next part, then the part itself."""
    delays: list[float] = []  # part in hand - arrival of its last frame
    playlist_delays: list[float] = []  # playlist naming the part - arrival of its last frame
    async with aiohttp.ClientSession() as http:
        async with http.get(base) as res:
            text = await res.text()
        hold_back = float(re.search(r"PART-HOLD-BACK=([\d.]+)", text).group(1))  # type: ignore[union-attr]
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            hint = re.search(r'PRELOAD-HINT:TYPE=PART,URI="part-[0-9a-f]+-(\d+)\.(\d+)\.m4s"', text)
            if hint is None:
                break
            msn, part = hint.groups()
            async with http.get(f"{base}?_HLS_msn={msn}&_HLS_part={part}") as res:
                text = await res.text()
            listed_at = time.time()
            times = _part_times(text)
            wanted = next((u for u in times if re.fullmatch(rf"part-[0-9a-f]+-{msn}\.{part}\.m4s", u)), None)
            if wanted is None:
                continue  # the segment ended at a keyframe first: ask for the next one
            async with http.get(urllib.parse.urljoin(base, wanted)) as res:
                await res.read()
            start, duration = times[wanted]
            delays.append(time.time() - (start + duration))
            playlist_delays.append(listed_at - (start + duration))
    return {"part_in_hand_after_last_frame_s": _summary(delays),
            "playlist_after_last_frame_s": _summary(playlist_delays),
            "part_hold_back_s": hold_back,
            "ll_hls_player_estimate_s": hold_back + statistics.median(delays)}


async def chromium_client(base: str, seconds: float, hls: HlsServer, join_after: float) -> dict[str, Any]:
    lags: list[float] = []
    await asyncio.sleep(join_after)
    served: list[str] = []  # segment files the HLS port served, in order
    serve = hls._media

    async def watched(name: str, file: str) -> Any:
        response = await serve(name, file)
        served.append(file)
        return response

    hls._media = watched  # type: ignore[method-assign]  # this harness watches what Chromium loads
    async with launch_chromium() as ctx:
        page = await new_page(ctx)
        await page.set_content(f'<video id="v" muted autoplay playsinline src="{base}"></video>')
        deadline = time.monotonic() + seconds
        start: float | None = None  # arrival of the first frame of the first segment it loaded
        while time.monotonic() < deadline:
            t = await page.evaluate("() => document.getElementById('v').currentTime")
            if start is None:
                first = next((f for f in served if f.startswith("seg-")), None)
                segment = hls.muxers[STREAM].segment(int(first.split("-")[2].split(".")[0])) if first else None
                start = segment.program_date if segment is not None else None
            if t > 0 and start is not None:
                lags.append(time.time() - (start + t))
            await asyncio.sleep(0.5)
    # the first seconds are startup (it waits for three segments, then starts at the first)
    return {"shown_after_arrival_s": _summary(lags[len(lags) // 3:]) if lags else {}}


async def main(args: argparse.Namespace) -> dict[str, Any]:
    callee = LoopbackCallee(width=352, height=288, fps=25, loop_seconds=2.0)
    await callee.start()
    settings = Settings.load(environ={}, overrides={
        "http_port": _free_port(), "hls_port": _free_port(), "ws_port": 0, "rtsp_port": 0, "webrtc_port": 0,
        "hls_segment_s": args.segment, "hls_part_s": args.part, "hls_segments": args.segments,
        "rest_rate_limit": 0})
    server = Server(settings)
    await server.start()
    try:
        async with aiohttp.ClientSession() as http:
            body = {"callId": "latency", "callee": "demo", "toStream": STREAM, "hasAudio": "true",
                    "hasVideo": "true", "sipLogin": "caller", "sipDomain": "127.0.0.1",
                    "sipPort": str(callee.port), "sipRegisterRequired": "false"}
            async with http.post(server.base_url + "/rest-api/call/startup", json=body) as res:
                assert res.status == 200, await res.text()
        assert server.hls is not None
        base = f"http://127.0.0.1:{server.hls.port}/{STREAM}/{STREAM}.m3u8"
        await asyncio.sleep(1.0)
        clients = [ll_hls_client(base, args.seconds)]
        hls = server.hls

        if args.chromium and chromium_available():
            clients.append(chromium_client(base, args.seconds, hls, args.join_after))
        results = await asyncio.gather(*clients)
    finally:
        await server.stop()
        await callee.stop()
    result: dict[str, Any] = {"segment_s": args.segment, "part_s": args.part, "segments": args.segments,
                              "seconds": args.seconds,
                              "chromium_joined_after_s": args.join_after,
                              "ll_hls": results[0]}
    if len(results) > 1:
        result["chromium_native"] = results[1]
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--segment", type=float, default=2.0)
    parser.add_argument("--part", type=float, default=0.5)
    parser.add_argument("--segments", type=int, default=6, help="hls_segments: the playlist's window")
    parser.add_argument("--no-chromium", dest="chromium", action="store_false")
    parser.add_argument("--join-after", type=float, default=0.0,
                        help="Chromium joins this long after the stream's HLS started (a full playlist)")
    result = asyncio.run(main(parser.parse_args()))
    text = json.dumps(result, indent=1)
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"hls-latency-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json").write_text(text + "\n")
