"""Streaming generation for all three model families, through the inner model's own `generate`.

The public `generate_*` wrappers of qwen-tts decode the whole utterance again after generation; we use
their prompt helpers and call `model.model.generate` directly, with frames leaving through the tap as
they are made. Around the talker's HF `generate` we add what the library does not forward: a per-row
stopping criterion (cancel, frame cap) and no retention of every step's hidden states.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers.generation.stopping_criteria import StoppingCriteria, StoppingCriteriaList

from .model import LoadedModel
from .settings import FrameBudget, SamplingSettings
from .tap import FrameSink, stopped_rows


class SynthesisError(ValueError):
    """A request that this model cannot serve (wrong voice kind, unknown speaker or language...)."""


@dataclass(frozen=True)
class Voice:
    """What the talker is conditioned on. Exactly one kind applies per model family:
    CustomVoice: `speaker` (+ optional `instruct` above 0.6B); VoiceDesign: `instruct`;
    Base: `clone` (a qwen-tts VoiceClonePromptItem)."""

    speaker: str | None = None
    instruct: str | None = None
    clone: Any = None

    @property
    def context_codes(self) -> torch.Tensor | None:
        """An ICL clone continues its reference: its codes are the decoder's first left context."""
        if self.clone is not None and getattr(self.clone, "icl_mode", False):
            return self.clone.ref_code
        return None


@dataclass(frozen=True)
class SynthesisRequest:
    text: str
    language: str = "Auto"
    voice: Voice = field(default_factory=Voice)
    seed: int | None = None
    max_frames: int | None = None  # overrides the text-length budget (CLI, tests)
    family: str | None = None  # which served model speaks it; None: the server's default model
    sampling: SamplingSettings | None = None  # the request's own settings, laid over the server's


def check_request(model, request: SynthesisRequest) -> None:
    """Raises SynthesisError with a message a client can act on; touches no model state.

    `model` is a LoadedModel or a registry.ModelInfo: both tell family, size, speakers and languages."""
    if not request.text.strip():
        raise SynthesisError("text is empty")
    for what, value in (("text", request.text), ("instruct", request.voice.instruct)):
        if value is not None and not valid_unicode(value):
            raise SynthesisError(f"{what} is not valid Unicode (lone surrogate)")
    languages = {lang.lower() for lang in model.languages}
    if request.language.lower() not in languages:
        raise SynthesisError(f"unknown language {request.language!r}; supported: {', '.join(sorted(model.languages))}")
    voice = request.voice
    if model.family == "custom_voice":
        if voice.clone is not None:
            raise SynthesisError("this CustomVoice model speaks built-in speakers; voice cloning needs a Base model")
        if not voice.speaker:
            raise SynthesisError(f"a speaker is required; one of {', '.join(model.speakers)}")
        if voice.speaker.lower() not in {s.lower() for s in model.speakers}:
            raise SynthesisError(f"unknown speaker {voice.speaker!r}; one of {', '.join(model.speakers)}")
        if voice.instruct and not model.accepts_instruct:
            raise SynthesisError("this CustomVoice model (0.6B) cannot follow instructions; use the 1.7B model")
    elif model.family == "voice_design":
        if voice.speaker or voice.clone is not None:
            raise SynthesisError("a VoiceDesign model takes a voice description (instruct), not a speaker or clone")
    elif model.family == "base":
        if voice.clone is None:
            raise SynthesisError("a Base model speaks cloned voices only; give reference audio")
        if voice.speaker or voice.instruct:
            raise SynthesisError("a Base model cannot take a speaker or instructions; it clones reference audio")
    if request.max_frames is not None and request.max_frames < 1:
        raise SynthesisError("max_frames must be >= 1")
    if request.sampling is not None and (problems := request.sampling.problems()):
        raise SynthesisError("; ".join(problems))


