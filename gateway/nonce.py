"""What the gateway remembers of a verified signature so that it is accepted once. Pure.

Signed requests (provisioning: provision/signature.py; node-to-node: cluster/signing.py) are
refused once their timestamp leaves the replay window; inside it, each verified signature is
spent in the registry (`Registry.spend_nonce`), where every process, every node and a restart
see it. What is kept: SHA-256 hex of the purpose and the signature (lower-case hex), so the
same bytes signed for one purpose never block another, until the window has passed.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Nonce:
    """`key` (64 hex characters) to remember until Unix time `until`."""

    key: str
    until: float


def nonce(purpose: str, signature_hex: str, until: float) -> Nonce:
    """The nonce of a verified signature, kept apart per `purpose` ("provision", "move" ...)."""
    digest = hashlib.sha256(f"{purpose}:{signature_hex.lower()}".encode()).hexdigest()
    return Nonce(digest, until)
