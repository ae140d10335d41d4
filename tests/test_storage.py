"""The storage layer (manifests.storage) against a local moto S3 server: URIs, conditional put, errors, retries."""
from __future__ import annotations

import pytest

from manifests import storage
from manifests.errors import UserError
from tests.s3_fixtures import s3, s3_server  # noqa: F401


def test_local_paths_are_not_uris(tmp_path):
    assert not storage.is_uri(tmp_path)
    assert not storage.is_uri("file:///x/y")
    assert storage.is_uri("s3://b/k") and storage.is_uri("gs://b/k") and storage.is_uri("az://c/k")
    assert storage.join("s3://b/p/", "data", "x") == "s3://b/p/data/x"
    assert storage.join(tmp_path, "a") == str(tmp_path / "a")


def test_roundtrip_and_conditional_put(s3):
    b = s3.bucket()
    uri = f"s3://{b}/pre/manifest.json"
    assert storage.read_bytes(uri) is None
    storage.write_json(uri, {"a": 1}, create_only=True)
    assert storage.read_json(uri) == {"a": 1}
    with pytest.raises(UserError, match="another writer"):
        storage.write_json(uri, {"a": 2}, create_only=True)
    assert storage.read_json(uri) == {"a": 1}
    assert storage.list_names(f"s3://{b}/pre") == ["manifest.json"]
    storage.remove(uri)
    assert not storage.exists(uri)


def test_missing_bucket_and_credentials(s3, monkeypatch):
    with pytest.raises(UserError, match="bucket 'no-such-bucket' does not exist"):
        storage.check_writable("s3://no-such-bucket/out")
    b = s3.bucket()
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(key)
    with pytest.raises(UserError, match="no valid credentials") as err:
        storage.check_writable(f"s3://{b}/out")
    assert "testing-secret" not in str(err.value)
    assert s3.keys(b) == []


def test_transient_errors_retry_with_a_bound():
    calls = []
    slept = []

    class Unavailable(Exception):
        response = {"Error": {"Code": "ServiceUnavailable"}}

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise Unavailable("503")
        return "ok"

    assert storage.retrying(flaky, "s3://b/k", "reading", sleep=slept.append) == "ok"
    assert len(calls) == 3 and len(slept) == 2 and slept[1] > 0

    def always():
        calls.append(1)
        raise Unavailable("503")

    calls.clear()
    with pytest.raises(UserError, match="unavailable"):
        storage.retrying(always, "s3://b/k", "reading", sleep=slept.append)
    assert len(calls) == storage.RETRIES


def test_unwritable_outputs_are_one_line_errors(monkeypatch):
    from botocore.exceptions import ClientError

    denied = ClientError({"Error": {"Code": "AccessDenied", "Message": "Access Denied"}}, "PutObject")
    err = storage.user_error("s3://b/out", denied, "writing")
    assert str(err) == "storage: s3://b/out: access denied while writing (the credentials lack permission)"
    assert storage.classify(ClientError({"Error": {"Code": "SlowDown"}}, "PutObject")) == "transient"
    assert storage.classify(FileNotFoundError("x")) == "missing"
    # a scheme whose filesystem package is not installed (gcsfs is not a dependency)
    import fsspec

    def no_class(scheme):
        raise ImportError(f"Install {scheme}fs to access this protocol")

    monkeypatch.setattr(fsspec, "get_filesystem_class", no_class)
    with pytest.raises(UserError, match=r"gs:// needs a filesystem package"):
        storage.check_writable("gs://b/out")
