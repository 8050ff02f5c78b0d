"""
``gateway check [--repair]``: the store's own consistency check
(``IStoreMaintenance``), one line per repair done and per problem left.
"""

from __future__ import annotations


async def check(maintenance, repair: bool, out) -> int:
    """Run the check; 0 when the store is consistent, else 1."""
    report = await maintenance.check(repair)
    for line in report.repairs:
        print(f"repaired: {line}", file=out)
    for line in report.problems:
        print(line, file=out)
    if not report.problems:
        print("store is consistent", file=out)
    return 1 if report.problems else 0
