"""Durable measurements of prvql (speed, memory, conversion, parity with the authors' code): benchmarks/README.md.

The one entry point is ``python -m benchmarks`` (:mod:`benchmarks.run`), run from the repository root. Nothing in
``prvql`` or ``tests`` imports this package.
"""
