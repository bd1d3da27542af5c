"""files.fetch: mirror, cache and download paths, checked against a local HTTP server only."""

from __future__ import annotations

import dataclasses
import errno
import functools
import hashlib
import http.server
import io
import socket
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from gptlab import files
from gptlab.files import ChecksumError, FileUnavailableError, PublicFile, fetch

SEVEN = {
    "the-verdict", "tinyshakespeare", "sms-spam", "instruction-data",
    "instruction-data-with-preference", "gpt2-encoder", "gpt2-vocab",
}


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets an empty cache, no mirror and downloads allowed (to 127.0.0.1 only)."""
    monkeypatch.setenv("GPTLAB_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("GPTLAB_DATA_DIR", raising=False)
    monkeypatch.delenv("GPTLAB_OFFLINE", raising=False)
    return tmp_path / "cache"


class Server:
    """A local static file server that records the paths it was asked for."""

    def __init__(self, root: Path, url: str, requests: list[str]) -> None:
        self.root, self.url, self.requests = root, url, requests


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    root = tmp_path / "www"
    root.mkdir()
    requests: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_GET(self) -> None:
            requests.append(self.path)
            super().do_GET()

        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield Server(root, f"http://127.0.0.1:{httpd.server_address[1]}", requests)
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def register(monkeypatch: pytest.MonkeyPatch, name: str, data: bytes, url: str, sha256: str = "") -> PublicFile:
    """Point a registry entry at `url` serving `data` (keeping a real entry's other fields when `name` is one)."""
    base = files.REGISTRY.get(name) or PublicFile(name, f"{name}.txt", url, "", 0, "test file")
    entry = dataclasses.replace(base, url=url, sha256=sha256 or hashlib.sha256(data).hexdigest(), size=len(data))
    monkeypatch.setitem(files.REGISTRY, name, entry)
    return entry


def stored_files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_registry_holds_the_seven_public_files() -> None:
    assert set(files.REGISTRY) == SEVEN
    assert all(name == f.name for name, f in files.REGISTRY.items())
    assert files.REGISTRY["sms-spam"].archive_name == "sms+spam+collection.zip"
    assert files.REGISTRY["the-verdict"].archive_name is None


def test_folders_come_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert files.mirror_dir() is None
    monkeypatch.setenv("GPTLAB_DATA_DIR", str(tmp_path))
    assert files.mirror_dir() == tmp_path
    monkeypatch.delenv("GPTLAB_CACHE_DIR")
    assert files.cache_dir() == Path.home() / ".cache" / "gptlab"


@pytest.mark.parametrize("name", sorted(SEVEN))
def test_mirror_hit_returns_the_verified_mirror_file(
    name: str, data_dir: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GPTLAB_DATA_DIR", str(data_dir))
    monkeypatch.setenv("GPTLAB_OFFLINE", "1")
    entry = files.REGISTRY[name]
    path = fetch(name)
    assert path == data_dir / entry.filename
    assert path.stat().st_size == entry.size
    assert hashlib.sha256(path.read_bytes()).hexdigest() == entry.sha256
    assert not cache.exists()


def test_corrupt_mirror_file_names_both_hashes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "the-verdict.txt").write_bytes(b"not the verdict")
    monkeypatch.setenv("GPTLAB_DATA_DIR", str(mirror))
    with pytest.raises(ChecksumError) as err:
        fetch("the-verdict")
    actual = hashlib.sha256(b"not the verdict").hexdigest()
    assert str(err.value) == (
        f"the-verdict.txt: the mirror copy {mirror / 'the-verdict.txt'} has sha256 {actual}, "
        f"expected {files.REGISTRY['the-verdict'].sha256} (corrupt, or a different version of "
        f"{files.REGISTRY['the-verdict'].url}); replace it with the file from {files.REGISTRY['the-verdict'].url}"
    )


def test_download_lands_in_cache_then_cache_is_used(
    server: Server, cache: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    data = b"a public file\n" * 1000
    (server.root / "sample.txt").write_bytes(data)
    register(monkeypatch, "sample", data, f"{server.url}/sample.txt")
    with caplog.at_level("INFO", logger="gptlab.files"):
        path = fetch("sample")
    assert path == cache / "sample.txt"
    assert path.read_bytes() == data
    assert stored_files(cache) == ["sample.txt"]  # no temporary file left behind
    assert f"downloading sample.txt from {server.url}/sample.txt" in caplog.text

    (server.root / "sample.txt").unlink()
    assert fetch("sample") == path
    assert server.requests == ["/sample.txt"]


def test_http_error_is_reported_with_its_status(
    server: Server, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    register(monkeypatch, "sample", b"never served", f"{server.url}/sample.txt")
    with pytest.raises(FileUnavailableError, match=r"downloading it failed \(HTTP Error 404: File not found\)"):
        fetch("sample")
    assert stored_files(cache) == []


def test_checksum_mismatch_discards_the_download(
    server: Server, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = b"tampered contents"
    (server.root / "sample.txt").write_bytes(data)
    register(monkeypatch, "sample", data, f"{server.url}/sample.txt", sha256="0" * 64)
    with pytest.raises(ChecksumError) as err:
        fetch("sample")
    assert isinstance(err.value, ValueError)
    assert str(err.value) == (
        f"sample.txt: the download has sha256 {hashlib.sha256(data).hexdigest()}, expected {'0' * 64} "
        f"(corrupt, or a different version of {server.url}/sample.txt); "
        f"it was discarded and nothing was saved to {cache / 'sample.txt'}"
    )
    assert stored_files(cache) == []


def test_missing_file_without_network_is_one_clear_error(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"http://127.0.0.1:{closed_port()}/the-verdict.txt"
    register(monkeypatch, "the-verdict", b"unused", url)
    with pytest.raises(FileUnavailableError) as err:
        fetch("the-verdict")
    message = str(err.value)
    assert isinstance(err.value, FileNotFoundError)
    assert message.startswith(
        f"the-verdict.txt is not available offline: not in GPTLAB_DATA_DIR (unset) nor in the cache ({cache}), "
        "and downloading it failed ("
    )
    assert "refused" in message
    assert message.endswith(
        f"Download {url} by hand to {cache / 'the-verdict.txt'}, "
        "or set GPTLAB_DATA_DIR to a folder that holds the-verdict.txt."
    )
    assert stored_files(cache) == []


def test_offline_mode_never_downloads(server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = b"would download fine"
    (server.root / "sample.txt").write_bytes(data)
    register(monkeypatch, "sample", data, f"{server.url}/sample.txt")
    monkeypatch.setenv("GPTLAB_OFFLINE", "1")
    monkeypatch.setenv("GPTLAB_DATA_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(FileUnavailableError, match=r"downloads are switched off \(GPTLAB_OFFLINE=1\)") as err:
        fetch("sample")
    assert f"not in GPTLAB_DATA_DIR ({tmp_path / 'nowhere'}, which does not exist)" in str(err.value)
    assert server.requests == []


def test_wrong_size_cache_file_is_rejected(cache: Path) -> None:
    (cache / "gpt2").mkdir(parents=True)
    (cache / "gpt2" / "vocab.bpe").write_text("#version: 0.2\n")
    with pytest.raises(ChecksumError, match="the cached copy .* delete it to download it again"):
        fetch("gpt2-vocab")


def test_unknown_name_lists_known_names() -> None:
    with pytest.raises(ValueError, match="unknown public file 'verdict'; known names: gpt2-encoder, gpt2-vocab, "):
        fetch("verdict")


def sms_zip(tsv: bytes, member: str = "SMSSpamCollection") -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("readme", "SMS Spam Collection v.1\n")
        zf.writestr(member, tsv)
    return buffer.getvalue()


def test_sms_spam_is_extracted_from_the_downloaded_zip(
    server: Server, data_dir: Path, cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tsv = (data_dir / "SMSSpamCollection.tsv").read_bytes()
    (server.root / "sms+spam+collection.zip").write_bytes(sms_zip(tsv))
    monkeypatch.setenv("GPTLAB_DATA_DIR", str(tmp_path))  # a mirror that lacks the file
    entry = register(monkeypatch, "sms-spam", tsv, f"{server.url}/sms+spam+collection.zip")
    assert entry.sha256 == "7d039a24a6083ed9ef0f806ebad56bbb976e3aeb8de05669173bfdc4996c239d"
    path = fetch("sms-spam")
    assert path == cache / "SMSSpamCollection.tsv"
    assert path.read_bytes() == tsv
    assert stored_files(cache) == ["SMSSpamCollection.tsv"]


def test_sms_spam_zip_in_the_mirror_is_accepted(
    data_dir: Path, cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tsv = (data_dir / "SMSSpamCollection.tsv").read_bytes()
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "sms+spam+collection.zip").write_bytes(sms_zip(tsv))
    monkeypatch.setenv("GPTLAB_DATA_DIR", str(mirror))
    monkeypatch.setenv("GPTLAB_OFFLINE", "1")
    path = fetch("sms-spam")
    assert path.read_bytes() == tsv
    assert stored_files(cache) == ["SMSSpamCollection.tsv"]
    (mirror / "sms+spam+collection.zip").unlink()
    assert fetch("sms-spam") == path  # extracted once, then served from the cache


def test_zip_without_the_member_is_a_readable_error(
    server: Server, data_dir: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (server.root / "sms.zip").write_bytes(sms_zip(b"ham\thi\n", member="other"))
    register(monkeypatch, "sms-spam", b"ham\thi\n", f"{server.url}/sms.zip")
    with pytest.raises(ValueError, match="should be a zip archive holding 'SMSSpamCollection'"):
        fetch("sms-spam")
    assert stored_files(cache) == []


def test_a_line_that_does_not_fit_on_the_disk_leaves_no_half_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    metrics = tmp_path / "metrics.jsonl"
    files.append_line(metrics, '{"step": 2}')
    real_write = files.os.write

    def half_then_full(fd: int, data: bytes) -> int:
        if len(data) > 4:
            return real_write(fd, bytes(data[: len(data) // 2]))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files.os, "write", half_then_full)
    with pytest.raises(OSError, match="No space left on device") as caught:
        files.append_line(metrics, '{"step": 4, "val_loss": 1.5}')
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(metrics)
    assert metrics.read_text() == '{"step": 2}\n'


def test_a_file_rewritten_on_a_full_disk_keeps_its_old_text(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    summary = tmp_path / "summary.json"
    files.write_text_atomically(summary, "old\n")

    def full(self: Path, text: str, encoding: str | None = None) -> int:
        raise OSError(errno.ENOSPC, "No space left on device", str(self))

    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(OSError):
        files.write_text_atomically(summary, "new\n")
    monkeypatch.undo()
    assert summary.read_text() == "old\n" and [p.name for p in tmp_path.iterdir()] == ["summary.json"]
