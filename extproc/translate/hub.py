"""The hub every API translates through: one internal form for requests, responses, stream
events and usage (errors are `ApiError`, the gateway's own), and what each API's module
provides to map its own to it (`Codec`).

A client's body is read into this form by the client API's codec and written out by the
backend API's codec; the answer goes back the other way. N APIs need N codecs, not a
translator per pair. A reader keeps what the form has types for, and typed extras where
one API says more than others (reasoning with its signatures, cache counts in usage): a
writer whose API has no place for them leaves them out, as the provider would. A reader
refuses what the form cannot hold (a block, part or tool type it has no type for), and a
writer what its API cannot place (an image in an OpenAI tool result), each with a 400
naming where the client wrote it: every part but text keeps its path in the client's body.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from enum import StrEnum
from typing import Any, Final, Literal, Protocol

import orjson

from extproc.apis import ApiError, Kind, Schema

# -- requests and responses -------------------------------------------------------------


@dataclass(slots=True)
class Text:
    text: str  # text has a place in every turn of every API: no path kept


@dataclass(slots=True)
class Image:
    """An image by URL, or (`data` not None) as base64 data with its media type."""

    url: str = ""
    media_type: str = ""
    data: str | None = None
    path: str = ""  # where the client wrote it ("messages[2].content[0]"): a refusal's param


@dataclass(slots=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # JSON text, as OpenAI writes it and every API streams it
    path: str = ""


@dataclass(slots=True)
class Reasoning:
    """The model's own reasoning, kept for the API it came from: Anthropic's thinking
    (`signature`) and redacted thinking (`redacted`), Gemini's thought parts, a Responses
    reasoning item. An API with no place for it leaves it out."""

    text: str = ""
    signature: str = ""
    redacted: str = ""
    path: str = ""


@dataclass(slots=True)
class ToolResult:
    call_id: str
    parts: Sequence[Text | Image]
    is_error: bool = False
    path: str = ""


Part = Text | Image | ToolCall | ToolResult | Reasoning
# A system turn holds text; tool results are a user turn's parts, as in most APIs.
Role = Literal["system", "user", "assistant"]


@dataclass(slots=True)
class Message:
    role: Role
    parts: Sequence[Part]


@dataclass(slots=True)
class Tool:
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None  # a JSON Schema; None: takes no arguments


Mode = Literal["auto", "none", "required", "tool"]


@dataclass(slots=True)
class ToolChoice:
    mode: Mode
    name: str = ""  # the tool `tool` names


@dataclass(slots=True)
class JsonOutput:
    """An answer asked for as JSON: fitting `schema` (a JSON Schema), or any JSON object
    (`schema` None). `path` is the client's field, for a refusal."""

    schema: dict[str, Any] | None = None
    name: str | None = None
    description: str | None = None
    strict: bool | None = None
    path: str = ""


@dataclass(slots=True)
class Request:
    messages: list[Message]
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: list[str] | None = None
    stream: bool = False
    tools: list[Tool] = field(default_factory=list)
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    user: str | None = None
    choices: int | None = None  # answers asked for (OpenAI's `n`)
    json_output: JsonOutput | None = None
    # The client's fields the hub has no place for: dropped, and named in a debug log line.
    dropped: list[str] = field(default_factory=list)


class Stop(StrEnum):
    """Why an answer ended, in words every API's reasons map onto."""

    END = "end"
    STOP_SEQUENCE = "stop_sequence"
    MAX_TOKENS = "max_tokens"
    TOOL_USE = "tool_use"
    REFUSAL = "refusal"  # the model declined, or a content filter stopped it
    PAUSE = "pause"  # a long turn paused, to be continued by the client
    CONTEXT_WINDOW = "context_window"


@dataclass(slots=True)
class Usage:
    """Token counts as an answer reports them; None: not reported (yet). `input` leaves out
    the prompt tokens read from or written to the provider's cache."""

    input: int | None = None
    cache_read: int | None = None
    cache_write: int | None = None
    output: int | None = None

    def update(self, later: Usage) -> None:
        """Take the counts `later` reports (a stream reports some at its start, the rest
        at its end)."""
        for name in _USAGE_FIELDS:
            value = getattr(later, name)
            if value is not None:
                setattr(self, name, value)


_USAGE_FIELDS: Final = tuple(f.name for f in fields(Usage))


@dataclass(slots=True)
class Response:
    id: str
    model: str
    parts: Sequence[Part]
    stop: Stop
    usage: Usage


# -- stream events ----------------------------------------------------------------------


@dataclass(slots=True)
class Start:
    id: str
    model: str


