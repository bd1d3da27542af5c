"""`download_gpt2` against a local HTTP server serving the TensorFlow fixture: resume, sizes, offline."""

import shutil

import pytest

from gptlab.download import FILES, DownloadProgress, download_gpt2, gpt2_size
from gptlab.files import FileUnavailableError
from gptlab.loading import load_model
from openai_files import DATA_FILE, FIXTURES, Host, closed_port, model_files

FIXTURE = FIXTURES / "tiny11"


def test_downloads_a_folder_that_loads(gpt2_host, tmp_path):
    seen: list[DownloadProgress] = []
    folder = download_gpt2("gpt2-774M", tmp_path / "774M", progress=seen.append, sources=[gpt2_host.url])
    assert sorted(p.name for p in folder.iterdir()) == sorted(FILES)
    assert (folder / DATA_FILE).read_bytes() == (FIXTURE / DATA_FILE).read_bytes()
    data_progress = [p.done for p in seen if p.file == DATA_FILE]
    assert data_progress == sorted(data_progress) and data_progress[-1] == (FIXTURE / DATA_FILE).stat().st_size
    assert {p.total for p in seen if p.file == DATA_FILE} == {(FIXTURE / DATA_FILE).stat().st_size}
    assert load_model(str(folder)).model.config.n_layer == 11
    gpt2_host.requests.clear()
    download_gpt2("774M", folder, sources=[gpt2_host.url])  # complete files are kept
    assert gpt2_host.requests == []


def test_resumes_after_dropped_connections(gpt2_host, tmp_path):
    path = f"/models/774M/{DATA_FILE}"
    gpt2_host.cut_after[path] = [10_000] * 4  # more drops than ATTEMPTS: each try still gets further
    folder = download_gpt2("774M", tmp_path / "774M", sources=[gpt2_host.url])
    assert (folder / DATA_FILE).read_bytes() == (FIXTURE / DATA_FILE).read_bytes()
    ranges = [r[1] for r in gpt2_host.requests if r[0] == path]
    assert ranges == [None, "bytes=10000-", "bytes=20000-", "bytes=30000-", "bytes=40000-"]


def test_a_host_that_stalls_is_given_up(gpt2_host, tmp_path):
    path = "/models/774M/hparams.json"
    gpt2_host.cut_after[path] = [0] * 10
    with pytest.raises(FileUnavailableError, match=r"hparams\.json could not be downloaded \(.*ended after 0 of 81"):
        download_gpt2("774M", tmp_path / "774M", sources=[gpt2_host.url])
    assert [r[0] for r in gpt2_host.requests].count(path) == 3


def test_resumes_a_part_file_left_by_an_earlier_run(gpt2_host, tmp_path):
    folder = tmp_path / "774M"
    folder.mkdir()
    (folder / f"{DATA_FILE}.part").write_bytes((FIXTURE / DATA_FILE).read_bytes()[:4096])
    download_gpt2("774M", folder, sources=[gpt2_host.url])
    assert (folder / DATA_FILE).read_bytes() == (FIXTURE / DATA_FILE).read_bytes()
    assert (f"/models/774M/{DATA_FILE}", "bytes=4096-") in gpt2_host.requests
    assert not list(folder.glob("*.part"))


def test_a_wrong_size_is_named_and_nothing_is_kept(gpt2_host, tmp_path):
    # 124M's sizes are pinned from the book's tests: the fixture's hparams.json is 81 bytes, OpenAI's 90
    with pytest.raises(ValueError, match=r"124M/hparams\.json: http://127\.0\.0\.1:\d+/models/124M/hparams\.json "
                                         r"serves 81 bytes, expected 90"):
        download_gpt2("124M", tmp_path / "124M", sources=[gpt2_host.url])
    assert sorted(p.name for p in (tmp_path / "124M").iterdir()) == ["checkpoint", "encoder.json"]


def test_falls_back_to_the_backup_host(gpt2_host, tmp_path):
    download_gpt2("774M", tmp_path / "774M", sources=[gpt2_host.url.replace("/models", "/moved"), gpt2_host.url])
    first_hparams = [r[0] for r in gpt2_host.requests if r[0].endswith("hparams.json")]
    assert first_hparams == ["/moved/774M/hparams.json", "/models/774M/hparams.json"]  # a 404 is not retried


def test_corrupt_weights_are_caught_by_the_checkpoints_own_crc(tmp_path):
    files = model_files()
    data = bytearray(files[DATA_FILE])
    data[-3] ^= 0x10
    files[DATA_FILE] = bytes(data)
    with Host(files) as served, pytest.raises(ValueError, match=r"tensor 'model/wte' fails its crc32c check"):
        download_gpt2("774M", tmp_path / "774M", sources=[served.url])


def test_unreachable_host_says_where_to_put_the_file(tmp_path):
    port = closed_port()
    with pytest.raises(FileUnavailableError, match=r"checkpoint could not be downloaded \(.*refused.*\)\. Download it "
                                                   r"by hand from http://127\.0\.0\.1:\d+/m/355M/checkpoint and put it "
                                                   r"at .*355M/checkpoint"):
        download_gpt2("355M", tmp_path / "355M", sources=[f"http://127.0.0.1:{port}/m"], timeout=5)


def test_offline_names_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("GPTLAB_OFFLINE", "1")
    shutil.copytree(FIXTURE, tmp_path / "124M")  # checkpoint is here (77 bytes, as pinned); encoder.json is not
    with pytest.raises(FileUnavailableError, match=r"encoder\.json could not be downloaded \(downloads are switched "
                                                   r"off \(GPTLAB_OFFLINE=1\)\)\. Download it by hand from https://"
                                                   r"openaipublic\.blob\.core\.windows\.net/gpt-2/models/124M/encoder"):
        download_gpt2("124M", tmp_path / "124M")


def test_sizes_are_the_books():
    assert gpt2_size("gpt2-1558M") == "1558M"
    with pytest.raises(ValueError, match="unknown GPT-2 size 'gpt2-2B'; choose one of: gpt2-124M, gpt2-355M"):
        gpt2_size("gpt2-2B")
