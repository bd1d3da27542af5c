"""The book's GPTModel `.pth` state dicts load into our GPT and give the book model's logits."""

import pytest
import torch
from torch import nn

from book_gpt import book_model
from gptlab.checkpoint.book_pth import book_config, load_book_pth
from gptlab.loading import load_model

IDS = torch.randint(0, 64, (3, 16), generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("qkv_bias", [True, False])
def test_pretrained_shape_matches_the_book_model(tmp_path, qkv_bias):
    reference = book_model(qkv_bias=qkv_bias)
    torch.save(reference.state_dict(), tmp_path / "model.pth")
    ours = load_book_pth(tmp_path / "model.pth", n_head=4)
    assert ours.config.qkv_bias is qkv_bias and not ours.config.tie_embeddings
    with torch.no_grad():
        assert (ours(IDS) - reference(IDS)).abs().max() < 1e-5


def test_classifier_shape_loads_as_a_classifier(tmp_path):
    reference = book_model(classes=2)
    torch.save(reference.state_dict(), tmp_path / "review_classifier.pth")
    ours = load_book_pth(tmp_path / "review_classifier.pth", n_head=4)
    assert ours.config.num_classes == 2
    with torch.no_grad():  # the book reads the last position's logits
        assert (ours(IDS, lengths=torch.full((3,), 16)) - reference(IDS)[:, -1, :]).abs().max() < 1e-5


def test_heads_come_from_the_gpt2_size_of_the_width(tmp_path):
    reference = book_model(emb_dim=768, n_heads=12, n_layers=1)
    torch.save({"model_state_dict": reference.state_dict(), "optimizer_state_dict": {}}, tmp_path / "m.pth")
    loaded = load_model(str(tmp_path / "m.pth"))  # the book's model_and_optimizer.pth bundle, no config given
    assert loaded.source == "book-pth" and loaded.model.config.n_head == 12
    with torch.no_grad():
        assert (loaded.model(IDS) - reference(IDS)).abs().max() < 1e-5
    with pytest.raises(ValueError, match=r"config 'gpt2-small \(124M\)' has 12 layers of width 768, but the weights "
                                         r"have 1 of width 768"):
        load_book_pth(tmp_path / "m.pth", config="gpt2-small (124M)")


@pytest.mark.parametrize("name", ["gpt2-medium (355M)", "gpt2-medium"])
def test_the_books_config_names(name):
    shapes = {"wte.weight": (50257, 1024), "wpe.weight": (1024, 1024), "lm_head.weight": (50257, 1024),
              **{f"h.{i}.ln_1.weight": (1024,) for i in range(24)}}
    state = {key: torch.empty(shape, device="meta") for key, shape in shapes.items()}
    config = book_config(state, name, None, "x.pth")
    assert (config.n_layer, config.n_head, config.n_embd, config.context_length) == (24, 16, 1024, 1024)
    with pytest.raises(ValueError, match="unknown config 'gpt2-huge'; choose one of: gpt2-small"):
        book_config(state, "gpt2-huge", None, "x.pth")


def test_width_without_a_gpt2_size_needs_n_head(tmp_path):
    torch.save(book_model().state_dict(), tmp_path / "m.pth")
    with pytest.raises(ValueError, match=r"m\.pth: the weights do not say how many attention heads.*pass n_head"):
        load_book_pth(tmp_path / "m.pth")


def test_unknown_keys_are_listed_with_the_expected_layout(tmp_path):
    state = {f"transformer.h.{i}.attn.c_attn.weight": torch.zeros(2) for i in range(7)}
    torch.save(state, tmp_path / "hf.pth")
    with pytest.raises(ValueError, match=r"hf\.pth: unknown key\(s\) transformer\.h\.0\.attn\.c_attn\.weight, .* "
                                         r"\(\+2 more\); expected the book's GPTModel layout: tok_emb\.weight"):
        load_book_pth(tmp_path / "hf.pth", n_head=4)


def test_missing_query_key_or_value_is_named(tmp_path):
    state = book_model().state_dict()
    del state["trf_blocks.1.att.W_key.bias"]
    torch.save(state, tmp_path / "m.pth")
    with pytest.raises(ValueError, match=r"m\.pth: missing key\(s\) trf_blocks\.1\.att\.W_key\.bias"):
        load_book_pth(tmp_path / "m.pth", n_head=4)


def test_files_that_are_not_state_dicts(tmp_path):
    torch.save([torch.zeros(1)], tmp_path / "list.pth")
    with pytest.raises(ValueError, match=r"list\.pth: expected a state dict"):
        load_book_pth(tmp_path / "list.pth")
    torch.save({"model": nn.Linear(1, 1)}, tmp_path / "pickled.pth")  # a whole module: pickled code
    with pytest.raises(ValueError, match=r"pickled\.pth: not a readable PyTorch weights file"):
        load_book_pth(tmp_path / "pickled.pth")
