"""OpenAI GPT-2 folders for tests: the TensorFlow fixtures with tokenizer files, `transformers` built
from their saved arrays, and a local HTTP host of the seven files that honours Range requests."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import torch

FIXTURES = Path(__file__).parent / "fixtures" / "openai_gpt2"
DATA_FILE = "model.ckpt.data-00000-of-00001"


def tokenizer_file(name: str) -> Path:
    """GPT-2's published `encoder.json` or `vocab.bpe`, from the offline data mirror."""
    return Path(os.environ["GPTLAB_DATA_DIR"]) / "gpt2" / name


def openai_folder(tmp_path: Path, name: str) -> Path:
    """A fixture checkpoint with the mirror's tokenizer files beside it, as a downloaded folder has."""
    folder = Path(shutil.copytree(FIXTURES / name, tmp_path / name))
    for file in ("encoder.json", "vocab.bpe"):
        shutil.copyfile(tokenizer_file(file), folder / file)
    return folder


def saved(folder: Path) -> dict[str, np.ndarray]:
    """Every variable of a fixture as TensorFlow saved it, by its TensorFlow name."""
    with np.load(folder / "arrays.npz") as npz:
        return {key.replace(".", "/"): npz[key] for key in npz.files}


def hf_name(tf_name: str) -> str:
    """transformers' name of an OpenAI variable, written out independently of gptlab's table."""
    parts = tf_name.split("/")[1:]  # model/h3/attn/c_attn/w -> h3, attn, c_attn, w
    if parts[0][0] == "h" and parts[0][1:].isdigit():
        parts[:1] = ["h", parts[0][1:]]
    parts[-1:] = [{"g": "weight", "b": "bias", "w": "weight"}[parts[-1]]] if len(parts) > 1 else [parts[-1], "weight"]
    return "transformer." + ".".join(parts)


def hf_model_from_arrays(folder: Path):
    """transformers' GPT2LMHeadModel holding the fixture's saved arrays (Conv1D weights are (in, out))."""
    from transformers import GPT2Config, GPT2LMHeadModel

    hp = json.loads((folder / "hparams.json").read_text())
    config = GPT2Config(vocab_size=hp["n_vocab"], n_positions=hp["n_ctx"], n_embd=hp["n_embd"],
                        n_layer=hp["n_layer"], n_head=hp["n_head"])
    model = GPT2LMHeadModel(config).eval()
    state = {hf_name(name): torch.from_numpy(a[0] if a.ndim == 3 else a) for name, a in saved(folder).items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected and all(k == "lm_head.weight" or k.endswith("attn.bias") for k in missing), missing
    model.tie_weights()
    return model


def model_files() -> dict[str, bytes]:
    """The seven files of a GPT-2 size folder: the tiny11 fixture, the mirror's tokenizer, a stand-in graph."""
    files = {name: (FIXTURES / "tiny11" / name).read_bytes()
             for name in ("checkpoint", "hparams.json", DATA_FILE, "model.ckpt.index")}
    files.update({name: tokenizer_file(name).read_bytes() for name in ("encoder.json", "vocab.bpe")})
    files["model.ckpt.meta"] = b"graph (not read by gptlab)"
    return files


class Host:
    """A local server of `/models/{size}/{file}` that honours Range and can cut a response short.
    Use it in a `with` block: the server stops at its end."""

    def __init__(self, files: dict[str, bytes], sizes=("774M", "124M")):
        self.files = {f"/models/{size}/{name}": body for size in sizes for name, body in files.items()}
        self.cut_after: dict[str, list[int]] = {}  # path -> bytes sent before each of the next responses drops
        self.requests: list[tuple[str, str | None]] = []
        host = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                host.requests.append((self.path, self.headers.get("Range")))
                host.serve(self)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/models"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def __enter__(self) -> Host:
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def serve(self, handler: BaseHTTPRequestHandler) -> None:
        body = self.files.get(handler.path)
        if body is None:
            handler.send_error(404)
            return
        asked = re.fullmatch(r"bytes=(\d+)-", handler.headers.get("Range") or "")
        start = int(asked[1]) if asked else 0
        if start >= len(body) > 0:
            handler.send_response(416)
            handler.send_header("Content-Range", f"bytes */{len(body)}")
            handler.end_headers()
            return
        handler.send_response(206 if asked else 200)
        handler.send_header("Content-Length", str(len(body) - start))
        if asked:
            handler.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        handler.end_headers()
        cuts = self.cut_after.get(handler.path)
        cut = cuts.pop(0) if cuts else None
        handler.wfile.write(body[start:] if cut is None else body[start : start + cut])
        handler.close_connection = cut is not None


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on: connections to it are refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
