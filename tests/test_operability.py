"""What an operator looks at: Prometheus metrics, readiness, the stream's
per-track stats (issue 12, operability)."""

from __future__ import annotations

from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families
from sipstream.server import Server
from sipstream.testing import LoopbackCallee

from .conftest import Rest, loopback_call, media_range, wait_until


async def scrape(rest: Rest) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    async with rest.http.get(rest.base_url + "/metrics") as res:
        assert res.status == 200
        assert res.headers["Content-Type"].startswith("text/plain")
        text = await res.text()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_metrics_count_calls_media_viewers_and_requests(
    server: Server, rest: Rest, callee: LoopbackCallee
) -> None:
    await rest.start_call(loopback_call(callee, "m1", "ms1"))
    await wait_until(lambda: server.gateway.calls["m1"].media.packets_received > 50, 10, "media")  # type: ignore[union-attr]
    live = await scrape(rest)
    assert value(live, "sipstream_calls", status="ESTABLISHED") == 1
    assert value(live, "sipstream_streams") == 1
    assert value(live, "sipstream_call_setup_seconds_count") == 1
    assert value(live, "sipstream_rtp_in_packets_total", kind="audio") > 0
    assert value(live, "sipstream_rtp_in_packets_total", kind="video") > 0
    assert value(live, "sipstream_rtp_in_bytes_total", kind="video") > value(
        live, "sipstream_rtp_in_packets_total", kind="video")
    assert ("sipstream_rtp_in_jitter_ms", (("kind", "audio"), ("stream", "ms1"))) in live
    assert value(live, "sipstream_viewers", protocol="whep", state="connected") == 0
    assert value(live, "sipstream_sip_total", event="transactions") >= 1  # the INVITE
    assert value(live, "sipstream_http_request_seconds_count", route="/rest-api/call/startup",
                 method="POST", status="2xx") == 1
    await rest.post("/rest-api/call/terminate", {"callId": "m1"})
    await rest.wait_status("m1", {"FINISH"})
    ended = await scrape(rest)
    assert value(ended, "sipstream_calls_ended_total", status="FINISH") == 1
    assert value(ended, "sipstream_streams") == 0
    # the ended call's packets stay counted: a counter never goes down
    assert value(ended, "sipstream_rtp_in_packets_total", kind="audio") >= value(
        live, "sipstream_rtp_in_packets_total", kind="audio")


async def test_stream_stats_give_each_tracks_packets_loss_jitter_and_rate(
    server: Server, rest: Rest, callee: LoopbackCallee
) -> None:
    await rest.start_call(loopback_call(callee, "m2", "ms2"))
    await wait_until(lambda: server.gateway.calls["m2"].media.packets_received > 100, 10, "media")  # type: ignore[union-attr]
    code, streams = await rest.post("/rest-api/stream/find", {"name": "ms2"})
    assert code == 200
    stats = streams[0]["stats"]
    for kind in ("audio", "video"):
        track = stats[kind]
        assert track["packets"] > 0 and track["bytes"] > track["packets"]
        assert track["lost"] == 0
        assert track["jitterMs"] >= 0
    assert stats["video"]["codec"] == "H264"


async def test_ready_says_what_is_missing(server_with: Any, callee: LoopbackCallee) -> None:
    first, _ = media_range()
    server, rest = await server_with(media_port_from=first, media_port_to=first + 3)
    async with rest.http.get(rest.base_url + "/ready") as res:
        assert res.status == 200 and (await res.json())["ready"] is True
    await rest.start_call(loopback_call(callee, "m3", "ms3"))  # the only call the range holds
    async with rest.http.get(rest.base_url + "/ready") as res:
        body = await res.json()
        assert res.status == 503 and body["checks"]["media_ports"] is False, body


async def test_https_serves_the_api_with_the_given_certificate(server_with: Any, tmp_path: Any) -> None:
    import ssl
    import subprocess


    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                    "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    server, _ = await server_with(https_cert=str(cert), https_key=str(key))
    assert server.base_url.startswith("https://")
    trust = ssl.create_default_context(cafile=str(cert))
    async with aiohttp.ClientSession() as http:
        async with http.get(server.base_url + "/health", ssl=trust) as res:
            assert res.status == 200 and (await res.json())["status"] == "ok"
        plain = server.base_url.replace("https://", "http://") + "/health"
        try:
            async with http.get(plain) as res:
                assert res.status == 400  # plain HTTP to a TLS port is never served
        except aiohttp.ClientError:
            pass


async def test_a_client_over_the_rate_limit_gets_429_and_others_are_served(server_with: Any) -> None:
    _, rest = await server_with(rest_rate_limit=5, rest_rate_burst=10)
    codes = [(await rest.post("/rest-api/call/find_all"))[0] for _ in range(30)]
    assert codes[:10] == [404] * 10 and codes[-1] == 429, codes
    async with rest.http.get(rest.base_url + "/rest-api/call/find_all") as res:
        assert res.status == 429 and int(res.headers["Retry-After"]) >= 1
    async with rest.http.get(rest.base_url + "/health") as res:
        assert res.status == 200  # probes are never limited


async def test_at_max_calls_the_answer_is_503_with_retry_after(
    server_with: Any, callee: LoopbackCallee
) -> None:
    _, rest = await server_with(max_calls=1)
    await rest.start_call(loopback_call(callee, "cap1", "caps1"))
    async with rest.http.post(rest.base_url + "/rest-api/call/startup",
                              json=loopback_call(callee, "cap2", "caps2")) as res:
        assert res.status == 503 and "max_calls" in (await res.json())["error"]
        assert int(res.headers["Retry-After"]) > 0


