"""Accounts and users, and the user an action runs as (`get_actor`: active users only)."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session

from relink.domain.access import Viewer
from relink.domain.recipients import valid_address
from relink.errors import Conflict, InvalidInput, NotFound, PermissionDenied
from relink.models import Account, Role, User
from relink.names import limit_of, one_line


def add_account(session: Session, name: str, *, now: datetime) -> Account:
    name = one_line(name, "an account name", limit_of(Account.name))
    if not name:
        raise InvalidInput("an account needs a name")
    if session.scalar(sa.select(Account.id).where(Account.name == name)) is not None:
        raise Conflict(f"account {name!r} already exists")
    account = Account(name=name, created_at=now)
    session.add(account)
    session.flush()
    return account


def get_account(session: Session, name: str) -> Account:
    account = session.scalar(sa.select(Account).where(Account.name == name))
    if account is None:
        raise NotFound(f"unknown account {name!r}; create it with `relink accounts add {name!r}`")
    return account


def add_user(
    session: Session, *, email: str, name: str, role: str, account: str, now: datetime
) -> User:
    email = normalize_email(email)
    name = one_line(name, "a user's name", limit_of(User.name))
    if role not in set(Role):
        raise InvalidInput(f"unknown role {role!r}; use admin or member")
    owner_account = get_account(session, account)
    if session.scalar(sa.select(User.id).where(User.email == email)) is not None:
        raise Conflict(f"a user with email {email} already exists")
    user = User(
        account_id=owner_account.id,
        email=email,
        name=name or email,
        role=role,
        created_at=now,
    )
    session.add(user)
    session.flush()
    return user


def get_user(session: Session, email: str) -> User:
    user = session.scalar(sa.select(User).where(User.email == normalize_email(email)))
    if user is None:
        raise NotFound(f"unknown user {email!r}; add them with `relink users add`")
    return user


def get_actor(session: Session, email: str) -> User:
    """The user acting (`--as`, a flow's `requested_by`): PermissionDenied when they were
    deactivated, as they can no longer sign in."""
    user = get_user(session, email)
    if not user.active:
        raise PermissionDenied(
            f"{user.email} is deactivated and cannot sign in "
            f"(`relink users reactivate {user.email}` restores them)"
        )
    return user


def viewer_of(user: User) -> Viewer:
    return Viewer(id=user.id, account_id=user.account_id, role=user.role, active=user.active)


def normalize_email(email: str) -> str:
    """Lower-cased and trimmed; InvalidInput unless the mailer could send to it."""
    email = email.strip().lower()
    if not valid_address(email):
        raise InvalidInput(f"{email[:80]!r} is not an email address")
    return email
