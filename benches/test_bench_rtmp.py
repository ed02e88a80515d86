"""CPU per RTMP relay (AAC encode + FLV mux), whole process: one call
(PCMU + H.264 320x240, 25 fps) relayed N times at once into nginx-rtmp on
loopback, CPU seconds of this process over a fixed window, minus the same
window with no relay. Run: ``make bench`` (needs nginx + libnginx-mod-rtmp)."""

from __future__ import annotations

import asyncio
import resource
import sys
from pathlib import Path

import aiohttp
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sipstream.server import Server  # noqa: E402
from sipstream.testing import LoopbackCallee  # noqa: E402

from tests.conftest import Rest, loopback_call, make_settings  # noqa: E402
from tests.peers.nginx_rtmp import NginxRtmp, nginx_rtmp_missing  # noqa: E402

WINDOW_S = 10.0


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _measure(relays: int, tmp: Path) -> float:
    nginx = NginxRtmp(workdir=tmp / f"nginx{relays}", record=False).start()
    callee = LoopbackCallee(width=320, height=240, loop_seconds=2)
    await callee.start()
    srv = Server(make_settings())
    await srv.start()
    try:
        async with aiohttp.ClientSession() as http:
            rest = Rest(srv.base_url, http)
            await rest.post("/rest-api/call/startup", loopback_call(callee, "b1", "bs1"))
            await rest.wait_status("b1", {"ESTABLISHED"})
            for i in range(relays):
                code, _ = await rest.post("/rest-api/push/startup", {
                    "streamName": "bs1", "rtmpUrl": f"{nginx.url}/r{i}", "rtmpTransponderFullUrl": "true"})
                assert code == 200
            await asyncio.sleep(2)  # connected, warmed up
            start = _cpu()
            await asyncio.sleep(WINDOW_S)
            used = _cpu() - start
            code, found = await rest.post("/rest-api/push/find_all")
            assert relays == 0 or (code == 200 and all(r["status"] == "PUBLISHING" for r in found))
            return used
    finally:
        await srv.stop()
        await callee.stop()
        nginx.close()


@pytest.mark.skipif(nginx_rtmp_missing() is not None, reason=str(nginx_rtmp_missing()))
def test_cpu_per_rtmp_relay(tmp_path: Path, benchmark: pytest.FixtureRequest) -> None:
    n = 8

    def run() -> dict[str, float]:
        base = asyncio.run(_measure(0, tmp_path))
        loaded = asyncio.run(_measure(n, tmp_path))
        per_relay = (loaded - base) / n / WINDOW_S * 100
        return {"baseline_pct_core": base / WINDOW_S * 100, "per_relay_pct_core": per_relay}

    result = benchmark.pedantic(run, rounds=1, iterations=1)  # type: ignore[attr-defined]
    benchmark.extra_info.update(result)  # type: ignore[attr-defined]
    print(f"\nCPU: baseline {result['baseline_pct_core']:.1f}% of a core, "
          f"{result['per_relay_pct_core']:.2f}% of a core per relay ({n} relays)")
    assert result["per_relay_pct_core"] > 0
