import math

import pytest
import torch
import torch.nn.functional as F

from gptlab.config import GPTConfig
from gptlab.evaluation.perplexity import perplexity, token_logprobs, windows
from gptlab.loading import load_model
from gptlab.model import GPT
from hf_models import save_random_hf_gpt2


@pytest.mark.parametrize(("n_tokens", "context", "stride"), [(2, 8, 8), (9, 8, 8), (10, 8, 8), (50, 8, 8),
                                                             (50, 8, 3), (50, 8, 1), (7, 8, 4)])
def test_windows_score_every_token_once_with_enough_context(n_tokens, context, stride):
    scored = []
    for i, w in enumerate(windows(n_tokens, context, stride)):
        assert 0 < w.end - w.start <= context and w.start <= w.first_scored < w.end
        if i > 0:  # after the first window, each scored token sees at least context - stride before it
            assert w.first_scored - w.start >= min(context - stride, w.first_scored)
        scored.extend(range(w.first_scored, w.end))
    assert scored == list(range(n_tokens - 1))  # input positions 0..n-2 predict tokens 1..n-1


def test_windows_refuse_bad_strides_and_short_texts():
    with pytest.raises(ValueError, match="stride must be from 1 to the context length 8"):
        list(windows(20, 8, 9))
    with pytest.raises(ValueError, match="at least 2 tokens"):
        list(windows(1, 8, 8))


@pytest.fixture(scope="module")
def hf_pair(tmp_path_factory):
    from transformers import GPT2LMHeadModel

    folder = save_random_hf_gpt2(tmp_path_factory.mktemp("hf-ppl"), n_layer=2, n_embd=64, n_head=4, n_positions=32)
    return load_model(str(folder)).model, GPT2LMHeadModel.from_pretrained(folder).eval()


def test_one_window_equals_transformers_loss(hf_pair):
    ours, theirs = hf_pair
    ids = torch.randint(0, 50257, (32,), generator=torch.Generator().manual_seed(0))
    expected = theirs(ids[None], labels=ids[None]).loss.item()
    result = perplexity(ours, ids.tolist())
    assert result.tokens == 31 and result.loss == pytest.approx(expected, abs=1e-5)
    assert result.perplexity == pytest.approx(math.exp(expected), rel=1e-5)


def test_long_texts_slide_and_batching_does_not_change_the_result(hf_pair):
    ours, theirs = hf_pair
    ids = torch.randint(0, 50257, (100,), generator=torch.Generator().manual_seed(1))
    spans = [(0, 32, 0), (32, 64, 32), (64, 96, 64), (67, 99, 96)]  # the last window ends at the text's end
    assert [(w.start, w.end, w.first_scored) for w in windows(100, 32, 32)] == spans
    nll = [F.cross_entropy(theirs(ids[None, start:end]).logits[0], ids[start + 1:end + 1], reduction="none")
           [first - start:] for start, end, first in spans]
    expected = torch.cat(nll).mean().item()
    for stride, batch_size in ((32, 1), (32, 4)):
        result = perplexity(ours, ids.tolist(), stride=stride, batch_size=batch_size)
        assert result.tokens == 99 and result.loss == pytest.approx(expected, abs=1e-5)
    overlapping = perplexity(ours, ids.tolist(), stride=8, batch_size=3)
    assert overlapping.tokens == 99 and overlapping.loss != pytest.approx(expected, abs=1e-6)


def test_token_logprobs_are_minus_the_per_token_losses_across_windows():
    """The server's `echo` scoring and `perplexity` share one scorer: each token's log-probability is
    minus its loss, windows and strides included."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=50, context_length=16, n_layer=1, n_head=2, n_embd=16)).eval()
    tokens = torch.randint(0, 50, (40,)).tolist()
    scored = token_logprobs(model, tokens, top=3, stride=8, context=16)
    assert [t.id for t in scored] == tokens[1:]
    mean_loss = perplexity(model, tokens, stride=8, context=16).loss
    assert -sum(t.logprob for t in scored) / len(scored) == pytest.approx(mean_loss, abs=1e-6)
    with torch.no_grad():  # the first window alone: every token's loss from one plain forward pass
        logits = model(torch.tensor([tokens[:16]]))[0]
    losses = F.cross_entropy(logits[:15].float(), torch.tensor(tokens[1:16]), reduction="none")
    assert [-t.logprob for t in scored[:15]] == pytest.approx(losses.tolist(), abs=1e-5)
    assert all(t.top[0][1] >= t.logprob and len(t.top) == 3 for t in scored)
