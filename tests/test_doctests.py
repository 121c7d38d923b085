"""Every docstring example in the package runs: each ``>>>`` example is a doctest, one test per docstring.

The modules are found by walking the package (subpackages included), so a new module's examples run
without touching this file. Each docstring runs from the clean state of ``tests/conftest.py`` (victor_otel
shut down, the registry emptied) with its module's globals, under the ``ELLIPSIS`` option (as pytest's
``--doctest-modules`` would). An example that cannot run on its own (a server that never returns, the
network) is marked ``# doctest: +SKIP``; there may be at most :data:`MAX_SKIPPED` of them.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import victor_otel

#: Examples that opt out of running; raise only with a reason every reader would accept.
MAX_SKIPPED = 0
OPTIONS = doctest.ELLIPSIS


def modules() -> list[str]:
    """Every module of the package, by dotted name (``__main__`` modules run a program when imported)."""
    found = ["victor_otel"]
    found += [info.name for info in pkgutil.walk_packages(victor_otel.__path__, "victor_otel.")]
    return sorted(name for name in found if name.rpartition(".")[2] != "__main__")


def docstring_tests() -> list[doctest.DocTest]:
    finder = doctest.DocTestFinder(exclude_empty=True)
    tests: list[doctest.DocTest] = []
    for name in modules():
        module = importlib.import_module(name)
        tests += [test for test in finder.find(module, name) if test.examples]
    return sorted(tests, key=lambda test: test.name)


DOCTESTS = docstring_tests()


@pytest.mark.parametrize("example", DOCTESTS, ids=[test.name for test in DOCTESTS])
def test_docstring_examples_run(example: doctest.DocTest) -> None:
    # A copy of the module's globals per run, as doctest itself does, so runs do not leak into each other.
    example.globs = dict(example.globs)
    report: list[str] = []
    runner = doctest.DocTestRunner(optionflags=OPTIONS)
    result = runner.run(example, out=report.append, clear_globs=False)
    assert result.failed == 0, f"{example.name} ({example.filename}:{example.lineno}):\n" + "".join(report)


def test_docstring_examples_are_found_and_few_are_skipped() -> None:
    assert len(DOCTESTS) >= 20, "fewer docstring examples than expected: is the finder broken?"
    skipped = [
        f"{test.name}: {example.source.strip()}"
        for test in DOCTESTS
        for example in test.examples
        if example.options.get(doctest.SKIP)
    ]
    assert len(skipped) <= MAX_SKIPPED, (
        f"{len(skipped)} docstring examples opt out of running (at most {MAX_SKIPPED}); make some runnable:\n"
        + "\n".join(skipped)
    )