async def test_openapi_is_generated_from_the_models_and_the_live_server_keeps_to_it(
    server_with: Any, callee: LoopbackCallee, tmp_path: Any
) -> None:
    """schemathesis against the live server: at least 2,000 generated
    requests (valid and invalid), no 5xx, every status code and every body
    as the OpenAPI document says."""
    import asyncio
    import os
    import re
    import sys
    from pathlib import Path

    server, rest = await server_with(max_calls=10, sip_transaction_timeout_s=2)
    await rest.start_call(loopback_call(callee, "live", "live-stream"))  # something for find to find
    doc = await rest.get("/rest-api/openapi.json")
    assert doc["openapi"] == "3.1.0"
    startup = doc["paths"]["/rest-api/call/startup"]["post"]
    schema = doc["components"]["schemas"]["CallStartup"]
    assert startup["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/CallStartup")
    assert set(schema["required"]) == {"callee", "toStream", "sipLogin", "sipDomain"}
    st = Path(sys.executable).parent / "st"
    proc = await asyncio.create_subprocess_exec(
        str(st), "run", rest.base_url + "/rest-api/openapi.json", "--max-examples", "80", "--seed", "1",
        "--checks", "all", "--exclude-checks", "positive_data_acceptance",
        cwd=tmp_path, env={**os.environ, "NO_COLOR": "1"},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await proc.communicate()
    text = out.decode(errors="replace")
    assert proc.returncode == 0, text[-6000:]
    generated = re.search(r"(\d+) generated, (\d+) passed", text)
    assert generated is not None, text[-3000:]
    assert int(generated.group(1)) >= 2000 and generated.group(1) == generated.group(2), generated.group(0)
    assert server.gateway.ua is not None  # still serving
    async with rest.http.get(rest.base_url + "/health") as res:
        assert res.status == 200


async def test_json_logs_carry_the_call_id_and_stream_name(callee: LoopbackCallee, tmp_path: Any) -> None:
    import asyncio
    import json
    import os
    import sys

    from .conftest import free_tcp_port

    http_port = free_tcp_port()
    first, last = media_range()
    env = {**os.environ, "SIPSTREAM_LOG_FORMAT": "json", "SIPSTREAM_WEBRTC_PORT": "0", "SIPSTREAM_WS_PORT": "0",
           "SIPSTREAM_HLS_PORT": "0", "SIPSTREAM_RTSP_PORT": "0",
           "SIPSTREAM_MEDIA_PORT_FROM": str(first), "SIPSTREAM_MEDIA_PORT_TO": str(last)}
    log_path = tmp_path / "server.log"
    with open(log_path, "wb") as log_file:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "sipstream", "serve", "--http-port", str(http_port), env=env,
            stdout=asyncio.subprocess.DEVNULL, stderr=log_file)
        try:
            async with aiohttp.ClientSession() as http:
                rest = Rest(f"http://127.0.0.1:{http_port}", http)
                for _ in range(100):
                    try:
                        await rest.get("/health")
                        break
                    except aiohttp.ClientError:
                        await asyncio.sleep(0.1)
                await rest.start_call(loopback_call(callee, "jl\u00e9", "json-stream"))
                await rest.post("/rest-api/call/terminate", {"callId": "jl\u00e9"})
                await rest.wait_status("jl\u00e9", {"FINISH"})
        finally:
            proc.terminate()
            await proc.wait()
    lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    assert all({"time", "level", "logger", "message"} <= set(entry) for entry in lines)
    of_call = [e for e in lines if e.get("call_id") == "jl\u00e9"]
    statuses = [e["message"] for e in of_call]
    assert any("ESTABLISHED" in m for m in statuses) and any("FINISH" in m for m in statuses), statuses
    assert all(e["stream"] == "json-stream" for e in of_call)


async def test_playback_tokens_open_one_stream_until_they_expire(
    server_with: Any, callee: LoopbackCallee
) -> None:
    import time

    from sipstream.api.auth import playback_token

    from .test_webrtc_engine import recvonly_offer

    secret, api_token = "playback-secret-0123456789abcdef", "api-token-0123456789"
    _, rest = await server_with(playback_token_secret=secret, rest_auth_token=api_token)
    rest.http.headers["Authorization"] = f"Bearer {api_token}"
    await rest.start_call(loopback_call(callee, "pt", "pts"))
    offer = await recvonly_offer("audio", "video")

    async def play(token: str | None) -> int:
        headers = {"Content-Type": "application/sdp"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        async with aiohttp.ClientSession() as http, http.post(rest.base_url + "/whep/pts", data=offer,
                                                               headers=headers) as res:
            return res.status


    assert await play(None) == 401
    assert await play(playback_token(secret, "other")) == 401
    assert await play(playback_token("another-secret-0123456789abcdef!", "pts")) == 401
    assert await play(playback_token(secret, "pts", ttl_s=10, now=time.time() - 60)) == 401  # expired
    assert await play(playback_token(secret, "pts")) == 201
    assert await play(playback_token(secret, "*")) == 201
    assert await play(api_token) == 201  # the API token opens everything
    # a playback token is not an API token
    async with aiohttp.ClientSession() as http, http.post(
            rest.base_url + "/rest-api/call/find_all",
            headers={"Authorization": f"Bearer {playback_token(secret, 'pts')}"}) as res:
        assert res.status == 401
