"""The seed's ``victor.observability.coordinator_logging`` module, for a mechanical rename of imports.

``sed 's/victor\\.observability/victor_otel/'`` turns the seed's imports into imports of this module; the
names are :mod:`victor_otel.logs`' (one implementation):

>>> from victor_otel.coordinator_logging import get_coordinator_logger, setup_coordinator_logging
>>> import victor_otel
>>> setup_coordinator_logging is victor_otel.setup_coordinator_logging
True

New code imports them from ``victor_otel``.
"""

from __future__ import annotations

from victor_otel.logs import get_coordinator_logger, setup_coordinator_logging, teardown_coordinator_logging

__all__ = ["get_coordinator_logger", "setup_coordinator_logging", "teardown_coordinator_logging"]
