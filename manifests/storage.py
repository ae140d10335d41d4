"""One filesystem layer for every path smolcurate takes: a local path, or a URI (s3://, gs://, az://, any fsspec).

Local paths (and ``file://``) keep going through ``pathlib`` and the atomic
renames of :mod:`manifests.fsutil`; a URI resolves to an fsspec filesystem. The
filesystem finds its credentials the way its own SDK does (environment
variables, ``~/.aws/config``, instance roles, ``gcloud`` / Azure CLI logins):
a recipe never holds them and no message here prints them. Errors from a store
become one-line :class:`~manifests.errors.UserError`\\ s that name the URI
(a bucket that does not exist, missing or refused credentials); transient ones
(timeouts, 5xx, throttling) are retried with exponential backoff and a bound.

See docs/storage.md for which store gives which commit guarantee.
"""
from __future__ import annotations

import json
import os
import random
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable, TypeVar

from manifests.errors import UserError

T = TypeVar("T")

#: attempts of one storage call before it fails (the first try included)
RETRIES = int(os.environ.get("SMOLCURATE_STORAGE_RETRIES", "5"))
#: first backoff in seconds; doubles each retry, with jitter, capped at BACKOFF_MAX
BACKOFF = 0.2
BACKOFF_MAX = 8.0

_LOCK = threading.Lock()
_FILESYSTEMS: dict[tuple, Any] = {}
#: environment variables that change which store / account a filesystem talks to (cache key only, never logged)
_ENV_KEYS = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
             "AWS_PROFILE", "AWS_DEFAULT_REGION", "AWS_REGION", "AWS_SHARED_CREDENTIALS_FILE", "AWS_CONFIG_FILE",
             "GOOGLE_APPLICATION_CREDENTIALS", "AZURE_STORAGE_ACCOUNT_NAME", "AZURE_STORAGE_CONNECTION_STRING")


def is_uri(path: str | os.PathLike) -> bool:
    """True for ``scheme://...`` other than ``file://`` (those go through fsspec); local paths are False."""
    s = os.fspath(path)
    if "://" not in s:
        return False
    scheme = s.split("://", 1)[0]
    return bool(scheme) and all(c.isalnum() or c in "+-." for c in scheme) and scheme not in ("file", "local")


def local_path(path: str | os.PathLike) -> Path:
    s = os.fspath(path)
    return Path(s[len("file://"):]) if s.startswith("file://") else Path(s)


def join(base: str | os.PathLike, *parts: str) -> str:
    """``base/part/...`` for a URI or a local path (a URI keeps its scheme; no normalisation of ``..``)."""
    s = os.fspath(base)
    if not is_uri(s):
        return str(Path(s).joinpath(*parts))
    return "/".join([s.rstrip("/"), *(p.strip("/") for p in parts if p)])


class StoreUnavailable(UserError):
    """Transient errors outlasted the retries: the chunk fails (the job stays resumable), the input is not dropped."""


def _env_key() -> tuple:
    return tuple(os.environ.get(k) for k in _ENV_KEYS)


def filesystem(uri: str) -> tuple[Any, str]:
    """(fsspec filesystem, path inside it) for a URI; filesystems are reused per scheme and credential environment.

    The filesystem's own listing cache is kept off: other processes (Ray
    workers) write the same prefixes, and a stale listing would hide a
    finished chunk.
    """
    import fsspec

    scheme = uri.split("://", 1)[0]
    key = (scheme, os.getpid(), _env_key())
    with _LOCK:
        fs = _FILESYSTEMS.get(key)
        if fs is None:
            try:
                cls = fsspec.get_filesystem_class(scheme)
            except (ImportError, ValueError) as exc:
                raise UserError(f"{scheme}:// needs a filesystem package that is not installed ({_first_line(exc)})") from None
            opts: dict[str, Any] = {"skip_instance_cache": True}
            if scheme in ("s3", "s3a"):
                opts.update(use_listings_cache=False)
                endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
                if endpoint:
                    opts["endpoint_url"] = endpoint
            fs = cls(**opts)
            if hasattr(fs, "retries"):
                fs.retries = 1  # the retries are ours (retrying): one bound, one backoff policy for every store
            _FILESYSTEMS[key] = fs
    return fs, fs._strip_protocol(uri)


# --------------------------------------------------------------------------- errors and retries


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _code(exc: BaseException) -> str:
    resp = getattr(exc, "response", None)
    if isinstance(resp, dict):
        return str(resp.get("Error", {}).get("Code", ""))
    return ""


