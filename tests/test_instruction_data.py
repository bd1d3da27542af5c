import json

import numpy as np
import pytest
import torch

from gptlab.data.instruction import IGNORE_INDEX, Record, collate, encode_record, load_records, write_records
from gptlab.data.order import EpochOrder
from gptlab.data.splits import shuffled_split
from gptlab.model import GPT
from gptlab.models import preset_config
from gptlab.prompts import PROMPT_STYLES, prompt_style
from gptlab.tokenizer import GPT2Tokenizer
from gptlab.training.losses import lm_loss, lm_loss_on_targets

X = IGNORE_INDEX
PAD = 50256


def record(instruction: str, output: str, input: str = "") -> Record:
    return Record(instruction, input, output, {"instruction": instruction, "input": input, "output": output})


def test_alpaca_prompt_with_and_without_input_is_the_books_text():
    alpaca = PROMPT_STYLES["alpaca"]
    assert alpaca.prompt("Rewrite the sentence.", "It rains.") == (
        "Below is an instruction that describes a task. Write a response that appropriately completes the "
        "request.\n\n### Instruction:\nRewrite the sentence.\n\n### Input:\nIt rains.\n\n### Response:\n")
    assert alpaca.prompt("Name a colour.") == (
        "Below is an instruction that describes a task. Write a response that appropriately completes the "
        "request.\n\n### Instruction:\nName a colour.\n\n### Response:\n")


def test_phi3_prompt_with_and_without_input():
    phi3 = prompt_style("phi3")
    assert phi3.prompt("Add the numbers.", "2 and 3") == "<|user|>\nAdd the numbers.\n2 and 3\n<|assistant|>\n"
    assert phi3.prompt("Say hi.") == "<|user|>\nSay hi.\n<|assistant|>\n"
    with pytest.raises(ValueError, match="unknown prompt style 'llama3'; known: alpaca, phi3, chatml"):
        prompt_style("llama3")


def test_chatml_prompt_is_smollm2s_template_with_its_default_system_message():
    chatml = prompt_style("chatml", "You are a helpful AI assistant named SmolLM, trained by Hugging Face")
    assert chatml.prompt("Say hi.") == (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
        "<|im_start|>user\nSay hi.<|im_end|>\n<|im_start|>assistant\n")
    assert chatml.prompt("Add.", "2 and 3").endswith(
        "<|im_start|>user\nAdd.\n\n2 and 3<|im_end|>\n<|im_start|>assistant\n")


def test_record_is_prompt_ids_then_output_ids():
    tokenizer = GPT2Tokenizer()
    ids, prompt_length = encode_record(record("Say hi.", "Hi!"), tokenizer, PROMPT_STYLES["alpaca"])
    assert ids[:prompt_length] == tokenizer.encode(PROMPT_STYLES["alpaca"].prompt("Say hi."))
    assert ids[prompt_length:] == tokenizer.encode("Hi!")


# Hand-built batch: (ids, prompt length). Row 0 is the longest; row 1 is shorter by 3.
BATCH = [([11, 12, 13, 14, 15, 16], 3), ([21, 22, 23], 2)]


def test_collate_pads_with_end_of_text_keeping_the_first_as_target():
    inputs, targets = collate(BATCH, PAD, mask_prompt=False)
    assert inputs.tolist() == [[11, 12, 13, 14, 15, 16], [21, 22, 23, PAD, PAD, PAD]]
    assert targets.tolist() == [[12, 13, 14, 15, 16, PAD], [22, 23, PAD, X, X, X]]


def test_collate_masks_the_prompt_but_not_the_first_response_token():
    inputs, targets = collate(BATCH, PAD, mask_prompt=True)
    assert inputs.tolist() == [[11, 12, 13, 14, 15, 16], [21, 22, 23, PAD, PAD, PAD]]
    # row 0: prompt 11 12 13 -> targets predicting 12, 13 are masked; 14 (first response token) is kept
    assert targets.tolist() == [[X, X, 14, 15, 16, PAD], [X, 23, PAD, X, X, X]]


def test_collate_truncates_to_max_length():
    inputs, targets = collate(BATCH, PAD, mask_prompt=True, max_length=4)
    assert inputs.tolist() == [[11, 12, 13, 14], [21, 22, 23, PAD]]
    assert targets.tolist() == [[X, X, 14, 15], [X, 23, PAD, X]]
    assert inputs.dtype == targets.dtype == torch.long


def test_loss_ignores_exactly_the_masked_targets_and_skips_their_logits():
    torch.manual_seed(0)
    model = GPT(preset_config("gpt-tiny")).eval()
    inputs, targets = collate(BATCH, PAD, mask_prompt=True)
    logits = model(inputs)  # (2, 6, V)
    keep = targets != X
    expected = torch.nn.functional.cross_entropy(logits[keep], targets[keep])
    assert torch.allclose(lm_loss(logits, targets), expected)
    assert model(inputs, logits_at=keep).shape == (int(keep.sum()), 50257)
    assert torch.allclose(lm_loss_on_targets(model, inputs, targets), expected, atol=1e-6)


