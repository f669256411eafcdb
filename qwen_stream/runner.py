"""The talker step, owned by us: rows join and leave a running batch between steps.

`TalkerRunner` replaces the talker's HF `generate` (qwen-tts 0.1.1; see DESIGN.md section 3). A row's prompt
is the library's own (prompts.py). The row is prefilled alone (a batch of one) and its KV joins the batch
cache right-aligned: every row writes the same cache column at each step, a row's left padding is masked,
and its positions are its own (prompt length + tokens so far), which is what the library's rope delta
computes. Rows leave by being dropped from the batch tensors; columns that no remaining row attends to are
trimmed off the left.

The cache is a DynamicCache whose per-layer tensors grow by one column per step (eager, no preallocation);
a static max_batch x max_len cache for CUDA graphs is a later step. Sampling is per row (sampling.py), so a
row's codes do not depend on its batch mates beyond the floating-point noise of batched kernels.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from transformers.cache_utils import DynamicCache

from .generation import SynthesisRequest, check_request
from .model import LoadedModel
from .prompts import Prompt, capture_prompt
from .sampling import BatchedCodePredictor, TalkerLogits, TalkerSampling, draw
from .settings import SamplingSettings

End = Literal["eos", "cap"]


@dataclass(frozen=True)
class NewRow:
    """A request entering the batch. Without a generator, one is seeded from `request.seed` (or at random).
    `max_frames` (default: `request.max_frames`; None: no cap) ends the row after that many frames."""

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
    end: End | None  # set on the row's last frame; its slot is free again when step() returns


@dataclass(frozen=True)
class StepTimings:
    code_predictor_s: float
    talker_s: float  # the talker's forward, logits processing and draws
    total_s: float


@dataclass(frozen=True)
class StepResult:
    frames: list[RowFrame]
    timings: StepTimings


@dataclass
class _Row:
    slot: int
    generator: torch.Generator
    trailing_text: torch.Tensor
    max_frames: int | None
    text_step: int = 0  # the library's `generation_step`, which it keeps for the whole batch
    frames: int = 0


@dataclass
class _Batch:
    """Row i of every tensor (and of the cache) is the runner's i-th row."""

    cache: DynamicCache
    mask: torch.Tensor  # (B, T) long: 0 on each row's left padding
    positions: torch.Tensor  # (B,) the rope position of each row's next token
    tokens: torch.Tensor  # (B,) the codebook-0 token sampled last: the first code of the next frame
    hidden: torch.Tensor  # (B, 1, D) the talker's last hidden state: the code predictor's first input
    seen: torch.Tensor  # (B, V) bool: tokens sampled so far, for the repetition penalty
    generated: torch.Tensor  # (B,) tokens sampled so far, for min_new_tokens

    _ROWS = ("positions", "tokens", "hidden", "seen", "generated")

    def extend(self, other: _Batch) -> None:
        width = max(self.mask.shape[1], other.mask.shape[1])
        grow, pad = width - self.mask.shape[1], width - other.mask.shape[1]
        for ours, theirs in zip(self.cache.layers, other.cache.layers, strict=True):
            ours.keys = torch.cat([_pad_left(ours.keys, grow), _pad_left(theirs.keys, pad)])
            ours.values = torch.cat([_pad_left(ours.values, grow), _pad_left(theirs.values, pad)])
        self.mask = torch.cat([F.pad(self.mask, (grow, 0)), F.pad(other.mask, (pad, 0))])
        for name in self._ROWS:
            setattr(self, name, torch.cat([getattr(self, name), getattr(other, name)]))

    def select(self, keep: torch.Tensor) -> None:
        mask = self.mask.index_select(0, keep)
        # The columns only the departed rows' longer histories needed.
        trim = int(mask.any(dim=0).long().argmax())
        self.mask = mask[:, trim:]
        for layer in self.cache.layers:
            layer.keys = _cached(layer.keys).index_select(0, keep)[:, :, trim:]
            layer.values = _cached(layer.values).index_select(0, keep)[:, :, trim:]
        for name in self._ROWS:
            setattr(self, name, getattr(self, name).index_select(0, keep))


