"""Whose account a connection's credentials use: the external identity the source tells
(`Identity`: a stable subject and a label people read), how a claim set becomes one
(`from_claims`; `merged` for a grant's and a check's), what a check does with the one it
sees (`observed`), and when a
reconnect replaces one account with another (`replaces`, `replacement_line`), which the
person reconnecting must confirm. Pure: no I/O, no clock."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

SUBJECT_MAX = 500  # the column widths (relink.models.Connection.identity_*)
LABEL_MAX = 320
# Claims of an ID token, a userinfo or who-am-I answer, in the order they are trusted:
# the subject is the source's stable id, the label what a person recognises.
SUBJECT_CLAIMS = ("sub", "user_id", "id", "key_id")
LABEL_CLAIMS = (
    "email",
    "mail",  # Microsoft Graph /me
    "preferred_username",
    "userPrincipalName",
    "username",
    "login",
    "name",
    "displayName",
)


@dataclass(frozen=True, slots=True)
class Identity:
    """An account at the source: `subject` is what the source calls it for good (an OpenID
    `sub`, Salesforce's identity URL, ``reader@db.acme.test``), `label` what is shown
    ("Connected as ann@acme.test")."""

    subject: str
    label: str

    def __str__(self) -> str:
        return self.label

    def as_dict(self) -> dict[str, str]:
        return {"subject": self.subject, "label": self.label}


def identity(subject: Any, label: Any = None) -> Identity | None:
    """An identity from raw values (trimmed, cut to the columns); None without a subject.
    A missing label is the subject."""
    sub = _text(subject)
    if sub is None:
        return None
    return Identity(sub[:SUBJECT_MAX], (_text(label) or sub)[:LABEL_MAX])


def from_claims(
    claims: Any, *, secrets: Iterable[str] = (), subject: Any = None
) -> Identity | None:
    """The identity in a claim set (an ID token's, a userinfo or who-am-I body); None when
    it names nobody. `subject` overrides the claims' own (Salesforce's identity URL). A
    value that holds one of `secrets` (a who-am-I that echoes the API key) is never used."""
    if not isinstance(claims, Mapping):
        claims = {}
    hidden = [s for s in secrets if s]

    def claim(names: Iterable[str]) -> str | None:
        for name in names:
            value = _text(claims.get(name))
            if value is not None and not any(s in value for s in hidden):
                return value
        return None

    sub = _text(subject) or claim(SUBJECT_CLAIMS)
    return identity(sub, claim(LABEL_CLAIMS)) if sub else None


def observed(stored: Identity | None, seen: Identity | None) -> Identity | None:
    """What a check records when the source tells `seen` and `stored` is on file: the new
    identity to store, or None to leave it. A check that learns nothing keeps the stored
    one; the same subject under a new label (a renamed email) updates the label."""
    if seen is None or seen == stored:
        return None
    return seen


def merged(told: Identity | None, seen: Identity | None) -> Identity | None:
    """One identity from what a grant told (`told`: a verified ID token, Salesforce's
    identity URL) and what a check saw (`seen`: userinfo): the grant's subject wins; a
    label that is only the subject (an identity URL) takes the check's label for the same
    subject (its email)."""
    if told is None:
        return seen
    if seen is not None and seen.subject == told.subject and told.label == told.subject:
        return Identity(told.subject, seen.label)
    return told


def replaces(before: Identity | None, after: Identity | None) -> bool:
    """A reconnect puts another account in place of the one on file: both are known and
    their subjects differ. An unknown side is no replacement (nothing to compare)."""
    return before is not None and after is not None and before.subject != after.subject


def replacement_line(before: Identity, after: Identity) -> str:
    """The sentence the person reconnecting confirms."""
    return f"This replaces {_shown(before, after)} with {_shown(after, before)}"


def _shown(one: Identity, other: Identity) -> str:
    # Two accounts may share a label (same display name): then the subject tells them apart.
    return one.label if one.label != other.label else f"{one.label} ({one.subject})"


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, bool | Mapping | list | tuple):
        return None
    text = " ".join(str(value).split())
    return text or None
