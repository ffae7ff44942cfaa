"""Settings from the environment (prefix RELINK_) and an optional `.env` file."""

from __future__ import annotations

import os
from datetime import timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from relink.errors import RelinkError

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class OAuthApp(BaseModel):
    """The installation's OAuth app for one provider (RELINK_OAUTH__<PROVIDER>__CLIENT_ID)."""

    client_id: str = ""
    client_secret: SecretStr = SecretStr("")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="RELINK_",
        env_file=".env",
        env_file_encoding="utf-8",
        env_nested_delimiter="__",
        extra="ignore",
    )

    data_dir: Path = Field(
        default=PROJECT_ROOT / "data",
        description="Where the embedded defaults keep their files (SQLite, key file, outbox).",
    )
    database_url: str = Field(
        default="",
        description="App database; empty means a SQLite file in the data folder.",
    )
    base_url: str = Field(
        default="http://127.0.0.1:8000",
        description="Where users reach the web pages (links in emails).",
    )
    secret_keys: SecretStr = Field(
        default=SecretStr(""),
        description="Comma-separated Fernet keys, newest first; empty means a key file.",
    )
    session_secret: SecretStr = Field(
        default=SecretStr(""),
        description="Signs the web pages' session cookies; empty means a key file.",
    )
    # email
    email_from: str = "relink@example.com"
    sendgrid_api_key: SecretStr = SecretStr("")
    sendgrid_host: str = "https://api.sendgrid.com"
    email_timeout: float = Field(
        default=10.0,
        description="Seconds to wait for SendGrid's reply; a later reply leaves the email "
        "'unknown' (it may have been sent), never resent automatically.",
    )
    email_concurrency: int = Field(
        default=4,
        ge=1,
        le=64,
        description="Emails in flight at once in an email run (each one claimed in the "
        "ledger before its request). SendGrid answers in 100-300 ms: more in flight means "
        "a shorter run, not more work.",
    )
    # checks
    check_timeout: float = Field(default=10.0, description="Seconds per source request.")
    refresh_lock_timeout: float = Field(
        default=60.0,
        gt=0,
        description="Seconds a check waits for another process refreshing the same "
        "connection's OAuth token (SQLite: its lock file); past it the check is "
        "'unreachable' (token_refresh_busy), never a disconnection.",
    )
    shard_start_timeout: float = Field(
        default=600.0,
        ge=0,
        description="Seconds a sweep waits for a shard run to start; then the shard is "
        "cancelled and its connections wait for the next sweep.",
    )
    keep_alive_days: int = Field(
        default=7,
        ge=1,
        le=365,
        description="Days before an unused refresh token would lapse (Microsoft, Xero, Box, "
        "Airtable) that the sweep refreshes it, even if nothing else used it.",
    )
    heads_up_days: int = Field(
        default=7,
        ge=1,
        le=365,
        description="Days before credentials expire for good (a hard end) that the owner "
        "gets one heads-up email and the list shows a badge.",
    )
    prefect_api_url: str = Field(
        default="",
        description="The Prefect API of `relink web`: its reconnect follow-ups run there as "
        "reconnect-connection flow runs and its events go there; empty: PREFECT_API_URL, and "
        "without either the follow-ups run in the web process and it sends no events.",
    )
    oauth: dict[str, OAuthApp] = Field(default_factory=dict)
    # datasets
    warehouse_url: str = Field(
        default="",
        description="Where warehouse-mode datasets are stored; empty means a SQLite file "
        "in the data folder.",
    )

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'relink.db'}"

    @property
    def effective_warehouse_url(self) -> str:
        return self.warehouse_url or f"sqlite:///{self.data_dir / 'warehouse.db'}"

    @property
    def effective_prefect_api_url(self) -> str:
        """The Prefect API of the web pages' follow-ups: this setting, else PREFECT_API_URL;
        empty: they run in the web process."""
        return (self.prefect_api_url or os.environ.get("PREFECT_API_URL", "")).strip()

    @property
    def heads_up_ahead(self) -> timedelta:
        return timedelta(days=self.heads_up_days)

    @property
    def keep_alive_margin(self) -> timedelta:
        return timedelta(days=self.keep_alive_days)

    @property
    def key_file(self) -> Path:
        return self.data_dir / "secret.keys"

    @property
    def session_key_file(self) -> Path:
        return self.data_dir / "session.key"

    def masked(self) -> dict[str, Any]:
        """Every effective setting, secrets replaced by '**********' (or '' when unset)."""
        values = self.model_dump(mode="json")
        values["database_url"] = _mask_url_password(self.effective_database_url)
        values["warehouse_url"] = _mask_url_password(self.effective_warehouse_url)
        for name in ("secret_keys", "sendgrid_api_key", "session_secret"):
            values[name] = "**********" if getattr(self, name).get_secret_value() else ""
        for app in values.get("oauth", {}).values():
            app["client_secret"] = "**********" if app.get("client_secret") else ""
        return values


def _mask_url_password(url: str) -> str:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return "<unparsable URL>"


class SettingsError(RelinkError):
    """A RELINK_* variable (or `.env` line) that does not parse."""


def load_settings() -> Settings:
    """The settings from the environment; a malformed value is one line naming the
    variable and what it should be, never its value (it may be a secret)."""
    try:
        return Settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"RELINK_{'__'.join(str(p) for p in error['loc']).upper()}: {error['msg']}"
            for error in exc.errors(include_input=False, include_url=False)
        )
        raise SettingsError(f"bad setting: {problems}") from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings()
