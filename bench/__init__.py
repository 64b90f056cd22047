"""Airlock benchmarks: ``python -m bench.run`` (``make bench``) writes bench/RESULTS.md.

Everything runs on 127.0.0.1: kubesim, the gateway (as separate uvicorn and
daphne processes, so their memory can be read from /proc), ``kubectl proxy``
for comparison, and the load generators (wrk for small requests, asyncio
clients for watches, exec and a deliberately slow reader).
"""
