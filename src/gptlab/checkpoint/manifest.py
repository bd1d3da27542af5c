"""`manifest.json`: the sha256 of every file in a folder gptlab wrote, checked before the files are used.

A checkpoint is read back months later, after copies, syncs and disks that flip bits. safetensors
loads a damaged tensor without complaint and one flipped exponent bit turns -0.0192 into 314.8, so
the model answers differently and nothing says why. The manifest is written last into every folder
`write_folder_atomically` fills, and `gptlab.loading` checks it before reading anything else.
A training run's folder has one too, for the files the run writes once (`config.json`, the data splits,
`summary.json`, the test-set responses): whatever reads such a file back checks it (`check_listed`).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Collection, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

from gptlab.files import sha256_of, write_text_atomically

MANIFEST = "manifest.json"
# A training checkpoint's optimizer, RNG and progress: only --resume reads them, and checks them then.
TRAINING_STATE = ("training.safetensors", "training.json")
_SHA256 = re.compile(r"[0-9a-f]{64}")


class DamagedFileError(ValueError):
    """A file differs from what its folder's manifest recorded (or is missing): it must not be used."""


def write_manifest(folder: Path) -> None:
    """Record the sha256 of every file in `folder`; called once the folder's other files are written."""
    digests = {path.name: sha256_of(path) for path in sorted(folder.iterdir())
               if path.is_file() and path.name != MANIFEST}
    (folder / MANIFEST).write_text(json.dumps(digests, indent=2) + "\n", encoding="utf-8")


def record_files(folder: Path, names: Iterable[str]) -> None:
    """Add (or refresh) the sha256 of the files `names` in `folder`'s manifest and keep its other entries: a
    run folder's files are written at different times (its config and splits first, its summary last)."""
    try:
        digests = _read_manifest(folder, "") if has_manifest(folder) else {}
    except DamagedFileError:  # written anew below: only the files recorded from now on are vouched for
        digests = {}
    digests.update({name: sha256_of(folder / name) for name in names})
    write_text_atomically(folder / MANIFEST, json.dumps(dict(sorted(digests.items())), indent=2) + "\n")


def check_listed(path: Path, data: bytes | None = None) -> None:
    """Refuse a file that its folder's manifest lists with another sha256 (`data`: its bytes, when already
    read). A run's config, splits and responses are read back by --resume, --config, --data and the judge;
    a file no manifest lists is the user's own and is used as it is."""
    folder = path.parent
    hint = f"restore it from a good copy, or, to use it as it is now, delete its line from {folder / MANIFEST}"
    if not has_manifest(folder):
        return
    expected = _read_manifest(folder, hint).get(path.name)
    if expected is None:
        return
    actual = hashlib.sha256(data).hexdigest() if data is not None else sha256_of(path)
    if actual != expected:
        raise _damaged(path, hint)


def has_manifest(folder: Path) -> bool:
    return (folder / MANIFEST).is_file()


def verify_files(folder: Path, skip: Collection[str] = (), hint: str = "restore the folder from a good copy") -> None:
    """Refuse `folder` unless every file its manifest lists (but those in `skip`) is there with the
    recorded sha256; `hint` says what to do instead. Each file is hashed as a stream: memory stays flat."""
    for name, digest in _read_manifest(folder, hint).items():
        if name in skip:
            continue
        path = folder / name
        if not path.is_file():
            raise DamagedFileError(f"{path}: missing, though {folder / MANIFEST} lists it (an incomplete copy); {hint}")
        if sha256_of(path) != digest:
            raise _damaged(path, hint)


@contextmanager
def verifying(folder: Path, skip: Collection[str] = (), hint: str = "restore the folder from a good copy",
              ) -> Iterator[None]:
    """`verify_files` on a thread while the block reads the same files. sha256 releases the GIL, so with a
    core to spare the check hides behind the load instead of adding its whole time to it (both ways are
    measured by benchmarks/verify_cost.py). It raises on leaving the block, before anything read is used;
    a damaged file also takes the place of the error it caused inside the block: it explains that error."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="gptlab-verify") as pool:
        check = pool.submit(verify_files, folder, skip, hint)
        try:
            yield
        except BaseException:
            check.result()
            raise
        check.result()


def _damaged(path: Path, hint: str) -> DamagedFileError:
    return DamagedFileError(f"{path}: damaged: its sha256 is not the one {MANIFEST} recorded when it was written "
                            f"(a disk error, an interrupted copy or an edit); {hint}")


def _read_manifest(folder: Path, hint: str) -> dict[str, str]:
    """The manifest's file names and digests, each checked: a name is a plain file name in `folder`."""
    path = folder / MANIFEST
    try:
        manifest: object = json.loads(path.read_bytes())
    except (ValueError, RecursionError):  # not JSON, or not UTF-8
        manifest = None
    if not isinstance(manifest, dict) or not all(
            isinstance(name, str) and Path(name).name == name and name not in ("", ".", "..")
            and isinstance(digest, str) and _SHA256.fullmatch(digest) for name, digest in manifest.items()):
        raise DamagedFileError(f"{path}: damaged: expected a JSON object of file names and their sha256 "
                               f"(64 hex digits); {hint}")
    return manifest
