"""Prometheus metrics for operators: ``GET /metrics`` in the text exposition format.

Each application has its own :class:`prometheus_client.CollectorRegistry` (tests build
many apps in one process; the library's global registry would mix them). HTTP requests
are counted and timed by a middleware under the route's canonical path, never the raw
URL, so label values stay bounded; the rest is read from the node's services when a
scrape comes (see :mod:`node.metrics.collect`).
"""
