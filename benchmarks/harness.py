"""What every case returns, and paired timing of our code against its anchor.

Timing on a noisy 2-core machine: absolute figures drift by tens of percent between runs, ratios much
less when both sides are timed in the same process, round after round. So :func:`compare` interleaves
the two sides (alternating which goes first), and reports the median of the per-round ratios beside
the median time per call of each side.

The clock is the calling thread's CPU time (``time.thread_time``) unless a case asks for another: time
the thread spends descheduled because other processes want the 2 cores is not the cost of a call.
Cases where waiting is what they look for (P6: does an unreachable exporter block the caller?) pass
``clock=time.perf_counter``.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import statistics
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from time import perf_counter, thread_time

#: Rounds per case in a full run; ``--quick`` runs 2.
ROUNDS = 15
QUICK_ROUNDS = 2
Clock = Callable[[], float]
#: The default clock: CPU time of the calling thread.
CPU: Clock = thread_time
WALL: Clock = perf_counter
#: The target of an informational row: a figure shown beside the others with no verdict ("info", target "-"),
#: such as P1 against a bare span (the comparison P1 used to make) or a peer SDK that no target is set on.
INFO = "-"


@dataclass(frozen=True)
class Result:
    """One line of the table: our figure, the anchor's, and whether the target is met."""

    case: str  # short id: "P1", "P2 async", "import"
    what: str  # one line: what is measured and against what
    ours: float  # seconds per operation when unit == "s", else a quantity in ``unit``
    anchor: float | None  # the anchor's figure in the same unit; None for absolute targets
    target: str  # "<= 1.15" (a ratio), or an absolute goal such as "<= 20 MB"
    passed: bool
    rounds: int
    unit: str = "s"
    ratio: float | None = None
    note: str = ""

    @property
    def info(self) -> bool:
        """An informational row: no target, never a MISS."""
        return self.target == INFO

    @property
    def verdict(self) -> str:
        return "info" if self.info else "PASS" if self.passed else "MISS"


@dataclass(frozen=True)
class Comparison:
    ours: float  # median seconds per call
    anchor: float
    ratio: float  # median of the per-round ratios ours / anchor
    rounds: int
    ratios: tuple[float, ...] = ()  # the per-round ratios, for a case that pools rounds of several processes


def ratio_result(case: str, what: str, c: Comparison, limit: float, note: str = "") -> Result:
    """A Result for a ratio target ``ours / anchor <= limit``."""
    return Result(
        case=case, what=what, ours=c.ours, anchor=c.anchor, target=f"<= {limit:g}",
        passed=c.ratio <= limit, rounds=c.rounds, ratio=c.ratio, note=note,
    )


def info_result(case: str, what: str, c: Comparison, note: str = "") -> Result:
    """A Result shown for information: the ratio ``ours / anchor`` with no target."""
    return Result(
        case=case, what=what, ours=c.ours, anchor=c.anchor, target=INFO, passed=True, rounds=c.rounds,
        ratio=c.ratio, note=note,
    )


def rounds_for(quick: bool) -> int:
    return QUICK_ROUNDS if quick else ROUNDS


def _time_calls(func: Callable[[], object], number: int, clock: Clock) -> float:
    start = clock()
    for _ in itertools.repeat(None, number):
        func()
    return (clock() - start) / number


def _summarise(pairs: list[tuple[float, float]]) -> Comparison:
    ratios = tuple(o / a for o, a in pairs)
    return Comparison(
        ours=statistics.median(o for o, _ in pairs),
        anchor=statistics.median(a for _, a in pairs),
        ratio=statistics.median(ratios),
        rounds=len(pairs),
        ratios=ratios,
    )


def compare(
    ours: Callable[[], object],
    anchor: Callable[[], object],
    *,
    number: int,
    rounds: int,
    warmup: bool = True,
    clock: Clock = CPU,
) -> Comparison:
    """Time ``number`` calls of each side per round, ``rounds`` times, sides alternating first."""
    if warmup:
        _time_calls(ours, max(1, number // 10), clock)
        _time_calls(anchor, max(1, number // 10), clock)
    pairs: list[tuple[float, float]] = []
    for i in range(rounds):
        gc.collect()
        if i % 2:
            a = _time_calls(anchor, number, clock)
            o = _time_calls(ours, number, clock)
        else:
            o = _time_calls(ours, number, clock)
            a = _time_calls(anchor, number, clock)
        pairs.append((o, a))
    return _summarise(pairs)


async def _time_awaits(func: Callable[[], Awaitable[object]], number: int, clock: Clock) -> float:
    start = clock()
    for _ in itertools.repeat(None, number):
        await func()
    return (clock() - start) / number


def compare_async(
    ours: Callable[[], Awaitable[object]],
    anchor: Callable[[], Awaitable[object]],
    *,
    number: int,
    rounds: int,
    clock: Clock = CPU,
) -> Comparison:
    """:func:`compare` for coroutine functions, awaited one after another inside one running loop."""

    async def main() -> Comparison:
        await _time_awaits(ours, max(1, number // 10), clock)
        await _time_awaits(anchor, max(1, number // 10), clock)
        pairs: list[tuple[float, float]] = []
        for i in range(rounds):
            gc.collect()
            if i % 2:
                a = await _time_awaits(anchor, number, clock)
                o = await _time_awaits(ours, number, clock)
            else:
                o = await _time_awaits(ours, number, clock)
                a = await _time_awaits(anchor, number, clock)
            pairs.append((o, a))
        return _summarise(pairs)

    return asyncio.run(main())


def compare_rounds(round_pair: Callable[[int], tuple[float, float]], rounds: int) -> Comparison:
    """Summarise ``rounds`` calls of ``round_pair(i) -> (ours, anchor)`` for cases that time themselves."""
    return _summarise([round_pair(i) for i in range(rounds)])
