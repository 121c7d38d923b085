"""Prices of model calls: a table of US dollars per million tokens, or the ``genai-prices`` package.

The table is a mapping, or a YAML file holding one, from a model name (or ``provider/model``, which wins)
to its prices per million tokens::

    gpt-4o: {input: 2.50, output: 10.00, cached_input: 1.25}
    anthropic/claude-sonnet-4: {input: 3.00, output: 15.00, cached_input: 0.30}

``cached_input`` defaults to ``input``. Input token counts include the cached ones (as the GenAI
conventions count them), so a call costs ``(input - cached) * input + cached * cached_input + output *
output``, over a million. A model missing from the table counts its tokens and no cost, and a warning
says so once per model.

>>> table = PriceTable.parse({"gpt-4o": {"input": 2.5, "output": 10, "cached_input": 1.25}})
>>> table.cost("openai", "gpt-4o", input_tokens=1_000_000, output_tokens=100_000, cached_input_tokens=0)
3.5
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from victor_otel.errors import VictorOtelConfigError

_logger = logging.getLogger("victor_otel")
SETTING = "llm_prices"
#: The value of ``llm_prices`` that prices every call through the ``genai-prices`` package.
GENAI_PRICES = "genai-prices"
_MILLION = 1_000_000
#: Resolved (provider, model, response model) -> price pairs kept; response models are not capped labels.
_MEMO_LIMIT = 10_000


@dataclass(frozen=True)
class Price:
    """US dollars per million tokens."""

    input: float
    output: float
    cached_input: float

    def cost(self, input_tokens: int, output_tokens: int, cached_input_tokens: int) -> float:
        cached = min(cached_input_tokens, input_tokens)
        return (
            (input_tokens - cached) * self.input + cached * self.cached_input + output_tokens * self.output
        ) / _MILLION


def _number(model: str, key: str, value: object, setting: str = SETTING) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or value != value:
        raise VictorOtelConfigError(
            f"{setting}: {model}.{key} = {value!r} is not valid; accepted: a number >= 0 (US dollars per "
            "million tokens)"
        )
    return float(value)


class PriceTable:
    """Model -> :class:`Price`, with a warning once per model that has none."""

    def __init__(self, prices: Mapping[str, Price], use_genai_prices: bool = False) -> None:
        self.prices = dict(prices)
        self.use_genai_prices = use_genai_prices
        self._unknown: set[tuple[str, str]] = set()
        self._resolved: dict[tuple[str, str, str | None], Price | None] = {}
        self._lock = threading.Lock()

    @classmethod
    def parse(cls, source: object, setting: str = SETTING) -> PriceTable:
        """A table from ``None`` (empty), a mapping, a YAML file's path, or ``"genai-prices"``.

        ``setting``: how errors name the setting (``Settings.named``: with its environment variable, when
        the value came from one)."""
        if source is None:
            return cls({})
        if isinstance(source, str) and source.strip().lower() == GENAI_PRICES:
            try:
                import genai_prices  # noqa: F401 - an optional dependency: checked at init, not per call
            except ImportError:
                raise VictorOtelConfigError(
                    f"{setting}: {GENAI_PRICES!r} needs the genai-prices package: pip install 'victor-otel[llm]'"
                ) from None
            return cls({}, use_genai_prices=True)
        if isinstance(source, (str, Path)):
            source = _load_yaml(Path(source), setting)
        if not isinstance(source, Mapping):
            raise VictorOtelConfigError(
                f"{setting}: {type(source).__name__} is not valid; accepted: a mapping model -> {{input, output, "
                f"cached_input}}, a YAML file holding one, or {GENAI_PRICES!r}"
            )
        prices: dict[str, Price] = {}
        for model, entry in source.items():
            if not isinstance(model, str) or not model or not isinstance(entry, Mapping):
                raise VictorOtelConfigError(
                    f"{setting}: entry {model!r} is not valid; accepted: a model name mapped to "
                    "{input: ..., output: ..., cached_input: ...} (US dollars per million tokens)"
                )
            unknown = set(entry) - {"input", "output", "cached_input"}
            if unknown or "input" not in entry or "output" not in entry:
                raise VictorOtelConfigError(
                    f"{setting}: {model}: keys {sorted(map(str, entry))} are not valid; accepted: input and output "
                    "(required), cached_input (optional)"
                )
            price_in = _number(model, "input", entry["input"], setting)
            prices[model] = Price(
                price_in,
                _number(model, "output", entry["output"], setting),
                _number(model, "cached_input", entry.get("cached_input", price_in), setting),
            )
        return cls(prices)

    def price(self, provider: str, model: str) -> Price | None:
        prices = self.prices
        return prices.get(f"{provider}/{model}") or prices.get(model)

    def cost(
        self, provider: str, model: str, *, input_tokens: int, output_tokens: int, cached_input_tokens: int,
        response_model: str | None = None,
    ) -> float | None:
        """The call's cost in US dollars, or ``None`` (said once per model) when no price is known."""
        return self.cost_of(provider, model, response_model, input_tokens, output_tokens, cached_input_tokens)

    def cost_of(
        self, provider: str, model: str, response_model: str | None, input_tokens: int, output_tokens: int,
        cached_input_tokens: int,
    ) -> float | None:
        """:meth:`cost` with positional arguments."""
        price = self.resolve(provider, model, response_model)
        if price is not None:
            return price.cost(input_tokens, output_tokens, cached_input_tokens)
        return self.unpriced(provider, model, response_model, input_tokens, output_tokens, cached_input_tokens)

    def resolve(self, provider: str, model: str, response_model: str | None) -> Price | None:
        """The table's price of a call: the response's model first, then the requested one (memoized)."""
        key = (provider, model, response_model)
        resolved = self._resolved
        if key in resolved:
            return resolved[key]
        price = (response_model and self.price(provider, response_model)) or self.price(provider, model)
        if len(resolved) < _MEMO_LIMIT:
            resolved[key] = price
        return price

    def unpriced(
        self, provider: str, model: str, response_model: str | None, input_tokens: int, output_tokens: int,
        cached_input_tokens: int,
    ) -> float | None:
        """The cost of a call the table has no price for: from genai-prices when it is the source, else
        ``None`` (and a warning, once per model)."""
        if self.use_genai_prices:
            cost = _genai_prices_cost(provider, response_model or model, input_tokens, output_tokens,
                                      cached_input_tokens)
            if cost is not None:
                return cost
        self._say_unknown(provider, model)
        return None

    def _say_unknown(self, provider: str, model: str) -> None:
        key = (provider, model)
        if key in self._unknown:
            return
        with self._lock:
            if key in self._unknown:
                return
            self._unknown.add(key)
        _logger.warning(
            "victor_otel: no price for model %r of provider %r: its tokens are counted, its cost is not. Add it "
            "to llm_prices (US dollars per million tokens: input, output, cached_input).", model, provider,
        )


def _load_yaml(path: Path, setting: str = SETTING) -> Any:
    try:
        import yaml
    except ImportError:
        raise VictorOtelConfigError(
            f"{setting}: reading {str(path)!r} needs PyYAML: pip install 'victor-otel[llm]'"
        ) from None
    try:
        return yaml.safe_load(path.read_text())
    except OSError as exc:
        raise VictorOtelConfigError(f"{setting}: cannot read {str(path)!r} ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise VictorOtelConfigError(f"{setting}: {str(path)!r} is not valid YAML ({exc})") from None


def _genai_prices_cost(
    provider: str, model: str, input_tokens: int, output_tokens: int, cached_input_tokens: int
) -> float | None:
    from genai_prices import Usage, calc_price

    try:
        result = calc_price(
            Usage(input_tokens=input_tokens, output_tokens=output_tokens, cache_read_tokens=cached_input_tokens),
            model_ref=model, provider_id=provider,
        )
    except LookupError:
        return None
    except Exception:  # the package failing must never fail the model call it prices
        _logger.exception("victor_otel: genai-prices failed to price a call of model %r", model)
        return None
    return float(result.total_price)
