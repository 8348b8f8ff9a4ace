"""Token usage from every response shape, merged into one normalised record.

Providers report usage in different places: an OpenAI JSON body's `usage`, the last
chunk of an OpenAI stream (when `stream_options.include_usage` is set), an Anthropic
`message_start` event (input) followed by `message_delta` events (output, and in newer
API versions updated input and cache counts), each field replacing the previous value,
and the response object of a Responses API answer, or of the event ending its stream.
A `Meter` is fed whatever the response carries and keeps what was reported plus the
output text, so a response without usage, or a stream cut short, can still be counted
with the offline tokenizer and marked as estimated.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import orjson

from extproc import tokens
from extproc.apis import Kind, Schema
from extproc.apis.text import request_texts, response_slots
from extproc.slices import Sliced, finish

FIELDS: Final = (
    "input_tokens",
    "output_tokens",
    "total_tokens",
    "cached_input_tokens",
    "cache_creation_input_tokens",
    "reasoning_tokens",
)
# Chat formats add a few tokens per message around its text (role, separators).
_PER_MESSAGE: Final = 3
_PER_REQUEST: Final = 3


@dataclass(slots=True)
class Usage:
    """Normalised usage. `input_tokens` counts every prompt token, cached or not;
    `cached_input_tokens` and `cache_creation_input_tokens` are parts of it."""

    input_tokens: int
    output_tokens: int
    cached_input_tokens: int
    cache_creation_input_tokens: int
    reasoning_tokens: int
    reported: frozenset[str]
    estimated: frozenset[str]

    def __init__(
        self,
        input_tokens: int = 0,
        output_tokens: int = 0,
        cached_input_tokens: int = 0,
        cache_creation_input_tokens: int = 0,
        reasoning_tokens: int = 0,
        reported: frozenset[str] = frozenset(),
        estimated: frozenset[str] = frozenset(),
    ) -> None:
        self.input_tokens = input_tokens
        self.output_tokens = output_tokens
        self.cached_input_tokens = cached_input_tokens
        self.cache_creation_input_tokens = cache_creation_input_tokens
        self.reasoning_tokens = reasoning_tokens
        self.reported = reported
        self.estimated = estimated

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    @property
    def uncached_input_tokens(self) -> int:
        return max(
            0, self.input_tokens - self.cached_input_tokens - self.cache_creation_input_tokens
        )

    def fields(self) -> dict[str, int]:
        """The counts by name, in FIELDS' order (read as attributes: getattr by name would
        go through the type's lookup for each)."""
        return {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "total_tokens": self.total_tokens,
            "cached_input_tokens": self.cached_input_tokens,
            "cache_creation_input_tokens": self.cache_creation_input_tokens,
            "reasoning_tokens": self.reasoning_tokens,
        }


