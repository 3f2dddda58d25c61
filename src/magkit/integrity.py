"""Integrity of the files magkit writes: atomic writes, content digests, and the typed errors of both.

* :func:`atomic_write_bytes` / :func:`atomic_path`: a file is written under a temporary name in its target
  folder, flushed, ``fsync``-ed and renamed over the target (``os.replace``, atomic on POSIX), then the folder is
  ``fsync``-ed. A failure at any step (a full disk included) removes the temporary file, leaves the previous
  file intact and raises :class:`WriteError`, one line naming the file and the reason. Temporary files of
  writers killed on this host (``SIGKILL``, power loss of the process) are removed by the next write of the
  same file.
* :func:`write_safetensors` / :func:`read_safetensors`: one safetensors file whose header holds a JSON record
  (metadata key ``"magkit"``) and a sha256 content digest of that record and of every tensor's name, dtype,
  shape and bytes (metadata key ``"magkit.sha256"``). Reading parses the header and the tensor bytes only (no
  pickle, no code), recomputes the digest and raises :class:`IntegrityError` naming the file on any mismatch,
  truncation or malformed byte, so a corrupted file never loads.

A digest protects against accidental corruption (bit flips, truncation, a partial copy); it is not a
signature: whoever can write the file can write a matching digest (see docs/security.md).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import hmac
import json
import os
import socket
import struct
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .exceptions import DatasetError, MagkitError

#: metadata keys of a magkit safetensors file: the JSON record and its content digest
RECORD_KEY = "magkit"
DIGEST_KEY = "magkit.sha256"
_DIGEST_TAG = b"magkit.content.v1\n"
#: errno values reported as "the disk cannot take the file"
_SPACE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG}


class IntegrityError(DatasetError):
    """A magkit file is truncated, corrupted, or fails its content digest; nothing of it was loaded."""


class WriteError(MagkitError, OSError):
    """A file could not be written (full disk, quota, read-only folder, ...); the previous file is intact."""


def _reason(exc: OSError) -> str:
    name = errno.errorcode.get(exc.errno or 0, "")
    text = exc.strerror or str(exc) or type(exc).__name__
    return f"{text} ({name})" if name else text


def write_error(path: str | os.PathLike, exc: OSError) -> WriteError:
    """The one-line :class:`WriteError` for a failed write of ``path``."""
    hint = "; free some space or write elsewhere" if exc.errno in _SPACE_ERRNOS else ""
    err = WriteError(f"could not write {os.fspath(path)}: {_reason(exc)}; the previous file (if any) is "
                     f"unchanged{hint}")
    err.errno = exc.errno
    return err


# ---------------------------------------------------------------------------------------------- atomic writes
_HOST = socket.gethostname().replace(".", "_").replace(os.sep, "_") or "host"


def _tmp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{_HOST}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")


def _sweep_stale(path: Path) -> None:
    """Remove temporary files of ``path`` left by writers of this host that no longer run."""
    prefix = f".{path.name}.{_HOST}."
    try:
        entries = list(path.parent.iterdir())
    except OSError:
        return
    for entry in entries:
        name = entry.name
        if not (name.startswith(prefix) and name.endswith(".tmp")):
            continue
        pid_text = name[len(prefix):].split(".", 1)[0]
        if not pid_text.isdigit() or int(pid_text) == os.getpid():
            continue
        try:
            os.kill(int(pid_text), 0)
            continue  # that writer still runs
        except ProcessLookupError:
            pass
        except OSError:  # another user's live process
            continue
        with contextlib.suppress(OSError):
            entry.unlink()


def fsync_dir(folder: str | os.PathLike) -> None:
    """``fsync`` a folder so that a rename inside it is durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path next to ``path`` to write to; on a clean exit it is ``fsync``-ed and renamed to ``path``.

    On an exception (a ``KeyboardInterrupt`` included) the temporary file is removed and ``path`` is left as it
    was; an :class:`OSError` becomes a one-line :class:`WriteError` naming ``path``."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise write_error(path, exc) from None
    _sweep_stale(path)
    tmp = _tmp_name(path)
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(exc, WriteError):
            raise
        raise write_error(path, exc) from None
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(path.parent)


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        done = os.write(fd, view)
        view = view[done:]


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_path`); returns ``path``."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies, as for open()
        try:
            _write_all(fd, data)
        finally:
            os.close(fd)
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


# ---------------------------------------------------------------------------------------------- digests
def _tensor_bytes(t: Tensor) -> memoryview:
    t = t.detach().cpu().contiguous()
    return memoryview(t.reshape(-1).view(torch.uint8).numpy()) if t.numel() else memoryview(b"")


def content_digest(record_json: str, tensors: Mapping[str, Tensor]) -> str:
    """sha256 of a JSON record and of every tensor's name, dtype, shape and bytes (in name order)."""
    h = hashlib.sha256(_DIGEST_TAG)
    raw = record_json.encode("utf-8")
    h.update(struct.pack("<Q", len(raw)))
    h.update(raw)
    for key in sorted(tensors):
        t = tensors[key]
        head = f"{key}\0{t.dtype}\0{list(t.shape)}\0".encode()
        h.update(struct.pack("<Q", len(head)))
        h.update(head)
        h.update(_tensor_bytes(t))
    return h.hexdigest()


def file_digest(path: str | os.PathLike, chunk: int = 8 << 20) -> str:
    """sha256 of a file's bytes, read in chunks into one reused buffer."""
    h = hashlib.sha256()
    buf = bytearray(chunk)
    view = memoryview(buf)
    with open(path, "rb") as fh:
        while k := fh.readinto(buf):
            h.update(view[:k])
    return h.hexdigest()


def dumps(record: Any) -> str:
    """The canonical JSON text of a record (sorted keys)."""
    return json.dumps(record, sort_keys=True)


def write_safetensors(path: str | os.PathLike, tensors: Mapping[str, Tensor], record: Mapping[str, Any]) -> Path:
    """Write ``tensors`` and the JSON ``record`` as one safetensors file with a content digest, atomically."""
    from safetensors.torch import save

    cpu = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    text = dumps(dict(record))
    data = save(cpu, metadata={RECORD_KEY: text, DIGEST_KEY: content_digest(text, cpu)})
    return atomic_write_bytes(path, data)


def _header(path: Path, data: bytes) -> dict:
    if len(data) < 8:
        raise IntegrityError(f"{path}: not a readable safetensors file ({len(data)} bytes); it may be truncated or "
                             "of another format")
    (n,) = struct.unpack("<Q", data[:8])
    if n > len(data) - 8:
        raise IntegrityError(f"{path}: not a readable safetensors file (its header claims {n} bytes, the file has "
                             f"{len(data) - 8}); it may be truncated or of another format")
    try:
        header = json.loads(data[8:8 + n])
    except (ValueError, RecursionError) as exc:
        raise IntegrityError(f"{path}: not a readable safetensors file (malformed header: {exc})") from None
    if not isinstance(header, dict):
        raise IntegrityError(f"{path}: not a readable safetensors file (the header is not a JSON object)")
    return header


def read_safetensors(path: str | os.PathLike, what: str = "magkit file") -> tuple[dict, dict[str, Tensor]]:
    """Read a file written by :func:`write_safetensors`: its JSON record and its tensors, after checking the
    content digest. Executes no code.

    Raises:
        DatasetError: ``path`` does not exist or cannot be read.
        IntegrityError: truncated, malformed, without magkit metadata or digest, or a digest mismatch.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load

    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DatasetError(f"{path}: no such file (expected a {what})") from None
    except OSError as exc:
        raise DatasetError(f"{path}: cannot be read ({_reason(exc)})") from None
    header = _header(path, data)
    meta = header.get("__metadata__")
    if not isinstance(meta, dict) or not isinstance(meta.get(RECORD_KEY), str):
        raise IntegrityError(f"{path}: no {RECORD_KEY!r} metadata in the safetensors header; this is not a {what} "
                             "written by magkit")
    digest = meta.get(DIGEST_KEY)
    if not isinstance(digest, str):
        raise IntegrityError(f"{path}: no content digest ({DIGEST_KEY!r}) in the safetensors header; it was not "
                             f"written by this magkit, or was altered; re-create the {what}")
    try:
        tensors = load(data)
    except (SafetensorError, ValueError, TypeError, RuntimeError, OverflowError, KeyError) as exc:
        raise IntegrityError(f"{path}: not a readable safetensors file ({exc}); it may be truncated or "
                             "corrupted") from None
    text = meta[RECORD_KEY]
    if not hmac.compare_digest(content_digest(text, tensors), digest):
        raise IntegrityError(f"{path}: content digest mismatch: the {what} was corrupted or altered after it was "
                             "written; nothing was loaded")
    try:
        record = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise IntegrityError(f"{path}: the {RECORD_KEY!r} metadata is malformed JSON ({exc})") from None
    if not isinstance(record, dict):
        raise IntegrityError(f"{path}: the {RECORD_KEY!r} metadata must be a JSON object (got "
                             f"{type(record).__name__})")
    return record, tensors


def is_pickle(path: str | os.PathLike) -> bool:
    """Whether ``path`` looks like a pickle or a ``torch.save`` archive (checked from its first bytes and, for a
    zip, its file names; nothing is unpickled)."""
    import zipfile

    try:
        with open(path, "rb") as fh:
            head = fh.read(9)
        size = os.path.getsize(path)
    except OSError:
        return False
    if len(head) == 9 and head[8:9] == b"{" and struct.unpack("<Q", head[:8])[0] <= size - 8:
        return False  # a safetensors header (whose length bytes may look like a pickle's protocol mark)
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return True
    if head[:4] == b"PK\x03\x04":
        try:
            with zipfile.ZipFile(path) as zf:
                return any(n.endswith("data.pkl") for n in zf.namelist())
        except (zipfile.BadZipFile, OSError, ValueError):
            return False
    return False
