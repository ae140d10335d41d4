"""A local S3 server for the tests: moto's server mode on 127.0.0.1, started and stopped by the tests.

``s3`` yields an :class:`S3` handle whose ``env`` holds the fake credentials and
the endpoint (``AWS_ENDPOINT_URL``); the fixture sets them in ``os.environ``
only while a test runs and restores the old values after it, so no other test
(and no real AWS account) is ever touched. Requests are bounded: the client
times out after a few seconds and the server only listens on loopback.
Import the fixtures in a test module with ``from tests.s3_fixtures import s3_server, s3  # noqa: F401``.
"""
from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass, field

import pytest

FAKE = {
    "AWS_ACCESS_KEY_ID": "testing-key",
    "AWS_SECRET_ACCESS_KEY": "testing-secret",
    "AWS_SESSION_TOKEN": "testing-token",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",  # no instance-metadata lookups when credentials are missing on purpose
    "AWS_MAX_ATTEMPTS": "2",
    "AWS_CONNECT_TIMEOUT": "5",
    "AWS_READ_TIMEOUT": "20",
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class S3:
    endpoint: str
    env: dict[str, str] = field(default_factory=dict)

    def bucket(self, name: str | None = None) -> str:
        """Create a fresh bucket; returns its name."""
        import boto3

        name = name or f"b-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name

    def client(self):
        import boto3
        from botocore.config import Config

        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id=FAKE["AWS_ACCESS_KEY_ID"], aws_secret_access_key=FAKE["AWS_SECRET_ACCESS_KEY"],
                            config=Config(connect_timeout=5, read_timeout=20, retries={"max_attempts": 2}))

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        out = []
        for page in self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            out += [o["Key"] for o in page.get("Contents", [])]
        return sorted(out)


@pytest.fixture(scope="session")
def s3_server():
    """The moto server for the whole session (stopped at its end)."""
    moto_server = pytest.importorskip("moto.server")
    pytest.importorskip("s3fs")
    port = _free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield S3(endpoint=f"http://127.0.0.1:{port}", env={**FAKE, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"})
    finally:
        server.stop()


@pytest.fixture
def s3(s3_server, monkeypatch):
    """The server, with its endpoint and fake credentials in the environment for this test only."""
    for key in ("AWS_PROFILE", "AWS_ENDPOINT_URL_S3", "AWS_SHARED_CREDENTIALS_FILE", "AWS_CONFIG_FILE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    for key, value in s3_server.env.items():
        monkeypatch.setenv(key, value)
    yield s3_server