def _chain(exc: BaseException):
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def classify(exc: BaseException) -> str:
    """'transient', 'missing' (no such key/file), 'bucket', 'credentials', 'denied' or 'other'."""
    for e in _chain(exc):
        name = type(e).__name__
        code = _code(e)
        text = str(e)
        if name in ("NoCredentialsError", "PartialCredentialsError", "CredentialRetrievalError") or \
                code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken"):
            return "credentials"
        if code == "NoSuchBucket" or "NoSuchBucket" in text or "bucket does not exist" in text.lower():
            return "bucket"
        if code in ("AccessDenied", "403", "AllAccessDisabled") or isinstance(e, PermissionError):
            return "denied"
        if code in ("SlowDown", "RequestTimeout", "InternalError", "ServiceUnavailable", "503", "500", "502", "504",
                    "Throttling", "ThrottlingException", "RequestTimeTooSkewed") or \
                name in ("ReadTimeoutError", "ConnectTimeoutError", "EndpointConnectionError", "ConnectionClosedError",
                         "ServerDisconnectedError", "ClientOSError", "TimeoutError", "ResponseStreamingError"):
            return "transient"
        if isinstance(e, FileNotFoundError) or code in ("NoSuchKey", "404"):
            return "missing"
    return "other"


def user_error(uri: str, exc: BaseException, doing: str) -> UserError:
    """A one-line error for a failed storage call; never includes credentials (only the URI and the store's code)."""
    kind = classify(exc)
    bucket = uri.split("://", 1)[-1].split("/", 1)[0]
    if kind == "bucket":
        return UserError(f"{uri}: bucket {bucket!r} does not exist", field="storage")
    if kind == "credentials":
        return UserError(f"{uri}: no valid credentials for this store (set them in the environment or the SDK's "
                         "config file, e.g. AWS_ACCESS_KEY_ID / ~/.aws/credentials; never in the recipe)", field="storage")
    if kind == "denied":
        return UserError(f"{uri}: access denied while {doing} (the credentials lack permission)", field="storage")
    if kind == "transient":
        return StoreUnavailable(f"{uri}: store unavailable while {doing} after {RETRIES} tries ({type(exc).__name__})",
                         field="storage")
    code = _code(exc)
    return UserError(f"{uri}: {doing} failed ({code or type(exc).__name__}: {_first_line(exc)[:160]})", field="storage")


def retrying(fn: Callable[[], T], uri: str, doing: str, *, missing_ok: bool = False, sleep=time.sleep) -> T | None:
    """Call ``fn`` and retry transient store errors with exponential backoff and jitter, at most RETRIES tries.

    A missing key returns None when ``missing_ok``; every other failure is a one-line UserError.
    """
    delay = BACKOFF
    for attempt in range(1, RETRIES + 1):
        try:
            return fn()
        except UserError:
            raise
        except Exception as exc:  # noqa: BLE001 - classified below
            kind = classify(exc)
            if kind == "missing" and missing_ok:
                return None
            if kind == "transient" and attempt < RETRIES:
                sleep(min(BACKOFF_MAX, delay) * (0.5 + random.random() / 2))
                delay *= 2
                continue
            raise user_error(uri, exc, doing) from None
    raise AssertionError("unreachable")  # pragma: no cover


# --------------------------------------------------------------------------- operations on URIs


def exists(uri: str) -> bool:
    fs, p = filesystem(uri)
    return bool(retrying(lambda: fs.exists(p), uri, "checking"))


def read_bytes(uri: str) -> bytes | None:
    """The object's bytes, or None when it does not exist."""
    fs, p = filesystem(uri)
    return retrying(lambda: fs.cat_file(p), uri, "reading", missing_ok=True)


def read_json(uri: str) -> Any | None:
    data = read_bytes(uri)
    return None if data is None else json.loads(data)


def write_bytes(uri: str, data: bytes, *, create_only: bool = False) -> None:
    """One PUT (atomic per object on every object store). ``create_only`` fails if the key exists.

    ``create_only`` uses the store's conditional put (S3 ``If-None-Match: *``);
    a store without one falls back to check-then-put (documented as a race in docs/storage.md).
    """
    fs, p = filesystem(uri)

    def put() -> None:
        if create_only:
            try:
                fs.pipe_file(p, data, mode="create")
                return
            except TypeError:  # a filesystem without exclusive create
                if fs.exists(p):
                    raise FileExistsError(uri) from None
        fs.pipe_file(p, data)

    try:
        retrying(put, uri, "writing")
    except UserError as exc:
        if create_only and ("PreconditionFailed" in str(exc) or "412" in str(exc) or "FileExists" in str(exc)):
            raise UserError(f"{uri} was created by another writer at the same time", field="--out") from None
        raise


def write_json(uri: str, obj: Any, *, create_only: bool = False) -> None:
    write_bytes(uri, json.dumps(obj, indent=2, default=str).encode(), create_only=create_only)


def put_file(local: str | os.PathLike, uri: str) -> None:
    fs, p = filesystem(uri)
    retrying(lambda: fs.put_file(os.fspath(local), p), uri, "uploading")


