"""Hostile use of the decorators: odd callables behave exactly as undecorated (results, exceptions, shapes)
and are counted once per call; odd names are refused with VictorOtelConfigError naming the argument."""

from __future__ import annotations

import asyncio
import functools
import inspect
import operator
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import victor_otel
from victor_otel.registry import get_registry

VALUES = st.one_of(st.integers(), st.text(max_size=20), st.floats(allow_nan=False), st.none(),
                   st.lists(st.integers(), max_size=3))


def count(coordinator: str, method: str) -> int:
    series = get_registry().series.get((coordinator, method))
    return series.count if series is not None else 0


class Boom(Exception):
    """Raised by the originals when asked to (the decorated version must raise the same object)."""


def original(x: Any, fail: bool = False) -> Any:
    if fail:
        raise Boom(x)
    return ("result", x)


class Callable_:
    def __call__(self, x: Any, fail: bool = False) -> Any:
        return original(x, fail)


class AsyncCallable:
    async def __call__(self, x: Any, fail: bool = False) -> Any:
        await asyncio.sleep(0)
        return original(x, fail)


class Slotted:
    __slots__ = ("factor",)

    def __init__(self) -> None:
        self.factor = 1

    def method(self, x: Any, fail: bool = False) -> Any:
        return original(x, fail)

    @classmethod
    def klass(cls, x: Any, fail: bool = False) -> Any:
        return original(x, fail)

    @staticmethod
    def static(x: Any, fail: bool = False) -> Any:
        return original(x, fail)


@victor_otel.coordinator("SlottedCoordinator")
class SlottedCoordinator:
    __slots__ = ("state",)

    def __init__(self) -> None:
        self.state = 0

    def method(self, x: Any, fail: bool = False) -> Any:
        self.state += 1
        return original(x, fail)

    @classmethod
    def klass(cls, x: Any, fail: bool = False) -> Any:
        return original(x, fail)

    @staticmethod
    def static(x: Any, fail: bool = False) -> Any:
        return original(x, fail)

    async def coroutine(self, x: Any, fail: bool = False) -> Any:
        return original(x, fail)


def wrapped_by_functools() -> Callable[..., Any]:
    @functools.wraps(original)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return original(*args, **kwargs)

    return wrapper


def keyword_only(x: Any, *, fail: bool = False, **extra: Any) -> Any:
    return original(x, fail)


#: name -> (the callable to instrument, whether calling it returns a coroutine)
SHAPES: dict[str, tuple[Callable[[], Any], bool]] = {
    "function": (lambda: original, False),
    "lambda": (lambda: (lambda x, fail=False: original(x, fail)), False),
    "partial": (lambda: functools.partial(original), False),
    "partial of partial": (lambda: functools.partial(functools.partial(original), fail=False), False),
    "callable object": (lambda: Callable_(), False),
    "async callable object": (lambda: AsyncCallable(), True),
    "bound method of a slotted instance": (lambda: Slotted().method, False),
    "classmethod (bound)": (lambda: Slotted.klass, False),
    "staticmethod (plain)": (lambda: Slotted.static, False),
    "functools.wraps wrapper": (wrapped_by_functools, False),
    "keyword-only arguments": (lambda: keyword_only, False),
}


def call(func: Callable[..., Any], is_async: bool, x: Any, fail: bool) -> Any:
    if is_async:
        return asyncio.run(func(x, fail=fail))
    return func(x, fail=fail)


@pytest.mark.parametrize("shape", list(SHAPES))
@settings(max_examples=25, deadline=None)
@given(x=VALUES, fail=st.booleans())
def test_odd_callables_behave_as_undecorated_and_count_once(shape: str, x: Any, fail: bool) -> None:
    make, is_async = SHAPES[shape]
    target = make()
    method = "m" + str(abs(hash(shape)))
    decorated = victor_otel.instrument(coordinator="FuzzCoordinator", method=method)(target)
    assert inspect.iscoroutinefunction(decorated) == inspect.iscoroutinefunction(
        type(target).__call__ if not (inspect.isfunction(target) or inspect.ismethod(target)
                                      or isinstance(target, functools.partial)) else target
    )
    before = count("FuzzCoordinator", method)
    if fail:
        with pytest.raises(Boom) as raised:
            call(decorated, is_async, x, fail)
        assert raised.value.args == (x,)
    else:
        assert call(decorated, is_async, x, fail) == call(target, is_async, x, fail)
    assert count("FuzzCoordinator", method) == before + 1
    # Decorating again never counts a call twice.
    again = victor_otel.instrument(coordinator="FuzzCoordinator", method=method)(decorated)
    assert again is decorated


