"""The REST API's contract (SPEC.md §2): codes, JSON errors, CORS, WCS
conventions — exercised over real HTTP against an in-process server."""

from __future__ import annotations

from typing import Any

import aiohttp

from .conftest import Rest, loopback_call


async def test_malformed_json_is_400_with_json_error(rest: Rest) -> None:
    code, body = await rest.post("/rest-api/call/startup", raw=b'{"callee": ')
    assert code == 400
    assert "malformed JSON" in body["error"]


async def test_body_that_is_not_an_object_is_400(rest: Rest) -> None:
    code, body = await rest.post("/rest-api/call/startup", raw=b"[1, 2]")
    assert code == 400 and "JSON object" in body["error"]


async def test_missing_callee_or_to_stream_is_400(rest: Rest, callee) -> None:
    for field in ("callee", "toStream", "sipLogin", "sipDomain"):
        body = loopback_call(callee, "c1", "s1")
        del body[field]
        code, answer = await rest.post("/rest-api/call/startup", body)
        assert code == 400, field
        assert field in answer["error"]


async def test_bad_boolean_and_port_are_400(rest: Rest, callee) -> None:
    code, answer = await rest.post("/rest-api/call/startup", loopback_call(callee, "c1", "s1", hasAudio="maybe"))
    assert code == 400 and "hasAudio" in answer["error"]
    code, answer = await rest.post("/rest-api/call/startup", loopback_call(callee, "c1", "s1", sipPort="70000"))
    assert code == 400 and "sipPort" in answer["error"]


async def test_unknown_call_id_is_404_for_find_and_terminate(rest: Rest) -> None:
    code, body = await rest.post("/rest-api/call/find", {"callId": "nope"})
    assert code == 404 and body["error"]
    code, body = await rest.post("/rest-api/call/terminate", {"callId": "nope"})
    assert code == 404 and body["error"]
    code, body = await rest.post("/rest-api/stream/find", {"name": "nope"})
    assert code == 404


async def test_find_all_accepts_get_and_answers_404_when_empty(rest: Rest) -> None:
    for path in ("/rest-api/call/find_all", "/rest-api/stream/find_all"):
        async with rest.http.get(rest.base_url + path) as res:
            assert res.status == 404
            assert (await res.json())["error"]
            assert "POST" in res.headers["Access-Control-Allow-Methods"]


async def test_cors_preflight_is_answered_for_listed_origins(server_with: Any) -> None:
    for origins, allowed in (("http://example.test", "http://example.test"), ("*", "*")):
        _, rest = await server_with(cors_origins=origins)
        async with rest.http.options(rest.base_url + "/rest-api/call/startup", headers={
            "Origin": "http://example.test", "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        }) as res:
            assert res.status in (200, 204)
            assert res.headers["Access-Control-Allow-Origin"] == allowed
            assert "POST" in res.headers["Access-Control-Allow-Methods"]
            assert "Access-Control-Allow-Credentials" not in res.headers


async def test_duplicate_call_id_and_stream_are_409_and_server_keeps_serving(rest: Rest, callee) -> None:
    code, body = await rest.post("/rest-api/call/startup", loopback_call(callee, "dup", "dup-stream"))
    assert code == 200 and body is None  # WCS: void answer, empty body
    code, body = await rest.post("/rest-api/call/startup", loopback_call(callee, "dup", "other-stream"))
    assert code == 409 and "callId" in body["error"]
    code, body = await rest.post("/rest-api/call/startup", loopback_call(callee, "dup2", "dup-stream"))
    assert code == 409 and "stream" in body["error"]
    await rest.wait_status("dup", {"ESTABLISHED"})
    code, calls = await rest.post("/rest-api/call/find_all")
    assert code == 200 and [c["callId"] for c in calls] == ["dup"]
    code, _ = await rest.post("/rest-api/call/terminate", {"callId": "dup"})
    assert code == 200


async def test_sip_password_is_never_returned(rest: Rest, callee) -> None:
    body = loopback_call(callee, "pw", "pw-stream", sipPassword="very-secret-pw")
    assert (await rest.post("/rest-api/call/startup", body))[0] == 200
    call = await rest.wait_status("pw", {"ESTABLISHED"})
    assert "very-secret-pw" not in repr(call)
    async with rest.http.get(rest.base_url + "/rest-api/call/find_all") as res:
        assert "very-secret-pw" not in await res.text()
    await rest.post("/rest-api/call/terminate", {"callId": "pw"})


async def test_unknown_endpoint_is_404_json(rest: Rest) -> None:
    code, body = await rest.post("/rest-api/nothing/here", {})
    assert code == 404 and "error" in body


async def test_whep_for_unknown_stream_is_404(rest: Rest) -> None:
    async with rest.http.post(rest.base_url + "/whep/none", data="v=0\r\n",
                              headers={"Content-Type": "application/sdp"}) as res:
        assert res.status == 404


async def test_player_page_is_served(rest: Rest) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(rest.base_url + "/player?stream=x") as res:
            assert res.status == 200
            text = await res.text()
            assert "/whep/" in text and "sipstreamStats" in text
