"""Benchmarks: chatmemory against raw drivers on its own schema and against peer chat stores.

Run ``python -m benchmarks --help``. Every system gets the same synthetic messages and the
same durability settings; see ``benchmarks/README.md`` for the workloads and latest results.
"""
