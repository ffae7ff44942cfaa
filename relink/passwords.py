"""Sign-in passwords of users: argon2id hashes (argon2-cffi), never the password itself."""

from __future__ import annotations

import hashlib
from datetime import datetime

import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy.orm import Session

from relink import audit
from relink.directory import get_user, normalize_email
from relink.errors import InvalidInput
from relink.models import User

MIN_LENGTH = 10
MAX_LENGTH = 1024  # argon2 hashes anything, but a megabyte "password" is a denial of service

# argon2-cffi's defaults (RFC 9106 low-memory profile); tests swap in a cheaper hasher.
hasher = PasswordHasher()

_dummy_hash: str | None = None


def check_strength(password: str) -> None:
    if len(password) < MIN_LENGTH:
        raise InvalidInput(f"a password needs at least {MIN_LENGTH} characters")
    if len(password) > MAX_LENGTH:
        raise InvalidInput(f"a password may have at most {MAX_LENGTH} characters")


def hash_password(password: str) -> str:
    check_strength(password)
    return hasher.hash(password)


def set_password(
    session: Session, email: str, password: str, *, now: datetime, actor: User | None = None
) -> User:
    """Store a new password hash for the user; their existing web sessions end."""
    user = get_user(session, email)
    user.password_hash = hash_password(password)
    audit.record(
        session,
        "user.password_set",
        at=now,
        actor=actor,
        account_id=user.account_id,
        user=user.email,
    )
    return user


def authenticate(session: Session, email: str, password: str) -> User | None:
    """The active user with this email and password, else None (never says which was wrong).

    An unknown email, a user without a password and an inactive user cost one argon2
    verification too, so the answer time does not tell them apart.
    """
    try:
        address = normalize_email(email)
    except InvalidInput:
        address = ""
    user = None
    if address and len(password) <= MAX_LENGTH:
        user = session.scalar(sa.select(User).where(User.email == address))
    stored = user.password_hash if user is not None and user.password_hash else None
    if not _verify(stored or _dummy(), password[:MAX_LENGTH]) or stored is None:
        return None
    assert user is not None
    if not user.active:
        return None
    if hasher.check_needs_rehash(stored):
        user.password_hash = hasher.hash(password)
    return user


def fingerprint(password_hash: str | None) -> str:
    """A short digest of the stored hash: a session made before a password change stops
    matching it. Not secret-bearing (a digest of a salted hash)."""
    return hashlib.sha256((password_hash or "").encode()).hexdigest()[:16]


def _verify(stored: str, password: str) -> bool:
    try:
        return hasher.verify(stored, password)
    except (VerificationError, InvalidHashError):
        return False


def _dummy() -> str:
    global _dummy_hash
    if _dummy_hash is None:
        _dummy_hash = hasher.hash("relink: no such user, compare anyway")
    return _dummy_hash
