"""CPU per RTMP relay (AAC encode + FLV mux), whole process: one call
(PCMU + H.264 320x240, 25 fps, from the loopback callee) relayed N times at
once into nginx-rtmp on loopback. In one server: this process's CPU seconds
over a window with the call and no relay, then over a window of the same
length with the N relays publishing; the difference over N is one relay.

Pinned: this process on one core; the callee (loopback_callee.py, its own
process) and nginx on the other (benchutil.py). A missing nginx fails the
benchmark. Run: ``make bench`` (needs nginx + libnginx-mod-rtmp)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import aiohttp
import pytest
from benchutil import on_load_cpu, process_cpu

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sipstream.server import Server  # noqa: E402

from tests.conftest import Rest, loopback_call, make_settings  # noqa: E402
from tests.peers.nginx_rtmp import NginxRtmp, nginx_rtmp_missing  # noqa: E402

RELAYS = 8
SETTLE_S = 2.0  # after the call is up, and after the relays are started
WINDOW_S = 5.0


async def _measure(tmp: Path) -> dict[str, float]:
    with on_load_cpu():
        nginx = NginxRtmp(workdir=tmp / "nginx", record=False).start()
        callee = subprocess.Popen([sys.executable, str(Path(__file__).with_name("loopback_callee.py"))],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    srv = Server(make_settings())
    try:
        assert callee.stdout is not None
        port = int(await asyncio.to_thread(callee.stdout.readline))
        await srv.start()
        async with aiohttp.ClientSession() as http:
            rest = Rest(srv.base_url, http)
            await rest.post("/rest-api/call/startup", loopback_call(SimpleNamespace(port=port), "b1", "bs1"))
            await rest.wait_status("b1", {"ESTABLISHED"})
            await asyncio.sleep(SETTLE_S)
            start = process_cpu()
            await asyncio.sleep(WINDOW_S)
            base = process_cpu() - start
            for i in range(RELAYS):
                code, _ = await rest.post("/rest-api/push/startup", {
                    "streamName": "bs1", "rtmpUrl": f"{nginx.url}/r{i}", "rtmpTransponderFullUrl": "true"})
                assert code == 200
            await asyncio.sleep(SETTLE_S)  # connected, warmed up
            start = process_cpu()
            await asyncio.sleep(WINDOW_S)
            loaded = process_cpu() - start
            code, found = await rest.post("/rest-api/push/find_all")
            assert code == 200 and len(found) == RELAYS and all(r["status"] == "PUBLISHING" for r in found), found
    finally:
        await srv.stop()
        assert callee.stdin is not None
        callee.stdin.close()
        try:
            callee.wait(10)
        except subprocess.TimeoutExpired:
            callee.kill()
            callee.wait()
        nginx.close()
    return {
        "relays": RELAYS,
        "window_s": WINDOW_S,
        "baseline_pct_core": base / WINDOW_S * 100,
        "loaded_pct_core": loaded / WINDOW_S * 100,
        "per_relay_pct_core": (loaded - base) / RELAYS / WINDOW_S * 100,
    }


def test_cpu_per_rtmp_relay(tmp_path: Path, benchmark: pytest.FixtureRequest) -> None:
    missing = nginx_rtmp_missing()
    if missing is not None:
        pytest.fail(missing)
    result = benchmark.pedantic(lambda: asyncio.run(_measure(tmp_path)),  # type: ignore[attr-defined]
                                rounds=1, iterations=1)
    benchmark.extra_info.update(result)  # type: ignore[attr-defined]
    print(f"\nCPU: call alone {result['baseline_pct_core']:.1f}% of a core, with {RELAYS} relays "
          f"{result['loaded_pct_core']:.1f}%: {result['per_relay_pct_core']:.2f}% of a core per relay")
    assert result["per_relay_pct_core"] > 0
