"""The two test tiers. `make test` (the default tier) runs everything not marked `slow`,
with a fifth of the hypothesis examples; `make test-all` (CI) sets TENSORF_TEST_TIER=all
and runs every test with all of them."""

from __future__ import annotations

import os

FULL = os.environ.get("TENSORF_TEST_TIER") == "all"


def examples(n: int) -> int:
    """Hypothesis examples for a property that CI checks with `n`."""
    return n if FULL else max(8, n // 5)
