"""P1 against peer SDKs: our traced call against the decorators of other instrumentation SDKs.

Each side is the same function (``_step``, returns its argument) decorated the way that SDK's users do it,
with tracing on and spans going through a ``BatchSpanProcessor`` to an exporter that discards:

- ours: ``@victor_otel.instrument("BenchCoordinator", "step")``, set up as in P1 (span, metrics, window,
  exemplar);
- ``logfire``: ``@logfire.instrument()`` after ``logfire.configure(send_to_logfire=False, console=False)``;
- ``traceloop`` (OpenLLMetry): ``@task(name="step")`` after ``Traceloop.init(processor=...)``;
- ``openlit``: ``@openlit.trace`` after ``openlit.init(...)`` over a global SDK ``TracerProvider`` set before
  it (which ``openlit.init`` reuses), with no instrumentation, metrics or events and a local price list.

Every SDK installs global providers, so each side runs in a child process of its own. Processes differ in
speed (CPU frequency, cache, what else the 2 cores run), so each child also times a *bare* span,
``tracer.start_as_current_span`` on a private SDK ``TracerProvider`` with the same discarding batch
processor, identical in every child, interleaved round by round with its side. A side's figure is its
time over that bare span; the ratio of a peer row is ours / peer on those figures:
``(ours / bare_ours) / (peer / bare_peer)``. Sides run in ``PASSES`` passes, their order rotating, so that a
slow minute of the machine does not fall on one side only.

Target (issue 16): ours <= 0.35x the fastest peer's time. The row of the fastest peer (the lowest figure
among the peers that ran) carries it; the other peers' rows are informational. A peer that does not import
here (not installed: ``benchmarks/install_peers.sh``) gives an informational row saying so.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

from benchmarks.harness import INFO, Result, compare, rounds_for

ROOT = Path(__file__).resolve().parents[1]
#: Where benchmarks/install_peers.sh puts the SDKs that cannot share our environment.
PEERS_PATH_ENV = "VICTOR_OTEL_BENCH_PEERS_PATH"
DEFAULT_PEERS_PATH = ROOT / ".bench-peers"
OURS = "victor_otel"
#: Peer name -> the distribution whose version is reported.
PEERS = {"logfire": "logfire", "traceloop": "traceloop-sdk", "openlit": "openlit"}
PEER_LIMIT = 0.35
PASSES = 3


def _peers_path() -> str:
    return os.environ.get(PEERS_PATH_ENV) or str(DEFAULT_PEERS_PATH)


def _bare_span() -> Callable[[], object]:
    """A bare SDK span around ``_step``, on a private provider built the same way in every child."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    from benchmarks.bench_decorator import DiscardingSpanExporter, _step

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(DiscardingSpanExporter()))
    tracer = provider.get_tracer("bench.bare")

    def bare() -> object:
        with tracer.start_as_current_span("BenchCoordinator.step"):
            return _step(1)

    return bare


def _ours() -> Callable[[int], int]:
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    import victor_otel
    from benchmarks.bench_decorator import COORDINATOR, METHOD, DiscardingSpanExporter, _step
    from victor_otel import bootstrap

    bootstrap.init(  # as P1: init() with a span processor of the benchmark's own
        service_name="bench", traces_exporter="none", sampler="always_on", debug_pages=False,
        span_processors=[BatchSpanProcessor(DiscardingSpanExporter())],
    )
    return victor_otel.instrument(COORDINATOR, METHOD)(_step)


def _logfire() -> Callable[[int], int]:
    import logfire
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    from benchmarks.bench_decorator import DiscardingSpanExporter, _step

    logfire.configure(
        send_to_logfire=False, console=False, metrics=False, service_name="bench",
        additional_span_processors=[BatchSpanProcessor(DiscardingSpanExporter())],
    )
    step: Callable[[int], int] = logfire.instrument()(_step)
    return step


def _traceloop() -> Callable[[int], int]:
    os.environ.setdefault("TRACELOOP_TELEMETRY", "false")
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from traceloop.sdk import Traceloop
    from traceloop.sdk.decorators import task

    from benchmarks.bench_decorator import DiscardingSpanExporter, _step

    Traceloop.init(
        app_name="bench", telemetry_enabled=False, processor=BatchSpanProcessor(DiscardingSpanExporter()),
    )
    step: Callable[[int], int] = task(name="step")(_step)
    return step


