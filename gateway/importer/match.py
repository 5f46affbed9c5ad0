"""Which Cognito user an earlier server's folder belongs to.

    await match(directory, name) -> Matched | Unmatched
        raises ProviderUnavailable, ProviderMisconfigured (the run stops: nothing is half-known)

The Cognito-patched ankisyncd named a user's folder after the Cognito username, the sub (in
pools that sign in by email the username *is* the sub), the email, or the email's local part
(`testuser` for `testuser@example.com`, its provisioning endpoint). So, in this order:

1. AdminGetUser with the name. A user whose username or sub is the name matches. Cognito also
   finds users by an email alias; such a user matches only when that email is verified. A
   username match without `@` is ambiguous when the name is also the local part of another
   user's email (one more ListUsers).
2. A name shaped like a sub: ListUsers by sub.
3. ListUsers by email: `email = name` when the name has an `@`, else `email ^= "name@"`. Only a
   verified email counts (anyone can type an unverified address into a profile); exactly one
   such user matches, more are ambiguous. A local part is ambiguous as soon as any other user
   is listed, verified or not (anyone can verify `name@` a domain of their own).

`decide()` is the pure part of step 3.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Protocol

from gateway.identity.provider import Identity, UnknownUser

_SUB = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


class Directory(Protocol):
    """What of the identity provider the import needs (CognitoProvider has it)."""

    async def lookup(self, username: str) -> Identity: ...

    async def lookup_sub(self, sub: str, username: str = "") -> Identity: ...

    async def users_by_email(self, email: str, *, prefix: bool = False) -> list[Identity]: ...


@dataclass(frozen=True)
class Matched:
    identity: Identity
    #: "username", "sub" or "email"
    by: str


@dataclass(frozen=True)
class Unmatched:
    reason: str


def _fold(text: str) -> str:
    return unicodedata.normalize("NFKC", text).casefold()


async def match(directory: Directory, name: str) -> Matched | Unmatched:
    try:
        user: Identity | None = await directory.lookup(name)
    except UnknownUser:
        user = None
    if user is not None:
        if _fold(user.username) == _fold(name):
            return await _no_local_part_of_another(directory, name, Matched(user, "username"))
        if user.sub == name:
            return Matched(user, "sub")
        if user.email is not None and _fold(user.email) == _fold(name):
            return Matched(user, "email")
        # Found through an alias that is not verified: never enough.
    if _SUB.fullmatch(name):
        try:
            return Matched(await directory.lookup_sub(name), "sub")
        except UnknownUser:
            pass
    local_part = "@" not in name
    found = await directory.users_by_email(name + "@" if local_part else name, prefix=local_part)
    return decide(name, found, unverified_alias=user is not None)


async def _no_local_part_of_another(
    directory: Directory, name: str, found: Matched
) -> Matched | Unmatched:
    """`found` unless `name` (without `@`) is also the local part of another user's email,
    verified or not: ankisyncd's provisioning named folders so, and anyone can register a
    username."""
    if "@" in name:
        return found
    listed = await directory.users_by_email(name + "@", prefix=True)
    others = [user for user in listed if user.sub != found.identity.sub]
    if others:
        return Unmatched(
            f"ambiguous: a Cognito user's username, and the local part of {len(others)} other"
            " user(s)' email"
        )
    return found


def decide(
    name: str, found: list[Identity], *, unverified_alias: bool = False
) -> Matched | Unmatched:
    """The user a ListUsers-by-email answer names for folder `name`. Pure.

    `found` holds the users Cognito listed; their `email` is None unless verified. A verified
    email must itself be `name` (or, for a name without `@`, have `name` as its local part):
    the filter is Cognito's, the check is ours.
    """
    wanted = _fold(name)

    def named(email: str) -> bool:
        return _fold(email) == wanted if "@" in name else _fold(email).rpartition("@")[0] == wanted

    verified = [user for user in found if user.email is not None and named(user.email)]
    # A verified email proves its owner holds that address, not that a folder named after a
    # local part is theirs: any other user listed with it (the unverified one may be the
    # folder's owner; ankisyncd verified nothing) makes a local part ambiguous.
    unverified = sum(user.email is None for user in found)
    candidates = len(verified) + (0 if "@" in name else unverified)
    if len(verified) == 1 and candidates == 1:
        return Matched(verified[0], "email")
    if candidates > 1:
        return Unmatched(f"ambiguous: {candidates} Cognito users have an email like it")
    if unverified_alias or any(user.email is None for user in found):
        return Unmatched("only an unverified email matches (verified emails only)")
    return Unmatched("no Cognito user with this username, sub or verified email")