@settings(max_examples=40, deadline=None)
@given(x=VALUES, fail=st.booleans())
def test_methods_of_a_slotted_class_decorated_as_a_coordinator(x: Any, fail: bool) -> None:
    instance = SlottedCoordinator()
    for name, func in [("method", instance.method), ("klass", SlottedCoordinator.klass),
                       ("static", SlottedCoordinator.static), ("static", instance.static),
                       ("coroutine", instance.coroutine)]:
        before = count("SlottedCoordinator", name)
        is_async = inspect.iscoroutinefunction(func)
        if fail:
            with pytest.raises(Boom):
                call(func, is_async, x, fail)
        else:
            assert call(func, is_async, x, fail) == ("result", x)
        assert count("SlottedCoordinator", name) == before + 1
    assert isinstance(inspect.getattr_static(SlottedCoordinator, "klass"), classmethod)
    assert isinstance(inspect.getattr_static(SlottedCoordinator, "static"), staticmethod)


def test_builtins_and_c_callables_are_instrumented_too() -> None:
    for name, func, args, expected, bad in [
        ("abs", abs, (-3,), 3, ("x",)), ("divmod", divmod, (7, 2), (3, 1), (1, 0)),
        ("itemgetter", operator.itemgetter(1), ([5, 6],), 6, ([],)), ("int", int, ("12",), 12, ("x",)),
    ]:
        decorated = victor_otel.instrument(coordinator="BuiltinCoordinator", method=name)(func)
        assert decorated(*args) == expected
        with pytest.raises((TypeError, ValueError, IndexError, ZeroDivisionError)):
            decorated(*bad)
        assert count("BuiltinCoordinator", name) == 2


def test_generators_and_async_generators_keep_their_shape_with_odd_use() -> None:
    @victor_otel.instrument(coordinator="GenCoordinator", method="gen")
    def gen(n: int) -> Any:
        total = 0
        for i in range(n):
            total += yield i
        return total

    @victor_otel.instrument(coordinator="GenCoordinator", method="agen")
    async def agen(n: int) -> Any:
        for i in range(n):
            yield i

    assert inspect.isgeneratorfunction(gen) and inspect.isasyncgenfunction(agen)
    g = gen(3)
    assert next(g) == 0 and g.send(5) == 1
    g.close()  # abandoned half-way: counted once, as cancelled
    with pytest.raises(Boom):
        g2 = gen(3)
        next(g2)
        g2.throw(Boom("in"))

    async def consume() -> list[int]:
        return [i async for i in agen(4)]

    assert asyncio.run(consume()) == [0, 1, 2, 3]
    assert count("GenCoordinator", "gen") == 2 and count("GenCoordinator", "agen") == 1


NAMES = st.one_of(st.text(max_size=200), st.sampled_from(["", " ", "\n", "a" * 129, "a" * 128, "Chat\x00", "é",
                                                            "req-1234-5678", "x" * 10_000]),
                  st.integers(), st.none(), st.binary(max_size=5))


@settings(max_examples=300, deadline=None)
@given(coordinator=NAMES, method=NAMES)
def test_names_are_taken_or_refused_naming_the_argument(coordinator: Any, method: Any) -> None:
    try:
        decorated = victor_otel.instrument(coordinator=coordinator, method=method)(original)
    except victor_otel.VictorOtelConfigError as error:
        assert "coordinator" in str(error) or "method" in str(error)
        return
    assert decorated(1) == ("result", 1)
    try:
        with victor_otel.track(coordinator, method if isinstance(method, str) else "block"):
            pass
        victor_otel.record_cache_hit(coordinator)
        victor_otel.record_event(coordinator, 1)
    except victor_otel.VictorOtelConfigError as error:
        assert "operation" in str(error) or "coordinator" in str(error) or "event" in str(error)


@settings(max_examples=100, deadline=None)
@given(n=st.one_of(st.integers(), st.floats(), st.booleans(), st.text(max_size=3), st.none()))
def test_record_event_counts_are_checked(n: Any) -> None:
    try:
        victor_otel.record_event("fuzz_event", n)
    except victor_otel.VictorOtelConfigError as error:
        assert "count" in str(error)
    else:
        assert isinstance(n, int) and not isinstance(n, bool) and n >= 0


@pytest.mark.parametrize("target", [42, "text", None, property(lambda self: 1)])
def test_what_is_not_callable_is_refused_by_name(target: Any) -> None:
    with pytest.raises(victor_otel.VictorOtelConfigError, match=r"instrument|coordinator"):
        victor_otel.instrument(coordinator="X")(target)
    with pytest.raises(victor_otel.VictorOtelConfigError, match="coordinator"):
        victor_otel.coordinator("X")(target)
