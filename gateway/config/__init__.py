"""Configuration: frozen, typed dataclasses loaded from YAML with environment overrides.

Precedence, lowest first: the defaults below, `config/gateway.yaml` (or `--config`), then the
environment. Every setting `section.key` has the variable `GATEWAY_SECTION_KEY` (top-level
settings: `GATEWAY_KEY`); some also accept the names earlier deployments used
(`ANKISYNCD_COGNITO_*`, `SYNC_SERVER_API_KEY`). A secret may instead come from a file:
`key_file:` in YAML or `<VARIABLE>_FILE` in the environment.

`load()` collects every problem (unknown keys, wrong types, missing values, contradictions)
and raises one `ConfigError` listing them all; it never stops at the first.

    schema.py      the sections (frozen dataclasses), `Config`, `SECTIONS`
    secret.py      `Secret`, which never prints
    values.py      one setting: its environment names, a secret's file, coercion to its type
    loading.py     `load`, `load_server`, `ConfigError`
    validation.py  `validate` (every contradiction), `region_of`
"""

from gateway.config.loading import ConfigError, load, load_server
from gateway.config.schema import (
    MAX_CACHE_TTL,
    MAX_REGISTRY_CACHE,
    REGISTRY_BACKENDS,
    SECTIONS,
    AuthConfig,
    BackupConfig,
    ClusterConfig,
    CognitoConfig,
    Config,
    LoggingConfig,
    MetricsConfig,
    PortalConfig,
    ProvisionConfig,
    QuotaConfig,
    RegistryConfig,
    ServerConfig,
    WorkersConfig,
    _TopLevel,
)
from gateway.config.secret import Secret
from gateway.config.validation import (
    AUTH_FLOWS,
    CONTAINMENT_MODES,
    DELETE_ACTIONS,
    STORAGE_MODES,
    region_of,
    validate,
)
from gateway.config.values import env_names

__all__ = [
    "AUTH_FLOWS",
    "CONTAINMENT_MODES",
    "DELETE_ACTIONS",
    "MAX_CACHE_TTL",
    "MAX_REGISTRY_CACHE",
    "REGISTRY_BACKENDS",
    "SECTIONS",
    "STORAGE_MODES",
    "AuthConfig",
    "BackupConfig",
    "ClusterConfig",
    "CognitoConfig",
    "Config",
    "ConfigError",
    "LoggingConfig",
    "MetricsConfig",
    "PortalConfig",
    "ProvisionConfig",
    "QuotaConfig",
    "RegistryConfig",
    "Secret",
    "ServerConfig",
    "WorkersConfig",
    "_TopLevel",
    "env_names",
    "load",
    "load_server",
    "region_of",
    "validate",
]
