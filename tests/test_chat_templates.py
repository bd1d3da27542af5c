"""A model's own chat template frames its conversations: the prompt ids gptlab builds equal transformers'
`apply_chat_template(..., add_generation_prompt=True)` for templates shaped like Llama 3, Qwen2.5, Gemma
and Phi-3; answers end at the template's end-of-turn; a template that raises or does not parse is one
clear error; fine-tuned checkpoints and exports keep the template."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gptlab.checkpoint.hf import export_hf_folder
from gptlab.checkpoint.meta import CheckpointMeta
from gptlab.checkpoint.native import save_checkpoint
from gptlab.data.instruction import Record, collate, encode_record
from gptlab.generation import GenerationSettings
from gptlab.loading import load_model
from gptlab.prompts import Conversation, TemplateStyle, prompt_style, style_for
from gptlab.tokenizer import Tokenizer, hf_tokenizer
from gptlab.tokenizer.chat_template import ChatTemplate, TemplateRefused, hf_chat_template
from template_folders import LLAMA_2, MODELS, PHI_3, Model, save_template_folder, save_template_llama

CONVERSATIONS = [  # (system, earlier turns, new message)
    (None, [], "What is 12 + 30?"),
    ("Answer in French.", [], "Name a colour."),
    (None, [("Hi!", "Hello! How can I help?"), ("Name a colour.", " Blue. ")], "And another?"),
    ("Be brief.", [("Hi!", "Hello!")], "Numbers: 1 22 333, café, 東京 ✓\n\nthanks"),
]
KEPT = {"llama-3.2": "jinja", "phi-3": "list"}  # where each folder keeps its template (default: a string)


def messages(system: str | None, turns: list[tuple[str, str]], message: str) -> list[dict[str, str]]:
    chat = [{"role": "system", "content": system}] if system else []
    for question, answer in turns:
        chat += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
    return [*chat, {"role": "user", "content": message}]


def theirs(folder: Path, chat: list[dict[str, str]]) -> list[int]:
    """transformers' prompt ids for `chat` with the folder's tokenizer and template."""
    from transformers import AutoTokenizer

    reference = AutoTokenizer.from_pretrained(folder)
    return reference.apply_chat_template(chat, add_generation_prompt=True, return_dict=False)


def ours(folder: Path) -> tuple[Tokenizer, TemplateStyle]:
    tokenizer = hf_tokenizer(folder / "tokenizer.json")
    return tokenizer, TemplateStyle(hf_chat_template(folder, tokenizer))


@pytest.mark.parametrize("name", ["llama-3.2", "llama-3", "qwen-2.5", "gemma-3", "phi-3"])
def test_prompt_ids_equal_transformers_apply_chat_template(tmp_path, name):
    folder = save_template_folder(tmp_path, MODELS[name], KEPT.get(name, "string"))
    tokenizer, style = ours(folder)
    for system, turns, message in CONVERSATIONS:
        conversation = Conversation(tokenizer, style, 4096, system, list(turns))
        assert conversation.prompt(message, 100) == theirs(folder, messages(system, turns, message)), (name, system)
    record = Record("Rewrite the sentence.", "It rains.", "It is raining.", {})
    prompt_ids, prompt_length = encode_record(record, tokenizer, style)  # as SFT and DPO frame an instruction
    assert prompt_ids[:prompt_length] == theirs(folder, messages(None, [], "Rewrite the sentence.\n\nIt rains."))


@pytest.fixture(scope="module")
def sentencepiece_vocabulary() -> dict:
    from gptlab.files import fetch
    from sentencepiece_vocab import trained_vocabulary

    return trained_vocabulary(fetch("the-verdict").read_text(encoding="utf-8"))


@pytest.mark.parametrize("kind", ["llama2", "metaspace-first", "gemma"])
@pytest.mark.parametrize("template", [LLAMA_2, PHI_3], ids=["llama-2", "phi-3"])
def test_sentencepiece_tokenizers_frame_as_transformers(tmp_path, sentencepiece_vocabulary, kind, template):
    """Llama 2's [INST] template writes bos_token before each turn: the text's <s> becomes BOS once, as
    in transformers (which adds no other); Phi-3's chat tokens eat the white space beside them."""
    from sentencepiece_vocab import save_kind

    save_kind(sentencepiece_vocabulary, kind, tmp_path)
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({**config, "chat_template": template}))
    tokenizer, style = ours(tmp_path)
    for system, turns, message in CONVERSATIONS:
        assert style.chat_ids(tokenizer, system, turns, message) == theirs(tmp_path, messages(system, turns, message))


