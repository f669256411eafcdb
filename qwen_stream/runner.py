"""The talker step, owned by us: rows join and leave a running batch between steps.

`TalkerRunner` replaces the talker's HF `generate` (qwen-tts 0.1.1; see DESIGN.md section 3). A row's
prompt is the library's own: its inner `generate` runs up to the point where it would call the talker's
`generate`, whose keyword arguments we capture. The row is then prefilled alone (batch of one) and its KV
joins the batch cache right-aligned: every row writes the same cache column at each step, a row's left
padding is masked, and its positions are its own (prompt length + tokens so far), which is what the library's
rope delta computes. Rows leave by being dropped from the batch tensors; columns that every remaining row
masks are trimmed off the left.

The cache is a DynamicCache whose per-layer tensors grow by one column per step (no preallocation, eager);
a static max_batch x max_len cache for CUDA graphs is a later step. Sampling is per row (sampling.py), so a
row's codes do not depend on its batch mates beyond floating-point noise of batched kernels.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from transformers.cache_utils import DynamicCache

from .generation import SynthesisRequest, build_generate_inputs, check_request
from .model import LoadedModel
from .sampling import BatchedCodePredictor, TalkerLogits, TalkerSampling, draw
from .settings import SamplingSettings

End = Literal["eos", "cap"]


@dataclass(frozen=True)
class NewRow:
    """A request entering the batch. Without a generator, one is seeded from `request.seed` (or at random).
    `max_frames` (default: `request.max_frames`) ends the row after that many frames."""

    request: SynthesisRequest
    generator: torch.Generator | None = None
    max_frames: int | None = None


@dataclass(frozen=True)
class Admission:
    """The outcome of one `NewRow`: the slot it runs in, or why its prompt failed."""

    slot: int | None
    error: BaseException | None = None


@dataclass(frozen=True)
class RowFrame:
    slot: int
    codes: torch.Tensor  # (16,) long: codebook 0 from the talker, 1..15 from the code predictor
    end: End | None  # set when this is the row's last frame; its slot is free again when step() returns


@dataclass(frozen=True)
class StepTimings:
    code_predictor_s: float
    talker_s: float
    total_s: float


@dataclass(frozen=True)
class StepResult:
    frames: list[RowFrame]
    timings: StepTimings


@dataclass(frozen=True)
class Prompt:
    """What the library would hand the talker's `generate` for one request."""

    embeds: torch.Tensor  # (1, L, D)
    trailing_text: torch.Tensor  # (1, N, D): added to the input of decode step n while n < N
    pad: torch.Tensor  # (1, 1, D): added after that
    talker_kwargs: dict[str, Any]


class _Captured(Exception):
    def __init__(self, kwargs: dict[str, Any]):
        self.kwargs = kwargs


def capture_prompt(model: LoadedModel, request: SynthesisRequest, sampling: SamplingSettings) -> Prompt:
    """Runs the inner `generate`'s prompt building for a batch of one and stops at the talker's `generate`."""
    talker = model.inner.talker
    shadowed = talker.__dict__.get("generate")

    def stop(*args, **kwargs):
        raise _Captured(kwargs)

    talker.generate = stop  # type: ignore[assignment]  # shadows the method on this instance
    try:
        model.inner.generate(**build_generate_inputs(model, [request]), **model.tts._merge_generate_kwargs(**sampling.overrides()))
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
        raise RuntimeError("a batch of one came back with padding")
    return Prompt(embeds, kwargs.pop("trailing_text_hidden"), kwargs.pop("tts_pad_embed"), kwargs)


@dataclass
class _Row:
    slot: int
    generator: torch.Generator
    trailing_text: torch.Tensor
    max_frames: int | None
    text_step: int = 0  # the library's `generation_step`, per row
    frames: int = 0


