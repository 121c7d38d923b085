"""Health checks: the model (:mod:`.model`), the built-in checks (:mod:`.builtin`) and the runner
(:mod:`.runner`); :mod:`victor_otel.health` is the public face and :mod:`victor_otel.web.health` the routes."""
