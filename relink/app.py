"""Wiring: settings, the app database and the vault, built once per process."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from relink import db
from relink.settings import Settings, load_settings
from relink.vault import Vault


@dataclass
class Relink:
    settings: Settings = field(default_factory=load_settings)

    @cached_property
    def engine(self) -> sa.Engine:
        return db.make_engine(self.settings.effective_database_url)

    @cached_property
    def sessions(self) -> sessionmaker[Session]:
        return db.session_factory(self.engine)

    @cached_property
    def vault(self) -> Vault:
        return Vault.from_settings(self.settings)

    def ensure_schema(self) -> None:
        db.ensure_current(self.engine)

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        with db.transaction(self.sessions) as session:
            yield session

    def close(self) -> None:
        if "engine" in self.__dict__:
            self.engine.dispose()


_process_app: Relink | None = None


def get_app() -> Relink:
    """The Relink of this process, for entrypoints (flows, tasks) that are handed no app."""
    global _process_app
    if _process_app is None:
        _process_app = Relink()
    return _process_app


def set_app(app: Relink | None) -> None:
    """Use `app` for this process's entrypoints (tests, the embedded run)."""
    global _process_app
    _process_app = app
