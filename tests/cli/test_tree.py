"""The one command tree (gateway/cli/tree.py) keeps the command line as it was: where --config
may stand, the default command, what each wrong usage exits with."""

from __future__ import annotations

import argparse

import pytest

from gateway.__main__ import main
from gateway.cli.tree import parser


@pytest.fixture
def configured(tmp_path, monkeypatch):
    """A settings file naming a data folder; no GATEWAY_* settings in the environment."""
    for name in ("GATEWAY_CONFIG", "GATEWAY_DATA_DIR"):
        monkeypatch.delenv(name, raising=False)
    settings = tmp_path / "gateway.yaml"
    settings.write_text(
        f"data_dir: {tmp_path / 'data'}\n"
        "cognito:\n  user_pool_id: eu-west-1_Tree1\n  client_id: c\n"
    )
    monkeypatch.chdir(tmp_path)
    return settings


@pytest.mark.parametrize(
    "argv",
    [
        ["--config", "{settings}", "accounts", "list"],
        ["accounts", "--config", "{settings}", "list"],
        ["accounts", "list", "--config", "{settings}"],
        ["--config", "{settings}", "check-config"],
        ["check-config", "--config", "{settings}"],
    ],
)
def test_config_is_taken_before_or_after_the_command(configured, capsys, argv):
    assert main([a.format(settings=configured) for a in argv]) == 0
    assert "invalid configuration" not in capsys.readouterr().err


def test_gateway_config_names_the_file_when_no_flag_does(configured, monkeypatch, capsys):
    monkeypatch.setenv("GATEWAY_CONFIG", str(configured))
    assert main(["check-config"]) == 0
    assert f"configuration OK ({configured})" in capsys.readouterr().out


def test_local_mode_never_reads_gateway_config(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("GATEWAY_CONFIG", str(tmp_path / "missing.yaml"))
    assert main(["dev", "users", "--data", str(tmp_path / "local")]) == 0
    assert "No local users yet" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv",
    [
        ["serve", "--probe"],  # --probe is check-config's
        ["backup", "--config", "{settings}"],  # --to is required (verify aside)
        ["accounts", "--config", "{settings}"],  # an action is required
        ["restore", "--config", "{settings}"],  # --from is required
        ["no-such-command"],
    ],
)
def test_wrong_usage_exits_2(configured, argv):
    with pytest.raises(SystemExit) as stopped:
        main([a.format(settings=configured) for a in argv])
    assert stopped.value.code == 2


def test_backup_verify_without_a_manifest_key_cannot_check_and_exits_2(configured, capsys):
    assert main(["--config", str(configured), "backup", "verify", str(configured.parent)]) == 2
    assert "anki-cognito-gateway backup verify:" in capsys.readouterr().err


def test_help_names_every_command_and_no_readme_section(capsys):
    """`python -m gateway --help` is what a newcomer reads first: its summary line lists every
    command the tree has, and no help text sends them to the README (local mode's documentation
    is docs/getting-started.md)."""
    with pytest.raises(SystemExit) as stop:
        main(["--help"])
    assert stop.value.code == 0
    shown = " ".join(capsys.readouterr().out.split())
    summary = shown.split("`")[1].replace("- ", "-")  # argparse wraps at hyphens
    (commands,) = [a for a in parser()._actions if isinstance(a, argparse._SubParsersAction)]
    names = ",".join(commands.choices)
    assert names == "serve,check-config,health,dev,accounts,backup,restore"
    assert summary == f"python -m gateway [--config PATH] {{{names}}}"
    assert "README" not in shown


def test_accounts_help_names_every_accounts_command(capsys):
    """The top-level help's line for `accounts` lists each of its subcommands."""
    with pytest.raises(SystemExit):
        main(["--help"])
    shown = " ".join(capsys.readouterr().out.split()).replace("- ", "-")
    (commands,) = [a for a in parser()._actions if isinstance(a, argparse._SubParsersAction)]
    (accounts,) = [
        a
        for a in commands.choices["accounts"]._actions
        if isinstance(a, argparse._SubParsersAction)
    ]
    line = shown.split(" accounts ", 1)[1].split(" backup ", 1)[0]
    named = {part.split()[0] for part in line.split("|")}
    assert named == set(accounts.choices)


@pytest.fixture
def no_identity(tmp_path, monkeypatch):
    """Settings naming only a data folder (local mode's, say): no user pool, no app client."""
    for name in ("GATEWAY_CONFIG", "GATEWAY_DATA_DIR"):
        monkeypatch.delenv(name, raising=False)
    for name in ("GATEWAY_COGNITO_USER_POOL_ID", "GATEWAY_COGNITO_CLIENT_ID"):
        monkeypatch.delenv(name, raising=False)
    settings = tmp_path / "gateway.yaml"
    settings.write_text(f"data_dir: {tmp_path / 'data'}\n")
    monkeypatch.chdir(tmp_path)
    return settings


@pytest.mark.parametrize(
    "argv",
    [["accounts", "list"], ["backup", "--to", "{backups}", "--list"]],
)
def test_commands_that_never_call_cognito_need_no_user_pool_settings(no_identity, capsys, argv):
    # An operator backing up local mode's data folder has no Cognito settings to give.
    backups = no_identity.parent / "backups"
    backups.mkdir()
    argv = [a.format(backups=backups) for a in argv]
    assert main(["--config", str(no_identity), *argv]) == 0
    assert "cognito.user_pool_id" not in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["check-config"], ["accounts", "disable", "x"]])
def test_commands_that_call_cognito_still_need_its_settings(no_identity, capsys, argv):
    assert main(["--config", str(no_identity), *argv]) == 2
    assert "cognito.user_pool_id: required" in capsys.readouterr().err
