"""`python bench/interpreted.py`: the Python functions a 1 KB JSON request still runs
interpreted, per request, when the request path is compiled.

Compiled code calls an interpreted function as any C extension does: a frame, its
arguments boxed, the function's body run by the interpreter. py-spy shows compiled
functions as their interpreted caller and cannot tell them apart; a profile hook can, as it
sees interpreted frames only. This feeds one connection of the service the frames of
REQUESTS requests (bench/service_cpu.py's, the demo policy and accounting) and counts each
interpreted function called, by file and name: the package's own, a dataclass's generated
`__init__` (file "<string>"), and the libraries'. Figures are printed, not asserted.
"""

from __future__ import annotations

import asyncio
import sys
from collections import Counter
from pathlib import Path
from types import CodeType, FrameType

OWN = Path(__file__).resolve().parent.parent
sys.path[0:0] = [str(OWN), str(OWN / "bench")]

import uvloop  # noqa: E402

from bench import service_cpu  # noqa: E402
from bench.exchange import OPENAI_JSON  # noqa: E402
from extproc import compiled  # noqa: E402

REQUESTS = 160


def _where(code: CodeType) -> str:
    path = code.co_filename
    for root in (str(OWN) + "/", "site-packages/", "python3.11/"):
        if root in path:
            return path.split(root, 1)[1]
    return path


def _name(frame: FrameType) -> str:
    """The function's name; for a method the dataclasses or namedtuple module generated
    (its file is "<string>"), its class's module and name."""
    code = frame.f_code
    if code.co_filename != "<string>":
        return code.co_qualname
    owner = frame.f_locals.get("self")
    cls = type(owner) if owner is not None else frame.f_locals.get("_cls")
    if not isinstance(cls, type):
        return code.co_qualname
    return f"{cls.__module__}.{cls.__qualname__}.{code.co_name}"


async def _counted(requests: int) -> Counter[tuple[str, str]]:
    server = service_cpu.service()
    steps = service_cpu.messages("gpt", OPENAI_JSON)
    await service_cpu.run(server, service_cpu.reads_of(service_cpu.STREAMS, steps))  # warm
    reads = service_cpu.reads_of(requests, steps)
    calls: Counter[tuple[str, str]] = Counter()

    def hook(frame: FrameType, event: str, _: object) -> None:
        if event == "call":
            calls[_where(frame.f_code), _name(frame)] += 1

    sys.setprofile(hook)
    try:
        await service_cpu.run(server, reads)
    finally:
        sys.setprofile(None)
    # The harness's own frames: its coroutine, the loop's turns and the dropped writes.
    for key in list(calls):
        if key[0].startswith("bench/") or key[0].startswith("asyncio/"):
            del calls[key]
    return calls


def interpreted_calls(requests: int = REQUESTS) -> Counter[tuple[str, str]]:
    """Calls of interpreted functions over `requests` requests, by (file, name)."""
    return asyncio.run(_counted(requests))


def main() -> None:
    service_cpu.quiet_logs()
    calls = uvloop.run(_counted(REQUESTS))
    print(f"code: {compiled.STATE}")
    total = sum(calls.values()) / REQUESTS
    print(f"{total:.1f} interpreted calls per 1 KB request; by function:")
    for (path, name), count in calls.most_common():
        print(f"  {count / REQUESTS:6.2f}  {path}:{name}")


if __name__ == "__main__":
    main()