def test_book_split_sizes_are_exact_and_seeded():
    records = load_records("instruction-data")
    assert len(records) == 1100
    def split_records(seed: int, train: float = 0.85, test: float = 0.10) -> list[list[Record]]:
        parts = shuffled_split(records, seed, {"train": train, "test": test}, rest="val")
        return [parts["train"], parts["test"], parts["val"]]

    train, test, val = split_records(seed=123)
    assert (len(train), len(test), len(val)) == (935, 110, 55)
    again = split_records(seed=123)
    assert [r.instruction for r in again[1]] == [r.instruction for r in test]
    assert [r.instruction for r in split_records(seed=7)[1]] != [r.instruction for r in test]
    assert {id(r) for r in train + test + val} == {id(r) for r in records}
    assert [len(p) for p in split_records(seed=123, train=0.9, test=0.1)] == [990, 110, 0]


def test_field_names_can_be_overridden_and_records_written_back(tmp_path):
    path = tmp_path / "mine.jsonl"
    path.write_text('{"q": "Say hi.", "a": "Hi!", "id": 7}\n\n{"q": "Count.", "ctx": "1 2", "a": "3"}\n')
    records = load_records(str(path), instruction_field="q", input_field="ctx", output_field="a")
    assert [(r.instruction, r.input, r.output) for r in records] == [("Say hi.", "", "Hi!"), ("Count.", "1 2", "3")]
    write_records(records, tmp_path / "out.json", ["Hello!", "3"])
    rows = json.loads((tmp_path / "out.json").read_text())
    assert rows[0] == {"q": "Say hi.", "a": "Hi!", "id": 7, "model_response": "Hello!"}


@pytest.mark.parametrize("content, message", [
    ('[{"instruction": "a", "output": "b"}, {"instruction": "c"}]', r"d.json, record 1: missing 'output' field"),
    ('[{"instruction": "a", "output": 3}]', r"d.json, record 0: field 'output' must be a string, found int"),
    ('[{"output": "b"}]', r"d.json, record 0: missing 'instruction' field \(found: output\)"),
    ('[{"instruction": "  ", "output": "b"}]', r"d.json, record 0: empty 'instruction'"),
    ('["just text"]', r"d.json, record 0: expected an object"),
    ("[]", r"d.json: no records found"),
    ("", r"d.json:1: not valid JSON"),
    ('{"instruction": "a"}', r"d.json: expected a JSON list of records, found dict"),
])
def test_bad_records_name_the_file_and_record(tmp_path, content, message):
    (tmp_path / "d.json").write_text(content)
    with pytest.raises(ValueError, match=message):
        load_records(str(tmp_path / "d.json"))


def test_missing_file_and_outputs_optional_for_answering(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.json: no such file"):
        load_records(str(tmp_path / "nope.json"))
    (tmp_path / "q.json").write_text('[{"instruction": "Say hi."}]')
    assert load_records(str(tmp_path / "q.json"), require_output=False)[0].output == ""


def test_length_grouped_order_visits_every_record_once_per_epoch_with_less_padding():
    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 200, size=935).tolist()
    plain, grouped = EpochOrder(935, seed=1), EpochOrder(935, seed=1, lengths=lengths, group=400, run=8)

    def padding(order: EpochOrder, epoch: int) -> int:
        batches = np.split(order.epoch_order(epoch), range(8, 935, 8))
        return sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in batches)

    for epoch in (0, 1):
        assert sorted(grouped.epoch_order(epoch).tolist()) == list(range(935))
        assert padding(grouped, epoch) < padding(plain, epoch) / 4
    assert grouped.epoch_order(0).tolist() != grouped.epoch_order(1).tolist()
    assert EpochOrder(935, seed=1, lengths=lengths).positions(3, 8).tolist() == grouped.positions(3, 8).tolist()


def test_bad_jsonl_and_bad_bytes_name_the_line(tmp_path):
    (tmp_path / "d.jsonl").write_text('{"instruction": "a", "output": "b"}\n{oops\n')
    with pytest.raises(ValueError, match=r"d.jsonl:2: not valid JSON"):
        load_records(str(tmp_path / "d.jsonl"))
    (tmp_path / "e.jsonl").write_text('{"instruction": "a", "output": "b"}\n{"instruction": "c"}\n')
    with pytest.raises(ValueError, match=r"e.jsonl:2: missing 'output' field"):
        load_records(str(tmp_path / "e.jsonl"))
    (tmp_path / "f.json").write_bytes(b'[{"instruction": "a",\n "output": "caf\xe9"}]')
    with pytest.raises(ValueError, match=r"f.json:2: not UTF-8 text"):
        load_records(str(tmp_path / "f.json"))
