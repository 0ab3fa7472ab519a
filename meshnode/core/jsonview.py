"""Values as JSON, the one form every ``--json`` output and every hook's stdin uses.

JSON has no bytes: a msgpack bin value is shown as ``{"$bin": "<base64>"}``.
``json`` and ``base64`` are imported when first needed: the CLI imports this
module at start, and most commands never print JSON.
"""

from __future__ import annotations

from typing import Any


def to_json(value: Any) -> Any:
    """``value`` with every bin replaced by ``{"$bin": ...}`` (lists and maps walked)."""
    if isinstance(value, bytes):
        import base64

        return {"$bin": base64.b64encode(value).decode()}
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    return value


def dumps(value: Any) -> str:
    """One line of JSON, keys sorted, text as it is (not ``\\u`` escapes)."""
    import json

    return json.dumps(to_json(value), ensure_ascii=False, sort_keys=True)
