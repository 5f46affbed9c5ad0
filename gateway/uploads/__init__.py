"""Request-body policy beside the proxy: how big a proxied body may be (payload.py), the zstd
decoders that count it, and the inflated-bytes budget over all workers (budget.py)."""
