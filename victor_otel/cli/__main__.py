"""``python -m victor_otel.cli``: the same as the ``victor-otel`` console script."""

import sys

from victor_otel.cli import main

sys.exit(main())
