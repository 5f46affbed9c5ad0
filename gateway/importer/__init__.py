"""`python -m gateway accounts import DIR [--dry-run]`: take over an earlier server's collections.

DIR is the `collections/` folder of the Cognito-patched ankisyncd: one folder per user, named
after the user's Cognito username, sub, email or the email's local part. For each folder:

    inspect (folder.py)  what it holds; symbolic links, hard links, unsafe names refused
    judge (judge.py)     its collection, on a private copy: the size a stock server takes, no
                         holes, SQLite integrity, no trigger/view/virtual table, schema 11-18
    match (match.py)     its Cognito user: username, then sub, then a verified email
    account              the registry's account for that sub, created if new (as a login would)
    move (move.py)       collection, WAL and media into the account's folder, under the
                         account's lock; the stock server's media.db written; a marker left in
                         the source folder, so a second run does nothing

Every folder is inspected, judged and matched before anything changes; two folders of one user
are both refused. `--dry-run` stops there and prints the plan: each folder's verdict is the one
the real run reaches (what a stock client could have produced imports, nothing else does). Each
folder is judged and reported alone: an error in one is reported and the run goes on.
Run as the gateway's user: root is refused when it does not own the data folder (files it made
would lock the gateway out), and files of another owner (the old server's) are copied, so the
sync server can write its copy.

Exit status: 0 when every folder is imported (or was already), 1 when some could not be (each
is named with the reason), 2 when the run could not start (DIR unreadable, Cognito unavailable
or misconfigured, run as root).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path

from gateway import naming
from gateway.config import Config
from gateway.identity.provider import Identity, ProviderMisconfigured, ProviderUnavailable
from gateway.importer.folder import COLLECTION, AlreadyImported, Skipped, Source, inspect
from gateway.importer.judge import collection_problem
from gateway.importer.match import Directory, Matched, Unmatched, match
from gateway.importer.move import Refused, finish_marked, move, target_problem
from gateway.ops.usage import human_bytes
from gateway.registry import REGISTRY_FILE, Account, Registry, open_registry
from gateway.workers.lock import make_account_dir, try_lock

#: Media files named per folder in the report before "... and N more".
SHOWN_LEFT = 10


def main(argv: list[str], config: Config) -> int:
    parser = argparse.ArgumentParser(prog="python -m gateway accounts import")
    parser.add_argument("dir", type=Path, help="the earlier server's collections folder")
    parser.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    args = parser.parse_args(argv)
    owner = config.data_dir.stat().st_uid if config.data_dir.exists() else 0
    if os.geteuid() == 0 and owner != 0:
        # Files root made (the registry, account folders, media.db) would lock the gateway out.
        print(
            f"run the import as the gateway's user (uid {owner}, the owner of "
            f"{config.data_dir}), not as root"
        )
        return 2

    async def go() -> int:
        from gateway.identity.cognito import CognitoProvider

        provider = CognitoProvider(config.cognito)
        try:
            return await run(args.dir, config, provider, dry_run=args.dry_run)
        finally:
            await provider.close()

    return asyncio.run(go())


def shown(name: str) -> str:
    """A folder or file name from DIR, safe to print on one line."""
    return "".join(ch if ch.isprintable() else f"\\x{ord(ch) & 0xFF:02x}" for ch in name)


async def run(
    directory: Path,
    config: Config,
    provider: Directory,
    *,
    dry_run: bool = False,
    out: Callable[[str], None] = print,
) -> int:
    try:
        root_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        out(f"cannot read {directory}: {exc.strerror}")
        return 2
    try:
        limit = 3 * config.workers.max_payload_megs << 20
        found = [
            _judged(root_fd, _inspect(root_fd, name), limit) for name in sorted(os.listdir(root_fd))
        ]
        try:
            sources = [s.name for s in found if isinstance(s, Source)]
            matches = {name: await match(provider, name) for name in sources}
        except (ProviderUnavailable, ProviderMisconfigured) as exc:
            out(f"Cognito: {exc.detail}. Nothing was changed.")
            return 2
        _refuse_shared_users(matches)
        # Folders opening a registry makes (DynamoDB: this node's collections folder); a dry
        # run removes them again (they would be root's when it runs as root on a fresh disk).
        made = [p for p in (config.data_dir, config.collections_dir) if not p.exists()]
        registry = _open_registry(config, dry_run)
        failed = 0
        try:
            out(f"{'Plan' if dry_run else 'Import'} of {directory} ({len(found)} folders):")
            for item in found:
                if isinstance(item, AlreadyImported):
                    if not dry_run:
                        finish_marked(config.collections_dir, item.name, item.note)
                    note = shown(item.note)
                    out(f"  {shown(item.name)}: already imported ({note}); nothing to do")
                    continue
                if isinstance(item, Skipped):
                    out(f"  {shown(item.name)}: NOT IMPORTED: {item.reason}")
                    failed += 1
                    continue
                found_user = matches[item.name]
                if isinstance(found_user, Unmatched):
                    out(f"  {shown(item.name)}: NOT MATCHED: {found_user.reason}")
                    failed += 1
                    continue
                try:
                    ok = await _one(root_fd, item, found_user, registry, config, dry_run, out)
                except (OSError, sqlite3.Error, ValueError) as exc:
                    # Each folder is judged alone: an error of one never stops the others.
                    out(f"  {shown(item.name)}: NOT IMPORTED: {_failure(exc)}")
                    ok = False
                failed += not ok
        finally:
            if registry is not None:
                await registry.close()
            if dry_run:
                for folder in reversed(made):
                    with contextlib.suppress(OSError):
                        folder.rmdir()  # only while empty
    finally:
        os.close(root_fd)
    out(
        f"{'Would not import' if dry_run else 'Not imported'}: {failed} folder(s)."
        if failed
        else ("Nothing would be refused." if dry_run else "Done.")
    )
    return 1 if failed else 0


def _inspect(root_fd: int, name: str) -> Source | Skipped | AlreadyImported:
    try:
        return inspect(root_fd, name)
    except OSError as exc:
        return Skipped(name, f"unreadable ({exc.strerror})")


def _judged(
    root_fd: int, item: Source | Skipped | AlreadyImported, limit: int
) -> Source | Skipped | AlreadyImported:
    """`item`, or Skipped when its collection is not one to import (judge.py)."""
    if not isinstance(item, Source) or item.collection_bytes is None:
        return item
    try:
        why = collection_problem(root_fd, item.name, limit)
    except OSError as exc:
        why = f"unreadable ({exc.strerror})"
    return item if why is None else Skipped(item.name, why)


def _failure(exc: BaseException) -> str:
    text = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return (
        f"failed ({type(exc).__name__}: {text[:120]}); if the account is named, it is not served"
        " until the import is run again"
    )


def _refuse_shared_users(matches: dict[str, Matched | Unmatched]) -> None:
    """Two folders of one Cognito user: neither is imported (which one is the user's?)."""
    by_sub: dict[str, list[str]] = {}
    for name, found in matches.items():
        if isinstance(found, Matched):
            by_sub.setdefault(found.identity.sub, []).append(name)
    for names in by_sub.values():
        if len(names) > 1:
            for name in names:
                others = ", ".join(shown(n) for n in names if n != name)
                matches[name] = Unmatched(
                    f"the same Cognito user as folder {others}: import one of them by hand"
                )


def _open_registry(config: Config, dry_run: bool) -> Registry | None:
    fresh = config.registry.backend == "sqlite" and not (config.data_dir / REGISTRY_FILE).exists()
    if dry_run and fresh:
        return None  # a dry run creates nothing, not even an empty registry
    return open_registry(config)


async def _account(
    registry: Registry | None, identity: Identity, *, create: bool
) -> Account | None:
    """Every registry call of the import: the account for `identity`, created when `create`."""
    if registry is None:
        return None
    if create:
        return (await registry.ensure(identity, refresh=False))[0]
    return await registry.get(identity.sub)


async def _one(
    root_fd: int,
    source: Source,
    found: Matched,
    registry: Registry | None,
    config: Config,
    dry_run: bool,
    out: Callable[[str], None],
) -> bool:
    user = found.identity
    who = f"Cognito user {user.email or user.username} (by {found.by})"
    if not user.enabled:
        who += ", disabled in Cognito"
    collection = source.collection_bytes
    what = (
        f"collection {human_bytes(collection) if collection is not None else 'moved already'}"
        f"{' with WAL' if source.has_wal else ''}, {len(source.media)} media files"
        f" ({human_bytes(source.media_bytes)})"
    )
    # A folder without its collection can only be an import cut off after the move: its
    # account exists then. Never create an account for it.
    account = await _account(registry, user, create=not dry_run and collection is not None)
    if account is None and collection is None:
        out(f"  {shown(source.name)}: NOT IMPORTED: not a collection folder (no {COLLECTION})")
        return False
    if dry_run:
        if account is None:
            name = naming.base_name(user.username, user.email)
            out(f"  {shown(source.name)} → new account {name} [{who}]: {what}")
        else:
            problem = target_problem(config.collections_dir / account.name, source)
            if problem is not None:
                out(f"  {shown(source.name)}: NOT IMPORTED into {account.name}: {problem}")
                return False
            out(f"  {shown(source.name)} → account {account.name} [{who}]: {what}")
        _left(source.skipped_media, out)
        return True
    assert account is not None
    make_account_dir(config.collections_dir, account.name)  # an import brings it here
    lock = try_lock(config.collections_dir, account.name)
    if lock is None:
        out(
            f"  {shown(source.name)}: NOT IMPORTED into {account.name}: its sync server is "
            "running; run again once it is idle (workers.idle_timeout_seconds)"
        )
        return False
    try:
        moved = move(root_fd, source, config.collections_dir / account.name)
    except Refused as exc:
        out(f"  {shown(source.name)}: NOT IMPORTED into {account.name}: {exc}")
        return False
    finally:
        lock.release()
    out(
        f"  {shown(source.name)} → account {account.name} [{who}]: imported collection"
        f" (schema {moved.schema}), {moved.media_files} media files"
        f" ({human_bytes(moved.media_bytes)})"
    )
    _left(moved.left, out)
    return True


def _left(left: tuple[tuple[str, str], ...], out: Callable[[str], None]) -> None:
    for name, why in left[:SHOWN_LEFT]:
        out(f"      media left behind: {shown(name)}: {why}")
    if len(left) > SHOWN_LEFT:
        out(f"      ... and {len(left) - SHOWN_LEFT} more media files left behind")
