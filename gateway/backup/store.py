"""Where backups go: a local folder or an S3 prefix, behind one small interface.

    open_store("DIR" | "s3://bucket/prefix") -> Store
    Store.put(key, path) / get(key, path) / exists(key) / keys(folder) / delete(key) /
          read(key) -> bytes / write(key, bytes)
    Store.sizes(folder) -> {key: bytes}    keys(folder) with their sizes, in one listing

Keys are "/"-separated relative names the backup code makes (never user text unchecked).
`SECRETS_MARK` is the object an operator creates by hand (an empty file or object) to mark a
destination as fit for the gateway secret; without it the secret is refused.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

SECRETS_MARK = "SECRETS-OK"


class Store(Protocol):
    url: str

    def put(self, key: str, path: Path) -> None: ...
    def get(self, key: str, path: Path) -> None: ...
    def exists(self, key: str) -> bool: ...
    def keys(self, prefix: str) -> list[str]: ...
    def sizes(self, prefix: str) -> dict[str, int]: ...
    def delete(self, key: str) -> None: ...
    def read(self, key: str) -> bytes: ...
    def write(self, key: str, data: bytes) -> None: ...


def _checked(key: str) -> str:
    parts = key.split("/")
    if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"bad backup key {key!r}")
    return key


class LocalStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.url = str(root)
        root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        return self.root / _checked(key)

    def put(self, key: str, path: Path) -> None:
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".partial")
        shutil.copyfile(path, partial)
        os.replace(partial, target)  # a key exists whole or not at all

    def get(self, key: str, path: Path) -> None:
        shutil.copyfile(self._path(key), path)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def keys(self, prefix: str) -> list[str]:
        return sorted(self.sizes(prefix))

    def sizes(self, prefix: str) -> dict[str, int]:
        base = self.root / prefix if prefix else self.root
        if not base.is_dir():
            return {}
        return {
            str(p.relative_to(self.root)): p.stat().st_size
            for p in base.rglob("*")
            if p.is_file() and not p.name.endswith(".partial")
        }

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def read(self, key: str) -> bytes:
        return self._path(key).read_bytes()

    def write(self, key: str, data: bytes) -> None:
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".partial")
        partial.write_bytes(data)
        os.replace(partial, target)


class S3Store:
    def __init__(self, bucket: str, prefix: str, client: Any = None) -> None:
        import boto3

        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.url = f"s3://{bucket}/{self.prefix}"
        self._s3 = client or boto3.session.Session().client("s3")

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{_checked(key)}" if self.prefix else _checked(key)

    def put(self, key: str, path: Path) -> None:
        self._s3.upload_file(str(path), self.bucket, self._key(key))

    def get(self, key: str, path: Path) -> None:
        self._s3.download_file(self.bucket, self._key(key), str(path))

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self._s3.head_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        return True

    def keys(self, prefix: str) -> list[str]:
        return sorted(self.sizes(prefix))

    def sizes(self, prefix: str) -> dict[str, int]:
        # A folder, as in LocalStore: "snapshots/X" must not list "snapshots/X-2/...".
        base = self._key(prefix) + "/" if prefix else (self.prefix + "/" if self.prefix else "")
        found = {}
        for page in self._s3.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=base
        ):
            for item in page.get("Contents", []):
                key = item["Key"]
                found[key[len(self.prefix) + 1 :] if self.prefix else key] = int(item["Size"])
        return found

    def delete(self, key: str) -> None:
        self._s3.delete_object(Bucket=self.bucket, Key=self._key(key))

    def read(self, key: str) -> bytes:
        return self._s3.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()

    def write(self, key: str, data: bytes) -> None:
        self._s3.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)


def open_store(url: str) -> Store:
    """A folder path, or s3://bucket/prefix (credentials the usual boto3 ways)."""
    if url.startswith("s3://"):
        parts = urlsplit(url)
        if not parts.netloc:
            raise ValueError(f"{url}: s3://bucket/prefix expected")
        return S3Store(parts.netloc, parts.path)
    return LocalStore(Path(url))
