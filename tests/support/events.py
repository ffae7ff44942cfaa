"""Prefect events as Prefect's own events worker sends them, captured by Prefect's
`AssertingEventsClient` instead of a server (`prefect_events`); the real server's events
API is read in tests/integration/test_events_server.py."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

FAKE_API = "http://127.0.0.1:9/api"  # never asked: the asserting client keeps the events


class CapturedEvents:
    def __init__(self, worker: Any) -> None:
        self.worker = worker

    def all(self) -> list[Any]:
        """Every event sent so far (waits for the worker to pass them on)."""
        self.worker.wait_until_empty()
        return list(getattr(self.worker._client, "events", []))  # none sent: no list yet

    def named(self, name: str) -> list[Any]:
        return [e for e in self.all() if e.event == name]

    def names(self) -> list[str]:
        return [e.event for e in self.all() if e.event.startswith("relink.")]

    def clear(self) -> None:
        self.worker.wait_until_empty()
        getattr(self.worker._client, "events", []).clear()


@pytest.fixture
def prefect_events(monkeypatch: pytest.MonkeyPatch) -> Iterator[CapturedEvents]:
    """A Prefect API configured (PREFECT_API_URL), and every event emitted captured."""
    from prefect.events.clients import AssertingEventsClient
    from prefect.events.worker import EventsWorker
    from prefect.settings import PREFECT_API_URL, temporary_settings

    monkeypatch.setenv("PREFECT_API_URL", FAKE_API)
    with temporary_settings({PREFECT_API_URL: FAKE_API}):
        worker = EventsWorker.instance(AssertingEventsClient)
        monkeypatch.setattr(EventsWorker, "instance", lambda *_: worker)
        try:
            yield CapturedEvents(worker)
        finally:
            worker.drain()
