"""Benchmarks of mirror against `skopeo sync` and a hand-made `skopeo copy` loop (issue 6).

`python -m bench.run --help` runs them on the local stand-ins (tests/standins); nothing leaves
127.0.0.1.
"""
