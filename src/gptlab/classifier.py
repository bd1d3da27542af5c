"""A trained classifier at work: texts in, classes out (`gptlab classify`, and scoring while training)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from gptlab.data.classification import encode_padded
from gptlab.loading import LoadedModel
from gptlab.model import GPT


@dataclass
class Encoded:
    """Texts as tensors: right-padded ids (N, L), real lengths (N,), class ids (N,)."""

    ids: Tensor
    lengths: Tensor
    labels: Tensor

    def batch(self, positions) -> tuple[Tensor, Tensor, Tensor]:
        """Rows at `positions`, trimmed to their longest text (pure padding columns dropped)."""
        lengths = self.lengths[positions]
        width = int(lengths.max())
        return self.ids[positions, :width], lengths, self.labels[positions]


@torch.no_grad()
def predict(model: GPT, data: Encoded, batch_size: int = 32) -> Tensor:
    """Predicted class ids for every row of `data`.

    Rows are batched shortest first, so each batch is trimmed to texts of about its own length:
    on SMS spam (36 tokens on average, 93 at most) that is about half the work of batches in file
    order. The classifier reads each row's last real token, so the order changes no prediction.
    """
    model.eval()
    device = next(model.parameters()).device
    order = torch.argsort(data.lengths, stable=True)
    predicted = torch.empty_like(data.labels)
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        ids, lengths, _ = data.batch(rows)
        predicted[rows] = model(ids.to(device), lengths=lengths.to(device)).argmax(-1).cpu()
    return predicted


def classify_texts(loaded: LoadedModel, texts: list[str], pad_to: int | None = None) -> Tensor:
    """Class probabilities (N, num_classes) for raw texts, encoded as in training: the last real token
    is read. `pad_to` reads the last of `pad_to` positions instead, after end-of-text padding, as the
    book's `classify_review` does: its classifiers are trained on that position."""
    context = loaded.model.config.context_length
    if pad_to is not None and not 0 < pad_to <= context:
        raise ValueError(f"pad_to must be between 1 and the model's context ({context}), not {pad_to}")
    pad_id = loaded.tokenizer.eos_id if loaded.tokenizer.eos_id is not None else 0
    ids, lengths = encode_padded(texts, loaded.tokenizer, pad_to or loaded.meta.max_length or context, pad_id)
    if pad_to is not None:
        lengths = torch.full_like(lengths, pad_to)
    device = next(loaded.model.parameters()).device
    with torch.no_grad():
        return loaded.model(ids.to(device), lengths=lengths.to(device)).float().softmax(-1).cpu()
