"""One setting's value: its environment variable names (`env_names`), where it comes from
(environment, YAML, a secret's `_file`), and its coercion to the field's type. Pure but for
reading a secret file."""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any, get_args

from gateway.config.secret import Secret


def env_names(section: str | None, name: str, meta: Mapping[str, Any]) -> tuple[str, ...]:
    primary = "GATEWAY_" + (f"{section}_{name}" if section else name).upper()
    return (primary, *meta.get("env", ()))


def _lookup(name, raw, names, environ, secret, problems, where):
    for env in names:
        # An empty variable counts as unset, so `GATEWAY_X=` in a .env file does not hide the
        # legacy name or the YAML value behind it.
        if environ.get(env):
            return environ[env], env
        if secret and environ.get(env + "_FILE"):
            return _read_secret_file(environ[env + "_FILE"], env + "_FILE", problems), env
    if secret and raw.get(name + "_file"):
        return _read_secret_file(raw[name + "_file"], f"{where}{name}_file", problems), "file"
    if name in raw:
        return raw[name], f"{where}{name}"
    return None, ""


def _read_secret_file(path: str, origin: str, problems: list[str]) -> str | None:
    try:
        return Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        problems.append(f"{origin}: cannot read secret file {path}: {exc.strerror}")
        return None


def _is_secret(hint: Any) -> bool:
    return hint is Secret or Secret in get_args(hint) or _tuple_of(hint) is Secret


def _tuple_of(hint: Any) -> Any:
    args = get_args(hint)
    return args[0] if len(args) == 2 and args[1] is Ellipsis else None


def _coerce(hint: Any, value: Any) -> Any:
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in {
            "1",
            "true",
            "yes",
            "on",
            "0",
            "false",
            "no",
            "off",
        }:
            return value.lower() in {"1", "true", "yes", "on"}
        raise ValueError(f"expected true or false, got {value!r}")
    if hint in (int, float):
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ValueError(f"expected a number, got {value!r}")
        return hint(value)
    if hint is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ValueError(f"expected a string, got {value!r}")
        return str(value)
    if hint is Path:
        if not isinstance(value, str) or not value:
            raise ValueError("expected a path")
        return Path(value)
    if hint == Secret | None:
        if not isinstance(value, str):
            raise ValueError("expected a string")
        return Secret(value) if value else None
    item = _tuple_of(hint)
    if item is not None:
        if isinstance(value, str):
            # Keys: comma-separated; commands: shell words.
            parts = [p.strip() for p in value.split(",")] if item is Secret else shlex.split(value)
        elif isinstance(value, list):
            parts = value
        else:
            raise ValueError("expected a list")
        if not all(isinstance(p, str) for p in parts):
            raise ValueError("expected a list of strings")
        return tuple(Secret(p) if item is Secret else p for p in parts if p)
    raise TypeError(f"unsupported setting type {hint}")