class TalkerRunner:
    """Owns the talker's decode loop for up to `max_batch` rows. Not thread-safe: one thread (the engine's)
    calls `prefill`, `step` and `release`, and nothing else generates with the model meanwhile (the prompt
    capture shadows `talker.generate` for an instant)."""

    def __init__(self, model: LoadedModel, sampling: SamplingSettings, max_batch: int):
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        talker: Any = model.inner.talker
        if getattr(talker.config, "sliding_window", None) is not None:
            raise NotImplementedError("a talker with sliding-window attention")  # its cache layers roll
        self.model = model
        self.sampling = sampling
        self.max_batch = max_batch
        self._talker = talker
        self._device = model.device
        self._free = list(range(max_batch))
        self._rows: list[_Row] = []  # batch order: row i of every batch tensor below
        self._logits: TalkerLogits | None = None  # built from the first captured prompt
        self._predictor: BatchedCodePredictor | None = None
        self._pad: torch.Tensor | None = None
        self._cache: DynamicCache | None = None
        self._mask = self._positions = self._tokens = self._hidden = self._seen = self._generated = torch.empty(0)

    # -- slots -------------------------------------------------------------------------------------------

    @property
    def free_slots(self) -> int:
        return len(self._free)

    @property
    def live_rows(self) -> list[int]:
        """Slots in use, in batch order."""
        return [row.slot for row in self._rows]

    def release(self, slot: int) -> None:
        """The row in `slot` leaves now (cancel, cap); the others are not disturbed."""
        for index, row in enumerate(self._rows):
            if row.slot == slot:
                self._drop([index])
                return
        raise ValueError(f"slot {slot} is not in use")

    # -- joining ------------------------------------------------------------------------------------------

    @torch.inference_mode()
    def prefill(self, rows: Sequence[NewRow]) -> list[Admission]:
        """Prefills each row alone and adds it to the batch; it makes its first frame at the next `step()`.
        A row whose prompt fails gets its error back and takes no slot; the other rows are unaffected."""
        if len(rows) > len(self._free):
            raise ValueError(f"{len(rows)} rows for {len(self._free)} free slots")
        return [self._admit(row) for row in rows]

    def _admit(self, new: NewRow) -> Admission:
        try:
            check_request(self.model, new.request)
            prompt = capture_prompt(self.model, new.request, self.sampling)
            self._configure(prompt)
            generator = new.generator or self._generator(new.request.seed)
            cache = DynamicCache()
            hidden, logits = self._forward(
                prompt.embeds,
                torch.ones(1, prompt.embeds.shape[1], dtype=torch.long, device=self._device),
                torch.arange(prompt.embeds.shape[1], device=self._device).view(1, 1, -1).expand(3, 1, -1),
                cache,
            )
            assert self._logits is not None
            no_history = torch.zeros(1, dtype=torch.long, device=self._device)
            scores = self._logits(logits, torch.zeros_like(logits, dtype=torch.bool), no_history)
            token = draw(scores, [generator], self._logits.sampling.do_sample)
        except Exception as error:  # this row's own failure; nothing of it reached the batch
            return Admission(slot=None, error=error)
        slot = self._free.pop(0)
        max_frames = new.max_frames if new.max_frames is not None else new.request.max_frames
        self._join(_Row(slot, generator, prompt.trailing_text, max_frames), cache, hidden[:, -1:], token)
        return Admission(slot=slot)

    def _configure(self, prompt: Prompt) -> None:
        sampling = TalkerSampling.from_talker_kwargs(prompt.talker_kwargs)
        if self._logits is None:
            self._logits = TalkerLogits(sampling, int(self._talker.config.vocab_size), self._device)
            self._predictor = BatchedCodePredictor(self._talker.code_predictor, sampling)
            self._pad = prompt.pad
        elif sampling != self._logits.sampling:
            raise RuntimeError("the library chose other sampling for this row than for the batch")

    def _generator(self, seed: int | None) -> torch.Generator:
        generator = torch.Generator(device=self._device)
        if seed is None:
            generator.seed()
        else:
            generator.manual_seed(seed)
        return generator

    def _join(self, row: _Row, cache: DynamicCache, hidden: torch.Tensor, token: torch.Tensor) -> None:
        length = cache.get_seq_length()
        vocab = int(self._talker.config.vocab_size)
        seen = torch.zeros(1, vocab, dtype=torch.bool, device=self._device)
        seen[0, token] = True
        mask = torch.ones(1, length, dtype=torch.long, device=self._device)
        one = torch.ones(1, dtype=torch.long, device=self._device)
        if self._cache is None:
            self._cache, self._mask = cache, mask
            self._positions, self._tokens, self._hidden, self._seen, self._generated = (
                one * length,
                token,
                hidden,
                seen,
                one,
            )
        else:
            width = max(length, self._mask.shape[1])
            grow, pad = width - self._mask.shape[1], width - length
            for ours, theirs in zip(self._cache.layers, cache.layers, strict=True):
                ours.keys = torch.cat([F.pad(ours.keys, (0, 0, grow, 0)), F.pad(theirs.keys, (0, 0, pad, 0))])
                ours.values = torch.cat([F.pad(ours.values, (0, 0, grow, 0)), F.pad(theirs.values, (0, 0, pad, 0))])
            self._mask = torch.cat([F.pad(self._mask, (grow, 0)), F.pad(mask, (pad, 0))])
            self._positions = torch.cat([self._positions, one * length])
            self._tokens = torch.cat([self._tokens, token])
            self._hidden = torch.cat([self._hidden, hidden])
            self._seen = torch.cat([self._seen, seen])
            self._generated = torch.cat([self._generated, one])
        self._rows.append(row)

    # -- leaving ------------------------------------------------------------------------------------------

    def _drop(self, indices: Sequence[int]) -> None:
        gone = set(indices)
        for index in gone:
            self._free.append(self._rows[index].slot)
        keep = [i for i in range(len(self._rows)) if i not in gone]
        self._rows = [self._rows[i] for i in keep]
        if not keep:
            self._cache = None
            return
        assert self._cache is not None
        index = torch.tensor(keep, dtype=torch.long, device=self._device)
        mask = self._mask.index_select(0, index)
        # Columns no remaining row attends to: what only the departed rows' longer prompts needed.
        trim = int(mask.any(dim=0).long().argmax())
        self._mask = mask[:, trim:]
        for layer in self._cache.layers:
            layer.keys = layer.keys.index_select(0, index)[:, :, trim:]
            layer.values = layer.values.index_select(0, index)[:, :, trim:]
        self._positions = self._positions.index_select(0, index)
        self._tokens = self._tokens.index_select(0, index)
        self._hidden = self._hidden.index_select(0, index)
        self._seen = self._seen.index_select(0, index)
        self._generated = self._generated.index_select(0, index)

    # -- the step -----------------------------------------------------------------------------------------

    def _forward(
        self, embeds: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, cache: DynamicCache
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The talker's forward minus its side effects (it stores rope deltas on the module): last hidden
        state (B, L, D) and the float32 logits of the last position (B, V)."""
        out = self._talker.model(
            inputs_embeds=embeds,
            attention_mask=mask,
            position_ids=positions,
            past_key_values=cache,
            use_cache=True,
            cache_position=torch.arange(mask.shape[1] - embeds.shape[1], mask.shape[1], device=self._device),
        )
        hidden = out.last_hidden_state
        # The head over every position, as the library does at prefill, then the last one, as HF does.
        logits = self._talker.codec_head(hidden)[:, -1, :].float()
        return hidden, logits

    @torch.inference_mode()
    def step(self) -> StepResult:
        """One frame for every live row. Rows whose frame is their last (EOS sampled next, or `max_frames`
        reached) leave the batch before this returns."""
        if not self._rows:
            return StepResult([], StepTimings(0.0, 0.0, 0.0))
        assert self._cache is not None and self._logits is not None and self._predictor is not None
        start = self._clock()
        talker, rows = self._talker, self._rows
        generators = [row.generator for row in rows]
        first = talker.get_input_embeddings()(self._tokens.unsqueeze(1))
        rest = self._predictor(torch.cat([self._hidden, first], dim=1), generators)
        predicted = self._clock()

        tables = talker.code_predictor.get_input_embeddings()
        embeds = torch.cat([first] + [tables[i](rest[:, i : i + 1]) for i in range(rest.shape[1])], dim=1)
        embeds = embeds.sum(1, keepdim=True) + torch.cat([self._text_input(row) for row in rows])
        mask = F.pad(self._mask, (0, 1), value=1)
        hidden, logits = self._forward(embeds, mask, self._positions.view(1, -1, 1).expand(3, -1, 1), self._cache)
        scores = self._logits(logits, self._seen, self._generated)
        tokens = draw(scores, generators, self._logits.sampling.do_sample)
        codes = torch.cat([self._tokens.unsqueeze(1), rest], dim=1)
        self._mask, self._hidden, self._tokens = mask, hidden[:, -1:], tokens
        self._positions = self._positions + 1
        self._generated = self._generated + 1
        self._seen.scatter_(1, tokens.unsqueeze(1), True)
        stepped = self._clock()

        frames, ended = [], []
        for index, (row, token) in enumerate(zip(rows, tokens.tolist(), strict=True)):
            row.frames += 1
            row.text_step += 1
            end: End | None = None
            if token == self._logits.sampling.eos_id:
                end = "eos"
            elif row.max_frames is not None and row.frames >= row.max_frames:
                end = "cap"
            if end is not None:
                ended.append(index)
            frames.append(RowFrame(row.slot, codes[index], end))
        if ended:
            self._drop(ended)
        return StepResult(frames, StepTimings(predicted - start, stepped - predicted, self._clock() - start))

    def _text_input(self, row: _Row) -> torch.Tensor:
        """The library adds `trailing_text_hidden[:, generation_step]` while text remains, else `tts_pad_embed`."""
        if row.text_step < row.trailing_text.shape[1]:
            return row.trailing_text[:, row.text_step].unsqueeze(1)
        assert self._pad is not None
        return self._pad

    def _clock(self) -> float:
        if self._device.type == "cuda":
            torch.cuda.synchronize(self._device)
        return time.perf_counter()
