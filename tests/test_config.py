import pytest

from gptlab.config import GPTConfig
from gptlab.model import GPT
from gptlab.models import PRESETS, preset_config


@pytest.mark.parametrize(
    "name, millions",
    [("gpt2", 124.4), ("gpt2-medium", 354.8), ("gpt2-large", 774.0), ("gpt2-xl", 1557.6)],
)
def test_gpt2_presets_have_the_published_parameter_counts(name, millions):
    import torch

    with torch.device("meta"):
        model = GPT(preset_config(name))
    assert model.num_parameters() / 1e6 == pytest.approx(millions, abs=0.1)


def test_small_presets_are_small():
    assert 0.5e6 < GPT(preset_config("gpt-tiny")).num_parameters() < 1.5e6
    assert 10e6 < GPT(preset_config("gpt-small")).num_parameters() < 31e6


def test_overrides_and_round_trip():
    config = preset_config("gpt2", context_length=256, dropout=0.1)
    assert (config.context_length, config.n_layer, config.dropout, config.name) == (256, 12, 0.1, "gpt2")
    assert GPTConfig.from_dict(config.to_dict()) == config


@pytest.mark.parametrize(
    "fields, message",
    [
        (dict(n_embd=100, n_head=12), "n_embd (100) must be divisible by n_head (12)"),
        (dict(n_layer=0), "n_layer must be a positive integer, got 0"),
        (dict(dropout=1.5), "dropout must be in [0, 1)"),
    ],
)
def test_invalid_configs_are_explained(fields, message):
    with pytest.raises(ValueError) as err:
        GPTConfig(**fields)
    assert message in str(err.value)


def test_unknown_preset_and_field():
    with pytest.raises(ValueError, match="unknown preset 'gpt5'.*gpt-tiny"):
        preset_config("gpt5")
    with pytest.raises(ValueError, match="unknown GPTConfig field.*n_layers"):
        GPTConfig.from_dict({"n_layers": 3})
    assert set(PRESETS) >= {"gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl", "gpt-tiny", "gpt-small"}
