"""Config helpers without the sections: `--set KEY=VALUE` overrides and readable validation errors."""

from __future__ import annotations

import difflib
from typing import Any

import yaml
from pydantic import BaseModel

from medrec.errors import ConfigError


def parse_override(text: str) -> tuple[list[str], Any]:
    """`train.epochs=2` -> (['train', 'epochs'], 2); the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"--set '{text}' is not KEY=VALUE, e.g. --set train.epochs=2")
    key, value = text.split("=", 1)
    return key.strip().split("."), yaml.safe_load(value) if value.strip() else None


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of `raw` with each dotted `KEY=VALUE` override applied."""
    out = _deepcopy(raw)
    for text in overrides:
        path, value = parse_override(text)
        node = out
        for part in path[:-1]:
            nxt = node.setdefault(part, {})
            if not isinstance(nxt, dict):
                raise ConfigError(f"--set {text}: '{part}' is a value, not a section")
            node = nxt
        node[path[-1]] = value
    return out


def _deepcopy(d: Any) -> Any:
    if isinstance(d, dict):
        return {k: _deepcopy(v) for k, v in d.items()}
    if isinstance(d, list):
        return [_deepcopy(v) for v in d]
    return d


def _model_at(path: tuple[Any, ...], root: type[BaseModel]) -> type[BaseModel] | None:
    """The pydantic model class that holds the key at `path` (for 'valid keys' hints)."""
    model = root
    for part in path[:-1]:
        field = model.model_fields.get(str(part))
        ann = getattr(field, "annotation", None)
        # `X | None` sections: the model class among the union's members
        members = [a for a in (getattr(ann, "__args__", None) or (ann,)) if isinstance(a, type)]
        models = [a for a in members if issubclass(a, BaseModel)]
        if not models:
            return None
        model = models[0]
    return model


def format_error(err: dict[str, Any], root: type[BaseModel]) -> str:
    """One line per pydantic error: the dotted key, the message, and the valid keys for an unknown one."""
    loc = tuple(err["loc"])
    key = ".".join(str(p) for p in loc) or "<top level>"
    if err["type"] == "extra_forbidden":
        holder = _model_at(loc, root)
        valid = sorted(holder.model_fields) if holder else []
        near = difflib.get_close_matches(str(loc[-1]), valid, n=1)
        hint = f" (did you mean '{near[0]}'?)" if near else ""
        where = "section" if len(loc) == 1 else "key"
        return f"unknown {where} '{key}'{hint}; valid: {', '.join(valid)}"
    msg = err["msg"].removeprefix("Value error, ")
    got = err.get("input")
    return f"{key}: {msg}" if isinstance(got, dict) else f"{key}: {msg} (got {got!r})"