@dataclass(slots=True)
class TextDelta:
    text: str


@dataclass(slots=True)
class ToolCallDelta:
    """A piece of the tool call numbered `index` in the answer (0, 1, ...): its id and name
    when this is where it starts (None otherwise), and more of its arguments' JSON text."""

    index: int
    id: str | None
    name: str | None
    arguments: str


@dataclass(slots=True)
class ReasoningDelta:
    text: str = ""
    signature: str = ""
    redacted: str = ""  # a redacted block, whole


@dataclass(slots=True)
class Finished:
    stop: Stop


@dataclass(slots=True)
class StreamError:
    kind: str | None
    message: str | None


@dataclass(slots=True)
class End:
    """The backend's stream reached its last event."""


Event = Start | TextDelta | ToolCallDelta | ReasoningDelta | Usage | Finished | StreamError | End
END: Final = End()
# What an encoder writes: an SSE event's name and its JSON payload, or its data as it is.
Out = tuple[str | None, dict[str, Any] | str]


# -- what an API's module provides -----------------------------------------------------


class StreamDecoder(Protocol):
    """A backend's stream events in, hub events out."""

    def text(self, payload: Any) -> str | None:
        """The text of a plain text delta, nearly every event, when reading it changes
        nothing else; None for any other event (events() reads it)."""

    def events(self, payload: Any) -> list[Event]:
        """Hub events for one of the backend's event payloads (parsed JSON, or the
        event's data as text when it is not JSON)."""


class StreamEncoder(Protocol):
    """Hub events in, the client's stream events out."""

    # The whole answer as the stream's last event carried it, encoded when written (None:
    # not yet, or the API's stream carries no whole answer).
    answer: bytes | None

    def text(self, text: str) -> bytes | None:
        """The encoded event of one text delta, when no other event must come first;
        None otherwise (events() writes it)."""

    def events(self, events: list[Event]) -> list[Out]: ...


class Codec(Protocol):
    """One API's mapping to and from the hub; each API's module is one."""

    SCHEMA: Schema
    KIND: Kind  # the endpoint kind its translated requests go to
    SUFFIX: str  # that endpoint, below a backend's base path
    # Headers its clients send that mean nothing to another API's backend.
    PROTOCOL_HEADERS: tuple[str, ...]
    # Its token count endpoint (None: it has none) and the request fields that takes.
    COUNT_SUFFIX: str | None
    COUNT_FIELDS: frozenset[str]

    def read_request(self, body: dict[str, Any]) -> Request: ...
    def write_request(
        self, request: Request, model: str, default_max_tokens: int
    ) -> dict[str, Any]: ...
    def read_response(self, body: dict[str, Any]) -> Response: ...
    def write_response(self, response: Response) -> dict[str, Any]: ...
    def read_error(self, status: int, raw: bytes) -> ApiError: ...
    def client_status(self, status: int) -> int:
        """The status its clients get for a provider's error status."""

    def write_error(self, error: ApiError) -> bytes: ...
    def decoder(self) -> StreamDecoder: ...
    def encoder(self, include_usage: bool) -> StreamEncoder: ...
    def read_count(self, body: dict[str, Any]) -> int | None: ...
    def write_count(self, tokens: int) -> dict[str, Any]: ...


# -- refusals and reading provider data ------------------------------------------------


class Untranslatable(Exception):
    """The request asks for something the target API cannot do: a 400 for the client."""

    def __init__(self, error: ApiError) -> None:
        super().__init__(error.message)
        self.error = error


def invalid(path: str, problem: str) -> Untranslatable:
    return Untranslatable(
        ApiError(400, f"Invalid '{path}': {problem}.", "invalid_value", path.split("[")[0])
    )


def unsupported(path: str, problem: str) -> Untranslatable:
    """A value the client's API (or a compatible server) takes that the target API cannot
    express: validation lets it pass, for a backend of the client's own API to answer."""
    return Untranslatable(
        ApiError(400, f"Unsupported value for '{path}': {problem}.", "unsupported_value", path)
    )


def one_choice(request: Request) -> None:
    """Refuse `n` > 1 for a backend whose API answers one choice per request."""
    if request.choices is not None and request.choices != 1:
        raise Untranslatable(
            ApiError(
                400,
                "This model's backend returns one choice per request; 'n' must be 1.",
                "unsupported_parameter",
                "n",
            )
        )


def misplaced(part: Image | ToolCall | ToolResult | Reasoning, problem: str) -> Untranslatable:
    """A part the target API has no place for where the client put it."""
    return unsupported(f"{part.path}.type", problem)


