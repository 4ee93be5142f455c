"""EKS tokens: the format ``aws eks get-token`` makes, refreshed before expiry, made
without any network call."""

from __future__ import annotations

import base64
import datetime
import socket
from urllib.parse import parse_qs, urlsplit

import botocore.auth
import botocore.session
import pytest
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from scorefleet.errors import is_transient
from workers.backends.kubernetes.eks_token import (
    REFRESH_AFTER_SECONDS,
    TOKEN_LIFETIME_SECONDS,
    EksTokenError,
    EksTokenSource,
    make_token,
)

KEY, SECRET = "AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch):
    """One clock for the token cache and for botocore's signing time."""
    c = Clock()

    def signing_time(remove_tzinfo: bool = True) -> datetime.datetime:
        t = datetime.datetime.fromtimestamp(c.now, datetime.UTC)
        return t.replace(tzinfo=None) if remove_tzinfo else t

    monkeypatch.setattr(botocore.auth, "get_current_datetime", signing_time)
    return c


@pytest.fixture
def session(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    return botocore.session.Session()


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError(f"network call attempted: {args!r}")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


def decode(token: str) -> tuple[str, dict[str, str]]:
    assert token.startswith("k8s-aws-v1.")
    body = token.removeprefix("k8s-aws-v1.")
    assert "=" not in body and "+" not in body and "/" not in body  # base64url, no padding
    url = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)).decode()
    return url, {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def test_token_format(session, clock, no_network):
    url, q = decode(make_token("blue-prod", "eu-west-1", session))
    assert url.startswith("https://sts.eu-west-1.amazonaws.com/?")
    assert q["Action"] == "GetCallerIdentity" and q["Version"] == "2011-06-15"
    assert q["X-Amz-Algorithm"] == "AWS4-HMAC-SHA256"
    assert q["X-Amz-Credential"] == f"{KEY}/20270115/eu-west-1/sts/aws4_request"
    assert q["X-Amz-Date"] == "20270115T080000Z" and q["X-Amz-Expires"] == "60"
    assert q["X-Amz-SignedHeaders"] == "host;x-k8s-aws-id"
    assert SECRET not in url


def test_the_signature_binds_the_token_to_the_cluster(session, clock, no_network):
    """Recompute the SigV4 query signature as STS will: it covers x-k8s-aws-id."""
    _, q = decode(make_token("blue-prod", "eu-west-1", session))

    def signature(cluster: str) -> str:
        request = AWSRequest(
            method="GET",
            url="https://sts.eu-west-1.amazonaws.com/?Action=GetCallerIdentity&Version=2011-06-15",
            headers={"x-k8s-aws-id": cluster},
        )
        botocore.auth.SigV4QueryAuth(Credentials(KEY, SECRET), "sts", "eu-west-1", 60).add_auth(
            request
        )
        return parse_qs(urlsplit(request.url).query)["X-Amz-Signature"][0]

    assert q["X-Amz-Signature"] == signature("blue-prod")
    assert q["X-Amz-Signature"] != signature("green-prod")


def test_china_regions_sign_for_their_own_sts(session, clock, no_network):
    url, _ = decode(make_token("c", "cn-north-1", session))
    assert url.startswith("https://sts.cn-north-1.amazonaws.com.cn/?")


def test_the_token_is_reused_then_refreshed_before_it_expires(session, clock, no_network):
    source = EksTokenSource("blue-prod", "eu-west-1", session=session, clock=clock)
    assert source.expires_at is None
    first = source.token()
    assert source.expires_at == clock.now + TOKEN_LIFETIME_SECONDS
    clock.now += REFRESH_AFTER_SECONDS - 1
    assert source.token() == first and source.tokens_made == 1
    clock.now += 1  # 10 minutes old: EKS would still take it for 5 more, but it is replaced now
    second = source.token()
    assert second != first and source.tokens_made == 2
    assert decode(second)[1]["X-Amz-Date"] == "20270115T081000Z"
    assert REFRESH_AFTER_SECONDS < TOKEN_LIFETIME_SECONDS - 60


def test_no_credentials_is_a_clear_permanent_error(monkeypatch, no_network):
    session = botocore.session.Session()
    monkeypatch.setattr(session, "get_credentials", lambda: None)
    with pytest.raises(
        EksTokenError, match="no AWS credentials to make a token for EKS cluster 'x'"
    ) as err:
        make_token("x", "eu-west-1", session)
    assert not is_transient(err.value)
