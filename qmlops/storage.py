"""Paths that are either local directories or ``pyarrow.fs`` URIs, with atomic Parquet writes.

Every stage that writes files (data versions, feature sets, artifacts) goes through here so that the same code
works on a laptop and on a multi-node cluster with shared storage.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

__all__ = [
    "resolve",
    "join",
    "exists",
    "write_parquet",
    "read_parquet",
    "write_bytes",
    "read_bytes",
    "delete",
    "upload_file",
    "download_file",
]


def resolve(uri: str) -> tuple[pafs.FileSystem, str]:
    """Return ``(filesystem, path)`` for a local path or a ``pyarrow.fs`` URI."""
    if "://" in uri:
        fs, path = pafs.FileSystem.from_uri(uri)
        return fs, path
    return pafs.LocalFileSystem(), str(Path(uri).absolute())


def join(base: str, *parts: str) -> str:
    if "://" in base:
        return "/".join([base.rstrip("/"), *parts])
    return str(Path(base, *parts))


def exists(uri: str) -> bool:
    fs, path = resolve(uri)
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def _parent(path: str) -> str:
    return path.rsplit("/", 1)[0] if "/" in path else ""


def _atomic_finish(fs: pafs.FileSystem, tmp: str, path: str) -> None:
    if isinstance(fs, pafs.LocalFileSystem):
        os.replace(tmp, path)  # atomic on POSIX: readers never see a half-written file
    else:
        fs.move(tmp, path)


def write_parquet(table: pa.Table, uri: str) -> None:
    """Write ``table`` to ``uri`` so that the file either appears whole or not at all."""
    fs, path = resolve(uri)
    fs.create_dir(_parent(path), recursive=True)
    tmp = f"{path}.tmp-{uuid.uuid4().hex}"
    pq.write_table(table, tmp, filesystem=fs, compression="zstd")
    _atomic_finish(fs, tmp, path)


def read_parquet(uri: str, columns: list[str] | None = None) -> pa.Table:
    fs, path = resolve(uri)
    return pq.read_table(path, filesystem=fs, columns=columns)


def write_bytes(data: bytes, uri: str) -> None:
    fs, path = resolve(uri)
    fs.create_dir(_parent(path), recursive=True)
    tmp = f"{path}.tmp-{uuid.uuid4().hex}"
    with fs.open_output_stream(tmp) as out:
        out.write(data)
    _atomic_finish(fs, tmp, path)


def read_bytes(uri: str) -> bytes:
    fs, path = resolve(uri)
    with fs.open_input_stream(path) as src:
        return bytes(src.read())


def delete(uri: str) -> None:
    fs, path = resolve(uri)
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.Directory:
        fs.delete_dir(path)
    elif info.type == pafs.FileType.File:
        fs.delete_file(path)


_CHUNK = 8 * 1024 * 1024


def _stream(src: object, out: object) -> tuple[int, str]:
    digest, size = hashlib.sha256(), 0
    while chunk := src.read(_CHUNK):  # type: ignore[attr-defined]
        digest.update(chunk)
        out.write(chunk)  # type: ignore[attr-defined]
        size += len(chunk)
    return size, digest.hexdigest()


def upload_file(local: str, uri: str) -> tuple[int, str]:
    """Stream a local file to ``uri`` (appears whole or not at all); returns its size and sha256."""
    fs, path = resolve(uri)
    fs.create_dir(_parent(path), recursive=True)
    tmp = f"{path}.tmp-{uuid.uuid4().hex}"
    with open(local, "rb") as src, fs.open_output_stream(tmp) as out:
        result = _stream(src, out)
    _atomic_finish(fs, tmp, path)
    return result


def download_file(uri: str, local: str) -> tuple[int, str]:
    """Stream ``uri`` to a local file (appears whole or not at all); returns its size and sha256."""
    fs, path = resolve(uri)
    Path(local).parent.mkdir(parents=True, exist_ok=True)
    tmp = f"{local}.tmp-{uuid.uuid4().hex}"
    with fs.open_input_stream(path) as src, open(tmp, "wb") as out:
        result = _stream(src, out)
    os.replace(tmp, local)
    return result
