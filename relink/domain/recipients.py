"""Who receives a disconnection's email: the connection's current owner ("Created By");
an owner who is inactive or has no valid address falls back to the account's active
admins with a valid address; with nobody left, the reason nobody can be emailed."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from relink.domain.words import Role

_ADDRESS = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s.]+")


def valid_address(address: str | None) -> bool:
    """A plausible single mailbox: one @, a dotted domain, no spaces or control characters."""
    if not address or len(address) > 320:
        return False
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in address):
        return False
    return _ADDRESS.fullmatch(address) is not None


@dataclass(frozen=True, slots=True)
class Person:
    email: str
    active: bool = True
    role: str = Role.MEMBER
    name: str = ""


@dataclass(frozen=True, slots=True)
class Recipients:
    to: tuple[str, ...]
    why: str  # "owner", "admins: <reason>", or the reason nobody can be emailed

    @property
    def nobody(self) -> bool:
        return not self.to


def owner_problem(owner: Person) -> str | None:
    """Why the owner cannot receive the email, or None."""
    if not owner.active:
        return f"the owner {owner.email} is inactive"
    if not valid_address(owner.email):
        return f"the owner's address {owner.email!r} is not valid"
    return None


def choose_recipients(owner: Person, account_users: Sequence[Person]) -> Recipients:
    """The owner; else the account's active admins with a valid address; else nobody."""
    problem = owner_problem(owner)
    if problem is None:
        return Recipients((owner.email,), "owner")
    admins = sorted(
        {
            p.email
            for p in account_users
            if p.role == Role.ADMIN and p.active and valid_address(p.email)
        }
    )
    if admins:
        return Recipients(tuple(admins), f"admins: {problem}")
    return Recipients((), f"{problem} and the account has no active admin with a valid address")
