"""The gateway's error tree, mapped to HTTP status in one place.

    GatewayError                    500  (base; also "gateway misconfigured")
    ├── BadRequest                  400  malformed login body or anki-sync header
    ├── ClientTooOld                501  no anki-sync header: a legacy client (Anki < 2.1.57)
    ├── NotFound                    404  outside sync/ and msync/, disabled routes
    ├── ClientStalled               408  a request body stopped or trickled (web/pace.py)
    ├── BodyTooLarge                413  a proxied body over the payload limits (uploads/payload.py)
    │   └── MediaZipRefused         413  a media zip not as Anki writes it (uploads/mediazip.py)
    │   └── QuotaReached            413  an account's storage limit (quota/): most methods
    │                                    answer it as a message Anki shows (forwarding/body.py)
    ├── EncodedBody                 415  a request body with a Content-Encoding
    ├── UnreadableBody              415  a proxied body that is not one modern zstd frame
    ├── AuthFailed                  403  wrong credentials, unknown/revoked key, challenge
    ├── SyncConflict                409  another device's sync holds the account (syncsession/)
    ├── TooManyAttempts             429  login limiter or Cognito's own lockout (Retry-After)
    │   └── TooManyInFlight         429  too many requests in flight from one address
    ├── Unavailable                 503  identity provider down/throttled, no worker slot
    │   ├── Overloaded              503  bodies in flight inflate to the budget (uploads/payload.py)
    │   └── WorkerDied              503  the worker died during the request (e.g. at its
    │                                    memory limit, gateway/workers/containment/); a fresh one
    │                                    serves the retry
    ├── WorkerFailed                502  a worker could not start or broke mid-request
    └── WorkerTimeout               504  a worker did not become ready in time

Why these numbers: the Anki client logs the user out on 403 and only on 403, so a 403 is
reserved for credentials that are really wrong (anki-sync-protocol.md, "How the client reacts").
Everything that is the gateway's or AWS's fault is a 5xx, which the client shows as "try again
in a few minutes". The client never shows a response body, so bodies are short plain text for
operators reading curl output; details go to the log.
"""

from __future__ import annotations


class GatewayError(Exception):
    status = 500
    #: Seconds for a Retry-After header, or None for no header.
    retry_after: int | None = None
    #: Short, safe text for the response body. Never contains a secret.
    public = "gateway error"
    #: Close the connection after the answer (a client that is shed, not served).
    close_connection = False

    def __init__(self, detail: str = "", *, retry_after: int | None = None) -> None:
        super().__init__(detail or self.public)
        self.detail = detail or self.public
        if retry_after is not None:
            self.retry_after = retry_after


class Misconfigured(GatewayError):
    """The gateway's own configuration or AWS permissions are wrong: logged loudly."""

    status = 500
    public = "gateway misconfigured"


class BadRequest(GatewayError):
    status = 400
    public = "bad request"


class PayloadTooLarge(BadRequest):
    """A body over a size cap; still a 400 for the login route (see the issue's status table)."""

    public = "request body too large"


class ClientTooOld(GatewayError):
    status = 501
    public = "this Anki version is too old for this server"


class NotFound(GatewayError):
    status = 404
    public = "not found"


class ClientStalled(GatewayError):
    """The client stopped sending its body, or sends it too slowly: the connection is closed."""

    status = 408
    public = "request body too slow"
    close_connection = True


class BodyTooLarge(GatewayError):
    """A proxied body broke a size rule (uploads/payload.py). `sync/upload` is answered as the stock
    server answers an oversized collection instead (forwarding/body.py); other methods get 413."""

    status = 413
    public = "request body too large"


class MediaZipRefused(BodyTooLarge):
    """A media upload whose zip is not what a stock client writes (uploads/mediazip.py): deflated or
    oversized entries, more than 25 files, names twice, sizes that disagree."""

    public = "media upload refused: the zip is not as Anki writes it"


class UnreadableBody(GatewayError):
    """A proxied body the gateway cannot read, so cannot count (uploads/frames.py): legacy or
    skippable zstd frames, several frames, data zstd cannot decode. Anki shows 415 as "a
    network error occurred" (measured with the 26.9 client; 400 would read "use Check
    Database")."""

    status = 415
    public = "request body is not one zstd frame"


class QuotaReached(BodyTooLarge):
    """An account's storage limit is reached (quota/limits.py). `message` is for the user: the
    proxy answers sync/upload, sync/meta and msync/uploadChanges with it in the form Anki shows
    (quota/answers.py); the other methods get 413."""

    public = "storage limit reached"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class EncodedBody(GatewayError):
    """A request body with a `Content-Encoding`: Anki never sends one (its bodies are zstd
    inside), and aiohttp would inflate it before the gateway reads it (RFC 9110 §15.5.16)."""

    status = 415
    public = "request bodies with a Content-Encoding are not accepted"
    close_connection = True


class AuthFailed(GatewayError):
    status = 403
    public = "authentication failed"


class SyncConflict(GatewayError):
    """Another device's collection sync holds the account: the stock server's own answer for
    it, which Anki shows as "Only one copy of Anki can sync to your account at once"."""

    status = 409
    public = "409"


class TooManyAttempts(GatewayError):
    status = 429
    public = "too many attempts, try again later"
    retry_after = 60


class TooManyInFlight(TooManyAttempts):
    """One client address has too many requests in flight (web/addresses.py)."""

    public = "too many requests at once, try again later"
    retry_after = 1
    close_connection = True


class Unavailable(GatewayError):
    status = 503
    public = "service temporarily unavailable"
    retry_after = 5


class Overloaded(Unavailable):
    """The request bodies in flight to all workers would inflate past `workers.max_inflated_megs`
    with this one: try again shortly."""

    public = "server busy, try again later"


class WorkerDied(Unavailable):
    """The account's worker exited during the request (killed at its memory limit, or
    crashed): retryable, the next request starts a fresh worker."""

    public = "sync backend restarted, try again later"


class WorkerFailed(GatewayError):
    status = 502
    public = "sync backend failed"


class WorkerTimeout(GatewayError):
    status = 504
    public = "sync backend timed out"
