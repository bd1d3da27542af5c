"""Verify before use: every command that reads a gptlab run folder first checks the files it reads against
the sha256 their manifest.json recorded, and refuses one flipped byte in one line naming the file;
--no-verify loads it anyway, with a warning. The commands run in this process through `gptlab.cli.main`
(the entry point) on a one-step gpt-tiny run; a refused one stops at the load, so a case takes a moment."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import signal
from pathlib import Path

import pytest
import torch

from gptlab.checkpoint.manifest import MANIFEST, TRAINING_STATE, DamagedFileError
from gptlab.cli import main
from gptlab.loading import load_model
from gptlab.training.loop import TrainSettings
from gptlab.training.pretrain import PretrainConfig

TINY_TRAINING = ["--max-steps", "1", "--batch-size", "2", "--eval-every", "1", "--eval-batches", "1",
                 "--warmup-steps", "0", "--device", "cpu"]


@pytest.fixture(scope="module")
def pristine_run(tmp_path_factory) -> Path:
    """A one-step gpt-tiny pretraining run, as `gptlab pretrain` writes it."""
    out = tmp_path_factory.mktemp("pristine") / "run"
    PretrainConfig(data=["the-verdict"], out=str(out), model="gpt-tiny", sample_tokens=0,
                   train=TrainSettings(max_steps=1, batch_size=2, eval_every=1, eval_batches=1, warmup_steps=0,
                                       device="cpu")).run()
    return out


@pytest.fixture()
def run_folder(pristine_run, tmp_path) -> Path:
    return Path(shutil.copytree(pristine_run, tmp_path / "run"))


def flip_a_byte(path: Path, at: int) -> None:
    """One bit of one byte changed, as a disk or a copy can change it."""
    data = bytearray(path.read_bytes())
    data[at] ^= 0x01
    path.write_bytes(bytes(data))


def gptlab(*args: str | Path, stdin: str = "") -> tuple[int, str, str]:
    """`gptlab ARGS` in this process: exit code, stdout, and stderr with the log records."""
    out, err, sigint = io.StringIO(), io.StringIO(), signal.getsignal(signal.SIGINT)
    handler = _stream_handler(err)
    try:  # the CLI turns gradients off for its process, chat takes Ctrl-C: both put back
        with torch.enable_grad(), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), \
                _stdin(stdin):
            code = main([str(arg) for arg in args])
    finally:
        signal.signal(signal.SIGINT, sigint)
        handler()
    return code, out.getvalue(), err.getvalue()


def _stream_handler(stream: io.StringIO):
    """Log records of gptlab into `stream`, as the CLI shows them; returns the undo."""
    import logging

    logger, handler = logging.getLogger("gptlab"), logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    logger.addHandler(handler)
    return lambda: logger.removeHandler(handler)


@contextlib.contextmanager
def _stdin(text: str):
    import sys

    saved, sys.stdin = sys.stdin, io.StringIO(text)
    try:
        yield
    finally:
        sys.stdin = saved


def commands(run: Path, tmp: Path, records: Path) -> dict[str, list[str | Path]]:
    """Every command that reads a model, on the run folder."""
    return {
        "generate": ["generate", "--model", run, "--prompt", "Every effort", "--max-new-tokens", "2",
                     "--temperature", "0"],
        "chat": ["chat", "--model", run, "--max-new-tokens", "2"],
        "serve": ["serve", "--model", run, "--port", "0"],
        "info": ["info", run],
        "convert": ["convert", run, tmp / "converted"],
        "classify": ["classify", "--model", run, "a text"],
        "respond": ["respond", "--model", run, "--data", records, "--out", tmp / "answers.json",
                    "--max-new-tokens", "2"],
        "finetune instruct": ["finetune", "instruct", "--model", run, "--data", records, "--out", tmp / "sft",
                              *TINY_TRAINING, "--response-tokens", "0"],
        "pretrain (continue)": ["pretrain", "--model", run, "--data", "the-verdict", "--out", tmp / "more",
                                *TINY_TRAINING],
    }


@pytest.fixture()
def records(tmp_path) -> Path:
    path = tmp_path / "records.json"
    path.write_text(json.dumps([{"instruction": f"Say {n}.", "input": "", "output": str(n)} for n in range(20)]))
    return path


COMMANDS = list(commands(Path(), Path(), Path()))


def refused(code: int, printed: str, err: str, damaged: Path) -> bool:
    """Exit 1, nothing printed, and one error line at the end that names `damaged` and the way round."""
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert code == 1 and len(errors) == 1 and err.rstrip().endswith(errors[0]), err
    assert printed == "", printed
    return f"error: {damaged}: damaged" in errors[0] and "load it as it is with --no-verify" in errors[0]


def test_a_flipped_byte_in_any_file_a_load_reads_is_refused_naming_the_file(run_folder):
    best = run_folder / "checkpoints" / "best"
    read = sorted(path for path in best.iterdir() if path.name not in TRAINING_STATE)
    assert {"config.json", "model.safetensors", MANIFEST} <= {path.name for path in read}
    for path in read:
        original = path.read_bytes()
        flip_a_byte(path, len(original) // 2)
        done = gptlab("generate", "--model", run_folder, "--prompt", "Every effort", "--max-new-tokens", "2")
        # a damaged manifest names itself, or the file whose digest it damaged
        named = [path] if path.name != MANIFEST else [best / name for name in (MANIFEST, *json.loads(original))]
        assert any(refused(*done, damaged) for damaged in named), done[2]
        path.write_bytes(original)


@pytest.mark.timeout(120)  # serve, were the damage missed, would serve until stopped
@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_that_reads_a_model_refuses_a_damaged_one(run_folder, tmp_path, records, command):
    damaged = run_folder / "checkpoints" / "best" / "model.safetensors"
    flip_a_byte(damaged, -4)  # the last weight's lowest mantissa bit: finite, so nothing else would notice
    assert refused(*gptlab(*commands(run_folder, tmp_path, records)[command]), damaged)
    assert not (tmp_path / "converted").exists()


@pytest.mark.parametrize("command", ["generate", "chat", "info", "convert", "respond", "finetune instruct"])
def test_no_verify_loads_a_damaged_checkpoint_with_a_warning(run_folder, tmp_path, records, command):
    weights = run_folder / "checkpoints" / "best" / "model.safetensors"
    flip_a_byte(weights, -4)  # the last weight's lowest mantissa bit: finite, so nothing else notices
    code, printed, err = gptlab(*commands(run_folder, tmp_path, records)[command], "--no-verify")
    assert code == 0, err
    assert f"WARNING: {run_folder / 'checkpoints' / 'best'}: files not checked against its manifest.json" in err
    if command == "convert":  # a copy written from what was loaded: its own manifest, which it matches
        assert load_model(str(tmp_path / "converted")).model.num_parameters() > 0


def test_the_python_api_verifies_unless_told_not_to(run_folder, caplog):
    config = run_folder / "checkpoints" / "best" / "config.json"
    flip_a_byte(config, config.read_text().index('"n_layer"') + 1)  # "n_layer" -> "o_layer": still JSON
    with pytest.raises(DamagedFileError, match=f"{config}: damaged"):
        load_model(str(run_folder))
    with pytest.raises(ValueError, match="o_layer") as unchecked:  # the edit reaches the config reader
        load_model(str(run_folder), verify=False)
    assert not isinstance(unchecked.value, DamagedFileError)
    assert "files not checked against its manifest.json" in caplog.text


def test_training_state_is_checked_by_resume_only(run_folder, tmp_path):
    flip_a_byte(run_folder / "checkpoints" / "last" / "training.json", 10)  # read by --resume alone
    code, printed, err = gptlab("generate", "--model", run_folder / "checkpoints" / "last", "--prompt", "Every",
                                "--max-new-tokens", "1")
    assert code == 0 and "WARNING" not in err, err
    code, _, err = gptlab("pretrain", "--out", run_folder, "--resume", "--max-steps", "2")
    assert code == 1 and f"{run_folder / 'checkpoints' / 'last' / 'training.json'}: damaged" in err, err


def test_a_checkpoint_from_before_manifests_loads_with_a_warning(run_folder):
    best = run_folder / "checkpoints" / "best"
    (best / MANIFEST).unlink()
    code, printed, err = gptlab("generate", "--model", run_folder, "--prompt", "Every", "--max-new-tokens", "1")
    assert code == 0 and printed.startswith("Every"), err
    assert f"WARNING: {best} has no manifest.json (written before gptlab recorded checksums)" in err


def test_every_folder_gptlab_writes_has_a_manifest_its_files_match(run_folder, tmp_path):
    assert main(["convert", str(run_folder), str(tmp_path / "copy")]) == 0
    for folder in (run_folder / "checkpoints" / "best", run_folder / "checkpoints" / "last", tmp_path / "copy"):
        listed = json.loads((folder / MANIFEST).read_text())
        assert sorted(listed) == sorted(p.name for p in folder.iterdir() if p.name != MANIFEST)
    assert sorted(json.loads((tmp_path / "copy" / MANIFEST).read_text())) == ["config.json", "model.safetensors"]


def test_a_run_folders_own_files_are_in_its_manifest(run_folder):
    listed = json.loads((run_folder / MANIFEST).read_text())
    assert sorted(listed) == ["config.json", "summary.json"]  # metrics.jsonl grows: each checkpoint marks it
    from gptlab.files import sha256_of

    assert all(sha256_of(run_folder / name) == digest for name, digest in listed.items())


def test_resume_refuses_a_damaged_run_config_and_a_replay_of_it_too(run_folder, tmp_path):
    config = run_folder / "config.json"
    flip_a_byte(config, config.read_text().index('"max_steps"') + 3)  # "max_steps" -> "max_sueps": still JSON
    code, _, err = gptlab("pretrain", "--out", run_folder, "--resume", "--max-steps", "2")
    assert code == 1 and err.rstrip().splitlines()[-1].startswith(f"error: {config}: damaged"), err
    code, _, err = gptlab("pretrain", "--config", config, "--out", tmp_path / "replay")
    assert code == 1 and err.rstrip().splitlines()[-1].startswith(f"error: {config}: damaged"), err


def test_resume_checks_the_curve_up_to_its_checkpoint_and_drops_the_lines_after(run_folder):
    metrics = run_folder / "metrics.jsonl"
    recorded = metrics.read_bytes()
    metrics.write_bytes(recorded + b'{"step": 7, "train_loss": 1.0}\n')  # written after the checkpoint
    code, _, err = gptlab("pretrain", "--out", run_folder, "--resume", "--max-steps", "2")
    assert code == 0, err
    steps = [json.loads(line)["step"] for line in metrics.read_text().splitlines()]
    assert 7 not in steps and steps[-1] == 2 and metrics.read_bytes().startswith(recorded)

    flip_a_byte(metrics, 5)  # inside the lines checkpoint `last` (step 2) recorded
    code, _, err = gptlab("pretrain", "--out", run_folder, "--resume", "--max-steps", "3")
    assert code == 1 and f"error: {metrics}: damaged: its first" in err, err
    metrics.unlink()  # moved aside: the resumed run's curve starts afresh
    code, _, err = gptlab("pretrain", "--out", run_folder, "--resume", "--max-steps", "3")
    assert code == 0 and f"{metrics} is missing" in err, err


def test_a_damaged_split_of_a_finetuning_run_is_refused_where_it_is_read(run_folder, tmp_path, records):
    sft = tmp_path / "sft"
    assert gptlab(*commands(run_folder, tmp_path, records)["finetune instruct"])[0] == 0
    test_split = sft / "test.json"
    assert "test.json" in json.loads((sft / MANIFEST).read_text())
    flip_a_byte(test_split, test_split.read_text().index("Say") + 1)  # "Say" -> "Sby"
    code, printed, err = gptlab("respond", "--model", run_folder, "--data", test_split, "--out",
                                tmp_path / "answers.json", "--max-new-tokens", "2")
    assert code == 1 and printed == "" and err.rstrip().splitlines()[-1].startswith(f"error: {test_split}: damaged")
    assert f"delete its line from {sft / MANIFEST}" in err