def _openlit() -> Callable[[int], int]:
    import openlit
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    from benchmarks.bench_decorator import DiscardingSpanExporter, _step

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(DiscardingSpanExporter()))
    trace.set_tracer_provider(provider)
    # init() keeps the provider set above; no instrumentation, metrics or events; a local (empty) price
    # list, or it would download one. Its decorator reads the service name and environment init() sets.
    prices = Path(tempfile.mkdtemp()) / "pricing.json"
    prices.write_text("{}")
    openlit.init(
        service_name="bench", disable_metrics=True, disable_events=True, pricing_json=str(prices),
        disabled_instrumentors=list(openlit.MODULE_NAME_MAP),
    )
    step: Callable[[int], int] = openlit.trace(_step)
    return step


SIDES: dict[str, Callable[[], Callable[[int], int]]] = {
    OURS: _ours, "logfire": _logfire, "traceloop": _traceloop, "openlit": _openlit,
}


def _child(side: str, number: int, rounds: int) -> dict[str, Any]:
    """Time one side against the bare span in this process: per-round figures, or why it could not run."""
    sys.path.append(_peers_path())  # after site-packages: the environment's OpenTelemetry wins
    try:
        decorated = SIDES[side]()
        version = "" if side == OURS else metadata.version(PEERS[side])
    except Exception as exc:  # not installed, or an import this environment cannot satisfy
        return {"ok": False, "why": f"{type(exc).__name__}: {exc}"}
    bare = _bare_span()
    c = compare(lambda: decorated(1), bare, number=number, rounds=rounds)
    return {"ok": True, "version": version, "time": c.ours, "bare": c.anchor, "figures": c.ratios}


def _run_child(side: str, number: int, rounds: int) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_peer", "--child", side, str(number), str(rounds)],
        capture_output=True, text=True, timeout=900, cwd=ROOT,
    )
    lines = out.stdout.strip().splitlines()
    if out.returncode != 0 or not lines:
        return {"ok": False, "why": f"child exited {out.returncode}: {out.stderr.strip()[-300:]}"}
    answer: dict[str, Any] = json.loads(lines[-1])
    return answer


def run(quick: bool) -> list[Result]:
    rounds = rounds_for(quick)
    number = 50 if quick else 4_000
    passes = 1 if quick else PASSES
    sides = [OURS, *PEERS]
    got: dict[str, list[dict[str, Any]]] = {side: [] for side in sides}
    for p in range(passes):
        order = sides[p % len(sides):] + sides[:p % len(sides)]
        for side in order:
            if got[side] and not got[side][-1]["ok"]:
                continue  # it did not import: it will not next time either
            got[side].append(_run_child(side, number, max(1, rounds // passes)))
    ours = got[OURS]
    if not ours[-1]["ok"]:
        raise RuntimeError(f"our side of the peer case failed: {ours[-1]['why']}")

    def summary(runs: list[dict[str, Any]]) -> tuple[float, float, int]:
        """(time per call, time over the bare span, rounds), medians over every pass."""
        figures = [f for r in runs for f in r["figures"]]
        return statistics.median(r["time"] for r in runs), statistics.median(figures), len(figures)

    our_time, our_figure, n = summary(ours)
    ran = {peer: summary(got[peer]) for peer in PEERS if got[peer][-1]["ok"]}
    fastest = min(ran, key=lambda peer: ran[peer][1]) if ran else None
    results = []
    for peer in PEERS:
        case = f"P1 peer {peer}"
        if peer not in ran:
            results.append(Result(
                case=case, what=f"traced call vs {peer}'s decorator: not run", ours=our_time, anchor=None,
                target=INFO, passed=True, rounds=0,
                note=f"not installed (benchmarks/install_peers.sh): {got[peer][-1]['why'][:120]}",
            ))
            continue
        time, figure, _ = ran[peer]
        ratio = our_figure / figure
        version = got[peer][-1]["version"]
        note = (f"ours {our_figure:.2f}x a bare span, {peer} {version} {figure:.2f}x"
                + ("; the fastest peer" if peer == fastest else f"; {ratio:.2f} <= {PEER_LIMIT:g}: "
                   f"{'yes' if ratio <= PEER_LIMIT else 'no'} (the target is on the fastest peer)"))
        results.append(Result(
            case=case, what=f"traced call vs {peer} {version}'s decorator, each over a bare span in its process",
            ours=our_time, anchor=time, target=f"<= {PEER_LIMIT:g}" if peer == fastest else INFO,
            passed=ratio <= PEER_LIMIT or peer != fastest, rounds=n, ratio=ratio, note=note,
        ))
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--child", choices=sorted(SIDES))
    parser.add_argument("number", type=int, nargs="?", default=4_000)
    parser.add_argument("rounds", type=int, nargs="?", default=5)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_child(args.child, args.number, args.rounds)))
    else:
        for result in run(args.quick):
            print(result)


if __name__ == "__main__":
    main()
