"""File operations on any Hadoop file system (local, HDFS, S3, DBFS) through the driver's JVM.

Manifests and the publish swap must work wherever the tables live, so they go through
Hadoop's FileSystem API rather than Python's ``os`` module.
"""

from __future__ import annotations

import os
from urllib.parse import urlparse

from pyspark.sql import SparkSession


def normalize(path: str) -> str:
    """Absolute local path for scheme-less paths; URIs (hdfs://, s3a://, dbfs:/) unchanged."""
    if urlparse(path).scheme and not (len(path) > 1 and path[1] == ":"):
        return path.rstrip("/")
    return os.path.abspath(os.path.expanduser(path))


def join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *[p.strip("/") for p in parts]])


def _fs_path(spark: SparkSession, path: str):
    jvm = spark.sparkContext._jvm
    jpath = jvm.org.apache.hadoop.fs.Path(path)
    fs = jpath.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())
    fs.setWriteChecksum(False)  # no .crc side files beside manifests on local disks
    return fs, jpath


def exists(spark: SparkSession, path: str) -> bool:
    fs, jpath = _fs_path(spark, path)
    return bool(fs.exists(jpath))


def is_dir(spark: SparkSession, path: str) -> bool:
    fs, jpath = _fs_path(spark, path)
    return bool(fs.exists(jpath) and fs.getFileStatus(jpath).isDirectory())


def list_names(spark: SparkSession, path: str) -> list[str]:
    """Names of the entries directly under ``path`` (empty when it does not exist)."""
    fs, jpath = _fs_path(spark, path)
    if not fs.exists(jpath):
        return []
    return sorted(str(status.getPath().getName()) for status in fs.listStatus(jpath))


def read_text(spark: SparkSession, path: str) -> str:
    fs, jpath = _fs_path(spark, path)
    stream = fs.open(jpath)
    try:
        reader = spark.sparkContext._jvm.java.io.BufferedReader(
            spark.sparkContext._jvm.java.io.InputStreamReader(stream, "UTF-8")
        )
        lines = []
        line = reader.readLine()
        while line is not None:
            lines.append(line)
            line = reader.readLine()
        return "\n".join(lines)
    finally:
        stream.close()


def write_text(spark: SparkSession, path: str, text: str) -> None:
    """Write a small text file: written beside, then renamed over the old one."""
    fs, jpath = _fs_path(spark, path)
    tmp = spark.sparkContext._jvm.org.apache.hadoop.fs.Path(path + ".tmp")
    out = fs.create(tmp, True)
    try:
        out.write(bytearray(text.encode("utf-8")))
    finally:
        out.close()
    if fs.exists(jpath):
        fs.delete(jpath, False)
    fs.rename(tmp, jpath)


def delete(spark: SparkSession, path: str) -> None:
    fs, jpath = _fs_path(spark, path)
    if fs.exists(jpath):
        fs.delete(jpath, True)


def size(spark: SparkSession, path: str) -> int:
    """Bytes under ``path`` (all files, recursively)."""
    fs, jpath = _fs_path(spark, path)
    return int(fs.getContentSummary(jpath).getLength())


def copy(spark: SparkSession, src: str, dst: str) -> None:
    """Copy the file or directory ``src`` to ``dst`` byte for byte (any two Hadoop file
    systems; the bytes pass through the driver)."""
    jvm = spark.sparkContext._jvm
    src_fs, jsrc = _fs_path(spark, src)
    dst_fs, jdst = _fs_path(spark, dst)
    conf = spark.sparkContext._jsc.hadoopConfiguration()
    if not jvm.org.apache.hadoop.fs.FileUtil.copy(src_fs, jsrc, dst_fs, jdst, False, conf):
        raise OSError(f"could not copy {src} to {dst}")


def rename(spark: SparkSession, src: str, dst: str) -> None:
    fs, jsrc = _fs_path(spark, src)
    jdst = spark.sparkContext._jvm.org.apache.hadoop.fs.Path(dst)
    if not fs.rename(jsrc, jdst):
        raise OSError(f"could not rename {src} to {dst}")
