"""OpenAI's original GPT-2 files, fetched as the book's `gpt_download.py` does, but resumable and checked.

The same seven files per size from the same two hosts: OpenAI's, then the book's backup copy.
Each file streams into `NAME.part`; a dropped connection or a new run resumes it with an HTTP
Range request, and only a complete file of the right size is renamed into place. Last, the
checkpoint's own per-tensor crc32c proves the weights arrived intact.
"""

from __future__ import annotations

import http.client
import os
import re
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.error import HTTPError

from gptlab.checkpoint.tf_bundle import read_bundle
from gptlab.files import OFFLINE_ENV, FileUnavailableError, offline

SIZES = ("124M", "355M", "774M", "1558M")
FILES = ("checkpoint", "encoder.json", "hparams.json", "model.ckpt.data-00000-of-00001", "model.ckpt.index",
         "model.ckpt.meta", "vocab.bpe")
SOURCES = (
    "https://openaipublic.blob.core.windows.net/gpt-2/models",  # OpenAI's, the book's primary
    "https://f001.backblazeb2.com/file/LLMs-from-scratch/gpt2",  # the book's documented backup
)
# Byte sizes the book's own test pins against both hosts' Content-Length (LLMs-from-scratch,
# ch05/01_main-chapter-code/tests.py, test_model_files). No public list covers 774M and 1558M:
# their data file is checked against the index instead (`read_bundle`).
_SHARED = {"checkpoint": 77, "encoder.json": 1042301, "vocab.bpe": 456318}
PINNED_SIZES = {
    "124M": {**_SHARED, "hparams.json": 90, "model.ckpt.data-00000-of-00001": 497759232,
             "model.ckpt.index": 5215, "model.ckpt.meta": 471155},
    "355M": {**_SHARED, "hparams.json": 91, "model.ckpt.data-00000-of-00001": 1419292672,
             "model.ckpt.index": 10399, "model.ckpt.meta": 926519},
}
ATTEMPTS = 3  # tries in a row that add nothing before a host is given up; each try resumes the last
TIMEOUT_S = 30.0
_CHUNK = 1 << 20
_RETRY_STATUS = {408, 429, 500, 502, 503, 504}  # worth another try at the same host


@dataclass(frozen=True)
class DownloadProgress:
    """How far one file has come; the CLI draws its bar from these."""

    file: str  # file name, e.g. "model.ckpt.data-00000-of-00001"
    done: int  # bytes on disk so far
    total: int | None  # bytes expected, when the server or a pinned size says


ProgressCallback = Callable[[DownloadProgress], None]


def gpt2_size(name: str) -> str:
    """The size folder for "gpt2-124M" or "124M" (the book's names)."""
    size = name.removeprefix("gpt2-")
    if size not in SIZES:
        raise ValueError(f"unknown GPT-2 size {name!r}; choose one of: {', '.join(f'gpt2-{s}' for s in SIZES)}")
    return size


def download_gpt2(size: str, folder: str | Path, progress: ProgressCallback | None = None, verify: bool = True,
                  sources: Sequence[str] = SOURCES, timeout: float = TIMEOUT_S) -> Path:
    """Fetch OpenAI's GPT-2 files of `size` ("124M" or "gpt2-124M", ...) into `folder`; complete
    files are kept, partial ones resumed. `verify` checks every tensor's crc32c at the end (the
    data file's size against the index is always checked). Returns `folder`, a model for `load_model`."""
    size, folder = gpt2_size(size), Path(folder)
    pinned = PINNED_SIZES.get(size, {})
    for name in FILES:
        fetch_file([f"{base.rstrip('/')}/{size}/{name}" for base in sources], folder / name, pinned.get(name),
                   progress, timeout)
    read_bundle(folder / "model.ckpt", verify)
    return folder


