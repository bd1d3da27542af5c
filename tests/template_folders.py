"""Chat templates shaped like the ones real models ship, and tokenizer folders that carry them.

A folder's tokenizer is the built-in SmolLM2's (its tokenizer.json as gptlab exports it), with
unused special tokens renamed to the ones a template writes (`<|eot_id|>`, `<start_of_turn>`...), so
the vocabulary keeps SmolLM2's size and a tiny random Llama of that size can be served with it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path

# Llama 3.2 Instruct: a system header with today's date, then turns closed by <|eot_id|>.
LLAMA_3_2 = """{{- bos_token }}
{%- if custom_tools is defined %}
    {%- set tools = custom_tools %}
{%- endif %}
{%- if not date_string is defined %}
    {%- if strftime_now is defined %}
        {%- set date_string = strftime_now("%d %b %Y") %}
    {%- else %}
        {%- set date_string = "26 Jul 2024" %}
    {%- endif %}
{%- endif %}
{%- if not tools is defined %}
    {%- set tools = none %}
{%- endif %}

{#- This block extracts the system message, so we can slot it into the right place. #}
{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content']|trim %}
    {%- set messages = messages[1:] %}
{%- else %}
    {%- set system_message = "" %}
{%- endif %}

{#- System message #}
{{- "<|start_header_id|>system<|end_header_id|>\\n\\n" }}
{%- if tools is not none %}
    {{- "Environment: ipython\\n" }}
{%- endif %}
{{- "Cutting Knowledge Date: December 2023\\n" }}
{{- "Today Date: " + date_string + "\\n\\n" }}
{%- if tools is not none %}
    {%- for t in tools %}
        {{- t | tojson(indent=4) }}
        {{- "\\n\\n" }}
    {%- endfor %}
{%- endif %}
{{- system_message }}
{{- "<|eot_id|>" }}

{%- for message in messages %}
    {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' }}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}
{%- endif %}
"""

# Llama 3 Instruct: no system header of its own; bos_token before the first turn.
LLAMA_3 = ("{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
           "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + "
           "'<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
           "{{ content }}{% endfor %}{% if add_generation_prompt %}"
           "{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}")

# Qwen2.5 Instruct: ChatML with a default system message, tools through tojson.
QWEN_2_5 = """{%- if tools %}
    {{- '<|im_start|>system\\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}
    {%- endif %}
    {{- "\\n\\n# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\n<tools>" }}
    {%- for tool in tools %}
        {{- "\\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\\n</tools><|im_end|>\\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}
    {%- else %}
        {{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first)
           or (message.role == "assistant" and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role }}
        {%- if message.content %}
            {{- '\\n' + message.content }}
        {%- endif %}
        {%- for tool_call in message.tool_calls %}
            {{- '\\n<tool_call>\\n{"name": "' }}
            {{- tool_call.name }}
            {{- '", "arguments": ' }}
            {{- tool_call.arguments | tojson }}
            {{- '}\\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\\n' }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
{%- endif %}
"""

# Gemma 3: the system message joins the first user turn; roles must alternate (raise_exception).
GEMMA_3 = """{{ bos_token }}
{%- if messages[0]['role'] == 'system' -%}
    {%- if messages[0]['content'] is string -%}
        {%- set first_user_prefix = messages[0]['content'] + '\\n\\n' -%}
    {%- else -%}
        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '\\n\\n' -%}
    {%- endif -%}
    {%- set loop_messages = messages[1:] -%}
{%- else -%}
    {%- set first_user_prefix = "" -%}
    {%- set loop_messages = messages -%}
{%- endif -%}
{%- for message in loop_messages -%}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}
        {{ raise_exception("Conversation roles must alternate user/assistant/user/assistant/...") }}
    {%- endif -%}
    {%- if (message['role'] == 'assistant') -%}
        {%- set role = "model" -%}
    {%- else -%}
        {%- set role = message['role'] -%}
    {%- endif -%}
    {{ '<start_of_turn>' + role + '\\n' + (first_user_prefix if loop.first else "") }}
    {%- if message['content'] is string -%}
        {{ message['content'] | trim }}
    {%- elif message['content'] is iterable -%}
        {%- for item in message['content'] -%}
            {%- if item['type'] == 'image' -%}
                {{ '<start_of_image>' }}
            {%- elif item['type'] == 'text' -%}
                {{ item['text'] | trim }}
            {%- endif -%}
        {%- endfor -%}
    {%- else -%}
        {{ raise_exception("Invalid content type") }}
    {%- endif -%}
    {{ '<end_of_turn>\\n' }}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{'<start_of_turn>model\\n'}}
{%- endif -%}
"""

# Gemma 2: refuses system messages outright.
GEMMA_2 = ("{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
           "{% endif %}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
           "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
           "{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}"
           "{% endif %}{{ '<start_of_turn>' + role + '\\n' + message['content'] | trim + '<end_of_turn>\\n' }}"
           "{% endfor %}{% if add_generation_prompt %}{{'<start_of_turn>model\\n'}}{% endif %}")

# Llama 2 Chat: [INST] turns, each opened by bos_token; the system message inside the first one.
LLAMA_2 = ("{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = "
           "messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set system_message = false %}"
           "{% endif %}{% for message in loop_messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
           "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
           "{% if loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\\n' + system_message + "
           "'\\n<</SYS>>\\n\\n' + message['content'] %}{% else %}{% set content = message['content'] %}{% endif %}"
           "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
           "{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}"
           "{% endfor %}")

# Phi-3 mini: <|user|> / <|assistant|> turns closed by <|end|>; eos_token ends a finished chat.
PHI_3 = ("{% for message in messages %}{% if message['role'] == 'system' %}{{'<|system|>\\n' + message['content'] + "
         "'<|end|>\\n'}}{% elif message['role'] == 'user' %}{{'<|user|>\\n' + message['content'] + '<|end|>\\n'}}"
         "{% elif message['role'] == 'assistant' %}{{'<|assistant|>\\n' + message['content'] + '<|end|>\\n'}}"
         "{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% else %}{{ eos_token }}"
         "{% endif %}")


@dataclass(frozen=True)
class Model:
    """What a model's tokenizer files say about chatting with it."""

    template: str
    specials: tuple[str, ...]  # the whole tokens its template writes
    bos: str | None
    eos: str
    generation_eos: tuple[str, ...] = ()  # generation_config.json's eos_token_id list (empty: no such file)


LLAMA_SPECIALS = ("<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>",
                  "<|eom_id|>")
MODELS = {
    "llama-3.2": Model(LLAMA_3_2, LLAMA_SPECIALS, "<|begin_of_text|>", "<|eot_id|>",
                       ("<|end_of_text|>", "<|eom_id|>", "<|eot_id|>")),
    "llama-3": Model(LLAMA_3, LLAMA_SPECIALS, "<|begin_of_text|>", "<|end_of_text|>",
                     ("<|end_of_text|>", "<|eot_id|>")),
    "qwen-2.5": Model(QWEN_2_5, ("<|endoftext|>", "<|im_start|>", "<|im_end|>"), None, "<|im_end|>",
                      ("<|im_end|>", "<|endoftext|>")),
    "gemma-3": Model(GEMMA_3, ("<bos>", "<eos>", "<start_of_turn>", "<end_of_turn>", "<start_of_image>"), "<bos>",
                     "<eos>"),
    "gemma-2": Model(GEMMA_2, ("<bos>", "<eos>", "<start_of_turn>", "<end_of_turn>"), "<bos>", "<eos>"),
    "phi-3": Model(PHI_3, ("<|endoftext|>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"), None,
                   "<|endoftext|>", ("<|endoftext|>", "<|assistant|>", "<|end|>")),
}


@cache
def smollm2_tokenizer_json() -> str:
    """The built-in SmolLM2's tokenizer.json, as gptlab exports it (a few seconds: it reads the GGUF file)."""
    from gptlab.tokenizer.bytelevel import gguf_tokenizer

    return gguf_tokenizer({"type": "builtin", "name": "smollm2"}).hf_files()["tokenizer.json"]


def save_template_folder(folder: Path, model: Model, kept: str = "string") -> Path:
    """A tokenizer folder carrying `model`'s template as tokenizer_config.json's "chat_template" (`kept`
    "string", or "list": the "default" of named templates) or as chat_template.jinja ("jinja")."""
    data = json.loads(smollm2_tokenizer_json())
    vocab, added = data["model"]["vocab"], data["added_tokens"]
    spare = iter(token for token in added[3:] if token["content"] not in model.specials)  # SmolLM2's code tokens
    for text in model.specials:
        if text not in vocab:
            token = next(spare)
            vocab[text] = vocab.pop(token["content"])
            token["content"] = text
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tokenizer.json").write_text(json.dumps(data, ensure_ascii=False))
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": model.eos, "bos_token": model.bos}
    if kept == "jinja":
        (folder / "chat_template.jinja").write_text(model.template)
    else:
        config["chat_template"] = model.template if kept == "string" else \
            [{"name": "tool_use", "template": "{{ raise_exception('not this one') }}"},
             {"name": "default", "template": model.template}]
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    if model.generation_eos:
        ids = [vocab[text] for text in model.generation_eos]
        (folder / "generation_config.json").write_text(json.dumps({"eos_token_id": ids}))
    return folder


def save_template_llama(folder: Path, model: Model) -> Path:
    """A tiny random Llama (SmolLM2's vocabulary size) saved by transformers, with `model`'s tokenizer files."""
    import shutil

    from hf_models import save_random_hf_llama

    tokenizer = save_template_folder(folder.with_name(folder.name + "-tokenizer"), model)
    save_random_hf_llama(folder, tokenizer / "tokenizer.json")
    for name in ("tokenizer_config.json", "generation_config.json"):
        if (tokenizer / name).is_file():
            shutil.copyfile(tokenizer / name, folder / name)
    return folder
