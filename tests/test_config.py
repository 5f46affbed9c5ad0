import pytest

from gateway import config as cfg

REQUIRED = {"GATEWAY_COGNITO_USER_POOL_ID": "eu-west-1_AbC123", "GATEWAY_COGNITO_CLIENT_ID": "cid"}


def test_defaults_with_required_values_load():
    c = cfg.load(None, REQUIRED)
    assert c.cognito.user_pool_id == "eu-west-1_AbC123"
    assert cfg.region_of(c.cognito) == "eu-west-1"
    assert c.server.path_prefix == "/"


def test_legacy_ankisyncd_names_are_accepted():
    c = cfg.load(
        None,
        {
            "ANKISYNCD_COGNITO_USER_POOL_ID": "us-east-1_X",
            "ANKISYNCD_COGNITO_CLIENT_ID": "legacy",
            "ANKISYNCD_COGNITO_CLIENT_SECRET": "shh",
            "ANKISYNCD_COGNITO_REGION": "us-east-1",
        },
    )
    assert c.cognito.client_id == "legacy"
    assert c.cognito.client_secret.reveal() == "shh"
    assert c.cognito.region == "us-east-1"


def test_new_names_win_over_legacy_ones():
    c = cfg.load(None, {**REQUIRED, "ANKISYNCD_COGNITO_CLIENT_ID": "legacy"})
    assert c.cognito.client_id == "cid"


def test_yaml_then_environment(tmp_path):
    path = tmp_path / "g.yaml"
    path.write_text(
        "cognito:\n  user_pool_id: eu-west-1_Y\n  client_id: fromfile\nworkers:\n  max_workers: 7\n"
    )
    c = cfg.load(path, {"GATEWAY_WORKERS_MAX_WORKERS": "9"})
    assert (c.cognito.client_id, c.workers.max_workers) == ("fromfile", 9)


