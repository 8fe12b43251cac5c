"""JSON on the ingest path: orjson, with the standard library's results.

A batch of 1,000 touchpoint results is parsed from the request, written to the
inbox as jsonb, read back by a worker and written again as contacts, events and
outcomes: the standard library's encoder and decoder were a quarter of the web
process's CPU and a sixth of a worker's in ``bench/ingest.py``. orjson does the
same work several times faster. Where the two differ, the standard library's
answer is kept:

- ``dumps`` formats dates, times, decimals and lazy strings as Django's
  ``DjangoJSONEncoder`` does (orjson hands them to it), and falls back to the
  standard library for what orjson refuses (an integer past 64 bits);
- ``loads`` leaves to the standard library what orjson refuses (NaN) and what it
  reads otherwise: orjson reads an integer past 64 bits as a float, losing its
  digits, so a document with a run of 19 digits or more (anywhere: a long id in a
  string sends it the slow way, harmlessly) is parsed by the standard library. A
  malformed document is refused with the standard library's message.
"""

from __future__ import annotations

import json
from typing import Any

import orjson
from django.core.serializers.json import DjangoJSONEncoder

_DJANGO = DjangoJSONEncoder()
_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_NON_STR_KEYS
# 2**63 has 19 digits: a shorter run is an integer orjson reads exactly. Found by
# turning every digit into "0" and the rest into spaces, then looking for 19 zeros
# (C speed: a tenth of what a regular expression's search of a batch costs).
_DIGITS_ONLY = bytes(0x30 if 0x30 <= b <= 0x39 else 0x20 for b in range(256))
_LONG_RUN = b"0" * 19


def dumps(value: Any) -> bytes:
    """``value`` as UTF-8 JSON, as ``json.dumps(value, cls=DjangoJSONEncoder)`` would write it
    (without its ASCII escapes: the same document once parsed)."""
    try:
        return orjson.dumps(value, default=_DJANGO.default, option=_OPTIONS)
    except orjson.JSONEncodeError:
        return json.dumps(value, cls=DjangoJSONEncoder).encode()


def loads(data: str | bytes | bytearray | memoryview) -> Any:
    """The document in ``data``; a ValueError (``json.JSONDecodeError``) when it is not JSON."""
    if isinstance(data, memoryview):
        data = bytes(data)
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    if len(raw) >= 19 and _LONG_RUN in raw.translate(_DIGITS_ONLY):
        return json.loads(data)
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data)
