"""Bearer tokens for the Kubernetes API of an EKS cluster, made the way
``aws eks get-token`` makes them.

The token is a presigned STS ``GetCallerIdentity`` URL whose signature covers the
``x-k8s-aws-id: <cluster name>`` header, base64url-encoded without padding and
prefixed with ``k8s-aws-v1.``. The cluster's authenticator calls that URL to learn
who the caller is; the signature binds the token to this one cluster. Making a
token is local signing with the worker's AWS credentials (IRSA on EKS): no
network call.

EKS accepts a token for 15 minutes after it was signed (``aws eks get-token``
reports 14); :class:`EksTokenSource` hands out the same token for 10 minutes and
then signs a new one, so a request never carries a token about to expire.
"""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Callable

import botocore.session
from botocore.model import ServiceId
from botocore.signers import RequestSigner

from scorefleet.errors import PermanentError

TOKEN_PREFIX = "k8s-aws-v1."  # noqa: S105 - a format marker, not a secret
CLUSTER_ID_HEADER = "x-k8s-aws-id"
#: X-Amz-Expires of the presigned URL (what ``aws eks get-token`` uses).
URL_EXPIRES_SECONDS = 60
#: How long EKS accepts a token after it was signed.
TOKEN_LIFETIME_SECONDS = 15 * 60
#: A token is replaced once it is this old.
REFRESH_AFTER_SECONDS = 10 * 60


class EksTokenError(PermanentError):
    """No token can be made (no AWS credentials, bad region)."""

    kind = "ClusterAuthError"


def sts_url(region: str) -> str:
    """The regional STS endpoint the token is signed for (EKS accepts these hosts)."""
    domain = "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"
    return f"https://sts.{region}.{domain}/?Action=GetCallerIdentity&Version=2011-06-15"


def make_token(cluster_name: str, region: str, session: botocore.session.Session) -> str:
    """One token for ``cluster_name`` (the EKS cluster's name, not an ARN)."""
    credentials = session.get_credentials()
    if credentials is None:
        raise EksTokenError(
            f"no AWS credentials to make a token for EKS cluster {cluster_name!r} "
            "(on EKS: give the worker's service account an IAM role, IRSA)"
        )
    signer = RequestSigner(
        ServiceId("sts"),
        region,
        "sts",
        "v4",
        credentials,
        session.get_component("event_emitter"),
    )
    request = {
        "method": "GET",
        "url": sts_url(region),
        "body": {},
        "headers": {CLUSTER_ID_HEADER: cluster_name},
        "context": {},
    }
    url = signer.generate_presigned_url(
        request, operation_name="", expires_in=URL_EXPIRES_SECONDS, region_name=region
    )
    encoded = base64.urlsafe_b64encode(url.encode("utf-8")).decode("ascii").rstrip("=")
    return TOKEN_PREFIX + encoded


class EksTokenSource:
    """Thread-safe cache of the current token of one cluster; signs a new one
    when the cached one is ``refresh_after`` seconds old."""

    def __init__(
        self,
        cluster_name: str,
        region: str,
        *,
        session: botocore.session.Session | None = None,
        clock: Callable[[], float] = time.time,
        refresh_after: float = REFRESH_AFTER_SECONDS,
    ) -> None:
        if not 0 < refresh_after < TOKEN_LIFETIME_SECONDS:
            raise ValueError(f"refresh_after must be between 0 and {TOKEN_LIFETIME_SECONDS}s")
        self.cluster_name = cluster_name
        self.region = region
        # the session is kept: the signer holds a weak reference to its event emitter,
        # and refreshable credentials (IRSA) renew themselves through it
        self._session = session or botocore.session.Session()
        self._clock = clock
        self._refresh_after = refresh_after
        self._lock = threading.Lock()
        self._token: str | None = None
        self._made_at = 0.0
        self.tokens_made = 0

    def token(self) -> str:
        with self._lock:
            now = self._clock()
            if self._token is None or now - self._made_at >= self._refresh_after:
                self._token = make_token(self.cluster_name, self.region, self._session)
                self._made_at = now
                self.tokens_made += 1
            return self._token

    @property
    def expires_at(self) -> float | None:
        """When EKS stops accepting the current token (clock time), if there is one."""
        with self._lock:
            return None if self._token is None else self._made_at + TOKEN_LIFETIME_SECONDS
