import json
import math

import pytest
import torch

from gptlab.data.preference import collate_preferences, encode_preference, load_preferences
from gptlab.data.splits import shuffled_split
from gptlab.prompts import PROMPT_STYLES
from gptlab.tokenizer import GPT2Tokenizer
from gptlab.training.losses import dpo_loss, sequence_logprobs

PAD = 50256
T, F = True, False


def test_dpo_loss_and_rewards_match_a_hand_computation():
    policy_chosen, policy_rejected = torch.tensor([-1.0, -3.0]), torch.tensor([-2.0, -1.0])
    reference_chosen, reference_rejected = torch.tensor([-1.5, -2.0]), torch.tensor([-1.5, -2.0])
    loss, chosen, rejected = dpo_loss(policy_chosen, policy_rejected, reference_chosen, reference_rejected, beta=0.1)
    # pair 0: (-1 + 1.5) - (-2 + 1.5) = 1.0; pair 1: (-3 + 2) - (-1 + 2) = -2.0
    expected = (-math.log(1 / (1 + math.exp(-0.1))) - math.log(1 / (1 + math.exp(0.2)))) / 2
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    assert chosen.tolist() == pytest.approx([0.05, -0.1])
    assert rejected.tolist() == pytest.approx([-0.05, 0.1])


def test_dpo_loss_is_log_2_with_zero_rewards_when_policy_equals_reference():
    logprobs = torch.tensor([-0.7, -2.5, -1.1])
    other = torch.tensor([-3.0, -0.2, -1.1])
    loss, chosen, rejected = dpo_loss(logprobs, other, logprobs, other, beta=0.5)
    assert loss.item() == pytest.approx(math.log(2), abs=1e-7)
    assert chosen.tolist() == rejected.tolist() == [0.0, 0.0, 0.0]


def test_dpo_gradient_raises_chosen_and_lowers_rejected_by_beta_times_sigmoid():
    policy_chosen = torch.tensor([-1.0], requires_grad=True)
    policy_rejected = torch.tensor([-1.0], requires_grad=True)
    loss, _, _ = dpo_loss(policy_chosen, policy_rejected, torch.tensor([-1.0]), torch.tensor([-1.0]), beta=0.2)
    loss.backward()
    assert policy_chosen.grad.item() == pytest.approx(-0.1)  # -beta * sigmoid(0)
    assert policy_rejected.grad.item() == pytest.approx(0.1)


# Probabilities over a 4-token vocabulary at each of 3 positions; their logs are the logits.
PROBS = torch.tensor([[[0.5, 0.25, 0.125, 0.125], [0.1, 0.2, 0.3, 0.4], [0.25, 0.25, 0.25, 0.25]],
                      [[0.7, 0.1, 0.1, 0.1], [0.4, 0.3, 0.2, 0.1], [0.05, 0.05, 0.1, 0.8]]])
TARGETS = torch.tensor([[1, 3, 2], [0, 2, 3]])
MASK = torch.tensor([[F, T, T], [T, F, F]])


def test_sequence_logprobs_use_exactly_the_masked_targets():
    logits = PROBS.log()
    row0 = math.log(0.4) + math.log(0.25)  # positions 1 and 2
    row1 = math.log(0.7)  # position 0
    assert sequence_logprobs(logits, TARGETS, MASK).tolist() == pytest.approx([row0 / 2, row1])
    assert sequence_logprobs(logits, TARGETS, MASK, mean=False).tolist() == pytest.approx([row0, row1])
    changed = logits.clone()
    changed[0, 0] = torch.tensor([9.0, -9.0, 0.0, 3.0])  # unmasked positions do not count
    changed[1, 1:] = 5.0
    assert sequence_logprobs(changed, TARGETS, MASK).tolist() == pytest.approx([row0 / 2, row1])
    only_selected = logits[MASK]  # (N, V), as model(inputs, logits_at=mask) returns them
    assert sequence_logprobs(only_selected, TARGETS, MASK).tolist() == pytest.approx([row0 / 2, row1])


# Hand-built pairs: (prompt ids, chosen ids, rejected ids).
PAIRS = [([1, 2, 3], [4, 5], [6]), ([7], [8, 9, 10], [11, 12])]


