from __future__ import annotations

import pytest

from extproc.dataplane.phases import PhaseOrder


def run(*steps: tuple[str | None, bool, bool]) -> list[bool]:
    """Admit each (kind, end_of_stream, answered) in turn; what was admitted."""
    order = PhaseOrder()
    admitted = []
    for kind, end, answered in steps:
        ok = order.admit(kind)
        admitted.append(ok)
        if ok:
            order.done(end, answered)
    return admitted


@pytest.mark.parametrize(
    "steps",
    [
        # Buffered request, streamed response with trailers.
        [
            ("request_headers", False, False),
            ("request_body", True, False),
            ("response_headers", False, False),
            ("response_body", False, False),
            ("response_body", True, False),
            ("response_trailers", True, False),
        ],
        # A request without a body; a response without one.
        [("request_headers", True, False), ("response_headers", True, False)],
        # Request trailers, and a phase the configuration skipped.
        [
            ("request_headers", False, False),
            ("request_trailers", True, False),
            ("response_body", True, False),
        ],
    ],
)
def test_what_envoy_sends_is_admitted(steps: list[tuple[str, bool, bool]]) -> None:
    assert all(run(*steps))


@pytest.mark.parametrize(
    "steps",
    [
        [("request_body", True, False)],  # no headers first
        [(None, False, False)],  # no phase
        [("request_headers", False, False), ("request_headers", False, False)],
        [("request_headers", True, False), ("request_body", True, False)],  # after the end
        [
            ("request_headers", False, False),
            ("request_body", True, False),
            ("request_body", True, False),
        ],
        [
            ("request_headers", False, False),
            ("response_headers", False, False),
            ("request_body", True, False),
        ],  # backwards
        [("request_headers", False, True), ("request_body", True, False)],  # after an answer
        [
            ("request_headers", False, False),
            ("response_headers", True, False),
            ("response_body", True, False),
        ],
    ],
)
def test_what_envoy_never_sends_is_refused(steps: list[tuple[str | None, bool, bool]]) -> None:
    admitted = run(*steps)
    assert admitted[-1] is False and all(admitted[:-1])


HEADERS_DONE = [("request_headers", True, False), ("response_headers", False, False)]


@pytest.mark.parametrize(
    ("before", "short_way"),
    [
        ([], False),
        ([("request_headers", False, False)], False),
        ([("request_headers", False, False), ("request_body", True, False)], False),
        ([("request_headers", True, False), ("response_headers", True, False)], False),
        (HEADERS_DONE, True),
        ([*HEADERS_DONE, ("response_body", False, False)], True),
        ([*HEADERS_DONE, ("response_body", True, False)], False),
        ([("request_headers", True, False), ("response_headers", False, True)], False),
    ],
)
def test_chunk_is_admit_then_done_for_a_body_message_that_is_not_the_last(
    before: list[tuple[str, bool, bool]], short_way: bool
) -> None:
    """chunk() takes a response body message in the response phases, leaving the order as
    admit("response_body") and done(False, False) would; elsewhere it declines and changes
    nothing (the long way then decides)."""
    short, long = PhaseOrder(), PhaseOrder()
    for kind, end, answered in before:
        for order in (short, long):
            assert order.admit(kind)
            order.done(end, answered)
    state = (short.last, short.ended)
    assert short.chunk() is short_way
    if short_way:
        assert long.admit("response_body")
        long.done(False, False)
        assert (short.last, short.ended) == (long.last, long.ended)
    else:
        assert (short.last, short.ended) == state
