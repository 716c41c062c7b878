"""Storage failures as one line: the path, what was being done, and the cause in words.

A write to a full disk, a directory without permission, a read-only mount, a parent that
is a file, or an ``s3a://`` path without hadoop-aws reaches Python as a Java stack trace
(classic sessions), a gRPC error (Spark Connect) or an ``OSError`` (files this process
writes itself). :func:`storage_cause` reads the cause out of any of them, :func:`guarded`
turns such a failure into a :class:`~runs.errors.StorageError`, and the command line names
the config key the path came from (:func:`config_key`).

:func:`check_writable` runs when a stage opens its run, so an output root that cannot be
written stops the job before any work, not after an hour of training.
"""

from __future__ import annotations

import errno
import os
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlparse

from wals_roberta.jobs.runs.errors import StorageError, WalsRobertaError

# The Hadoop release the pyspark package bundles; hadoop-aws must match it.
HADOOP_AWS = "org.apache.hadoop:hadoop-aws:3.5.0"

_ERRNO_CAUSES = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied (operation not permitted)",
    errno.EROFS: "read-only file system",
    errno.ENOTDIR: "a parent of the path is a file, not a directory",
}

# (pattern in the exception's text, cause); the first match wins, so specific ones first.
_TEXT_CAUSES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"No space left on device|ENOSPC|DiskFull", re.I), _ERRNO_CAUSES[errno.ENOSPC]),
    (re.compile(r"Disk quota exceeded|EDQUOT", re.I), _ERRNO_CAUSES[errno.EDQUOT]),
    (re.compile(r"Read-only file system|EROFS", re.I), _ERRNO_CAUSES[errno.EROFS]),
    (
        re.compile(r"Permission denied|AccessDeniedException|AccessControlException|EACCES"),
        _ERRNO_CAUSES[errno.EACCES],
    ),
    (re.compile(r"Operation not permitted|EPERM"), _ERRNO_CAUSES[errno.EPERM]),
    (
        re.compile(r"ParentNotDirectoryException|Not a directory|ENOTDIR"),
        _ERRNO_CAUSES[errno.ENOTDIR],
    ),
    (
        re.compile(r"S3AFileSystem not found|No FileSystem for scheme \W*s3a", re.I),
        "no file system for s3a:// on Spark's classpath: add hadoop-aws and its AWS SDK "
        f"(spark-submit --packages {HADOOP_AWS}, or spark.jars), or use the scheme your "
        "platform provides (s3:// on EMR and Databricks)",
    ),
    (
        re.compile(r"No FileSystem for scheme \W*(\w+)|UnsupportedFileSystemException", re.I),
        "no file system for this scheme on Spark's classpath: add the connector's jars "
        "(spark-submit --packages or spark.jars)",
    ),
    (
        re.compile(r"Mkdirs failed to create"),
        "the file system refused to create the directory",
    ),
]


def exception_text(exc: BaseException) -> str:
    """Everything an exception says, its causes and (for Py4J) the Java trace included."""
    parts: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        parts.append(f"{type(current).__name__}: {current}")
        java = getattr(current, "java_exception", None)
        if java is not None:
            try:
                parts.append(str(java.toString()))
            except Exception:  # noqa: BLE001 - a gateway already closed
                pass
        current = current.__cause__ or current.__context__
    return "\n".join(parts)


def storage_cause(exc: BaseException) -> str | None:
    """The storage cause of a failure in words, or None when it is not a storage failure."""
    for current in _chain(exc):
        if isinstance(current, OSError) and current.errno in _ERRNO_CAUSES:
            return _ERRNO_CAUSES[current.errno]
    text = exception_text(exc)
    for pattern, cause in _TEXT_CAUSES:
        if pattern.search(text):
            return cause
    return None


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


@contextmanager
def guarded(path: str, action: str) -> Iterator[None]:
    """Re-raise a storage failure inside the block as a StorageError for ``path``
    (``action``: "write", "read", ...); any other exception passes unchanged."""
    try:
        yield
    except WalsRobertaError:
        raise
    except Exception as exc:
        cause = storage_cause(exc)
        if cause is None:
            raise
        raise StorageError(path, action, cause) from None


def check_writable(spark: Any, root: str) -> None:
    """Create ``root`` when missing and write and delete a probe file in it; a StorageError
    naming the cause when either fails."""
    from wals_roberta.jobs.runs import storage

    try:
        created = storage.files(spark).make_dirs(root)
        failure: BaseException | None = None
    except Exception as exc:
        created, failure = False, exc
    if not created:
        cause = _local_mkdir_cause(root) or (failure and storage_cause(failure))
        if failure is not None and cause is None:
            raise failure
        raise StorageError(root, "create", cause or _TEXT_CAUSES[-1][1])
    probe = storage.join(root, f"_write_probe-{uuid.uuid4().hex[:8]}")
    with guarded(root, "write to"):
        storage.files(spark).write_text(probe, "probe")
        storage.files(spark).delete(probe)


def _local_mkdir_cause(path: str) -> str | None:
    """Why a local directory cannot be created, asked of the OS (Hadoop only says no)."""
    parsed = urlparse(path)
    if parsed.scheme not in ("", "file"):
        return None
    local = parsed.path if parsed.scheme == "file" else path
    parent = local
    while parent and not os.path.exists(parent):
        parent = os.path.dirname(parent.rstrip("/"))
    if parent and not os.path.isdir(parent):
        return f"{parent} is a file, not a directory"
    try:
        os.makedirs(local, exist_ok=True)
    except OSError as exc:
        if exc.errno in _ERRNO_CAUSES:
            return _ERRNO_CAUSES[exc.errno]
        return f"{parent} does not take new directories ({exc.strerror or type(exc).__name__})"
    return None


# The config keys whose values are storage paths, most specific first.
PATH_KEYS = (
    "encoder.cache_dir",
    "wals.checkpoint_dir",
    "tune.output",
    "data.interactions.path",
    "data.items.path",
    "output.root",
)
_PATH_IN_TEXT = re.compile(r"(?:[a-z][a-z0-9+.-]*:)?/[^\s'\",;()]+", re.I)


def config_key(cfg: Any, path: str | None) -> str | None:
    """The config key ``path`` lies under (``output.root`` for a run's tables), or None."""
    if not path:
        return None
    from wals_roberta.jobs.runs.storage import normalize

    def bare(p: str) -> str:
        p = normalize(p)
        return p[len("file:") :] if p.startswith("file:") else p

    target = bare(path)
    for key in PATH_KEYS:
        node: Any = cfg
        for part in key.split("."):
            node = getattr(node, part, None)
        if isinstance(node, str) and node:
            base = bare(node).rstrip("/")
            if target == base or target.startswith(base + "/"):
                return key
    return None


def unnamed_storage_error(cfg: Any, exc: BaseException) -> StorageError | None:
    """A storage failure that no :func:`guarded` block caught (a Spark job deep in a stage)
    as a StorageError, with the path read out of the message where there is one."""
    cause = storage_cause(exc)
    if cause is None:
        return None
    text = exception_text(exc)
    paths = [m.group(0).rstrip(".:") for m in _PATH_IN_TEXT.finditer(text)]
    path = next((p for p in paths if config_key(cfg, p) is not None), None)
    error = StorageError(path or "the run's storage", "write to", cause)
    error.key = config_key(cfg, path)
    return error
