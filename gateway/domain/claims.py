"""Claimed identities: a number someone typed is a claim, not an identity.

Theory of operation: an identity the channel itself gives (the SMS sender, the caller ID Asterisk hands over, the
widget's own visitor token) is *observed* and owns a contact. A number typed into the chat widget is *claimed*: it is
recorded on the claimant's own conversation as an :class:`IdentityClaim` and does nothing else. It never merges
contacts, never moves a socket to another conversation and never reveals anything. A claim becomes *verified* in
one of three ways, and only then is the number attached to the claimant (or, when it already belongs to a known
contact, the two contacts are merged, recorded and undoable):

* ``sms_reply``: the number answers the text that was sent to it from the claimant's conversation;
* ``code``: the visitor types the one-time code that text carried (short, expiring, a few attempts);
* ``staff``: a staff member confirms it in the console.

Codes are never stored, only their keyed hash; comparison is constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from enum import StrEnum

CODE_DIGITS = 6


class ClaimMethod(StrEnum):
    """How a claim was verified."""

    SMS_REPLY = "sms_reply"
    CODE = "code"
    STAFF = "staff"


class CodeCheck(StrEnum):
    """Outcome of typing a one-time code."""

    OK = "ok"
    WRONG = "wrong"
    EXPIRED = "expired"
    EXHAUSTED = "exhausted"
    NONE = "none"


@dataclass(frozen=True, slots=True)
class IdentityClaim:
    """An identity someone typed, as recorded on the claimant's own conversation."""

    id: int
    conversation_id: int
    contact_id: int
    visitor_hash: str | None
    kind: str
    value: str
    raw: str
    state: str
    method: str | None
    code_expires_at: float | None
    code_attempts: int
    texted_at: float | None
    merge_id: int | None
    created_at: float
    verified_at: float | None
    verified_by: str | None


@dataclass(frozen=True, slots=True)
class ClaimVerified:
    """What verifying a claim did: the identity attached to the claimant, or a merge into its known owner."""

    claim_id: int
    method: str
    conversation_id: int
    contact_id: int
    merge_id: int | None


def new_code() -> str:
    """A fresh one-time code (six digits, leading zeros kept)."""
    return f"{secrets.randbelow(10**CODE_DIGITS):0{CODE_DIGITS}d}"


def code_hash(claim_id: int, code: str) -> str:
    """The stored form of a code: bound to its claim, so a hash cannot be replayed against another claim."""
    return hashlib.sha256(f"claim:{claim_id}:{code.strip()}".encode()).hexdigest()


def code_matches(claim_id: int, code: str, stored: str | None) -> bool:
    """Constant-time comparison of a typed code with the stored hash."""
    if not stored:
        return False
    return hmac.compare_digest(code_hash(claim_id, code), stored)
