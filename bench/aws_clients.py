"""What kombu's SQS and SNS clients cost in memory: one boto3 session each (stock
kombu) against one session for the process (scorefleet.aws, workers/monitoring/compat_sqs.py D8).

Each variant runs in a fresh interpreter that first makes an S3 client (as a worker
does), then the seven SQS/SNS clients a worker had after start-up (4 SQS, 3 SNS);
the figure is the growth of VmRSS over those seven clients. Nothing is sent.

    python -m bench.aws_clients
"""

from __future__ import annotations

import subprocess
import sys

from bench.common import machine

_CHILD = r"""
import sys
import boto3
from scorefleet import aws

def rss_mib():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024

kw = dict(endpoint_url="http://127.0.0.1:1", aws_access_key_id="x",
          aws_secret_access_key="y", region_name="eu-west-1")
aws.client("s3", **kw)
before = rss_mib()
clients = []
for service in ["sqs"] * 4 + ["sns"] * 3:
    if sys.argv[1] == "shared":
        clients.append(aws.client(service, **kw))
    else:
        clients.append(boto3.session.Session().client(service, **kw))
print(rss_mib() - before)
"""


def measure(variant: str) -> float:
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, variant], check=True, capture_output=True, text=True
    )
    return float(out.stdout.strip())


def main() -> None:
    stock = measure("per-client")
    shared = measure("shared")
    print(f"machine: {machine()}")
    print("VmRSS growth for 7 SQS/SNS clients (4 SQS, 3 SNS):")
    print(f"  a session per client (stock kombu): {stock:6.1f} MiB")
    print(f"  one session per process (D8):       {shared:6.1f} MiB  ({shared / stock:.2f}x)")


if __name__ == "__main__":
    main()
