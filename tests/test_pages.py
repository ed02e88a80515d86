"""The pages people open, in headless Chromium: /player over each way it plays
(its stats and its errors in words), and /console placing a call, playing
it inline, sending DTMF, holding, recording and hanging up."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest
from sipstream.testing import LoopbackCallee

from .conftest import free_tcp_port, loopback_call, wait_until
from .peers.chromium import launch_chromium, new_page, page_stats
from .peers.fixtures import require_chromium
from .peers.media import SOURCE_FPS, SOURCE_HEIGHT, SOURCE_WIDTH

# Where screenshots go when a person wants to look at the pages (not in CI).
SHOTS = os.environ.get("SIPSTREAM_PAGE_SHOTS")


@pytest.fixture(autouse=True)
def _chromium() -> None:
    require_chromium()


async def shot(page: Any, name: str) -> None:
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(Path(SHOTS) / f"{name}.png"), full_page=True)


async def poll(page: Any, expr: str, until: str, timeout: float, frame: Any = None) -> Any:
    """``expr`` on the page (or one of its frames) once ``until(value)`` holds;
    fails with the last value after ``timeout`` seconds."""
    target = frame or page
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = await target.evaluate(f"() => {{ try {{ return JSON.parse(JSON.stringify({expr})); }}"
                                      f" catch (e) {{ return null; }} }}")
        if await target.evaluate(f"v => {{ try {{ return !!(({until})(v)); }} catch (e) {{ return false; }} }}",
                                 value):
            return value
        assert loop.time() < deadline, f"not within {timeout} s: {until} on {value}"
        await asyncio.sleep(0.25)


@pytest.mark.parametrize("tech", ["whep", "wcs"])
async def test_the_player_plays_over_webrtc_and_shows_live_stats(tech: str, server_with: Any,
                                                                  callee: LoopbackCallee) -> None:
    server, rest = await server_with(ws_port=free_tcp_port())
    await rest.start_call(loopback_call(callee, f"pg-{tech}", f"pgs{tech}"))
    async with launch_chromium() as ctx:
        page = await new_page(ctx)
        await page.goto(f"{server.base_url}/player?stream=pgs{tech}&tech={tech}")
        frames = 4 * SOURCE_FPS  # only the far end's 25 fps reaches this in the time given
        stats = await poll(page, "window.sipstreamStats",
                           f"s => s.framesDecoded >= {frames} && s.bitrateKbps > 0 && s.latencyMs !== null", 30)
        assert stats["tech"] == tech and stats["streamStatus"] == "PUBLISHING" and stats["error"] is None, stats
        assert (stats["frameWidth"], stats["frameHeight"]) == (SOURCE_WIDTH, SOURCE_HEIGHT), stats
        assert stats["fps"] > SOURCE_FPS / 2 and stats["audioSamplesReceived"] > 0, stats
        assert 0 < stats["latencyMs"] < 1000 and stats["packetsLost"] == 0, stats
        text = await page.inner_text("#status")
        assert f"{SOURCE_WIDTH}x{SOURCE_HEIGHT}" in text and "kbit/s" in text and "latency" in text, text
        assert await page.locator("#tech").input_value() == tech
        # volume and sound controls act on the video element
        await page.click("#mute")
        await page.locator("#volume").evaluate("el => { el.value = '0.3'; el.dispatchEvent(new Event('input')); }")
        muted, volume = await page.evaluate("() => [document.querySelector('video').muted,"
                                            " document.querySelector('video').volume]")
        assert muted is False and abs(volume - 0.3) < 1e-6
        await shot(page, f"player-{tech}")
        await page.click("#stop")
    await wait_until(lambda: not server.whep.sessions, 5, "the page's viewer ended")


async def test_the_player_says_what_went_wrong(server_with: Any) -> None:
    server, _ = await server_with(ws_port=free_tcp_port())
    for tech in ("whep", "wcs"):
        stats = await page_stats(f"{server.base_url}/player?stream=nosuch&tech={tech}", "window.sipstreamStats",
                                 timeout=15, until="s => s && s.error")
        assert stats["state"] == "failed" and "no such stream" in stats["error"], stats
    # HLS is off on this server: the choice is not offered, WHEP is used
    stats = await page_stats(f"{server.base_url}/player?stream=nosuch&tech=hls", "window.sipstreamStats",
                             timeout=15, until="s => s && s.error")
    assert stats["tech"] == "whep", stats
    # a server with a token: the page says a token is needed
    server, _ = await server_with(rest_auth_token="secret-token")
    stats = await page_stats(f"{server.base_url}/player?stream=nosuch", "window.sipstreamStats",
                             timeout=15, until="s => s && s.error")
    assert "needs a valid token" in stats["error"], stats


async def test_the_console_places_a_call_plays_it_and_controls_it(server_with: Any, callee: LoopbackCallee,
                                                                  tmp_path: Path) -> None:
    server, rest = await server_with(record_dir=str(tmp_path / "records"))
    body = loopback_call(callee, "unused", "console1")
    async with launch_chromium() as ctx:
        page = await new_page(ctx)
        await page.goto(f"{server.base_url}/console")
        for field in ("sipLogin", "sipDomain", "sipPort", "callee", "toStream"):
            await page.fill(f"#{field}", body[field])
        await page.fill("#sipPassword", "console-password")
        await page.uncheck("#sipRegisterRequired")
        await page.click("#start")
        state = await poll(page, "window.consoleState", "s => s.status === 'ESTABLISHED'", 20)
        assert state["callId"].startswith("console-") and state["error"] is None, state
        assert state["statuses"][0] in ("PENDING", "TRYING", "RING", "ESTABLISHED"), state
        # the stream plays inline: the far end's picture, decoded
        await page.wait_for_selector("#player")
        player = page.frame_locator("#player")
        await player.locator("video").wait_for()
        frame = page.frame(url=lambda url: "/player?" in url)
        assert frame is not None
        stats = await poll(page, "window.sipstreamStats", f"s => s.framesDecoded >= {3 * SOURCE_FPS}", 30, frame)
        assert (stats["frameWidth"], stats["frameHeight"]) == (SOURCE_WIDTH, SOURCE_HEIGHT), stats
        await shot(page, "console-established")
        # DTMF from the pad reaches the callee as RFC 4733 events
        def digits() -> list[int]:  # RFC 4733 end packets: the event code, once a digit
            return sorted({p.payload[0] for p in callee.rtp_received if p.payload_type == 101 and p.payload[1] & 0x80})

        await page.click("#dtmf button[data-digit='5']")
        await wait_until(lambda: digits() == [5], 5, "the digit 5 at the callee")
        # hold and unhold
        await page.click("#hold")
        await poll(page, "window.consoleState", "s => s.status === 'HOLD'", 10)
        await page.click("#unhold")
        await poll(page, "window.consoleState", "s => s.status === 'ESTABLISHED'", 10)
        # record a few seconds
        await page.click("#record")
        await poll(page, "window.consoleState", "s => s.recording", 5)
        await asyncio.sleep(2.5)
        await page.click("#unrecord")
        await poll(page, "window.consoleState", "s => !s.recording", 5)
        await wait_until(lambda: any((tmp_path / "records").glob("*.mp4")), 10, "a recording file")
        # hang up: FINISH, and the player goes away
        await page.click("#hangup")
        state = await poll(page, "window.consoleState", "s => s.status === 'FINISH'", 15)
        assert await page.locator("#player").count() == 0
        await shot(page, "console-finished")
        # the password was sent with the call, and kept nowhere
        stored = await page.evaluate("() => JSON.stringify(localStorage) + document.cookie")
        assert "console-password" not in stored and body["sipLogin"] in stored, stored


@pytest.mark.parametrize("tech", ["whep", "wcs"])
async def test_the_player_plays_with_a_playback_token_only(tech: str, server_with: Any,
                                                            callee: LoopbackCallee) -> None:
    from sipstream.api.auth import playback_token

    secret = "p" * 40
    server, rest = await server_with(ws_port=free_tcp_port(), playback_token_secret=secret,
                                     rest_auth_token="api-token")
    rest.http.headers["Authorization"] = "Bearer api-token"
    await rest.start_call(loopback_call(callee, f"pt-{tech}", f"pts{tech}"))
    token = playback_token(secret, f"pts{tech}")
    stats = await page_stats(f"{server.base_url}/player?stream=pts{tech}&tech={tech}#token={token}",
                             "window.sipstreamStats", timeout=30,
                             until=f"s => s && s.framesDecoded >= {2 * SOURCE_FPS}")
    assert stats["framesDecoded"] >= 2 * SOURCE_FPS and stats["error"] is None, stats
    # the token plays, and says so instead of "not found" for the REST API it may not read
    assert stats["streamStatus"] == "unknown (no access to the REST API)", stats
