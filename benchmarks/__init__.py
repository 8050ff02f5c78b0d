"""
Load generator and side-by-side runs against a reference server (Dovecot).

``python -m benchmarks.compare [--quick]`` is the one command (the README's
Benchmarks section); ``python -m benchmarks.load`` drives any server.
"""
