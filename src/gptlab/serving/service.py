"""The model side of `gptlab serve`: requests in, completions and classifications out, no HTTP.

The routes call `ModelService`; it frames chat messages in the model's prompt style, fills in the
server's defaults (the `gptlab serve` flags) and checks that a request fits the context.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field

import torch

from gptlab.classifier import classify_texts
from gptlab.engine import Engine, QueueFull
from gptlab.evaluation.perplexity import token_logprobs
from gptlab.fields import Range, check_ranges, setting
from gptlab.generation import TEMPERATURE, TOP_K, TOP_P, GenerationSettings, TextCompletion, TokenLogprob
from gptlab.grammar import Grammar, GrammarError, OutputFormat, compile_grammar
from gptlab.loading import LoadedModel
from gptlab.prompts import Conversation, Style
from gptlab.serving.api import APIError, Classification, Prompt, Request
from gptlab.tokenizer import document_ids
from gptlab.tokenizer.chat_template import TemplateRefused


@dataclass(frozen=True)
class ServeDefaults:
    """What a request that leaves a setting out gets; the chat page shows them as its starting values."""

    temperature: float = setting("temperature when a request gives none; 0 = greedy", 1.0, bounds=TEMPERATURE)
    top_k: int | None = setting("top_k when a request gives none (unset: all tokens)", None, bounds=TOP_K)
    top_p: float | None = setting("top_p when a request gives none (unset: the whole mass)", None,
                                  bounds=TOP_P)
    max_tokens: int = setting("completion tokens when a request gives no max_tokens, cut to what fits (more than "
                              "gptlab generate's 64: whole chat answers)", 256, bounds=Range(low=1))
    system: str | None = setting("system message for chat requests that have none", None)

    def __post_init__(self) -> None:
        check_ranges(self)


@dataclass
class Classifier:
    """A `gptlab finetune classify` model served beside the language model (`--classifier`)."""

    loaded: LoadedModel
    labels: list[str]  # class names by class id

    def classify(self, texts: list[str]) -> list[Classification]:
        """Each text's label and probabilities, encoded as in training (the last real token is read)."""
        rows = classify_texts(self.loaded, texts).tolist()
        return [Classification(index=i, label=self.labels[max(range(len(row)), key=row.__getitem__)],
                               probabilities=dict(zip(self.labels, row))) for i, row in enumerate(rows)]


@dataclass(frozen=True)
class ClassifierInfo:
    labels: list[str]


@dataclass(frozen=True)
class ServerInfo:
    """What `GET /info` tells a client (the chat page) about the model and the server's defaults."""

    model: str
    dtype: str  # the weights' dtype, e.g. "float32"
    context_length: int
    defaults: ServeDefaults
    classifier: ClassifierInfo | None