def _cached(tensor: torch.Tensor | None) -> torch.Tensor:
    assert tensor is not None, "a prefilled cache layer holds tensors"
    return tensor


def _pad_left(kv: torch.Tensor | None, columns: int) -> torch.Tensor:
    return F.pad(_cached(kv), (0, 0, columns, 0))


class TalkerRunner:
    """Owns the talker's decode loop for up to `max_batch` rows. Not thread-safe: one thread (the engine's)
    calls `prefill`, `step` and `release`, and nothing else generates with the model meanwhile."""

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
        self._vocab = int(talker.config.vocab_size)
        self._free = list(range(max_batch))
        self._rows: list[_Row] = []  # in batch order
        self._batch: _Batch | None = None
        # Built from the first captured prompt: the library decides sampling there (checkpoint defaults).
        self._logits: TalkerLogits | None = None
        self._predictor: BatchedCodePredictor | None = None
        self._pad: torch.Tensor | None = None

    # -- slots ---------------------------------------------------------------------------------------------

    @property
    def free_slots(self) -> int:
        return len(self._free)

    @property
    def live_rows(self) -> list[int]:
        """Slots in use, in batch order."""
        return [row.slot for row in self._rows]

    @property
    def cache_length(self) -> int:
        """Columns of the batch KV cache: the longest live row's history plus the padding others need."""
        return 0 if self._batch is None else int(self._batch.mask.shape[1])

    def release(self, slot: int) -> None:
        """The row in `slot` leaves now (cancel, cap); the others are not disturbed."""
        for index, row in enumerate(self._rows):
            if row.slot == slot:
                self._drop([index])
                return
        raise ValueError(f"slot {slot} is not in use")

    def _drop(self, indices: Sequence[int]) -> None:
        gone = set(indices)
        self._free.extend(self._rows[i].slot for i in gone)
        keep = [i for i in range(len(self._rows)) if i not in gone]
        self._rows = [self._rows[i] for i in keep]
        if not keep:
            self._batch = None
        elif self._batch is not None:
            self._batch.select(torch.tensor(keep, dtype=torch.long, device=self._device))

    # -- joining -------------------------------------------------------------------------------------------

    @torch.inference_mode()
    def prefill(self, rows: Sequence[NewRow]) -> list[Admission]:
        """Prefills each row alone and adds it to the batch; it makes its first frame at the next `step()`.
        A row whose prompt fails gets its error back and takes no slot; the other rows are unaffected.
        More rows than free slots is refused whole (ValueError): admission is the scheduler's decision."""
        if len(rows) > len(self._free):
            raise ValueError(f"{len(rows)} rows for {len(self._free)} free slots")
        return [self._admit(row) for row in rows]

    def _admit(self, new: NewRow) -> Admission:
        try:
            check_request(self.model, new.request)
            if new.max_frames is not None and new.max_frames < 1:
                raise ValueError("max_frames must be >= 1")
            prompt = capture_prompt(self.model, new.request, self.sampling)
            self._configure(prompt)
            generator = new.generator or self._generator(new.request.seed)
            joining = self._prefill(prompt, generator)
        except Exception as error:  # this row's own failure; nothing of it reached the batch
            return Admission(slot=None, error=error)
        slot = self._free.pop(0)
        max_frames = new.max_frames if new.max_frames is not None else new.request.max_frames
        self._rows.append(_Row(slot, generator, prompt.trailing_text, max_frames))
        if self._batch is None:
            self._batch = joining
        else:
            self._batch.extend(joining)
        return Admission(slot=slot)

    def _configure(self, prompt: Prompt) -> None:
        sampling = TalkerSampling.from_talker_kwargs(prompt.talker_kwargs)
        if self._logits is None:
            self._logits = TalkerLogits(sampling, self._vocab, self._device)
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

    def _prefill(self, prompt: Prompt, generator: torch.Generator) -> _Batch:
        assert self._logits is not None
        length = prompt.embeds.shape[1]
        cache = DynamicCache()
        mask = torch.ones(1, length, dtype=torch.long, device=self._device)
        positions = torch.arange(length, device=self._device).view(1, 1, -1).expand(3, 1, -1)
        hidden, logits = self._forward(prompt.embeds, mask, positions, cache)
        none = torch.zeros(1, dtype=torch.long, device=self._device)
        seen = torch.zeros(1, self._vocab, dtype=torch.bool, device=self._device)
        token = draw(self._logits(logits, seen, none), [generator], self._logits.sampling.do_sample)
        seen[0, token] = True
        return _Batch(cache, mask, none + length, token, hidden[:, -1:], seen, none + 1)

    # -- the step ------------------------------------------------------------------------------------------

    def _forward(
        self, embeds: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, cache: DynamicCache
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The talker's forward without its side effect (it stores rope deltas on the module, for the whole
        batch): the last hidden state (B, L, D) and the float32 logits of the last position (B, V)."""
        out = self._talker.model(
            inputs_embeds=embeds,
            attention_mask=mask,
            position_ids=positions,
            past_key_values=cache,
            use_cache=True,
            cache_position=torch.arange(mask.shape[1] - embeds.shape[1], mask.shape[1], device=self._device),
        )
        hidden = out.last_hidden_state
        # The head over every position, as the library does at prefill (then HF takes the last one).
        logits = self._talker.codec_head(hidden)[:, -1, :].float()
        return hidden, logits

    @torch.inference_mode()
    def step(self) -> StepResult:
        """One frame for every live row. Rows whose frame is their last (EOS sampled next, or `max_frames`
        reached) leave the batch before this returns. If the step itself fails (out of memory, say), every
        row leaves, since each is half-advanced, and the error propagates; the runner stays usable."""
        if self._batch is None:
            return StepResult([], StepTimings(0.0, 0.0, 0.0))
        start = self._clock()
        try:
            codes, tokens, predicted = self._advance(self._batch)
        except BaseException:
            self._drop(range(len(self._rows)))
            raise
        stepped = self._clock()
        assert self._logits is not None
        rows = self._rows
        frames, ended = [], []
        for index, (row, token) in enumerate(zip(rows, tokens, strict=True)):
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

    def _advance(self, batch: _Batch) -> tuple[torch.Tensor, list[int], float]:
        """Frames (B, 16) and the next tokens, with the batch moved one position on."""
        assert self._logits is not None and self._predictor is not None
        talker, rows = self._talker, self._rows
        generators = [row.generator for row in rows]
        first = talker.get_input_embeddings()(batch.tokens.unsqueeze(1))
        rest = self._predictor(torch.cat([batch.hidden, first], dim=1), generators)
        predicted = self._clock()

        tables = talker.code_predictor.get_input_embeddings()
        embeds = torch.cat([first] + [tables[i](rest[:, i : i + 1]) for i in range(rest.shape[1])], dim=1)
        embeds = embeds.sum(1, keepdim=True) + torch.cat([self._text_input(row) for row in rows])
        mask = F.pad(batch.mask, (0, 1), value=1)
        hidden, logits = self._forward(embeds, mask, batch.positions.view(1, -1, 1).expand(3, -1, 1), batch.cache)
        tokens = draw(self._logits(logits, batch.seen, batch.generated), generators, self._logits.sampling.do_sample)
        codes = torch.cat([batch.tokens.unsqueeze(1), rest], dim=1)
        batch.mask, batch.hidden, batch.tokens = mask, hidden[:, -1:], tokens
        batch.positions = batch.positions + 1
        batch.generated = batch.generated + 1
        batch.seen.scatter_(1, tokens.unsqueeze(1), True)
        return codes, tokens.tolist(), predicted  # the step's one read-back: EOS is decided on the host

    def _text_input(self, row: _Row) -> torch.Tensor:
        """The library adds `trailing_text_hidden[:, generation_step]` while text remains, else the pad."""
        if row.text_step < row.trailing_text.shape[1]:
            return row.trailing_text[:, row.text_step].unsqueeze(1)
        assert self._pad is not None
        return self._pad

    def _clock(self) -> float:
        if self._device.type == "cuda":  # kernels run ahead of Python; time what they did
            torch.cuda.synchronize(self._device)
        return time.perf_counter()