def test_collate_puts_chosen_then_rejected_rows_and_masks_prompt_and_padding():
    inputs, targets, mask = collate_preferences(PAIRS, PAD, mask_prompt=True)
    assert inputs.tolist() == [[1, 2, 3, 4, 5], [7, 8, 9, 10, PAD], [1, 2, 3, 6, PAD], [7, 11, 12, PAD, PAD]]
    assert targets.tolist() == [[PAD, PAD, 4, 5, PAD], [8, 9, 10, PAD, PAD], [PAD, PAD, 6, PAD, PAD],
                                [11, 12, PAD, PAD, PAD]]
    # the response tokens and the first end-of-text after each response, nothing else
    assert mask.tolist() == [[F, F, T, T, T], [T, T, T, T, F], [F, F, T, T, F], [T, T, T, F, F]]


def test_collate_without_prompt_mask_and_truncated():
    _, _, mask = collate_preferences(PAIRS, PAD, mask_prompt=False)
    assert mask.tolist() == [[T, T, T, T, T], [T, T, T, T, F], [T, T, T, T, F], [T, T, T, F, F]]
    inputs, targets, mask = collate_preferences(PAIRS, PAD, mask_prompt=True, max_length=3)
    assert inputs.tolist() == [[1, 2, 3], [7, 8, 9], [1, 2, 3], [7, 11, 12]]
    assert targets.tolist() == [[PAD, PAD, 4], [8, 9, 10], [PAD, PAD, 6], [11, 12, PAD]]
    assert mask.tolist() == [[F, F, T], [T, T, T], [F, F, T], [T, T, T]]
    assert mask.dtype == torch.bool and targets.dtype == torch.long


def test_preference_encodes_the_prompt_in_the_style_then_each_response(tmp_path):
    tokenizer = GPT2Tokenizer()
    (tmp_path / "p.json").write_text(json.dumps([{"instruction": "Say hi.", "chosen": "Hi!", "rejected": "No."}]))
    (preference,) = load_preferences(str(tmp_path / "p.json"))
    for style in PROMPT_STYLES.values():
        prompt, chosen, rejected = encode_preference(preference, tokenizer, style)
        assert prompt == tokenizer.encode(style.prompt("Say hi."))
        assert (chosen, rejected) == (tokenizer.encode("Hi!"), tokenizer.encode("No."))


def test_the_books_preference_set_loads_and_splits_935_110_55():
    preferences = load_preferences("instruction-data-with-preference")
    assert len(preferences) == 1100
    first = preferences[0]
    assert (first.chosen, first.rejected) == (first.record.original["chosen"], first.record.original["rejected"])
    parts = shuffled_split(preferences, 123, {"train": 0.85, "test": 0.10}, rest="val")
    assert [len(parts[name]) for name in ("train", "test", "val")] == [935, 110, 55]


def test_field_names_can_be_overridden(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"q": "Add.", "ctx": "1 2", "good": "3", "bad": "12", "id": 4}\n')
    (preference,) = load_preferences(str(path), instruction_field="q", input_field="ctx", chosen_field="good",
                                     rejected_field="bad")
    assert (preference.record.instruction, preference.record.input) == ("Add.", "1 2")
    assert (preference.chosen, preference.rejected) == ("3", "12")
    assert preference.record.original["id"] == 4


@pytest.mark.parametrize("content, fields, message", [
    ('[{"instruction": "a", "chosen": "b", "rejected": "c"}, {"instruction": "d", "rejected": "e"}]', {},
     r"p.json, record 1: missing 'chosen' field \(found: instruction, rejected\)"),
    ('[{"instruction": "a", "chosen": "b", "rejected": ["c"]}]', {},
     r"p.json, record 0: field 'rejected' must be a string, found list"),
    ('[{"instruction": "a", "chosen": "b", "rejected": "c"}]', {"chosen_field": "good"},
     r"p.json, record 0: missing 'good' field"),
    ('[{"instruction": "a", "chosen": 1, "rejected": "c"}]', {},
     r"p.json, record 0: field 'chosen' must be a string, found int"),
    ('["text"]', {}, r"p.json, record 0: expected an object with the fields 'instruction', 'chosen', 'rejected'"),
])
def test_bad_preference_records_name_the_file_and_record(tmp_path, content, fields, message):
    (tmp_path / "p.json").write_text(content)
    with pytest.raises(ValueError, match=message):
        load_preferences(str(tmp_path / "p.json"), **fields)


def test_bad_jsonl_preference_record_names_the_line(tmp_path):
    (tmp_path / "p.jsonl").write_text('{"instruction": "a", "chosen": "b", "rejected": "c"}\n\n'
                                      '{"instruction": "a", "chosen": "b"}\n')
    with pytest.raises(ValueError, match=r"p.jsonl:3: missing 'rejected' field"):
        load_preferences(str(tmp_path / "p.jsonl"))
