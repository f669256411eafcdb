"""A request's talker prompt, exactly as qwen-tts builds it.

The prompt code lives inside `Qwen3TTSForConditionalGeneration.generate` (qwen-tts 0.1.1), which ends by
calling the talker's HF `generate`. Running it with that call shadowed by one that raises hands us its
keyword arguments: the prompt embeddings, the text still to be fed one position per step, the pad embedding,
and the sampling settings the library chose for the talker and the code predictor.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from .generation import SynthesisRequest, build_generate_inputs
from .model import LoadedModel
from .settings import SamplingSettings


@dataclass(frozen=True)
class Prompt:
    embeds: torch.Tensor  # (1, L, D)
    trailing_text: torch.Tensor  # (1, N, D): added to the input of decode step n while n < N
    pad: torch.Tensor  # (1, 1, D): added from step N on
    talker_kwargs: dict[str, Any]  # the rest of what the talker's generate would get (sampling, eos, ...)


class _Captured(Exception):
    def __init__(self, kwargs: dict[str, Any]):
        self.kwargs = kwargs


def capture_prompt(model: LoadedModel, request: SynthesisRequest, sampling: SamplingSettings) -> Prompt:
    """Not thread-safe: the talker's `generate` is shadowed on the instance while the prompt is built."""
    talker = model.inner.talker
    shadowed = talker.__dict__.get("generate")

    def stop(*args, **kwargs):
        raise _Captured(kwargs)

    talker.generate = stop
    try:
        generate_kwargs = model.tts._merge_generate_kwargs(**sampling.overrides())
        model.inner.generate(**build_generate_inputs(model, [request]), **generate_kwargs)
    except _Captured as captured:
        kwargs = captured.kwargs
    else:
        raise RuntimeError("the inner generate returned without calling the talker's generate")
    finally:
        if shadowed is None:
            del talker.generate
        else:
            talker.generate = shadowed
    embeds, mask = kwargs.pop("inputs_embeds"), kwargs.pop("attention_mask")
    if not bool(mask.all()):
        raise RuntimeError("a prompt built alone came back padded")
    return Prompt(embeds, kwargs.pop("trailing_text_hidden"), kwargs.pop("tts_pad_embed"), kwargs)
