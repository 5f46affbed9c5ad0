"""config/gateway.yaml documents every setting of gateway/config/; production refuses stand-ins.

The settings are read from the dataclasses themselves, so a setting added to the loader without
a line in config/gateway.yaml fails here.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway import config as cfg

ROOT = Path(__file__).resolve().parent.parent
GATEWAY_YAML = ROOT / "config" / "gateway.yaml"
REQUIRED = {"GATEWAY_COGNITO_USER_POOL_ID": "eu-west-1_AbC123", "GATEWAY_COGNITO_CLIENT_ID": "cid"}


def all_settings() -> list[tuple[str | None, dataclasses.Field[Any]]]:
    """(section or None for top level, field) for every setting the loader knows."""
    settings: list[tuple[str | None, dataclasses.Field[Any]]] = [
        (None, f) for f in dataclasses.fields(cfg._TopLevel)
    ]
    for section, cls in cfg.SECTIONS.items():
        settings += [(section, f) for f in dataclasses.fields(cls)]
    return settings


def comment_blocks(text: str) -> dict[tuple[str | None, str], str]:
    """(section, key) → the comment lines right above that key, joined."""
    blocks: dict[tuple[str | None, str], str] = {}
    section: str | None = None
    pending: list[str] = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            pending.append(stripped.lstrip("#").strip())
            continue
        match = re.match(r"^( *)([a-z_]+):", line)
        if match:
            indent, key = match.groups()
            if not indent:
                value = line.split(":", 1)[1].strip()
                section = key if key in cfg.SECTIONS and not value else None
                blocks[(None, key)] = " ".join(pending)
            else:
                blocks[(section, key)] = " ".join(pending)
        pending = []
    return blocks


def test_gateway_yaml_lists_every_setting_and_nothing_else():
    raw = yaml.safe_load(GATEWAY_YAML.read_text(encoding="utf-8"))
    for section, f in all_settings():
        where = raw if section is None else raw[section]
        assert f.name in where, f"config/gateway.yaml lacks {section or ''}.{f.name}"
    known_top = {f.name for f in dataclasses.fields(cfg._TopLevel)} | set(cfg.SECTIONS)
    assert set(raw) <= known_top
    for section, cls in cfg.SECTIONS.items():
        assert set(raw[section]) <= {f.name for f in dataclasses.fields(cls)}, section


@pytest.mark.parametrize(
    ("section", "field"),
    [(s, f) for s, f in all_settings()],
    ids=[f"{s or 'top'}.{f.name}" for s, f in all_settings()],
)
def test_every_setting_is_commented_with_its_default_and_env_names(section, field):
    blocks = comment_blocks(GATEWAY_YAML.read_text(encoding="utf-8"))
    comment = blocks[(section, field.name)]
    assert "Default:" in comment, f"{section}.{field.name}: no 'Default:' in its comment"
    for name in cfg.env_names(section, field.name, field.metadata):
        assert name in comment, f"{section}.{field.name}: its comment does not name {name}"


def test_gateway_yaml_values_are_the_defaults():
    # With the two required values from the environment, the file changes nothing.
    from_file = cfg.load(GATEWAY_YAML, REQUIRED)
    assert from_file == cfg.load(None, REQUIRED)


def test_gateway_yaml_alone_asks_for_exactly_the_required_settings():
    with pytest.raises(cfg.ConfigError) as caught:
        cfg.load(GATEWAY_YAML, {})
    assert [p.split(":")[0] for p in caught.value.problems] == [
        "cognito.user_pool_id",
        "cognito.client_id",
    ]


def test_gateway_yaml_required_settings_are_marked_required():
    blocks = comment_blocks(GATEWAY_YAML.read_text(encoding="utf-8"))
    assert "REQUIRED" in blocks[("cognito", "user_pool_id")]
    assert "REQUIRED" in blocks[("cognito", "client_id")]


def test_production_config_refuses_a_stand_in_endpoint_from_the_file(tmp_path):
    path = tmp_path / "gateway.yaml"
    path.write_text(
        GATEWAY_YAML.read_text(encoding="utf-8").replace(
            'endpoint_url: ""', "endpoint_url: http://127.0.0.1:5000"
        )
    )
    with pytest.raises(cfg.ConfigError) as caught:
        cfg.load(path, REQUIRED)
    assert any("local_stand_in" in p for p in caught.value.problems)


@pytest.mark.parametrize(
    "endpoint",
    [
        "http://127.0.0.1:5000",
        "http://cognito-local:5000",
        "https://cognito-idp.eu-west-1.amazonaws.com",
    ],
)
def test_production_config_refuses_any_endpoint_override_from_the_environment(endpoint):
    with pytest.raises(cfg.ConfigError) as caught:
        cfg.load(GATEWAY_YAML, {**REQUIRED, "GATEWAY_COGNITO_ENDPOINT_URL": endpoint})
    assert any(p.startswith("cognito.endpoint_url") for p in caught.value.problems)


@pytest.mark.parametrize(
    "endpoint", ["https://cognito-idp.eu-west-1.amazonaws.com", "http://10.0.0.5:5000", ""]
)
def test_the_stand_in_flag_is_refused_for_anything_but_a_local_address(endpoint):
    env = {**REQUIRED, "GATEWAY_COGNITO_LOCAL_STAND_IN": "true"}
    if endpoint:
        env["GATEWAY_COGNITO_ENDPOINT_URL"] = endpoint
    with pytest.raises(cfg.ConfigError) as caught:
        cfg.load(GATEWAY_YAML, env)
    assert any(p.startswith("cognito.local_stand_in") for p in caught.value.problems)


@pytest.mark.parametrize(
    "endpoint", ["http://127.0.0.1:5000", "http://localhost:5000", "http://cognito-local:5000"]
)
def test_a_deliberate_local_stand_in_is_accepted(endpoint):
    env = {
        **REQUIRED,
        "GATEWAY_COGNITO_ENDPOINT_URL": endpoint,
        "GATEWAY_COGNITO_LOCAL_STAND_IN": "true",
    }
    assert cfg.load(GATEWAY_YAML, env).cognito.endpoint_url == endpoint
