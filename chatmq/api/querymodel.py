"""The base of query-string models (``query: SomeQuery`` in a view).

flask-openapi3 4.x calls ``model_json_schema()`` on a view's query model on every request, only to
read each field's type, and pydantic rebuilds the whole schema each time: ~0.4 ms, the largest
single cost of a history page (bench/history.py). A class's schema never changes, so that
argument-less call is answered from a per-class cache. The cached dict is shared: callers read it,
never mutate it (flask-openapi3's document generation passes arguments and gets a fresh one).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

_SCHEMAS: dict[type[BaseModel], dict[str, Any]] = {}


class QueryModel(BaseModel):
    @classmethod
    def model_json_schema(cls, *args: Any, **kwargs: Any) -> dict[str, Any]:  # type: ignore[override]
        if args or kwargs:
            return super().model_json_schema(*args, **kwargs)
        schema = _SCHEMAS.get(cls)
        if schema is None:  # two threads may both build it once: same result, no lock needed
            schema = _SCHEMAS[cls] = super().model_json_schema()
        return schema
