"""victor_otel benchmarks: our cost against the libraries users compare us with, in the same run.

Run everything (a few minutes on 2 cores)::

    python -m benchmarks            # every case, 15 rounds each, a table with PASS / MISS per target
    python -m benchmarks --quick    # tiny iteration counts: checks that every case still runs
    python -m benchmarks --only decorator,render --markdown

A case module is ``benchmarks/bench_<topic>.py`` with ``run(quick: bool) -> list[Result]``
(:class:`benchmarks.harness.Result`). The runner imports each one it finds and calls ``run``; a module
without such a function is run as ``python -m benchmarks.bench_<topic>`` (with ``--quick`` in a quick run
if its source mentions that option, else skipped there) and its output shown as it is.
A ``run`` may also return dicts or objects with the same field names (``case``, ``what``, ``ours``,
``anchor``, ``ratio``, ``target``, ``passed``, ``unit``, ``rounds``, ``note``).

Timing is always relative: our figure and the anchor's are taken in the same process, interleaved round
by round, and the ratio is the median of the per-round ratios (see :func:`benchmarks.harness.compare`).
"""
