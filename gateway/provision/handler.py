"""`POST /provision-user`: create a user's account before the first login. A thin aiohttp edge.

Served by the gateway itself (never forwarded) at `<server.path_prefix>provision-user` and, when
the prefix is not "/", also at `/provision-user`, where existing Lambdas post.

Checks, in order; each refusal is JSON `{"success": false, "error": "..."}`:

    no API key configured               404  the route is off, never open
    X-API-Key missing or wrong          401  constant time, against every configured key
    Content-Type not application/json   415
    body over provision.max_body_bytes  400  refused before reading it all
    signature (with a signing secret)   401  also a replay, seen by every process (503 while
                                             the registry that remembers them is unavailable)
    not JSON, wrong types, bad fields   400  gateway/provision/request.py
    user not in Cognito (a lookup)      404
    username does not match that sub    400
    Cognito unavailable (a lookup)      503  with Retry-After
    registry unavailable                503  with Retry-After

The identity is always Cognito's own record, never the body's word: by `sub` (ListUsers) when
the caller sent one (the Lambda does), else by username or email (AdminGetUser). A made-up
`sub`, or a real one paired with another username, writes nothing; the email used for naming
is Cognito's, and only when verified.

Then `Registry.ensure(refresh=False)` creates the row and the folder, or finds them and changes
nothing (provisioning never rewrites an existing account): `200 {"success": true, "message",
"username": <account>, "user_directory": "collections/<account>", "created"}`.
Nothing is written before that last step, so a refused request changes nothing. `ensure()` is
synchronous and runs on the loop thread, which serialises concurrent calls in one process (there
is no await between the existence check and the insert); across processes SQLite's
`BEGIN IMMEDIATE` does.

Logs name the account, the sub, `new` (created now) and which key slot matched (for
rotations), never a key.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import posixpath

from aiohttp import web

from gateway import metrics
from gateway.appkeys import ACCOUNT, CONFIG, PROVIDER, REGISTRY
from gateway.config import Secret
from gateway.errors import GatewayError, PayloadTooLarge
from gateway.identity.provider import Identity, IdentityProvider, UnknownUser
from gateway.identity.spelling import canonical
from gateway.provision import request as body_format
from gateway.provision.signature import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    SignatureError,
    Verifier,
)
from gateway.registry import RegistryUnavailable
from gateway.web.bodies import read_capped

log = logging.getLogger("gateway.provision")

PATH = "provision-user"
API_KEY_HEADER = "X-API-Key"
VERIFIER: web.AppKey[Verifier | None] = web.AppKey("provision_verifier")
CREATED: web.RequestKey[bool] = web.RequestKey("provision_created", bool)
_CHALLENGE = {"WWW-Authenticate": f'APIKey header="{API_KEY_HEADER}"'}  # RFC 9110 §11.6.1


class Refused(Exception):
    def __init__(self, status: int, error: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(error)
        self.status, self.error, self.headers = status, error, headers


def add_routes(app: web.Application) -> None:
    """Register the route; reads `app[CONFIG]`, which must already be set."""
    config = app[CONFIG]
    secret = config.provision.signing_secret
    app[VERIFIER] = (
        Verifier(secret.reveal(), max_skew=config.provision.max_clock_skew_seconds)
        if secret is not None
        else None
    )
    prefix = config.server.path_prefix
    app.router.add_post(prefix + PATH, provision_user)
    if prefix != "/":
        app.router.add_post("/" + PATH, provision_user)


async def provision_user(request: web.Request) -> web.Response:
    try:
        answer = await _provision(request)
    except Refused as exc:
        metrics.provisioning("unavailable" if exc.status == 503 else "refused")
        log.warning(
            "provisioning refused",
            extra={"status": exc.status, "reason": exc.error, "remote": request.remote},
        )
        return web.json_response(
            {"success": False, "error": exc.error}, status=exc.status, headers=exc.headers
        )
    except Exception:
        metrics.provisioning("error")
        log.exception("provisioning failed")
        return web.json_response({"success": False, "error": "internal error"}, status=500)
    metrics.provisioning("created" if request.get(CREATED) else "existing")
    return answer


async def _provision(request: web.Request) -> web.Response:
    app = request.app
    settings = app[CONFIG].provision
    slot = _key_slot(request.headers.get(API_KEY_HEADER), settings.api_keys)
    if slot is None:
        raise Refused(401, "missing or invalid API key", _CHALLENGE)
    if request.content_type != "application/json":
        raise Refused(415, "Content-Type must be application/json")
    body = await _read_capped(request, settings.max_body_bytes)
    verifier = app[VERIFIER]
    if verifier is not None:
        try:
            spent = verifier.verify(
                request.headers.get(TIMESTAMP_HEADER), request.headers.get(SIGNATURE_HEADER), body
            )
        except SignatureError as exc:
            raise Refused(401, str(exc), _CHALLENGE) from None
        try:
            first = await app[REGISTRY].spend_nonce(spent.key, spent.until)
        except RegistryUnavailable as exc:
            log.warning("provisioning: registry unavailable", extra={"reason": exc.detail})
            raise Refused(503, exc.public, {"Retry-After": str(exc.retry_after)}) from None
        if not first:
            raise Refused(401, "signature already used (replay)", _CHALLENGE)
    try:
        parsed = body_format.parse(body_format.decode(body))
    except body_format.InvalidRequest as exc:
        raise Refused(400, str(exc)) from None
    identity = await _identity(parsed, app[PROVIDER])
    registry = app[REGISTRY]
    try:
        account, created = await registry.ensure(identity, refresh=False)
    except RegistryUnavailable as exc:
        log.warning("provisioning: registry unavailable", extra={"reason": exc.detail})
        raise Refused(503, exc.public, {"Retry-After": str(exc.retry_after)}) from None
    request[CREATED] = created
    folder = registry.folder(account)  # re-checks that the name stays inside collections/
    request[ACCOUNT] = account.name
    log.info(
        "user provisioned",
        extra={"account": account.name, "sub": account.sub, "new": created, "key_slot": slot},
    )
    return web.json_response(
        {
            "success": True,
            "message": f"User {parsed.username or identity.username} provisioned successfully",
            "username": account.name,
            "user_directory": posixpath.join(folder.parent.name, folder.name),
            "created": created,
        }
    )


def _key_slot(given: str | None, keys: tuple[Secret, ...]) -> int | None:
    """Index of the configured key `given` equals, or None. Raises 404 when none is configured.

    Every key is compared (no early exit), each with hmac.compare_digest, so the time taken does
    not depend on which key, or how much of one, matched. There is no fallback: a missing header
    is a refusal, whatever is configured.
    """
    configured = [k.reveal().encode("utf-8") for k in keys if k.reveal()]
    if not configured:
        raise Refused(404, "not found")
    try:
        candidate = (given or "").encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        candidate = b""
    slot = None
    for index, key in enumerate(configured):
        if hmac.compare_digest(candidate, key) and slot is None:
            slot = index
    return slot


async def _read_capped(request: web.Request, cap: int) -> bytes:
    try:
        return await read_capped(request, cap)
    except PayloadTooLarge as exc:
        raise Refused(400, exc.detail) from None


async def _identity(parsed: body_format.ProvisionRequest, provider: IdentityProvider) -> Identity:
    """The user as Cognito records it; Refused when Cognito does not confirm the request."""
    try:
        if parsed.sub is not None:
            found = None
            if parsed.username is not None:
                # One read of the named user (AdminGetUser, the larger quota); a name that is
                # not that sub's (another spelling, another user) is settled by sub below.
                with contextlib.suppress(UnknownUser):
                    found = await provider.lookup_sub(parsed.sub, parsed.username)
            if found is None:
                found = await provider.lookup_sub(parsed.sub)
        else:
            name = parsed.username or parsed.email
            assert name is not None  # parse() requires one of them
            found = await provider.lookup(name)
    except UnknownUser:
        raise Refused(404, "user not found in the identity provider") from None
    except GatewayError as exc:
        headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after else None
        if exc.status >= 500:
            log.log(
                logging.ERROR if exc.status == 500 else logging.WARNING,
                "provisioning lookup failed",
                extra={"reason": exc.detail},
            )
        raise Refused(exc.status, exc.public, headers) from None
    if parsed.sub is not None and parsed.username is not None:
        if not _names_user(parsed.username, found):
            raise Refused(400, "username does not match the user with this sub")
    if parsed.sub is None and parsed.username is None and parsed.email is not None:
        # Found by email alone: only an email Cognito has verified may stand for the user.
        if found.email is None or canonical(found.email) != canonical(parsed.email):
            raise Refused(404, "user not found in the identity provider")
    return found


def _names_user(username: str, found: Identity) -> bool:
    """Whether `username` is the Cognito username (any spelling) or verified email of `found`."""
    wanted = canonical(username)
    return wanted == canonical(found.username) or (
        found.email is not None and wanted == canonical(found.email)
    )
