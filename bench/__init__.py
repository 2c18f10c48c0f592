"""Benchmarks of the operator on the sandbox cluster (`make bench`, `python -m bench`).

Benchmarks measure; they are never tests. Each exits non-zero only when a correctness property
fails (a step not Succeeded, a quota exceeded), never on a slow figure.
"""
