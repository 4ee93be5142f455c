"""One boto3 session per process, for every AWS client the process makes.

A boto3 ``Session`` holds the loader that parses the services' JSON models (the
API shapes, endpoint rules, paginators); each new session parses them again.
kombu makes a new session for every SQS and SNS client of every channel
(``kombu.transport.SQS.Channel._new_boto_client``): a worker had eight sessions
after start-up, and seven SQS/SNS clients from separate sessions held 57 MiB where
the same clients from one session hold 10 MiB (``bench/aws_clients.py``). Clients
made here share one session and its loader; credentials passed explicitly (kombu's
``access_key_id``) stay the client's own.

boto3 does not promise that a session is thread-safe, so clients are made under a
lock; the clients themselves are thread-safe, as boto3 documents.
"""

from __future__ import annotations

import threading
from typing import Any

import boto3

_lock = threading.Lock()
_session: list[boto3.session.Session] = []  # a box rather than a global statement


def session() -> boto3.session.Session:
    """This process's boto3 session (made on first use)."""
    with _lock:
        if not _session:
            _session.append(boto3.session.Session())
        return _session[0]


def client(service: str, **kwargs: Any) -> Any:
    """A new client of ``service`` from this process's session (``kwargs`` as for
    ``boto3.client``: region_name, endpoint_url, config, credentials...)."""
    s = session()
    with _lock:
        return s.client(service, **kwargs)  # type: ignore[call-overload]