def _int(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return value


def _counts(
    source: dict[str, Any], names: tuple[tuple[str, str], ...], found: dict[str, int]
) -> None:
    """Each count of `source` named in `names` (its field, the normalised one) into `found`."""
    for field_name, target in names:
        value = _int(source.get(field_name))
        if value is not None:
            found[target] = value


def _details(
    usage: dict[str, Any], key: str, names: tuple[tuple[str, str], ...], found: dict[str, int]
) -> None:
    details = usage.get(key)
    if isinstance(details, dict):
        _counts(details, names, found)


def openai_usage(usage: Any) -> dict[str, int]:
    """Normalised fields of an OpenAI `usage` object (chat, completions, embeddings)."""
    if not isinstance(usage, dict):
        return {}
    found: dict[str, int] = {}
    _counts(
        usage, (("prompt_tokens", "input_tokens"), ("completion_tokens", "output_tokens")), found
    )
    _details(usage, "prompt_tokens_details", (("cached_tokens", "cached_input_tokens"),), found)
    _details(usage, "completion_tokens_details", (("reasoning_tokens", "reasoning_tokens"),), found)
    if "input_tokens" in found and "output_tokens" not in found and "total_tokens" in usage:
        # Embeddings report prompt and total only: there is no output.
        found["output_tokens"] = 0
    return found


def responses_usage(usage: Any) -> dict[str, int]:
    """Normalised fields of a Responses API `usage` object: its `input_tokens` counts the
    tokens read from and written to the prompt cache, as the normalised one does."""
    if not isinstance(usage, dict):
        return {}
    found: dict[str, int] = {}
    _counts(usage, (("input_tokens", "input_tokens"), ("output_tokens", "output_tokens")), found)
    cache = (
        ("cached_tokens", "cached_input_tokens"),
        ("cache_write_tokens", "cache_creation_input_tokens"),
    )
    _details(usage, "input_tokens_details", cache, found)
    _details(usage, "output_tokens_details", (("reasoning_tokens", "reasoning_tokens"),), found)
    return found


_ANTHROPIC_FIELDS: Final = (
    "input_tokens",
    "output_tokens",
    "cache_read_input_tokens",
    "cache_creation_input_tokens",
)


def anthropic_fields(usage: Any, into: dict[str, int]) -> None:
    """Merge an Anthropic `usage` object into raw fields: each present field replaces the
    earlier value (message_delta counts are cumulative)."""
    if not isinstance(usage, dict):
        return
    for name in _ANTHROPIC_FIELDS:
        value = _int(usage.get(name))
        if value is not None:
            into[name] = value


def anthropic_usage(raw: dict[str, int]) -> dict[str, int]:
    """Normalised fields from merged Anthropic fields: Anthropic's `input_tokens` excludes
    the tokens read from or written to its prompt cache, the normalised one includes them."""
    found: dict[str, int] = {}
    cached = raw.get("cache_read_input_tokens", 0)
    created = raw.get("cache_creation_input_tokens", 0)
    if "input_tokens" in raw:
        found["input_tokens"] = raw["input_tokens"] + cached + created
    if "cache_read_input_tokens" in raw:
        found["cached_input_tokens"] = cached
    if "cache_creation_input_tokens" in raw:
        found["cache_creation_input_tokens"] = created
    if "output_tokens" in raw:
        found["output_tokens"] = raw["output_tokens"]
    return found


def _token_ids(kind: Kind, body: dict[str, Any]) -> int | None:
    """The token ids of pre-tokenised input (a list of ids, or of lists of ids), counted
    without a look at each: validation typed every element as the first."""
    if kind is Kind.EMBEDDINGS or kind is Kind.COMPLETIONS:
        value = body.get("input" if kind is Kind.EMBEDDINGS else "prompt")
        if isinstance(value, list) and value:
            first = type(value[0])
            if first is int:
                return len(value)
            if first is list:
                return sum(map(len, value))
    return None


def _prompt_texts(kind: Kind, body: dict[str, Any]) -> tuple[list[str], int]:
    """The prompt's texts, tool definitions as their JSON, and the tokens chat formats add."""
    texts = request_texts(kind, body)
    added = 0
    if kind is Kind.CHAT or kind is Kind.MESSAGES:
        messages = body.get("messages")
        added = _PER_REQUEST + _PER_MESSAGE * (len(messages) if isinstance(messages, list) else 0)
        texts += [orjson.dumps(tool).decode() for tool in body.get("tools") or ()]
    elif kind is Kind.RESPONSES:
        # The input items are the messages (a string input is one), and the instructions
        # a system message before them.
        items = body.get("input")
        turns = len(items) if isinstance(items, list) else int(isinstance(items, str))
        turns += isinstance(body.get("instructions"), str)
        added = _PER_REQUEST + _PER_MESSAGE * turns
        texts += [orjson.dumps(tool).decode() for tool in body.get("tools") or ()]
    return texts, added


def prompt_estimate(kind: Kind, body: dict[str, Any], scope: str | None = None) -> int:
    """Prompt tokens of a request body, counted offline (an estimate of the provider's;
    past tokens.measure()'s bounds, estimated from the part counted)."""
    return finish(prompt_estimating(kind, body, scope))


def prompt_estimating(
    kind: Kind, body: dict[str, Any], scope: str | None = None, slices: bool = False
) -> Sliced[int]:
    """prompt_estimate() as sliced work (tokens.estimating()'s pauses, with `slices`)."""
    ids = _token_ids(kind, body)
    if ids is not None:
        return ids
    texts, added = _prompt_texts(kind, body)
    return (yield from tokens.estimating(texts, scope, slices)) + added


def prompt_bound(
    kind: Kind, body: dict[str, Any], scope: str | None = None, read: int | None = None
) -> int:
    """At least the prompt tokens prompt_estimate() would count, at a bounded cost: the
    exact count up to tokens.measure()'s bounds (`read`: bytes newly tokenized at most), a
    text's bytes past them."""
    return finish(prompt_bounding(kind, body, scope, read))


def prompt_bounding(
    kind: Kind,
    body: dict[str, Any],
    scope: str | None = None,
    read: int | None = None,
    slices: bool = False,
    short: bool = True,
) -> Sliced[int]:
    """prompt_bound() as sliced work (tokens.measuring()'s pauses, with `slices`); with
    `short` False, texts too short to be kept count their bytes."""
    ids = _token_ids(kind, body)
    if ids is not None:
        return ids
    texts, added = _prompt_texts(kind, body)
    found = yield from tokens.measuring(texts, scope=scope, read=read, slices=slices, short=short)
    return found.bound + added


# Where a streamed delta carries output text (counted when usage is missing).
_DELTA_TEXTS: Final = frozenset(("content", "reasoning_content", "refusal"))
_BLOCK_TEXTS: Final = frozenset(("text", "partial_json", "thinking"))
# Responses API events whose `delta` is output text (refusals, tool arguments, reasoning).
_RESPONSES_DELTAS: Final = frozenset(
    (
        "response.output_text.delta",
        "response.refusal.delta",
        "response.function_call_arguments.delta",
        "response.reasoning_summary_text.delta",
        "response.reasoning_text.delta",
    )
)
# The events ending a Responses API stream; each carries the whole response object.
_RESPONSES_ENDS: Final = frozenset(("response.completed", "response.incomplete", "response.failed"))
# A Responses API answer's statuses for an answer that ended (failed: ended without one).
_RESPONSES_DONE: Final = ("completed", "incomplete")  # (a tuple: any JSON value may be looked up)


@dataclass(slots=True)
class Meter:
    """Collects usage for one response, in the provider's schema (the client's API)."""

    api: Schema
    kind: Kind
    reported: dict[str, int]
    _anthropic: dict[str, int]
    # Output text seen in a stream, counted only when the provider reports no output usage.
    texts: list[str]
    # The whole JSON body, kept to count its output text only when usage is missing.
    body: dict[str, Any] | None
    # The stream's last event arrived (message_stop / [DONE] / response.completed, or
    # another event ending a Responses stream); at the stream's end, the
    # reader also sets it for an answer complete without one (reader.StreamReader).
    complete: bool
    # The stream carried the gateway-requested usage-only chunk.
    saw_usage_chunk: bool
    # OpenAI streams: the choices seen, by index, and those a finish_reason ended.
    choices: set[Any]
    finished: set[Any]
    # Anthropic streams: a message_delta carried the stop_reason.
    stopped: bool
    # Responses API streams: the sequence number after the last event's, and the response
    # as `response.created` gave it (to end a cut stream as the API numbers and names it).
    sequence: int
    created: dict[str, Any] | None

    def __init__(self, api: Schema, kind: Kind) -> None:
        self.api = api
        self.kind = kind
        self.reported = {}
        self._anthropic = {}
        self.texts = []
        self.body = None
        self.complete = False
        self.saw_usage_chunk = False
        self.choices = set()
        self.finished = set()
        self.stopped = False
        self.sequence = 0
        self.created = None

    def json(self, body: dict[str, Any]) -> None:
        self.body = body
        self.complete = True
        if self.api is Schema.ANTHROPIC:
            anthropic_fields(body.get("usage"), self._anthropic)
            self.reported = anthropic_usage(self._anthropic)
        elif self.api is Schema.OPENAI_RESPONSES:
            # A queued or in-progress response (a background one) is no answer yet.
            self.complete = body.get("status") in _RESPONSES_DONE
            self.reported = responses_usage(body.get("usage"))
        else:
            self.reported = openai_usage(body.get("usage"))

    def event_reader(self) -> Callable[[dict[str, Any]], None]:
        """The method reading one parsed stream event of this meter's API (chosen once per
        stream: the reader calls it for every event)."""
        if self.api is Schema.ANTHROPIC:
            return self.anthropic_event
        if self.api is Schema.OPENAI_RESPONSES:
            return self.responses_event
        return self.openai_chunk

    def openai_chunk(self, chunk: dict[str, Any]) -> None:
        usage = chunk.get("usage")
        if usage is not None:
            self.reported = openai_usage(usage)
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict):
                continue
            index = choice.get("index", 0)
            try:
                self.choices.add(index)
                if choice.get("finish_reason") is not None:
                    self.finished.add(index)
            except TypeError:
                pass  # an index that is no JSON scalar: no choice of the API's
            if self.kind is Kind.COMPLETIONS:
                if isinstance(text := choice.get("text"), str) and text:
                    self.texts.append(text)
                continue
            delta = choice.get("delta")
            if not isinstance(delta, dict):
                continue
            # A delta holds a key or two: walking it beats looking each text key up.
            for key, value in delta.items():
                if key in _DELTA_TEXTS:
                    if isinstance(value, str) and value:
                        self.texts.append(value)
                elif key == "tool_calls":
                    self._tool_calls(value)

    def _tool_calls(self, calls: Any) -> None:
        for call in calls or ():
            function = call.get("function") if isinstance(call, dict) else None
            if isinstance(function, dict):
                for key in ("name", "arguments"):
                    if isinstance(text := function.get(key), str) and text:
                        self.texts.append(text)

    def anthropic_event(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "content_block_delta":
            delta = event.get("delta")
            if isinstance(delta, dict):
                for key, value in delta.items():
                    if key in _BLOCK_TEXTS and isinstance(value, str) and value:
                        self.texts.append(value)
        elif kind == "message_start":
            message = event.get("message")
            if isinstance(message, dict):
                usage = message.get("usage")
                anthropic_fields(usage, self._anthropic)
                # message_start's output count is a placeholder until message_delta.
                self._anthropic.pop("output_tokens", None)
                self.reported = anthropic_usage(self._anthropic)
        elif kind == "message_delta":
            anthropic_fields(event.get("usage"), self._anthropic)
            self.reported = anthropic_usage(self._anthropic)
            delta = event.get("delta")
            if isinstance(delta, dict) and delta.get("stop_reason") is not None:
                self.stopped = True
        elif kind == "message_stop":
            self.complete = True

    def responses_event(self, event: dict[str, Any]) -> None:
        """A Responses API event: text deltas, nearly every event, are only kept; usage and
        the answer's end come with the event ending the stream."""
        kind = event.get("type")
        sequence = event.get("sequence_number")
        if type(sequence) is int:
            self.sequence = sequence + 1
        if type(kind) is not str:
            return  # no event of the API's
        if kind in _RESPONSES_DELTAS:
            if isinstance(text := event.get("delta"), str) and text:
                self.texts.append(text)
        elif kind in _RESPONSES_ENDS:
            response = event.get("response")
            if isinstance(response, dict) and (usage := response.get("usage")) is not None:
                self.reported = responses_usage(usage)
            self.stopped = self.complete = True
        elif kind == "response.created" and self.created is None:
            response = event.get("response")
            self.created = response if isinstance(response, dict) else {}

    def answered(self) -> bool:
        """Whether the answer itself ended, its stream's last event or not: every choice
        seen has its finish_reason (OpenAI), the stop_reason arrived (Anthropic). A
        Responses API answer ends with its stream's last event only: that event carries
        the whole response, which no one can write for a provider that never sent it."""
        if self.api is Schema.ANTHROPIC or self.api is Schema.OPENAI_RESPONSES:
            return self.stopped
        return bool(self.choices) and self.choices <= self.finished

    def _output_estimate(self) -> int:
        if self.body is not None:
            return tokens.count(s.text for s in response_slots(self.api, self.kind, self.body))
        return tokens.count(self.texts)

    def usage(self, prompt: int | None) -> Usage:
        """The record: reported fields as reported, the rest estimated. `prompt` is the
        request's estimated prompt tokens (None when the request was not read)."""
        reported = dict(self.reported)
        estimated: set[str] = set()
        if "input_tokens" not in reported:
            reported["input_tokens"] = prompt or 0
            estimated.add("input_tokens")
        if "output_tokens" not in reported:
            reported["output_tokens"] = (
                0 if self.kind is Kind.EMBEDDINGS else self._output_estimate()
            )
            estimated.add("output_tokens")
        known = frozenset(self.reported)
        if known & {"input_tokens", "output_tokens"} == {"input_tokens", "output_tokens"}:
            known |= {"total_tokens"}
        else:
            estimated.add("total_tokens")
        return Usage(
            input_tokens=reported["input_tokens"],
            output_tokens=reported["output_tokens"],
            cached_input_tokens=reported.get("cached_input_tokens", 0),
            cache_creation_input_tokens=reported.get("cache_creation_input_tokens", 0),
            reasoning_tokens=reported.get("reasoning_tokens", 0),
            reported=known,
            estimated=frozenset(estimated),
        )