def obj(value: Any) -> dict[str, Any]:
    """A JSON object from provider data, or an empty one for anything else."""
    return value if isinstance(value, dict) else {}


def number(body: dict[str, Any], key: str) -> float | None:
    """An optional number field; anything else is refused (the request's validation refuses
    it first when the service translates)."""
    value = body.get(key)
    if value is None or (isinstance(value, int | float) and not isinstance(value, bool)):
        return value
    raise invalid(key, "must be a number")


def integer(body: dict[str, Any], key: str) -> int | None:
    """An optional whole-number field; anything else is refused, as `number` does."""
    value = body.get(key)
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    raise invalid(key, "must be an integer")


def count(value: Any) -> int:
    """A token count from provider data; 0 for anything that is not a whole number."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def counted(usage: dict[str, Any], key: str) -> int | None:
    """A count the usage object reports (garbage counts 0), None when it has no such key."""
    return count(usage[key]) if key in usage else None


def arguments(value: Any) -> str:
    """Tool-call arguments as JSON text; some compatible servers send an object."""
    if isinstance(value, str):
        return value
    return orjson.dumps(value).decode() if isinstance(value, dict) else ""


def string(value: Any) -> str:
    return value if isinstance(value, str) else ""


def texts(content: Any, path: str) -> list[Text]:
    """A string, or an array of text parts (OpenAI) or blocks (Anthropic), where the hub
    holds only text (a system prompt)."""
    if content is None:
        return []
    if isinstance(content, str):
        return [Text(content)]
    if not isinstance(content, list):
        raise invalid(path, "must be a string or an array of text parts")
    out = []
    for index, part in enumerate(content):
        if not isinstance(part, dict) or part.get("type") != "text":
            raise unsupported(f"{path}[{index}].type", "only text can be translated here")
        out.append(Text(str(part.get("text", ""))))
    return out


def joined(parts: Sequence[Part]) -> str:
    """The text parts' text, as one string (a system prompt, a tool result)."""
    return "\n\n".join(part.text for part in parts if isinstance(part, Text))


_DATA_URL: Final = re.compile(r"^data:([\w.+-]+/[\w.+-]+);base64,(.*)$", re.DOTALL)


def image_of_url(url: str, path: str) -> Image:
    """An image from a URL, a `data:` URL read as its media type and data."""
    match = _DATA_URL.match(url)
    if match is None:
        return Image(url=url, path=path)
    return Image(media_type=match.group(1), data=match.group(2), path=path)


def image_url(image: Image) -> str:
    """An image as a URL: its own, or a `data:` URL of its data."""
    return image.url if image.data is None else f"data:{image.media_type};base64,{image.data}"


def function_tool(spec: dict[str, Any], path: str) -> Tool:
    """A function tool as both OpenAI APIs spell it: name, description, parameters."""
    if not isinstance(spec.get("name"), str):
        raise invalid(f"{path}.name", "is required")
    parameters, description = spec.get("parameters"), spec.get("description")
    return Tool(
        spec["name"],
        description if isinstance(description, str) else None,
        parameters if isinstance(parameters, dict) else None,
    )


def json_schema(spec: dict[str, Any], path: str) -> JsonOutput:
    """A JSON Schema answer as both OpenAI APIs spell it: name, schema, description, strict."""
    schema, name = spec.get("schema"), spec.get("name")
    description, strict = spec.get("description"), spec.get("strict")
    return JsonOutput(
        schema if isinstance(schema, dict) else {},
        name if isinstance(name, str) else None,
        description if isinstance(description, str) else None,
        strict if isinstance(strict, bool) else None,
        path,
    )


def json_schema_spec(output: JsonOutput, schema: dict[str, Any]) -> dict[str, Any]:
    """json_schema()'s fields written back; OpenAI requires a name, and an API without one
    (Anthropic's) gets a neutral one."""
    spec: dict[str, Any] = {"name": output.name or "response", "schema": schema}
    if output.description is not None:
        spec["description"] = output.description
    if output.strict is not None:
        spec["strict"] = output.strict
    return spec


def provider_error(status: int, raw: bytes) -> ApiError:
    """A provider's error body, read for its message and code: both APIs, and most
    OpenAI-compatible servers, put them under `error`."""
    message = "The provider returned an error."
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        message = error["message"]
    elif isinstance(error, str):
        message = error
    code = (
        str(error.get("code") or error.get("type") or "upstream_error")
        if isinstance(error, dict)
        else "upstream_error"
    )
    return ApiError(status, message, code)
