"""Secrets that are shown once and stored only as keyed hashes.

A secret looks like ``sk-cp-AbCd1234<40 more>``: a readable, indexed prefix (the first
PREFIX_LENGTH characters, shown in lists so people can tell keys apart) followed by random
characters. The database keeps the prefix and HMAC-SHA256(pepper, secret); lookup narrows by
prefix and compares the digest in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import string
from dataclasses import dataclass

from django.conf import settings

ALPHABET = string.ascii_letters + string.digits
IDENT_LENGTH = 8
SECRET_LENGTH = 40

API_KEY_MARKER = "sk-cp-"
API_TOKEN_MARKER = "cpt-"  # noqa: S105 - a marker, not a secret
NODE_CREDENTIAL_MARKER = "cpn-"


class Plaintext(str):
    """A secret's plaintext: itself wherever it is shown (str(), templates, JSON), but only its
    prefix in a repr(). Django's template engine logs the whole context's repr at DEBUG when
    a variable is missing, and the answer that shows a new key has it in its context: the
    plaintext was in the log of any process running with LOG_LEVEL=DEBUG."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"'{self[: len(self) - SECRET_LENGTH]}…'"


@dataclass(frozen=True)
class NewSecret:
    plaintext: str
    prefix: str
    hashed: str


def keyed_hash(plaintext: str) -> str:
    pepper = settings.KEY_PEPPER.encode()
    return hmac.new(pepper, plaintext.encode(), hashlib.sha256).hexdigest()


def generate(marker: str) -> NewSecret:
    ident = "".join(secrets.choice(ALPHABET) for _ in range(IDENT_LENGTH))
    body = "".join(secrets.choice(ALPHABET) for _ in range(SECRET_LENGTH))
    plaintext = Plaintext(f"{marker}{ident}{body}")
    return NewSecret(
        plaintext=plaintext, prefix=prefix_of(plaintext, marker), hashed=keyed_hash(plaintext)
    )


def prefix_of(plaintext: str, marker: str) -> str:
    return plaintext[: len(marker) + IDENT_LENGTH]


def looks_like(plaintext: str, marker: str) -> bool:
    return (
        plaintext.startswith(marker)
        and len(plaintext) == len(marker) + IDENT_LENGTH + SECRET_LENGTH
        and all(ch in ALPHABET for ch in plaintext[len(marker) :])
    )


def matches(plaintext: str, hashed: str) -> bool:
    return hmac.compare_digest(keyed_hash(plaintext), hashed)
