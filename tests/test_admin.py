from gateway.__main__ import main
from gateway.identity.provider import Identity
from gateway.registry import SqliteRegistry
from tests.blocking import BlockingRegistry

ENV = {"GATEWAY_COGNITO_USER_POOL_ID": "eu-west-1_Adm1", "GATEWAY_COGNITO_CLIENT_ID": "c"}


def test_disable_revokes_keys_and_enable_restores_them(tmp_path, monkeypatch, capsys):
    for k, v in {**ENV, "GATEWAY_DATA_DIR": str(tmp_path)}.items():
        monkeypatch.setenv(k, v)
    reg = BlockingRegistry(SqliteRegistry(tmp_path / "registry.sqlite3", tmp_path / "collections"))
    reg.ensure(Identity("sub-1", "alice", "alice@example.com"))
    reg.add_host_key("sub-1", "k" * 40)

    assert main(["accounts", "list"]) == 0
    assert "alice\tactive" in capsys.readouterr().out
    assert main(["accounts", "disable", "alice"]) == 0
    assert reg.account_for_key("k" * 40) is None  # the running gateway's registry sees it
    assert main(["accounts", "enable", "alice"]) == 0
    assert reg.account_for_key("k" * 40).name == "alice"
    assert main(["accounts", "disable", "nobody"]) == 1
    reg.close()


def test_invalid_configuration_exits_non_zero_listing_problems(monkeypatch, capsys):
    for k in list(ENV) + ["ANKISYNCD_COGNITO_USER_POOL_ID", "ANKISYNCD_COGNITO_CLIENT_ID"]:
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("GATEWAY_WORKERS_MAX_WORKERS", "many")
    monkeypatch.chdir("/")
    assert main(["check-config"]) == 2
    err = capsys.readouterr().err
    assert "cognito.user_pool_id: required" in err and "workers.max_workers" in err


def test_list_shows_each_accounts_usage(tmp_path, monkeypatch, capsys):
    for k, v in {**ENV, "GATEWAY_DATA_DIR": str(tmp_path)}.items():
        monkeypatch.setenv(k, v)
    reg = BlockingRegistry(SqliteRegistry(tmp_path / "registry.sqlite3", tmp_path / "collections"))
    account, _ = reg.ensure(Identity("sub-1", "alice", "alice@example.com"))
    folder = reg.folder(account)
    (folder / "collection.anki2").write_bytes(b"x" * 2500)
    (folder / "media").mkdir()
    for n in range(3):
        (folder / "media" / f"f{n}.jpg").write_bytes(b"y" * 1000)
    reg.close()
    assert main(["accounts", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split("\t")[-5:-2] == ["collection", "media files", "media"]
    assert lines[1].split("\t")[-5:-2] == ["2.5 KB", "3", "3.0 KB"]


def test_quota_sets_an_accounts_own_limits_and_list_shows_them_against_its_usage(
    tmp_path, monkeypatch, capsys
):
    for k, v in {**ENV, "GATEWAY_DATA_DIR": str(tmp_path)}.items():
        monkeypatch.setenv(k, v)
    reg = BlockingRegistry(SqliteRegistry(tmp_path / "registry.sqlite3", tmp_path / "collections"))
    account, _ = reg.ensure(Identity("sub-1", "alice", "alice@example.com"))
    (reg.folder(account) / "media").mkdir()
    (reg.folder(account) / "media" / "big.mp3").write_bytes(b"y" * 2_500_000)
    reg.close()
    assert main(["accounts", "list"]) == 0
    row = capsys.readouterr().out.splitlines()[1].split("\t")
    assert row[-2:] == ["250.0 MB / 1000.0 MB / 100.0 MB", "-"]

    assert main(["accounts", "quota", "alice", "--media-megs", "2", "--media-file-megs", "0"]) == 0
    out = capsys.readouterr().out
    assert "media: 2 MB" in out and "media_file: unlimited" in out and "collection: default" in out
    assert out.splitlines()[-1].endswith("limits 250.0 MB / 2.0 MB / unlimited; over: media")
    assert main(["accounts", "list"]) == 0
    assert capsys.readouterr().out.splitlines()[1].split("\t")[-2:] == [
        "250.0 MB / 2.0 MB / unlimited",
        "media",
    ]

    assert main(["accounts", "quota", "alice", "--media-megs", "default"]) == 0
    assert "media: default" in capsys.readouterr().out
    assert main(["accounts", "quota", "nobody", "--media-megs", "1"]) == 1


def test_create_table_needs_the_dynamodb_backend(tmp_path, monkeypatch, capsys):
    for k, v in {**ENV, "GATEWAY_DATA_DIR": str(tmp_path)}.items():
        monkeypatch.setenv(k, v)
    assert main(["accounts", "create-table"]) == 2
    assert "registry.backend is sqlite" in capsys.readouterr().out


def test_an_unavailable_registry_is_one_line_and_a_non_zero_exit(tmp_path, monkeypatch, capsys):
    from moto import mock_aws

    env = {
        **ENV,
        "GATEWAY_DATA_DIR": str(tmp_path),
        "GATEWAY_REGISTRY_BACKEND": "dynamodb",
        "GATEWAY_REGISTRY_TABLE": "no-such-table",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with mock_aws():
        for args in (["list"], ["sign-out", "alice"], ["disable", "alice"]):
            assert main(["accounts", *args]) == 3
            err = capsys.readouterr().err
            assert "registry unavailable: DynamoDB" in err and "Traceback" not in err


def test_sign_out_ends_the_accounts_portal_sessions_too(tmp_path, monkeypatch, capsys):
    for k, v in {**ENV, "GATEWAY_DATA_DIR": str(tmp_path)}.items():
        monkeypatch.setenv(k, v)
    reg = BlockingRegistry(SqliteRegistry(tmp_path / "registry.sqlite3", tmp_path / "collections"))
    before, _ = reg.ensure(Identity("sub-1", "alice", "alice@example.com"))
    assert main(["accounts", "sign-out", "alice"]) == 0
    after = reg.get("sub-1")
    assert after.key_generation == before.key_generation + 1
    assert after.portal_epoch == before.portal_epoch + 1  # a session of the old epoch is void
    reg.close()
