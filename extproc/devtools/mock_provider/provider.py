"""The mock provider's server: it reads the knobs every path shares (status, delay), then
hands the request to its API's module."""

from __future__ import annotations

import asyncio
import hashlib
import ssl
from collections import OrderedDict
from typing import Any

import orjson
from aiohttp import web

from extproc.devtools.mock_provider import anthropic_api, openai_api, responses_api
from extproc.devtools.mock_provider.reading import (
    BODY_HEADERS,
    echo_headers,
    image_data,
    part_types,
)
from extproc.digits import strict_int

_ANTHROPIC_PATHS = ("/messages", "/messages/count_tokens")


def _error(schema: str, status: int, message: str) -> web.Response:
    if schema == "anthropic":
        kinds = {
            400: "invalid_request_error",
            401: "authentication_error",
            404: "not_found_error",
            429: "rate_limit_error",
            529: "overloaded_error",
        }
        payload: dict[str, Any] = {
            "type": "error",
            "error": {"type": kinds.get(status, "api_error"), "message": message},
        }
    else:
        payload = {
            "error": {
                "message": message,
                "type": "server_error" if status >= 500 else "invalid_request_error",
                "param": None,
                "code": None,
            }
        }
    headers = {"retry-after": "1"} if status == 429 else None
    return web.Response(
        status=status, body=orjson.dumps(payload), content_type="application/json", headers=headers
    )


class MockProvider:
    def __init__(self) -> None:
        # Responses API answers kept for GET and DELETE /responses/{id}, as OpenAI keeps
        # them (`store`), the oldest dropped past a thousand.
        self.kept: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.inputs: dict[str, list[Any]] = {}  # each kept answer's conversation
        self.requests = 0
        # Chat and messages answers served in full, by the request's x-mock-tag:
        # [answers, prompt tokens, completion tokens] (GET /mock/stats), so a soak can
        # check the gateway's usage records against what was served.
        self.served: dict[str, list[int]] = {}

    def _count(self, request: web.Request, prompt: int, completion: int) -> None:
        totals = self.served.setdefault(request.headers.get("x-mock-tag", ""), [0, 0, 0])
        totals[0] += 1
        totals[1] += prompt
        totals[2] += completion

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self.dispatch)
        return app

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        response = await self._dispatch(request)
        if not response.prepared and "gzip" in request.headers.get("accept-encoding", ""):
            # As providers do: JSON bodies are compressed for clients that accept it.
            response.enable_compression(web.ContentCoding.gzip)
        return response

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        if path == "/mock/stats":
            return web.json_response(self.served)
        self.requests += 1
        schema = "anthropic" if path.endswith(_ANTHROPIC_PATHS) else "openai"
        delay = strict_int(request.headers.get("x-mock-delay-ms", ""))
        if delay:
            await asyncio.sleep(delay / 1000)
        status = strict_int(request.headers.get("x-mock-status", ""), 999)
        if status is not None and status >= 400:
            response = _error(schema, status, f"mock failure {status}")
            response.headers.update(echo_headers(request))
            return response
        if request.method == "GET" and path.endswith("/models"):
            return web.json_response(
                {
                    "object": "list",
                    "data": [{"id": "mock", "object": "model", "created": 0, "owned_by": "mock"}],
                }
            )
        kept_id = path.rpartition("/responses/")[2]
        if "/responses/" in path and kept_id != "input_tokens":
            return self._kept(request.method, kept_id)
        if request.method != "POST":
            return _error(schema, 405, "method not allowed")
        raw = await request.read()
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return _error(schema, 400, "invalid JSON")
        if not isinstance(body, dict):
            return _error(schema, 400, "body must be an object")
        described = {"x-mock-body-bytes": str(len(raw)), "x-mock-part-types": part_types(body)}
        images = hashlib.sha256()
        for data in image_data(body):
            images.update(data.encode())
            described["x-mock-images-sha256"] = images.hexdigest()
        request[BODY_HEADERS] = described
        cut_after = strict_int(request.headers.get("x-mock-cut-after", ""))
        number, served = self.requests, self._count
        if path.endswith("/chat/completions"):
            return await openai_api.chat(request, body, cut_after, number, served)
        if path.endswith("/responses"):
            given = responses_api.input_items(body.get("input"))
            previous = body.get("previous_response_id")
            if previous is not None:
                # As OpenAI does: the earlier conversation before this input.
                earlier = self.inputs.get(str(previous))
                if earlier is None:
                    return _error("openai", 400, f"Previous response '{previous}' not found.")
                body = {**body, "input": [*earlier, *given]}
            answer = await responses_api.responses(request, body, cut_after, number, served)
            if body.get("store") is not False and isinstance(answer, web.Response):
                self._keep(answer, responses_api.input_items(body.get("input")))
            return answer
        if path.endswith("/responses/input_tokens"):
            return responses_api.input_tokens(request, body)
        if path.endswith("/messages/count_tokens"):
            return anthropic_api.token_count(request, body)
        if path.endswith("/messages"):
            return await anthropic_api.messages(request, body, cut_after, number, served)
        if path.endswith("/embeddings"):
            return openai_api.embeddings(request, body)
        if path.endswith("/completions"):
            return await openai_api.completions(request, body, cut_after, number)
        return _error(schema, 404, f"unknown path {path}")

    def _keep(self, response: web.Response, given: list[Any]) -> None:
        if response.body is None or response.status != 200:
            return
        whole = orjson.loads(response.body)  # type: ignore[arg-type]
        self.kept[whole["id"]] = whole
        self.inputs[whole["id"]] = [*given, *whole["output"]]
        while len(self.kept) > 1000:
            dropped, _ = self.kept.popitem(last=False)
            self.inputs.pop(dropped, None)

    def _kept(self, method: str, response_id: str) -> web.Response:
        whole = self.kept.get(response_id)
        if whole is None:
            return _error("openai", 404, f"No response found with id '{response_id}'.")
        if method == "DELETE":
            del self.kept[response_id]
            self.inputs.pop(response_id, None)
            return web.json_response(
                {"id": response_id, "object": "response.deleted", "deleted": True}
            )
        if method != "GET":
            return _error("openai", 405, "method not allowed")
        return web.json_response(whole)


def run(host: str, port: int, *, cert_file: str | None = None, key_file: str | None = None) -> None:
    context = None
    if cert_file and key_file:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert_file, key_file)
    web.run_app(
        MockProvider().app(), host=host, port=port, ssl_context=context, print=None, access_log=None
    )
