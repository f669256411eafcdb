"""A lean replacement for the code predictor's per-frame HF `generate`.

Each talker step asks the code predictor for codebooks 1..15 with a full HF `generate` call of 15 steps.
At batch 1 that call's fixed overhead (config merging, processor and criteria set-up, cache and mask
plumbing) costs more than the tiny forward passes themselves. This loop runs the same forward passes
with the same cache type, the same logits warpers in HF's order and the same single `multinomial` draw
per step, so for a given seed it yields the same codes (tests/engine/test_engine.py checks it against HF).
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import torch
from transformers.cache_utils import DynamicCache
from transformers.generation.logits_process import (
    LogitsProcessorList,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)


def _warpers(temperature: float | None, top_k: int | None, top_p: float | None) -> LogitsProcessorList:
    # Same selection and order as transformers' GenerationMixin._get_logits_processor for sampling.
    warpers = LogitsProcessorList()
    if temperature is not None and temperature != 1.0:
        warpers.append(TemperatureLogitsWarper(temperature))
    if top_k is not None and top_k != 0:
        warpers.append(TopKLogitsWarper(top_k=top_k, min_tokens_to_keep=1))
    if top_p is not None and top_p < 1.0:
        warpers.append(TopPLogitsWarper(top_p=top_p, min_tokens_to_keep=1))
    return warpers


class FastCodePredictor:
    """Callable with the subset of `generate`'s signature that the talker uses."""

    def __init__(self, code_predictor: torch.nn.Module):
        # A qwen_tts module: torch types its submodules only as Tensor | Module, so it is used untyped.
        self._cp: Any = code_predictor
        self._warper_cache: dict[tuple, LogitsProcessorList] = {}

    @torch.inference_mode()
    def __call__(
        self,
        inputs_embeds: torch.Tensor,
        max_new_tokens: int,
        do_sample: bool = True,
        top_p: float | None = None,
        top_k: int | None = None,
        temperature: float | None = None,
        **_ignored,
    ) -> SimpleNamespace:
        cp = self._cp
        key = (temperature, top_k, top_p)
        warpers = self._warper_cache.get(key)
        if warpers is None:
            warpers = self._warper_cache[key] = _warpers(temperature, top_k, top_p)

        batch, prompt_len = inputs_embeds.shape[:2]
        device = inputs_embeds.device
        cache = DynamicCache()
        tokens = torch.empty(batch, 0, dtype=torch.long, device=device)
        embeds = cp.small_to_mtp_projection(inputs_embeds)
        position = torch.arange(prompt_len, device=device)
        embedding_tables = cp.model.get_input_embeddings()
        for step in range(max_new_tokens):
            hidden = cp.model(
                inputs_embeds=embeds,
                past_key_values=cache,
                use_cache=True,
                cache_position=position,
                position_ids=position.unsqueeze(0),
            ).last_hidden_state
            logits = cp.lm_head[step](hidden[:, -1, :]).float()
            if do_sample:
                scores = warpers(tokens, logits)  # type: ignore[arg-type]  # HF annotates LongTensor, means a long Tensor
                next_tokens = torch.multinomial(torch.softmax(scores, dim=-1), num_samples=1)
            else:
                next_tokens = torch.argmax(logits, dim=-1, keepdim=True)
            tokens = torch.cat([tokens, next_tokens], dim=1)
            if step + 1 < max_new_tokens:
                embeds = cp.small_to_mtp_projection(embedding_tables[step](next_tokens))
                position = position[-1:] + 1
        return SimpleNamespace(sequences=tokens)


def install_fast_code_predictor(code_predictor: torch.nn.Module) -> None:
    """Shadows the instance's `generate` (the class method stays reachable for comparison)."""
    code_predictor.generate = FastCodePredictor(code_predictor)  # type: ignore[assignment]  # shadows the method


def uninstall_fast_code_predictor(code_predictor: torch.nn.Module) -> None:
    code_predictor.__dict__.pop("generate", None)
