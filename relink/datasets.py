"""Datasets built on a connection, and the metrics that use them."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session

from relink import audit
from relink.domain.words import DatasetStatus
from relink.errors import Conflict, InvalidInput, NotFound
from relink.models import Connection, Dataset, Metric
from relink.names import limit_of, one_line


def add_dataset(
    session: Session, *, connection_id: int, name: str, query: str, now: datetime
) -> Dataset:
    conn = session.get(Connection, connection_id)
    if conn is None:
        raise NotFound(f"unknown connection {connection_id}; see `relink connections list`")
    name = one_line(name, "a dataset name", limit_of(Dataset.name))
    query = query.strip()
    if not name or not query:
        raise InvalidInput("a dataset needs a --name and a --query")
    exists = sa.select(Dataset.id).where(Dataset.connection_id == conn.id, Dataset.name == name)
    if session.scalar(exists) is not None:
        raise Conflict(f"connection {conn.id} already has a dataset named {name!r}")
    dataset = Dataset(connection_id=conn.id, name=name, query=query, status=DatasetStatus.PENDING)
    session.add(dataset)
    session.flush()
    audit.record(session, "dataset.created", at=now, connection=conn, dataset=name)
    return dataset


def add_metric(session: Session, *, name: str, dataset_ids: Sequence[int], now: datetime) -> Metric:
    name = one_line(name, "a metric name", limit_of(Metric.name))
    if not name or not dataset_ids:
        raise InvalidInput("a metric needs a --name and at least one --dataset")
    datasets = list(session.scalars(sa.select(Dataset).where(Dataset.id.in_(dataset_ids))))
    missing = sorted(set(dataset_ids) - {d.id for d in datasets})
    if missing:
        raise NotFound(f"unknown dataset {missing[0]}; see `relink connections show ID`")
    accounts = {d.connection.account_id for d in datasets}
    if len(accounts) > 1:
        raise InvalidInput("a metric's datasets must all belong to one account")
    account_id = accounts.pop()
    exists = sa.select(Metric.id).where(Metric.account_id == account_id, Metric.name == name)
    if session.scalar(exists) is not None:
        raise Conflict(f"a metric named {name!r} already exists in this account")
    metric = Metric(account_id=account_id, name=name, datasets=datasets)
    session.add(metric)
    session.flush()
    audit.record(
        session,
        "metric.created",
        at=now,
        account_id=account_id,
        metric=name,
        datasets=[d.name for d in datasets],
    )
    return metric