def test_secrets_come_from_files_and_never_print(tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("s3cr3t-value-from-file\n")
    keys = tmp_path / "keys"
    keys.write_text("a" * 20 + "," + "b" * 20)
    c = cfg.load(
        None,
        {
            **REQUIRED,
            "GATEWAY_COGNITO_CLIENT_SECRET_FILE": str(secret),
            "GATEWAY_PROVISION_API_KEYS_FILE": str(keys),
        },
    )
    assert c.cognito.client_secret.reveal() == "s3cr3t-value-from-file"
    assert [k.reveal() for k in c.provision.api_keys] == ["a" * 20, "b" * 20]
    assert "s3cr3t" not in repr(c) and "aaaa" not in repr(c)


def test_every_problem_is_reported_at_once(tmp_path):
    path = tmp_path / "g.yaml"
    path.write_text("server:\n  port: 0\n  colour: blue\nbogus: 1\n")
    with pytest.raises(cfg.ConfigError) as info:
        cfg.load(
            path, {"GATEWAY_WORKERS_MAX_WORKERS": "lots", "GATEWAY_AUTH_CACHE_TTL_SECONDS": "-1"}
        )
    text = str(info.value)
    for fragment in (
        "server.colour: unknown setting",
        "bogus: unknown setting",
        "server.port",
        "workers.max_workers",
        "auth.cache_ttl_seconds",
        "cognito.user_pool_id: required",
        "cognito.client_id: required",
    ):
        assert fragment in text


def test_missing_secret_file_is_reported(tmp_path):
    with pytest.raises(cfg.ConfigError, match="cannot read secret file"):
        cfg.load(None, {**REQUIRED, "GATEWAY_COGNITO_CLIENT_SECRET_FILE": str(tmp_path / "no")})


def test_production_config_refuses_a_local_cognito_endpoint():
    env = {**REQUIRED, "GATEWAY_COGNITO_ENDPOINT_URL": "http://127.0.0.1:5000"}
    with pytest.raises(cfg.ConfigError, match="local_stand_in"):
        cfg.load(None, env)
    c = cfg.load(None, {**env, "GATEWAY_COGNITO_LOCAL_STAND_IN": "true"})
    assert c.cognito.local_stand_in


def test_local_stand_in_must_be_on_loopback():
    env = {
        **REQUIRED,
        "GATEWAY_COGNITO_ENDPOINT_URL": "https://cognito-idp.eu-west-1.amazonaws.com",
        "GATEWAY_COGNITO_LOCAL_STAND_IN": "true",
    }
    with pytest.raises(cfg.ConfigError, match="loopback"):
        cfg.load(None, env)


def test_short_provisioning_keys_are_refused():
    with pytest.raises(cfg.ConfigError, match="too short"):
        cfg.load(None, {**REQUIRED, "GATEWAY_PROVISION_API_KEYS": "short"})


def test_worker_command_is_shell_split():
    c = cfg.load(
        None, {**REQUIRED, "GATEWAY_WORKERS_COMMAND": "/usr/bin/anki-sync-server --x 'a b'"}
    )
    assert c.worker_command() == ("/usr/bin/anki-sync-server", "--x", "a b")


@pytest.mark.parametrize("prefix", ["anki/", "/anki", "//", "/a//b/"])
def test_bad_path_prefixes_are_refused(prefix):
    with pytest.raises(cfg.ConfigError, match="path_prefix"):
        cfg.load(None, {**REQUIRED, "GATEWAY_SERVER_PATH_PREFIX": prefix})


def test_an_empty_variable_does_not_hide_the_legacy_name():
    c = cfg.load(
        None,
        {
            "GATEWAY_COGNITO_USER_POOL_ID": "",
            "ANKISYNCD_COGNITO_USER_POOL_ID": "eu-west-1_Legacy1",
            "GATEWAY_COGNITO_CLIENT_ID": "cid",
        },
    )
    assert c.cognito.user_pool_id == "eu-west-1_Legacy1"


def test_the_lambdas_singular_key_name_is_accepted_by_the_gateway():
    c = cfg.load(None, {**REQUIRED, "GATEWAY_PROVISION_API_KEY": "k" * 20})
    assert [k.reveal() for k in c.provision.api_keys] == ["k" * 20]


def test_a_cached_login_outlives_a_cognito_change_by_a_minute_by_default():
    auth = cfg.load(None, REQUIRED).auth
    assert (auth.cache_ttl_seconds, auth.recheck_seconds) == (60, 900)


@pytest.mark.parametrize("ttl, ok", [("300", True), ("301", False), ("900", False)])
def test_the_credential_cache_lifetime_is_bounded(ttl, ok):
    env = {**REQUIRED, "GATEWAY_AUTH_CACHE_TTL_SECONDS": ttl}
    if ok:
        assert cfg.load(None, env).auth.cache_ttl_seconds == int(ttl)
    else:
        with pytest.raises(cfg.ConfigError, match="auth.cache_ttl_seconds: at most 300"):
            cfg.load(None, env)


@pytest.mark.parametrize(
    ("name", "value", "problem"),
    [
        ("CONTAINMENT", "docker", "workers.containment: must be one of auto, cgroup, rlimit"),
        ("MAX_MEMORY_MEGS", "63", "workers.max_memory_megs: at least 64"),
        ("MAX_PIDS", "7", "workers.max_pids: at least 8"),
        ("CPU_WEIGHT", "0", "workers.cpu_weight: 1 to 10000"),
        ("CPU_WEIGHT", "10001", "workers.cpu_weight: 1 to 10000"),
        ("NICE", "-1", "workers.nice: 0 to 19"),
        ("NICE", "20", "workers.nice: 0 to 19"),
    ],
)
def test_containment_settings_out_of_range_are_refused(name, value, problem):
    with pytest.raises(cfg.ConfigError) as info:
        cfg.load(None, {**REQUIRED, f"GATEWAY_WORKERS_{name}": value})
    assert problem in str(info.value)


def test_containment_defaults_leave_an_honest_upload_at_the_stock_cap_room():
    # Measured (docs/security/containment.md): a 280 MB collection's full upload peaks at
    # 573 MiB of private memory, the stock server's cap being 3 x max_payload_megs inflated.
    workers = cfg.load(None, REQUIRED).workers
    assert workers.containment == "auto"
    assert workers.max_memory_megs >= 6 * workers.max_payload_megs > 573