def get_file(uri: str, local: str | os.PathLike) -> None:
    """Download to a temp name next to ``local`` and rename, so a partial download never looks complete."""
    fs, p = filesystem(uri)
    local = Path(local)
    local.parent.mkdir(parents=True, exist_ok=True)
    tmp = local.with_name(f".{local.name}.{uuid.uuid4().hex[:8]}.part")
    try:
        retrying(lambda: fs.get_file(p, str(tmp)), uri, "downloading")
        os.replace(tmp, local)
    finally:
        if tmp.exists():
            tmp.unlink()


def list_names(uri: str) -> list[str]:
    """Names (not paths) of the objects directly under a prefix; [] when there are none."""
    fs, p = filesystem(uri)
    out = retrying(lambda: fs.ls(p, detail=False), uri, "listing", missing_ok=True) or []
    return sorted(str(x).rstrip("/").rsplit("/", 1)[-1] for x in out)


def remove(uri: str, *, recursive: bool = False) -> None:
    fs, p = filesystem(uri)

    def rm() -> None:
        try:
            fs.rm(p, recursive=recursive)
        except FileNotFoundError:
            pass

    retrying(rm, uri, "removing")


def size(uri: str) -> int:
    fs, p = filesystem(uri)
    return int(retrying(lambda: fs.size(p), uri, "reading"))


def check_writable(uri: str) -> None:
    """Fail early, with one line and nothing left behind, when ``uri`` cannot be written.

    Writes and deletes a small probe object: that proves the bucket exists, the
    credentials are valid and they may write there (a listing alone proves none of it).
    """
    probe = join(uri, f".smolcurate-probe-{uuid.uuid4().hex[:12]}")
    write_bytes(probe, b"")
    remove(probe)


# --------------------------------------------------------------------------- reading sources in place

#: read-ahead of a ranged read: a tar header scan or one member costs a request of about this size, never the object
RANGE_BLOCK = 1 << 18


def open_range(uri: str, block_size: int = RANGE_BLOCK):
    """A seekable binary file on the object: each read is an HTTP range request (``block_size`` read-ahead)."""
    fs, p = filesystem(uri)
    return retrying(lambda: fs.open(p, "rb", block_size=block_size, cache_type="readahead"), uri, "opening")


def info(uri: str) -> dict[str, Any] | None:
    """Size and version tag (ETag / generation / mtime) of an object; None when it does not exist."""
    fs, p = filesystem(uri)
    return retrying(lambda: fs.info(p), uri, "reading", missing_ok=True)


def isdir(uri: str) -> bool:
    fs, p = filesystem(uri)
    return bool(retrying(lambda: fs.isdir(p), uri, "listing"))


def glob(uri: str) -> list[str]:
    """Full URIs of the objects matching a glob (``**`` recursive), sorted."""
    fs, p = filesystem(uri)
    scheme = uri.split("://", 1)[0]
    found = retrying(lambda: fs.glob(p), uri, "listing", missing_ok=True) or []
    return sorted(f"{scheme}://{x}" for x in found if not fs.isdir(x))


def version_tag(uri: str) -> str:
    """What identifies this version of an object in a plan fingerprint (a changed object re-runs the job)."""
    meta = info(uri)
    if meta is None:
        return "missing"
    tag = meta.get("ETag") or meta.get("etag") or meta.get("generation") or meta.get("LastModified") or meta.get("mtime")
    return f"{meta.get('size')}\0{tag}"


def find(uri: str, recursive: bool = True) -> list[str]:
    """Full URIs of every object under a prefix (recursively by default), sorted."""
    fs, p = filesystem(uri)
    scheme = uri.split("://", 1)[0]
    found = retrying(lambda: fs.find(p, maxdepth=None if recursive else 1), uri, "listing", missing_ok=True) or []
    return sorted(f"{scheme}://{x}" for x in found)


def common_prefix(uris: list[str]) -> str:
    """The longest folder-like prefix (``scheme://bucket/a/b``) that every URI lives under."""
    parts = [u.rsplit("/", 1)[0].split("/") for u in uris]
    common: list[str] = []
    for col in zip(*parts):
        if len(set(col)) != 1:
            break
        common.append(col[0])
    return "/".join(common)


def relative(uri: str, root: str) -> str:
    return uri[len(root):].lstrip("/") if root and uri.startswith(root.rstrip("/") + "/") else uri


def open_input(path: str, block_size: int = 4 << 20):
    """A binary file for reading a source: ``open(path, 'rb')`` locally, ranged reads on an object store.

    Sequential scans (JSON lines) read ahead ``block_size`` per request; Parquet readers seek to the
    footer and the row groups they need, so only those bytes are fetched.
    """
    if is_uri(path):
        return open_range(path, block_size)
    return open(path, "rb")