@dataclass
class ModelService:
    """The model behind the API and what the server needs to answer with it."""

    loaded: LoadedModel
    style: Style  # how chat messages become a prompt (the model's chat template or fine-tuning style)
    name: str  # the model id clients send and `/v1/models` lists
    engine: Engine  # decodes every request, batched with the others running
    defaults: ServeDefaults = field(default_factory=ServeDefaults)
    classifier: Classifier | None = None
    created: int = field(default_factory=lambda: int(time.time()))

    def check_model(self, name: str | None) -> None:
        """Any model but the one served (None: unnamed) is a 404 that names the one served."""
        if name is not None and name != self.name:
            raise APIError(404, f"model {name!r} not found; this server serves {self.name!r}", "model",
                           code="model_not_found")

    def info(self) -> ServerInfo:
        dtype = next(self.loaded.model.parameters()).dtype
        return ServerInfo(self.name, str(dtype).removeprefix("torch."), self.loaded.model.config.context_length,
                          self.defaults, ClassifierInfo(self.classifier.labels) if self.classifier else None)

    def classify(self, texts: list[str]) -> list[Classification]:
        """`/v1/classify`: a 404 when the server was started without `--classifier`."""
        if self.classifier is None:
            raise APIError(404, "no classifier is loaded: start the server with --classifier DIR "
                                "(a gptlab finetune classify run)", kind="not_found_error")
        with torch.inference_mode():
            return self.classifier.classify(texts)

    def settings(self, request: Request, prompt_tokens: int, param: str) -> GenerationSettings:
        """Generation settings for `request`, the server's defaults filling what it leaves out; its max
        tokens must fit beside the prompt (`param`: the prompt's place in the request, for the error)."""
        context = self.loaded.model.config.context_length
        room = context - prompt_tokens
        if room < (0 if request.max_tokens == 0 else 1) or (request.max_tokens or 0) > room:
            asked = request.max_tokens if request.max_tokens is not None else 1
            raise APIError(400, f"this model's context is {context} tokens; the prompt takes {prompt_tokens} "
                                f"and {asked} more were asked for. Shorten the prompt or lower max_tokens.",
                           param, code="context_length_exceeded")
        defaults = self.defaults
        return GenerationSettings(
            max_new_tokens=min(defaults.max_tokens, room) if request.max_tokens is None else request.max_tokens,
            temperature=defaults.temperature if request.temperature is None else request.temperature,
            top_k=request.top_k or defaults.top_k, top_p=request.top_p or defaults.top_p,
            seed=request.seed, stop_strings=request.stop, logprobs=request.logprobs,
            grammar=self.grammar(request.output),
        )

    def grammar(self, output: OutputFormat | None) -> Grammar | None:
        """`response_format` compiled for this model's tokenizer; a schema it cannot compile is a 400 naming
        the part."""
        if output is None:
            return None
        try:
            return compile_grammar(self.loaded.tokenizer, output)
        except GrammarError as err:
            param = "response_format.json_schema.schema" if output.kind == "json_schema" else "response_format"
            raise APIError(400, f"`{param}`: {err}", param) from None

    def completion(self, request: Request) -> Answer:
        """The `/v1/completions` answer: each prompt continued `n` times as it is, choices prompt-major as
        OpenAI orders them (and each prompt scored, for `echo` with logprobs)."""
        prompts = [self._ids(prompt) for prompt in request.prompts]
        settings = [self.settings(request, len(ids), prompt.param) for ids, prompt in zip(prompts, request.prompts)]
        echoed = [self._echo(prompt, ids, request.logprobs) for prompt, ids in zip(request.prompts, prompts)] \
            if request.echo else None
        return Answer(prompts, self._start(list(zip(prompts, settings)), request.n), echoed)

    def _ids(self, prompt: Prompt) -> list[int]:
        """A text's token ids as a document starts; token ids as sent (what lm-eval scores), each in the
        vocabulary, else a 400 naming its place."""
        tokenizer = self.loaded.tokenizer
        if isinstance(prompt.content, str):
            return document_ids(tokenizer, prompt.content)
        for place, token in enumerate(prompt.content):
            if token >= tokenizer.vocab_size:
                raise APIError(400, f"`{prompt.param}[{place}]`: token id {token} is not in this model's vocabulary "
                                    f"(0..{tokenizer.vocab_size - 1})", f"{prompt.param}[{place}]")
        return list(prompt.content)

    def _echo(self, prompt: Prompt, ids: list[int], logprobs: int | None) -> EchoedPrompt:
        """The prompt repeated (token ids decoded), its tokens scored when logprobs were asked for."""
        tokenizer = self.loaded.tokenizer
        scored = token_logprobs(self.loaded.model, ids, logprobs, vocab_size=tokenizer.vocab_size) \
            if logprobs is not None and len(ids) > 1 else []
        text = prompt.content if isinstance(prompt.content, str) else tokenizer.decode(ids)
        return EchoedPrompt(text, ids[0], scored)

    def chat(self, request: Request) -> Answer:
        """The `/v1/chat/completions` answer: messages framed by the model's chat template or prompt style.

        System messages (else the server's default system message) open the conversation (as the
        template or style writes a system message, else as plain text); earlier turns that do not fit
        beside the new message are left out, oldest first, as in `gptlab chat`. A conversation the
        template refuses (e.g. roles that must alternate) is a 400 with the template's reason.
        """
        conversation = Conversation(self.loaded.tokenizer, self.style, self.loaded.model.config.context_length,
                                    request.system or self.defaults.system, list(request.turns))
        try:
            needed = len(conversation.ids(request.prompt))  # the new message alone: earlier turns may be left out
            settings = self.style.answer_settings(self.settings(request, needed, "messages"))
            prompt = conversation.prompt(request.prompt, settings.max_new_tokens)
        except TemplateRefused as refused:
            raise APIError(400, str(refused), "messages") from None
        return Answer([prompt], self._start([(prompt, settings)], request.n))

    def _start(self, prompts: list[tuple[list[int], GenerationSettings]], n: int) -> list[TextCompletion]:
        """`n` completions of each prompt queued in the engine, prompt-major; with a seed, a prompt's choice i
        samples with seed + i. More than the engine ever holds is a 400; a full queue is a 429 (and the
        choices already queued are cancelled)."""
        limits = self.engine.limits
        if len(prompts) * n > limits.max_batch + limits.max_queue:
            raise APIError(400, f"this server holds at most {limits.max_batch + limits.max_queue} completions "
                                f"(--max-batch plus --max-queue); the request asks for {len(prompts) * n}", "prompt")
        started: list[TextCompletion] = []
        try:
            for prompt, settings in prompts:
                for i in range(n):
                    seed = settings.seed + i if settings.seed is not None else None
                    started.append(self.engine.submit(self.loaded.tokenizer, prompt,
                                                      dataclasses.replace(settings, seed=seed)))
        except QueueFull as full:
            for completion in started:
                completion.cancel()
            raise APIError(429, f"the server is busy: {full}; retry in a moment", kind="rate_limit_error",
                           code="queue_full", retry_after=1) from None
        return started


@dataclass(frozen=True)
class EchoedPrompt:
    """`echo`: the prompt repeated before the completion, with its tokens' log-probabilities when asked."""

    text: str
    first_id: int  # nothing predicts the first token: its log-probability is null
    scored: list[TokenLogprob]  # tokens 1.., empty unless logprobs were asked for


@dataclass
class Answer:
    """What one request gets: its prompts' token ids, `n` completions of each, and the echoed prompts."""

    prompt_ids: list[list[int]]  # chat: one, the framed conversation
    choices: list[TextCompletion]  # prompt-major: choice i continues prompt i // n
    echoed: list[EchoedPrompt] | None = None  # `echo`: one per prompt
