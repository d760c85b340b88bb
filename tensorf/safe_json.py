"""The one JSON reader for every file the project reads (transforms*.json, config.json,
cameras.json, log.jsonl): anything that is not plain JSON of sensible numbers is a
ValueError with the reason, which the caller turns into one line naming the file.

`json.loads` alone accepts what later code cannot handle: integers of thousands of digits
(an OverflowError when they meet float32), numbers past float64's range (they parse as
infinity), and nesting deep enough to exhaust the parser's recursion (a RecursionError).
"""

from __future__ import annotations

import json
import math
from typing import Any

INT_LIMIT = 2**63  # what a count, a step or a pixel size can be; larger is corruption


def _int(text: str) -> int:
    if len(text.lstrip("-")) > 19 or abs(value := int(text)) >= INT_LIMIT:
        raise ValueError(f"the integer {text[:24]}{'...' if len(text) > 24 else ''} is out of "
                         "range")  # fmt: skip
    return value


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:24]} is out of range")
    return value


def loads(text: str) -> Any:
    """Parse JSON text. NaN and Infinity (as Python writes them) parse as themselves: the
    loaders check numbers for finiteness where they use them, with a better message.

    Raises:
        ValueError: the reason, in a phrase, for text that is not plain JSON.
    """
    try:
        return json.loads(text, parse_int=_int, parse_float=_float)
    except json.JSONDecodeError as error:
        raise ValueError(f"invalid JSON at line {error.lineno} column {error.colno} "
                         f"({error.msg})") from None  # fmt: skip
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
