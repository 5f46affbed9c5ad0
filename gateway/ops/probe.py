"""`python -m gateway check-config --probe`: one round of Cognito calls that tells a working
setup from each misconfiguration, with the fix for each.

    probe(config, client=None) -> list[Finding]     (ok, what, fix); never raises for AWS errors

Calls (read-only, nothing is created):
- AdminInitiateAuth for a username that cannot exist, with a wrong password: a working setup
  answers UserNotFoundException or NotAuthorizedException "Incorrect username or password";
  every other answer names a problem (pool, app client, auth flow, client secret, IAM, network).
- ListUsers with Limit=1 (re-checks and provisioning by sub).
- DescribeUserPool, only with the portal on (its password policy).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from gateway.config import Config
from gateway.identity.cognito import make_client, secret_hash


@dataclass(frozen=True)
class Finding:
    ok: bool
    what: str
    fix: str = ""


def _code(exc: Exception) -> tuple[str, str]:
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        return str(error.get("Code", "")), str(error.get("Message", ""))
    return type(exc).__name__, ""


def _explain(operation: str, code: str, message: str, config: Config) -> Finding:
    action = "cognito-idp:" + "".join(p.title() for p in operation.split("_"))
    pool = config.cognito.user_pool_id
    if code in ("AccessDeniedException", "UnrecognizedClientException"):
        return Finding(
            False, f"{operation}: {code}", f"allow {action} on {pool} (README, IAM policy)"
        )
    if code == "ResourceNotFoundException":
        return Finding(
            False,
            f"{operation}: the user pool {pool} or app client was not found",
            "check cognito.user_pool_id, cognito.client_id and cognito.region",
        )
    if code == "InvalidParameterException" and "flow" in message.lower():
        return Finding(
            False,
            f"{operation}: the app client does not allow the admin password flow",
            "enable ALLOW_ADMIN_USER_PASSWORD_AUTH on the app client (README, The app client)",
        )
    if code == "NotAuthorizedException" and "secret hash" in message.lower():
        return Finding(
            False,
            f"{operation}: the client secret does not match",
            "set cognito.client_secret to the app client's secret, or leave it empty if the "
            "client has none",
        )
    if code in ("NoCredentialsError", "PartialCredentialsError"):
        return Finding(False, f"{operation}: no AWS credentials", "give the gateway a role or keys")
    if code in ("EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError"):
        return Finding(False, f"{operation}: Cognito unreachable ({code})", "check the network")
    return Finding(False, f"{operation}: {code}", "see the message above and README")


def probe(config: Config, client: Any = None) -> list[Finding]:
    cognito = config.cognito
    client = client or make_client(cognito)
    findings = []
    username = "gateway-probe-" + secrets.token_hex(8)
    params = {"USERNAME": username, "PASSWORD": secrets.token_urlsafe(24)}
    if cognito.client_secret is not None:
        params["SECRET_HASH"] = secret_hash(
            username, cognito.client_id, cognito.client_secret.reveal()
        )
    try:
        client.admin_initiate_auth(
            UserPoolId=cognito.user_pool_id,
            ClientId=cognito.client_id,
            AuthFlow=cognito.auth_flow,
            AuthParameters=params,
        )
        findings.append(Finding(False, "admin_initiate_auth: a made-up user logged in", "?"))
    except (ClientError, BotoCoreError) as exc:
        code, message = _code(exc)
        if code == "UserNotFoundException" or (
            code == "NotAuthorizedException" and "secret hash" not in message.lower()
        ):
            findings.append(
                Finding(True, "pool, app client, auth flow, secret and AdminInitiateAuth")
            )
        else:
            findings.append(_explain("admin_initiate_auth", code, message, config))
    calls = [("list_users", {"UserPoolId": cognito.user_pool_id, "Limit": 1})]
    if config.portal.enabled:
        calls.append(("describe_user_pool", {"UserPoolId": cognito.user_pool_id}))
    for operation, kwargs in calls:
        try:
            getattr(client, operation)(**kwargs)
            findings.append(Finding(True, operation))
        except (ClientError, BotoCoreError) as exc:
            findings.append(_explain(operation, *_code(exc), config))
    return findings