def fetch_file(urls: Sequence[str], dest: Path, size: int | None = None, progress: ProgressCallback | None = None,
               timeout: float = TIMEOUT_S) -> Path:
    """Download `dest` from the first of `urls` that serves all of it; resumable, renamed when complete.

    A file already at `dest` (with the pinned `size`, if any) is kept. A wrong size is a ValueError
    naming the file; no host reachable is a FileUnavailableError saying where to put the file by hand.
    """
    if dest.is_file() and (size is None or dest.stat().st_size == size):
        return dest
    if offline():
        raise FileUnavailableError(_by_hand(dest, urls, f"downloads are switched off ({OFFLINE_ENV}=1)"))
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(f"{dest.name}.part")
    failures = []
    for url in urls:
        stalls = 0
        while stalls < ATTEMPTS:  # bounded: a try that is no stall adds bytes to the .part
            before = _size(part)
            try:
                total = _resume(url, part, progress, timeout, size)
            except (OSError, http.client.HTTPException) as err:  # refused, timed out, cut, HTTP errors
                failures.append(f"{url}: {getattr(err, 'reason', None) or err}")
                if isinstance(err, HTTPError) and err.code not in _RETRY_STATUS:
                    break  # 404 and the like: this host does not have it
            else:
                if total is None or _size(part) >= total:
                    return _install(part, dest, url, size if size is not None else total)
                failures.append(f"{url}: the connection ended after {_size(part)} of {total} bytes")
            stalls = stalls + 1 if _size(part) <= before else 0
    raise FileUnavailableError(_by_hand(dest, urls, "; ".join(dict.fromkeys(failures[-3:]))))  # each reason once


def _install(part: Path, dest: Path, url: str, expected: int | None) -> Path:
    """Rename a complete `.part` into place; one of the wrong size is deleted and reported."""
    if expected is not None and _size(part) != expected:
        got = _size(part)
        part.unlink()
        raise _wrong_size(part, url, got, expected)
    os.replace(part, dest)
    return dest


def _size(path: Path) -> int:
    return path.stat().st_size if path.is_file() else 0


def _resume(url: str, part: Path, progress: ProgressCallback | None, timeout: float, size: int | None) -> int | None:
    """Append the rest of `url` to `part` (a Range request from its size); the file's total size if known."""
    start = _size(part)
    headers = {"User-Agent": "gptlab", **({"Range": f"bytes={start}-"} if start else {})}
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except HTTPError as err:
        if err.code == 416 and start:  # nothing after `start`: the .part is already whole
            return _total_of(err.headers.get("Content-Range")) or start
        raise
    with response:
        if response.status == 206:
            total = _total_of(response.headers.get("Content-Range"))
        else:  # the server sent the whole file
            start, length = 0, response.headers.get("Content-Length")
            total = int(length) if length is not None else None
        if size is not None and total is not None and total != size:  # say so before streaming gigabytes
            part.unlink(missing_ok=True)
            raise _wrong_size(part, url, total, size)
        done = start
        with part.open("ab" if start else "wb") as out:
            while chunk := response.read(_CHUNK):
                out.write(chunk)
                done += len(chunk)
                if progress is not None:
                    progress(DownloadProgress(part.name.removesuffix(".part"), done, total or size))
    return total


def _total_of(content_range: str | None) -> int | None:
    """The full size from a Content-Range header ("bytes 100-199/1000" or "bytes */1000")."""
    match = re.fullmatch(r"bytes (?:\d+-\d+|\*)/(\d+)", (content_range or "").strip())
    return int(match[1]) if match else None


def _wrong_size(part: Path, url: str, got: int, expected: int) -> ValueError:
    return ValueError(
        f"{part.with_suffix('')}: {url} serves {got} bytes, expected {expected}; it is not the published file "
        "(a moved or changed host?), so nothing was kept"
    )


def _by_hand(dest: Path, urls: Sequence[str], why: str) -> str:
    return (
        f"{dest.name} could not be downloaded ({why}). Download it by hand from {' or '.join(urls)} and put it at "
        f"{dest}; an interrupted download resumes from {dest.name}.part when run again"
    )
