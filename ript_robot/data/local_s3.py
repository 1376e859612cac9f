"""An S3-compatible server on loopback, for trying a store on object storage without a cloud account.

It runs moto's server mode (a real HTTP S3 API; `pip install "moto[server]" boto3`, part of
the dev extra) on a free 127.0.0.1 port. The tests and the store benchmark use it to run the
very code that talks to S3 or MinIO in a lab.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_REGION": "us-east-1"}


def start_s3_server(timeout_s: float = 30.0) -> tuple[subprocess.Popen[bytes], str]:
    """Start the server; returns the process (terminate it when done) and its endpoint URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return proc, f"http://127.0.0.1:{port}"
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise RuntimeError("moto's S3 server did not start: is moto[server] installed?") from None
            time.sleep(0.1)


def s3_environment(endpoint: str) -> dict[str, str]:
    """The AWS_* variables that point obstore (and boto3) at the server."""
    return {**CREDENTIALS, "AWS_ENDPOINT_URL": endpoint, "AWS_ALLOW_HTTP": "true"}


def create_bucket(endpoint: str, bucket: str) -> None:
    import boto3

    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", **_boto_credentials()).create_bucket(
        Bucket=bucket
    )


def _boto_credentials() -> dict[str, str]:
    return {"aws_access_key_id": CREDENTIALS["AWS_ACCESS_KEY_ID"], "aws_secret_access_key": "test"}
