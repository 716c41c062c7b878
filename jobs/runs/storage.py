"""File operations on the run's storage (local, HDFS, S3, DBFS, Unity Catalog volumes), for
both kinds of session.

Manifests, metrics, the report and the publish swap must work wherever the tables live. A
classic session reaches every Hadoop file system through the driver's JVM
(:class:`HadoopFiles`). A Spark Connect session has no JVM on this side: its files go
through a file system this process reaches itself (:class:`ClientFiles`): local paths
(which, on Databricks, include ``/Volumes/...`` and ``/dbfs/...``), ``dbfs:/`` through the
``/dbfs`` mount where there is one, and any other URI through ``fsspec`` when the library
for its scheme is installed (``s3fs`` for ``s3://``/``s3a://``, ``gcsfs``, ``adlfs``, …).
A path neither reaches is refused with the key and what to install. The backend is chosen
once per session, by :func:`files`.
"""

from __future__ import annotations

import os
import shutil
from typing import Any
from urllib.parse import urlparse

from pyspark.sql import SparkSession

from wals_roberta.jobs.runs.errors import ConfigError
from wals_roberta.jobs.runs.session import is_connect
from wals_roberta.jobs.runs.storage_faults import guarded


def normalize(path: str) -> str:
    """Absolute local path for scheme-less paths; URIs (hdfs://, s3a://, dbfs:/) unchanged."""
    if urlparse(path).scheme and not (len(path) > 1 and path[1] == ":"):
        return path.rstrip("/")
    return os.path.abspath(os.path.expanduser(path))


def join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *[p.strip("/") for p in parts]])