def test_default_system_messages_are_the_templates_own(tmp_path):
    tokenizer, qwen = ours(save_template_folder(tmp_path / "qwen", MODELS["qwen-2.5"]))
    assert qwen.prompt("Hi") == ("<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful "
                                 "assistant.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
    assert "You are Qwen" not in tokenizer.decode(Conversation(tokenizer, qwen, 4096, "Be brief.").prompt("Hi", 9))
    _, llama = ours(save_template_folder(tmp_path / "llama", MODELS["llama-3.2"], "jinja"))
    assert llama.prompt("Hi").startswith("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n"
                                         "Cutting Knowledge Date: December 2023\nToday Date: ")


@pytest.mark.parametrize("name, end_of_turn, stops", [
    ("llama-3.2", "<|eot_id|>", ["<|eot_id|>", "<|end_of_text|>", "<|eom_id|>"]),  # generation_config's list
    ("qwen-2.5", "<|im_end|>", ["<|im_end|>", "<|endoftext|>"]),
    ("gemma-3", "<end_of_turn>", ["<end_of_turn>", "<eos>"]),  # no generation_config: the template's own end
    ("phi-3", "<|end|>", ["<|end|>", "<|endoftext|>", "<|assistant|>"]),
])
def test_answers_end_at_the_templates_end_of_turn(tmp_path, name, end_of_turn, stops):
    tokenizer, style = ours(save_template_folder(tmp_path, MODELS[name], KEPT.get(name, "string")))
    [end] = tokenizer.encode(end_of_turn)
    assert style.template.end_of_turn == style.end_id(tokenizer) == end
    assert style.template.stop_ids == tuple(tokenizer.encode("".join(stops)))
    assert style.answer_settings(GenerationSettings(stop_ids=(1000,))).stop_ids == (1000, *style.template.stop_ids)
    prompt, length = encode_record(Record("Say hi.", "", "Hi!", {}), tokenizer, style)
    inputs, targets = collate([(prompt, length)], style.end_id(tokenizer))  # SFT: the answer, then end-of-turn
    assert targets[0, -2:].tolist() == [tokenizer.encode("!")[0], end]


def test_declared_end_ids_the_tokenizer_lacks_end_nothing(tmp_path):
    folder = save_template_folder(tmp_path, MODELS["qwen-2.5"])
    (folder / "generation_config.json").write_text(json.dumps({"eos_token_id": 50279}))  # a config class's default
    tokenizer, style = ours(folder)
    assert style.template.stop_ids == tuple(tokenizer.encode("<|im_end|>"))


def test_a_template_that_raises_names_its_reason(tmp_path):
    from jinja2 import TemplateError

    tokenizer, gemma = ours(save_template_folder(tmp_path / "gemma-3", MODELS["gemma-3"]))
    two_users = [{"role": "user", "content": "Hi"}, {"role": "user", "content": "Hi again"}]
    with pytest.raises(TemplateRefused, match=r"tokenizer_config.json\) refused the conversation: Conversation "
                                              r"roles must alternate user/assistant/user/assistant/...$"):
        gemma.template.render(two_users)
    with pytest.raises(TemplateError, match="Conversation roles must alternate"):  # as transformers does
        theirs(tmp_path / "gemma-3", two_users)
    _, gemma2 = ours(save_template_folder(tmp_path / "gemma-2", MODELS["gemma-2"]))
    with pytest.raises(TemplateRefused, match="System role not supported"):
        Conversation(tokenizer, gemma2, 4096, "Be brief.").prompt("Hi", 10)


def test_a_template_that_does_not_parse_is_one_line_naming_its_file(tmp_path):
    folder = save_template_folder(tmp_path, MODELS["qwen-2.5"])
    config = json.loads((folder / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(json.dumps({**config, "chat_template": "{% for m in messages %}"}))
    with pytest.raises(ValueError, match=rf"^{folder}/tokenizer_config.json: the chat template does not parse "
                                         r"\(line 1: Unexpected end of template.*'endfor'"):
        hf_chat_template(folder, hf_tokenizer(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({**config, "chat_template": 7}))
    with pytest.raises(ValueError, match=r"\"chat_template\" must be a string or a list"):
        hf_chat_template(folder, hf_tokenizer(folder / "tokenizer.json"))


def test_generation_blocks_render_as_transformers_renders_them(tmp_path):
    """`{% generation %}` (transformers' marks for assistant-only training masks) is plain text here."""
    smol3 = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% if m['role'] == 'assistant' %}{% generation %}"
             "{{ m['content'] }}<|im_end|>{% endgeneration %}{% else %}{{ m['content'] }}<|im_end|>{% endif %}\n"
             "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    folder = save_template_folder(tmp_path, Model(smol3, MODELS["qwen-2.5"].specials, None, "<|im_end|>"))
    tokenizer, style = ours(folder)
    chat = messages(None, [("Hi!", "Hello!")], "Bye.")
    assert Conversation(tokenizer, style, 4096, None, [("Hi!", "Hello!")]).prompt("Bye.", 9) == theirs(folder, chat)
    assert style.template.end_of_turn == tokenizer.encode("<|im_end|>")[0]


def test_named_styles_win_and_auto_is_the_models_own():
    template = ChatTemplate(MODELS["qwen-2.5"].template, "tokenizer_config.json")
    tuned = CheckpointMeta(prompt_style="alpaca", chat_template=template)  # fine-tuned in alpaca: it answers so
    assert style_for(tuned) == style_for(tuned, "auto") == prompt_style("alpaca")
    assert style_for(tuned, "template") == TemplateStyle(template)
    own = CheckpointMeta(prompt_style="template", chat_template=template)
    assert style_for(own) == style_for(own, "auto") == TemplateStyle(template)
    assert style_for(own, "chatml") == prompt_style("chatml")
    assert style_for(CheckpointMeta()) == prompt_style("alpaca")
    with pytest.raises(ValueError, match="this model has no chat template of its own; choose a prompt style: alpaca"):
        style_for(CheckpointMeta(), "template")


def test_a_llama_folder_without_a_template_gets_no_smollm_system_message(tmp_path):
    folder = save_template_llama(tmp_path / "model", MODELS["qwen-2.5"])
    (folder / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|im_end|>"}))
    loaded = load_model(str(folder))
    assert (loaded.meta.prompt_style, loaded.meta.default_system, loaded.meta.chat_template) == (None, None, None)
    assert style_for(loaded.meta) == prompt_style("alpaca")


def test_checkpoints_and_exports_keep_the_template(tmp_path):
    from transformers import AutoTokenizer

    loaded = load_model(str(save_template_llama(tmp_path / "model", MODELS["llama-3.2"])))
    template = loaded.meta.chat_template
    assert loaded.meta.prompt_style == "template" and template.end_of_turn == loaded.tokenizer.encode("<|eot_id|>")[0]
    save_checkpoint(loaded.model, loaded.tokenizer, tmp_path / "ckpt", loaded.meta)
    assert json.loads((tmp_path / "ckpt" / "config.json").read_text())["chat_template"]["stop_ids"] == \
        list(template.stop_ids)
    again = load_model(str(tmp_path / "ckpt"))
    assert again.meta.chat_template == template and again.meta.prompt_style == "template"
    exported = export_hf_folder(loaded.model, tmp_path / "hf", loaded.tokenizer, template)
    chat = messages("Be brief.", [("Hi!", "Hello!")], "Bye.")
    reference = AutoTokenizer.from_pretrained(exported)
    assert reference.apply_chat_template(chat, add_generation_prompt=True, return_dict=False) == \
        TemplateStyle(template).chat_ids(loaded.tokenizer, "Be brief.", [("Hi!", "Hello!")], "Bye.")
    assert load_model(str(exported)).meta.chat_template.stop_ids == template.stop_ids


def test_the_built_in_smollm2_template_frames_as_chatml_with_its_system_message():
    """The GGUF file's own template gives what gptlab's ChatML style with SmolLM2's system message gave."""
    from gguf import GGUFReader

    from gptlab.files import builtin_model_path
    from gptlab.tokenizer.bytelevel import gguf_tokenizer
    from gptlab.tokenizer.chat_template import gguf_chat_template

    path = builtin_model_path("smollm2")
    fields = GGUFReader(path).fields
    tokenizer = gguf_tokenizer({"type": "builtin", "name": "smollm2"})
    template = gguf_chat_template(lambda key: fields[key].contents() if key in fields else None, str(path), tokenizer)
    assert (template.bos_token, template.eos_token, template.end_of_turn, template.stop_ids) == \
        ("<|im_start|>", "<|im_end|>", 2, (2,))
    chatml = prompt_style("chatml", "You are a helpful AI assistant named SmolLM, trained by Hugging Face")
    for system, turns, message in CONVERSATIONS:
        assert TemplateStyle(template).chat_ids(tokenizer, system, turns, message) == \
            chatml.chat_ids(tokenizer, system, turns, message)
    assert TemplateStyle(template).prompt("Add.", "2 and 3") == chatml.prompt("Add.", "2 and 3")
