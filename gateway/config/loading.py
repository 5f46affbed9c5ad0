"""Loading: `load(path, environ)` reads the YAML file and the environment into a `Config`,
collecting every problem into one `ConfigError`; `load_server` reads the `server` section only
(`python -m gateway health`)."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, get_type_hints

import yaml

from gateway.config.schema import SECTIONS, Config, ServerConfig, _TopLevel
from gateway.config.validation import validate
from gateway.config.values import _coerce, _is_secret, _lookup, env_names


class ConfigError(Exception):
    def __init__(self, problems: list[str]) -> None:
        super().__init__("invalid configuration:\n" + "\n".join(f"  - {p}" for p in problems))
        self.problems = problems


def load(
    path: Path | None, environ: Mapping[str, str] | None = None, *, identity: bool = True
) -> Config:
    """Read `path` (may be None or missing only if it is None), apply `environ`, validate
    (`identity`: validation.validate's, False for commands that never call Cognito)."""
    environ = os.environ if environ is None else environ
    problems: list[str] = []
    raw = _read(path)
    top: dict[str, Any] = {}
    for name, cls in SECTIONS.items():
        section_raw = raw.get(name) or {}
        if not isinstance(section_raw, dict):
            problems.append(f"{name}: must be a mapping")
            section_raw = {}
        top[name] = _build(cls, name, section_raw, environ, problems)
    top_raw = {k: v for k, v in raw.items() if k not in SECTIONS}
    flat = _build(_TopLevel, None, top_raw, environ, problems)
    config = Config(data_dir=flat.data_dir, secret=flat.secret, **top)
    problems += validate(config, identity=identity)
    if problems:
        raise ConfigError(problems)
    return config


def load_server(path: Path | None, environ: Mapping[str, str] | None = None) -> ServerConfig:
    """Only the `server` section, for `python -m gateway health`: a container's health check
    needs the port and path prefix, not settings (Cognito's) that local mode makes itself."""
    raw = _read(path).get("server") or {}
    problems: list[str] = []
    server = _build(
        ServerConfig,
        "server",
        raw if isinstance(raw, dict) else {},
        environ or os.environ,
        problems,
    )
    if problems:
        raise ConfigError(problems)
    return server


def _read(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError([f"{path}: {exc}"]) from exc
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError([f"{path}: the top level must be a mapping"])
    return loaded


def _build(cls: type, section: str | None, raw: dict[str, Any], environ, problems) -> Any:
    where = f"{section}." if section else ""
    hints = get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    secrets = {n for n in known if _is_secret(hints[n])}
    for key in raw:
        base = key.removesuffix("_file")
        if key not in known and not (key.endswith("_file") and base in secrets):
            problems.append(f"{where}{key}: unknown setting")
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        names = env_names(section, f.name, f.metadata)
        value, origin = _lookup(f.name, raw, names, environ, f.name in secrets, problems, where)
        if value is None:
            continue
        try:
            values[f.name] = _coerce(hints[f.name], value)
        except (TypeError, ValueError) as exc:
            problems.append(f"{where}{f.name} (from {origin}): {exc}")
    return cls(**values)
