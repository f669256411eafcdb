"""Token choice for the runner: the talker's logits processing and the code predictor's 15-step loop, batched
over rows that each own a `torch.Generator`.

Both reproduce what qwen-tts 0.1.1 gets from HF `generate` (transformers 4.57): the same processors in the
same order, float32 scores, one `multinomial` draw per row per token. HF draws once for the whole batch
from the global generator; here each row draws from its own, in the order the library draws for a batch of
one (the 15 code-predictor tokens of a frame, then the talker's next token), so a seeded row yields the
library's frames whatever its batch mates do.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers.cache_utils import DynamicCache
from transformers.generation.logits_process import LogitsProcessorList

from .code_predictor import _warpers


@dataclass(frozen=True)
class TalkerSampling:
    """What the library's `Qwen3TTSForConditionalGeneration.generate` hands the talker's HF `generate`
    (read from its captured keyword arguments, so checkpoint defaults and operator overrides both hold)."""

    do_sample: bool
    temperature: float | None
    top_k: int | None
    top_p: float | None
    repetition_penalty: float | None
    min_new_tokens: int
    eos_id: int
    suppress_tokens: tuple[int, ...]
    subtalker_do_sample: bool
    subtalker_temperature: float | None
    subtalker_top_k: int | None
    subtalker_top_p: float | None

    @classmethod
    def from_talker_kwargs(cls, kwargs: dict[str, Any]) -> TalkerSampling:
        return cls(
            do_sample=bool(kwargs.get("do_sample", True)),
            temperature=kwargs.get("temperature"),
            top_k=kwargs.get("top_k"),
            top_p=kwargs.get("top_p"),
            repetition_penalty=kwargs.get("repetition_penalty"),
            min_new_tokens=int(kwargs.get("min_new_tokens") or 0),
            eos_id=int(kwargs["eos_token_id"]),
            suppress_tokens=tuple(int(t) for t in kwargs.get("suppress_tokens") or ()),
            subtalker_do_sample=bool(kwargs.get("subtalker_dosample", True)),
            subtalker_temperature=kwargs.get("subtalker_temperature"),
            subtalker_top_k=kwargs.get("subtalker_top_k"),
            subtalker_top_p=kwargs.get("subtalker_top_p"),
        )


class TalkerLogits:
    """HF's processors for the talker, in `_get_logits_processor`'s order: repetition penalty, min new tokens,
    suppress tokens, then (sampling only) temperature, top-k, top-p.

    HF's repetition penalty gathers the scores of the tokens in `input_ids`, penalizes and scatters them back;
    a per-row boolean `seen` mask over the vocabulary applies the same arithmetic to the same entries without
    needing equal history lengths across rows."""

    def __init__(self, sampling: TalkerSampling, vocab_size: int, device: torch.device):
        self.sampling = sampling
        vocab = torch.arange(vocab_size, device=device)
        self._eos = vocab == sampling.eos_id
        self._suppress = torch.isin(vocab, torch.tensor(sampling.suppress_tokens, dtype=torch.long, device=device))
        # HF adds the warpers only when sampling; greedy takes the argmax of the processed scores.
        self._warpers = LogitsProcessorList()
        if sampling.do_sample:
            self._warpers = _warpers(sampling.temperature, sampling.top_k, sampling.top_p)

    def __call__(self, logits: torch.Tensor, seen: torch.Tensor, generated: torch.Tensor) -> torch.Tensor:
        """logits (B, V) float32; seen (B, V) bool; generated (B,) tokens sampled so far per row."""
        scores = logits
        penalty = self.sampling.repetition_penalty
        if penalty is not None and penalty != 1.0:
            penalized = torch.where(scores < 0, scores * penalty, scores / penalty)
            scores = torch.where(seen, penalized, scores)
        if self.sampling.min_new_tokens > 0:
            early = (generated < self.sampling.min_new_tokens).unsqueeze(1)
            scores = torch.where(early & self._eos, -float("inf"), scores)
        if self.sampling.suppress_tokens:
            scores = torch.where(self._suppress, -float("inf"), scores)
        if self._warpers:
            scores = self._warpers(None, scores)  # type: ignore[arg-type]  # these warpers never read input_ids
        return scores


def draw(scores: torch.Tensor, generators: Sequence[torch.Generator | None], do_sample: bool) -> torch.Tensor:
    """One token per row, (B,) long. Row i draws from generators[i] only; a row without one (a free slot
    of a static batch) draws nothing and gets the most likely token."""
    if not do_sample:
        return torch.argmax(scores, dim=-1)
    probs = torch.softmax(scores, dim=-1)
    # `torch.multinomial(p, 1, generator=g)` is `argmax(p / q)` with q ~ Exp(1) drawn from g, after a check of
    # p that reads a value back to the host. Drawing q row by row keeps every row's draws; one division and
    # one argmax serve the batch, and no host read-back stalls a GPU (16 draws per row per step).
    noise = torch.ones_like(probs)
    for i, generator in enumerate(generators):
        if generator is not None:
            noise[i : i + 1].exponential_(generator=generator)
    return torch.argmax(probs / noise, dim=-1)


class BatchedCodePredictor:
    """Codebooks 1..15 for every row at once: the forward passes of `FastCodePredictor` (and of the library's
    per-frame HF `generate`) over a (B, ...) batch, with each row's draws from its own generator.

    Every row's prompt is the same two positions (`[past_hidden, embed(cb0)]`), so no padding is needed and the
    cache starts empty at each frame."""

    def __init__(self, code_predictor: Any, sampling: TalkerSampling):
        # A qwen_tts module, used untyped: torch types its submodules as Tensor | Module.
        self._cp = code_predictor
        self._do_sample = sampling.subtalker_do_sample
        self._warpers = _warpers(sampling.subtalker_temperature, sampling.subtalker_top_k, sampling.subtalker_top_p)
        self._steps = len(self._cp.lm_head)

    def __call__(self, prompt: torch.Tensor, generators: Sequence[torch.Generator | None]) -> torch.Tensor:
        """prompt (B, 2, D_talker) -> codes (B, 15) long."""
        cp = self._cp
        cache = DynamicCache()
        embeds = cp.small_to_mtp_projection(prompt)
        position = torch.arange(prompt.shape[1], device=prompt.device)
        tables = cp.model.get_input_embeddings()
        picks = []
        for step in range(self._steps):
            hidden = cp.model(
                inputs_embeds=embeds,
                past_key_values=cache,
                use_cache=True,
                cache_position=position,
                position_ids=position.unsqueeze(0),
            ).last_hidden_state
            # HF's code-predictor forward applies the head to every position, then generate takes the last.
            logits = cp.lm_head[step](hidden)[:, -1, :].float()
            scores = self._warpers(None, logits) if self._do_sample else logits  # type: ignore[arg-type]
            tokens = draw(scores, generators, self._do_sample).unsqueeze(1)
            picks.append(tokens)
            if step + 1 < self._steps:
                embeds = cp.small_to_mtp_projection(tables[step](tokens))
                position = position[-1:] + 1
        return torch.cat(picks, dim=1)
