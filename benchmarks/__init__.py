"""
Load generator and side-by-side runs against a reference server (Dovecot).

``python -m benchmarks.compare [--quick]`` is the one command; see
``benchmarks/README.md``.  ``python -m benchmarks.load`` drives any server.
"""