class HadoopFiles:
    """Hadoop's FileSystem API through the driver's JVM (classic sessions)."""

    def __init__(self, spark: SparkSession) -> None:
        self._jvm = spark.sparkContext._jvm
        self._conf = spark.sparkContext._jsc.hadoopConfiguration()

    def _fs(self, path: str) -> tuple[Any, Any]:
        jpath = self._jvm.org.apache.hadoop.fs.Path(path)
        fs = jpath.getFileSystem(self._conf)
        fs.setWriteChecksum(False)  # no .crc side files beside manifests on local disks
        return fs, jpath

    def exists(self, path: str) -> bool:
        fs, jpath = self._fs(path)
        return bool(fs.exists(jpath))

    def is_dir(self, path: str) -> bool:
        fs, jpath = self._fs(path)
        return bool(fs.exists(jpath) and fs.getFileStatus(jpath).isDirectory())

    def list_names(self, path: str) -> list[str]:
        fs, jpath = self._fs(path)
        if not fs.exists(jpath):
            return []
        return sorted(str(status.getPath().getName()) for status in fs.listStatus(jpath))

    def read_text(self, path: str) -> str:
        fs, jpath = self._fs(path)
        stream = fs.open(jpath)
        try:
            reader = self._jvm.java.io.BufferedReader(
                self._jvm.java.io.InputStreamReader(stream, "UTF-8")
            )
            lines = []
            line = reader.readLine()
            while line is not None:
                lines.append(line)
                line = reader.readLine()
            return "\n".join(lines)
        finally:
            stream.close()

    def write_text(self, path: str, text: str) -> None:
        fs, jpath = self._fs(path)
        tmp = self._jvm.org.apache.hadoop.fs.Path(path + ".tmp")
        out = fs.create(tmp, True)
        try:
            out.write(bytearray(text.encode("utf-8")))
        finally:
            out.close()
        if fs.exists(jpath):
            fs.delete(jpath, False)
        fs.rename(tmp, jpath)

    def delete(self, path: str) -> None:
        fs, jpath = self._fs(path)
        if fs.exists(jpath):
            fs.delete(jpath, True)

    def size(self, path: str) -> int:
        fs, jpath = self._fs(path)
        return int(fs.getContentSummary(jpath).getLength())

    def copy(self, src: str, dst: str) -> None:
        src_fs, jsrc = self._fs(src)
        dst_fs, jdst = self._fs(dst)
        util = self._jvm.org.apache.hadoop.fs.FileUtil
        if not util.copy(src_fs, jsrc, dst_fs, jdst, False, self._conf):
            raise OSError(f"could not copy {src} to {dst}")

    def rename(self, src: str, dst: str) -> None:
        fs, jsrc = self._fs(src)
        if not fs.rename(jsrc, self._jvm.org.apache.hadoop.fs.Path(dst)):
            raise OSError(f"could not rename {src} to {dst}")

    def qualified(self, path: str) -> str:
        fs, jpath = self._fs(path)
        return str(fs.makeQualified(jpath).toString()).rstrip("/")

    def make_dirs(self, path: str) -> bool:
        """Create the directory and its parents; False when the file system refuses."""
        fs, jpath = self._fs(path)
        return bool(fs.mkdirs(jpath))

    # --- the lease primitives (runs.lease): create-if-absent, replace in place, mtime ---

    def _local_path(self, fs: Any, jpath: Any) -> str | None:
        """The driver-local path of ``jpath`` when its file system is the local disk."""
        if str(fs.getScheme()) != "file":
            return None
        return str(fs.makeQualified(jpath).toUri().getPath())

    def create_exclusive(self, path: str, text: str) -> bool:
        """Create ``path`` holding ``text`` unless it exists; False when it did. Atomic on
        HDFS (the NameNode refuses a second create) and on local disks (``O_EXCL``, since
        Hadoop's local create checks then opens); on S3A a check then a PUT, not atomic."""
        fs, jpath = self._fs(path)
        local = self._local_path(fs, jpath)
        if local is not None:
            return ClientFiles().create_exclusive(local, text)
        from py4j.protocol import Py4JJavaError

        try:
            out = fs.create(jpath, False)
        except Py4JJavaError:
            if fs.exists(jpath):  # FileAlreadyExists, or another client creating it now
                return False
            raise
        try:
            out.write(bytearray(text.encode("utf-8")))
        finally:
            out.close()
        return True

    def replace_text(self, path: str, text: str) -> None:
        """Overwrite a small file so that it never stops existing (unlike
        :meth:`write_text`'s delete and rename); a reader may see it empty while written."""
        fs, jpath = self._fs(path)
        local = self._local_path(fs, jpath)
        if local is not None:
            ClientFiles().replace_text(local, text)
            return
        out = fs.create(jpath, True)
        try:
            out.write(bytearray(text.encode("utf-8")))
        finally:
            out.close()

    def modified(self, path: str) -> float | None:
        """Modification time (seconds since the epoch), None when ``path`` is absent."""
        fs, jpath = self._fs(path)
        if not fs.exists(jpath):
            return None
        return int(fs.getFileStatus(jpath).getModificationTime()) / 1000.0