def valid_unicode(text: str) -> bool:
    """Encodable as UTF-8: no lone surrogate (JSON's "\\ud800" decodes to one; no tokenizer or JSON
    response can take it)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def frame_cap(request: SynthesisRequest, budget: FrameBudget) -> int:
    return request.max_frames if request.max_frames is not None else budget.for_text(request.text)


def build_generate_inputs(model: LoadedModel, requests: Sequence[SynthesisRequest]) -> dict[str, Any]:
    """The keyword arguments that the matching `generate_*` wrapper would pass to the inner generate."""
    tts = model.tts
    input_ids = tts._tokenize_texts([tts._build_assistant_text(r.text) for r in requests])
    languages = [r.language for r in requests]
    if model.family == "base":
        items = [r.voice.clone for r in requests]
        ref_ids = [tts._tokenize_texts([tts._build_ref_text(it.ref_text)])[0] if it.ref_text else None for it in items]
        return dict(
            input_ids=input_ids,
            ref_ids=ref_ids,
            voice_clone_prompt=tts._prompt_items_to_voice_clone_prompt(items),
            languages=languages,
            non_streaming_mode=False,
        )
    instruct_ids = [
        tts._tokenize_texts([tts._build_instruct_text(r.voice.instruct)])[0]
        if r.voice.instruct and model.accepts_instruct
        else None
        for r in requests
    ]
    inputs = dict(input_ids=input_ids, instruct_ids=instruct_ids, languages=languages, non_streaming_mode=True)
    if model.family == "custom_voice":
        inputs["speakers"] = [r.voice.speaker for r in requests]
    return inputs


class _RowStopping(StoppingCriteria):
    """Per-row stop: a row whose sink stopped (cancelled, capped, EOS) gets pad tokens from HF while the
    other rows go on; generation ends when every row has stopped."""

    def __init__(self, sinks: Sequence[FrameSink]):
        self._sinks = sinks

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs) -> torch.Tensor:
        return stopped_rows(self._sinks, input_ids.device)


class _TalkerFinished(Exception):
    """Raised after the talker's generate returns, to skip the library's post-processing (it stacks
    every step's hidden states, which we chose not to keep; the frames already left through the tap)."""


@contextmanager
def _streaming_talker(talker: torch.nn.Module, sinks: Sequence[FrameSink]):
    original: Any = talker.generate  # torch types it Tensor | Module; it is the model's generate method

    def generate(*args, **kwargs):
        criteria = StoppingCriteriaList(kwargs.pop("stopping_criteria", None) or [])
        criteria.append(_RowStopping(sinks))
        kwargs.update(stopping_criteria=criteria, output_hidden_states=False, return_dict_in_generate=False)
        original(*args, **kwargs)
        raise _TalkerFinished

    talker.generate = generate  # type: ignore[assignment]  # shadows the method on this instance
    try:
        yield
    finally:
        del talker.generate


def generate_streaming(
    model: LoadedModel,
    requests: Sequence[SynthesisRequest],
    sinks: Sequence[FrameSink],
    sampling: SamplingSettings,
    max_new_frames: int,
) -> None:
    """Runs one batch: row i of `requests` streams its frames into `sinks[i]`.

    `max_new_frames` bounds the whole batch; sinks enforce their own caps by stopping. Returns when
    every row has ended (EOS, cap, or stop)."""
    if len(requests) != len(sinks) or not requests:
        raise ValueError("one sink per request, at least one request")
    if len({r.seed for r in requests}) == 1 and requests[0].seed is not None:
        torch.manual_seed(requests[0].seed)
    inputs = build_generate_inputs(model, requests)
    # The frame of the n-th sampled token leaves in the (n+1)-th forward, so n frames need n + 1 tokens.
    if len({r.sampling for r in requests}) != 1:
        raise ValueError("one generate call takes one set of sampling settings")  # the engine batches alike
    sampling = sampling.merged(requests[0].sampling)
    kwargs = model.tts._merge_generate_kwargs(**sampling.overrides(), max_new_tokens=max_new_frames + 1)
    with model.tap.route(sinks), _streaming_talker(model.inner.talker, sinks):
        try:
            model.inner.generate(**inputs, **kwargs)
        except _TalkerFinished:
            pass