class ClientFiles:
    """The file systems this process reaches itself (Spark Connect sessions): local paths
    with ``os``, ``dbfs:/`` through the ``/dbfs`` mount, other URIs through ``fsspec``."""

    DBFS_MOUNT = "/dbfs"

    def _local(self, path: str) -> str | None:
        """The local path for ``path``, or None when it is a URI of another file system."""
        parsed = urlparse(path)
        if parsed.scheme in ("", "file") or (len(path) > 1 and path[1] == ":"):
            return parsed.path if parsed.scheme == "file" else path
        if parsed.scheme == "dbfs" and os.path.isdir(self.DBFS_MOUNT):
            return self.DBFS_MOUNT + "/" + (parsed.netloc + parsed.path).lstrip("/")
        return None

    def _remote(self, path: str) -> tuple[Any, str]:
        scheme = urlparse(path).scheme
        try:
            import fsspec

            fs = fsspec.filesystem({"s3a": "s3", "s3n": "s3"}.get(scheme, scheme))
        except (ImportError, ValueError) as exc:
            raise ConfigError(
                f"{path}: on a Spark Connect session the run's own files (manifest, metrics, "
                f"the publish swap) are written by this process, which has no file system for "
                f"{scheme}:// ({type(exc).__name__}: {exc}); install fsspec with its "
                f"{scheme} library (s3fs for s3a://), or use a path this process reaches "
                "(on Databricks, a /Volumes/... path)"
            ) from None
        return fs, path.split("://", 1)[1] if scheme in ("s3a", "s3n") else path

    def exists(self, path: str) -> bool:
        local = self._local(path)
        if local is not None:
            return os.path.exists(local)
        fs, p = self._remote(path)
        return bool(fs.exists(p))

    def is_dir(self, path: str) -> bool:
        local = self._local(path)
        if local is not None:
            return os.path.isdir(local)
        fs, p = self._remote(path)
        return bool(fs.isdir(p))

    def list_names(self, path: str) -> list[str]:
        local = self._local(path)
        if local is not None:
            return sorted(os.listdir(local)) if os.path.isdir(local) else []
        fs, p = self._remote(path)
        if not fs.exists(p):
            return []
        return sorted(entry.rstrip("/").rsplit("/", 1)[-1] for entry in fs.ls(p, detail=False))

    def read_text(self, path: str) -> str:
        local = self._local(path)
        if local is not None:
            with open(local, encoding="utf-8") as f:
                return f.read().rstrip("\n")
        fs, p = self._remote(path)
        with fs.open(p, "r", encoding="utf-8") as f:
            return f.read().rstrip("\n")

    def write_text(self, path: str, text: str) -> None:
        local = self._local(path)
        if local is not None:
            os.makedirs(os.path.dirname(local) or ".", exist_ok=True)
            with open(local + ".tmp", "w", encoding="utf-8") as f:
                f.write(text)
            os.replace(local + ".tmp", local)  # atomic on one POSIX file system
            return
        fs, p = self._remote(path)
        with fs.open(p, "w", encoding="utf-8") as f:  # object stores: one PUT
            f.write(text)

    def delete(self, path: str) -> None:
        local = self._local(path)
        if local is not None:
            if os.path.isdir(local) and not os.path.islink(local):
                shutil.rmtree(local)
            elif os.path.lexists(local):
                os.remove(local)
            return
        fs, p = self._remote(path)
        if fs.exists(p):
            fs.rm(p, recursive=True)

    def size(self, path: str) -> int:
        local = self._local(path)
        if local is not None:
            if os.path.isfile(local):
                return os.path.getsize(local)
            return sum(
                os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(local) for f in files
            )
        fs, p = self._remote(path)
        return int(fs.du(p))

    def copy(self, src: str, dst: str) -> None:
        local_src, local_dst = self._local(src), self._local(dst)
        if local_src is not None and local_dst is not None:
            if os.path.isdir(local_src):
                shutil.copytree(local_src, local_dst)
            else:
                shutil.copyfile(local_src, local_dst)
            return
        if local_src is None and local_dst is None:
            fs, p = self._remote(src)
            fs.copy(p, self._remote(dst)[1], recursive=True)
            return
        raise OSError(f"could not copy {src} to {dst}: one is local, the other is not")

    def rename(self, src: str, dst: str) -> None:
        local_src, local_dst = self._local(src), self._local(dst)
        if local_src is not None and local_dst is not None:
            os.rename(local_src, local_dst)  # atomic on one POSIX file system
            return
        fs, p = self._remote(src)
        fs.mv(p, self._remote(dst)[1], recursive=True)

    def qualified(self, path: str) -> str:
        local = self._local(path)
        if local is not None:
            return "file:" + os.path.abspath(local).rstrip("/")
        return path.rstrip("/")

    def make_dirs(self, path: str) -> bool:
        """Create the directory and its parents (raises OSError with the cause)."""
        local = self._local(path)
        if local is not None:
            os.makedirs(local, exist_ok=True)
            return True
        fs, p = self._remote(path)
        fs.makedirs(p, exist_ok=True)
        return True

    # --- the lease primitives (runs.lease): create-if-absent, replace in place, mtime ---

    def create_exclusive(self, path: str, text: str) -> bool:
        """Create ``path`` holding ``text`` unless it exists; False when it did. Local paths:
        ``O_CREAT | O_EXCL``, atomic (a reader may see the file empty until written);
        ``fsspec``: best effort, a check then one upload."""
        local = self._local(path)
        if local is not None:
            os.makedirs(os.path.dirname(local) or ".", exist_ok=True)
            try:
                fd = os.open(local, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
            return True
        fs, p = self._remote(path)
        if fs.exists(p):
            return False
        with fs.open(p, "w", encoding="utf-8") as f:
            f.write(text)
        return True

    def replace_text(self, path: str, text: str) -> None:
        """Overwrite a small file so that it never stops existing (local: written beside and
        renamed over it; object stores: one upload)."""
        self.write_text(path, text)

    def modified(self, path: str) -> float | None:
        """Modification time (seconds since the epoch), None when ``path`` is absent."""
        local = self._local(path)
        if local is not None:
            return os.path.getmtime(local) if os.path.exists(local) else None
        fs, p = self._remote(path)
        if not fs.exists(p):
            return None
        return float(fs.modified(p).timestamp())


def files(spark: SparkSession) -> HadoopFiles | ClientFiles:
    """The file-system backend for ``spark``'s kind of session."""
    return ClientFiles() if is_connect(spark) else HadoopFiles(spark)


def exists(spark: SparkSession, path: str) -> bool:
    with guarded(path, "read"):
        return files(spark).exists(path)


def is_dir(spark: SparkSession, path: str) -> bool:
    with guarded(path, "read"):
        return files(spark).is_dir(path)


def list_names(spark: SparkSession, path: str) -> list[str]:
    """Names of the entries directly under ``path`` (empty when it does not exist)."""
    with guarded(path, "list"):
        return files(spark).list_names(path)


def read_text(spark: SparkSession, path: str) -> str:
    with guarded(path, "read"):
        return files(spark).read_text(path)


def write_text(spark: SparkSession, path: str, text: str) -> None:
    """Write a small text file: written beside, then renamed over the old one (on object
    stores, one upload)."""
    with guarded(path, "write"):
        files(spark).write_text(path, text)


def delete(spark: SparkSession, path: str) -> None:
    with guarded(path, "delete"):
        files(spark).delete(path)


def size(spark: SparkSession, path: str) -> int:
    """Bytes under ``path`` (all files, recursively)."""
    with guarded(path, "read"):
        return files(spark).size(path)


def copy(spark: SparkSession, src: str, dst: str) -> None:
    """Copy the file or directory ``src`` to ``dst`` byte for byte (the bytes pass through
    the driver, or this process on Spark Connect)."""
    with guarded(dst, "copy to"):
        files(spark).copy(src, dst)


def rename(spark: SparkSession, src: str, dst: str) -> None:
    with guarded(dst, "rename to"):
        files(spark).rename(src, dst)


def qualified(spark: SparkSession, path: str) -> str:
    """``path`` with scheme and authority, so ``/x`` and ``file:/x`` compare equal."""
    with guarded(path, "read"):
        return files(spark).qualified(path)


def create_exclusive(spark: SparkSession, path: str, text: str) -> bool:
    """Create the small file ``path`` unless it exists (True when this call created it);
    atomic on HDFS and local paths, best effort on object stores (see each backend)."""
    with guarded(path, "write"):
        return files(spark).create_exclusive(path, text)


def replace_text(spark: SparkSession, path: str, text: str) -> None:
    """Overwrite the small file ``path`` without a moment where it is absent."""
    with guarded(path, "write"):
        files(spark).replace_text(path, text)


def modified(spark: SparkSession, path: str) -> float | None:
    """Modification time of ``path`` in seconds since the epoch; None when absent."""
    with guarded(path, "read"):
        return files(spark).modified(path)
