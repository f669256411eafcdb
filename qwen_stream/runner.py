"""The talker step, owned by us: rows join and leave a running batch between steps.

`TalkerRunner` replaces the talker's HF `generate` (qwen-tts 0.1.1; see DESIGN.md section 3). A row's prompt
is the library's own (prompts.py). Rows joining together are prefilled in one forward, right-padded (a row's
KV is then what its prompt alone makes), and each row's KV joins the batch cache right-aligned (kv.py): every
row writes the same cache column at each step, a row's left padding is masked, and its positions are its own
(prompt length + tokens so far), which is what the library's rope delta computes. Frames leave through
`step()`'s result, not through the tap: the runner calls the talker's inner model, so the forward hook on the
talker never fires.

Sampling is per row (sampling.py): settings, generator and repetition history, so a row's codes do not
depend on its batch mates beyond the floating-point noise of batched kernels, too small to change a code in
the tests; rows asking for different temperatures, top-k, top-p or greedy choice share a batch. A row draws its
noise a token at a time, as the library does, or (`noise_block`) several steps at a time. With `max_len`
set, every step has the same shapes, which CUDA graphs and torch.compile need (static_step.py).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from transformers.cache_utils import DynamicCache

from .generation import SynthesisRequest, check_request
from .kv import DynamicRows, Joining, StaticRows
from .model import LoadedModel
from .prompts import Prompt, capture_prompt
from .sampling import (
    BatchedCodePredictor,
    BlockRow,
    Features,
    NoiseBlocks,
    StepNoise,
    TalkerLogits,
    TalkerSampling,
    noise_width,
)
from .settings import SamplingSettings
from .static_prefill import PrefillGraphs
from .static_step import (
    ATTENTION,
    EVERY,
    CapturedStep,
    CompiledStep,
    RowText,
    StaticStep,
    bucket_for,
    buckets,
)

End = Literal["eos", "cap"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NewRow:
    """A request entering the batch. Without a generator, one is seeded from `request.seed` (or from torch's
    global generator).
    `max_frames` (default: `request.max_frames`; None: no cap) ends the row after that many frames."""

    request: SynthesisRequest
    generator: torch.Generator | None = None
    max_frames: int | None = None


@dataclass(frozen=True)
class Admission:
    """The outcome of one `NewRow`: the slot that names the row in `RowFrame` and `release` (not its batch
    index, which may change), or why its prompt failed."""

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
    built: bool = False  # the step first built a bucket's step (compiled, captured): not a step's usual time


@dataclass(frozen=True)
class StepResult:
    frames: list[RowFrame]
    timings: StepTimings


@dataclass
class _Row:
    slot: int
    generator: torch.Generator
    sampling: TalkerSampling
    trailing_text: torch.Tensor
    max_frames: int | None
    own_sampling: bool = False  # the request gave settings of its own
    text_step: int = 0  # the library's `generation_step`, which it keeps for the whole batch
    frames: int = 0


PREFILL_TOKENS = 8192  # padded positions (rows x longest prompt) in one prefill forward: bounds its activations


@dataclass(frozen=True)
class _Ready:
    """A joining row before its forward: its place in `prefill`'s arguments, prompt and settings."""

    index: int
    prompt: Prompt
    sampling: TalkerSampling
    generator: torch.Generator
    max_frames: int | None
    own_sampling: bool


def _prefill_groups(ready: list[_Ready]) -> list[list[_Ready]]:
    """Consecutive rows in groups whose padded size (rows x longest prompt) stays within PREFILL_TOKENS; a
    prompt longer than that is a group of its own."""
    groups: list[list[_Ready]] = []
    width = 0
    for item in ready:
        length = item.prompt.embeds.shape[1]
        if groups and (len(groups[-1]) + 1) * max(width, length) <= PREFILL_TOKENS:
            groups[-1].append(item)
            width = max(width, length)
        else:
            groups.append([item])
            width = length
    return groups


class TalkerRunner:
    """Owns the talker's decode loop for up to `max_batch` rows. Not thread-safe: one thread (the engine's)
    calls `prefill`, `step` and `release`, and nothing else generates with the model meanwhile.

    `max_len` None: the cache grows and shrinks with the rows (kv.DynamicRows). A number: the cache is
    preallocated for `max_batch` rows of `max_len` positions and every step has the same shapes
    (kv.StaticRows); a row's frames are then capped so that its prompt and frames fit in `max_len`."""

    def __init__(
        self,
        model: LoadedModel,
        sampling: SamplingSettings,
        max_batch: int,
        max_len: int | None = None,
        cuda_graphs: bool = False,
        graphs_required: bool = True,
        compile_backend: str | None = None,
        noise_block: int = 0,
    ):
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        if noise_block < 0:
            raise ValueError("noise_block must be >= 0")
        if max_len is not None and max_len < 2:
            raise ValueError("max_len must be >= 2")
        talker: Any = model.inner.talker
        if getattr(talker.config, "sliding_window", None) is not None:
            raise NotImplementedError("a talker with sliding-window attention")  # its cache layers roll
        attention = talker.config._attn_implementation
        if max_len is not None and attention not in ATTENTION:
            raise ValueError(f"a static cache needs {' or '.join(ATTENTION)} attention, not {attention}")
        if cuda_graphs and (max_len is None or model.device.type != "cuda"):
            raise ValueError("CUDA graphs need a CUDA device and a static cache (max_len)")
        if compile_backend is not None and max_len is None:
            raise ValueError("torch.compile needs a static cache (max_len): a dynamic one changes shape every step")
        self.model = model
        self.sampling = sampling
        self.max_batch = max_batch
        self.max_len = max_len
        self.cuda_graphs = cuda_graphs
        self.graphs_required = graphs_required  # else a failed capture falls back to the eager static step
        # torch.compile's backend for the static step (None: eager); a step that fails to compile runs eagerly.
        self.compile_backend = compile_backend
        self._talker = talker
        self._device = model.device
        self._vocab = int(talker.config.vocab_size)
        self._free = list(range(max_batch))
        self._order: list[_Row | None] = []  # batch index -> row; None: a free slot that still runs (static)
        self._store: DynamicRows | StaticRows | None = None
        # Built from the first captured prompt: the library decides the end token and suppressed tokens there.
        self._logits: TalkerLogits | None = None
        self._predictor = BatchedCodePredictor(talker.code_predictor)
        self._noise_shape = (self._predictor.vocab, self._predictor.steps, self._vocab)
        # Steps of noise a row draws in one call (sampling.NoiseBlocks); 0: a call per token, as the library.
        self.noise_block = noise_block
        self._blocks: NoiseBlocks | None = None
        self._pad: torch.Tensor | None = None
        # The static path's step per bucket, and the buffers its steps read (allocated with the store).
        self._steps: dict[int, StaticStep | CompiledStep | CapturedStep] = {}
        self._noise: StepNoise | None = None
        self._text: RowText | None = None
        self._graph_pool: Any = None
        # Called before a bucket's step is compiled or captured: the engine's loop lets its decode stage finish,
        # so that no other work runs on the device while a graph records (a read-back on another thread would
        # invalidate the capture), and none waits behind a compile.
        self.before_build: Callable[[], None] | None = None
        # The prefill forward over fixed buffers per (rows, width) bucket (static_prefill.py), captured at warm-up
        # with CUDA graphs; None: every prefill is eager.
        self.prefill_graphs: PrefillGraphs | None = None

    # -- slots ---------------------------------------------------------------------------------------------

    @property
    def free_slots(self) -> int:
        return len(self._free)

    @property
    def live_rows(self) -> list[int]:
        """Slots in use, in batch order."""
        return [row.slot for row in self._order if row is not None]

    @property
    def cache_length(self) -> int:
        """Columns of the batch KV cache in use: the longest live history plus the padding others need."""
        return 0 if self._store is None or not self.live_rows else self._store.length

    @torch.inference_mode()
    def release(self, slot: int) -> None:
        """The row in `slot` leaves now (cancel, cap); the others are not disturbed."""
        for index, row in enumerate(self._order):
            if row is not None and row.slot == slot:
                self._drop([index])
                return
        raise ValueError(f"slot {slot} is not in use")

    @property
    def step_rows(self) -> int:
        """Batch rows the next step runs: the live rows (dynamic), or the bucket that covers them (static)."""
        if isinstance(self._store, StaticRows):
            return bucket_for(self._store.rows_in_use, self.max_batch) if self._store.rows_in_use else 0
        return len(self._order)

    def _drop(self, indices: Sequence[int]) -> None:
        gone = {i for i in indices if self._order[i] is not None}
        self._free.extend(row.slot for row in (self._order[i] for i in sorted(gone)) if row is not None)
        if isinstance(self._store, DynamicRows):
            if len(gone) == len(self._order):
                self._store, self._order = None, []
                return
            self._store.remove(gone)
            self._order = [row for i, row in enumerate(self._order) if i not in gone]
        elif self._store is not None:
            self._store.remove(gone)
            for i in gone:
                self._order[i] = None
            self._compact(self._store)

    def _compact(self, store: StaticRows) -> None:
        """Moves rows that sit above the bucket their count needs into free rows below it, so that a lone row
        left in a high batch index does not keep a large bucket until it ends. Rows move only when that
        lowers the bucket; a move copies one row's KV and state within the same buffers, so captured graphs
        stay valid and the row's frames are unchanged (the step treats every row alike)."""
        live = [index for index, row in enumerate(self._order) if row is not None]
        target = bucket_for(len(live), self.max_batch) if live else 0
        if not live or bucket_for(store.rows_in_use, self.max_batch) == target:
            return
        assert self._text is not None
        holes = (index for index in range(target) if self._order[index] is None)
        for source in (index for index in live if index >= target):
            destination = next(holes)
            store.move(source, destination)
            self._text.move(source, destination)
            self._order[destination], self._order[source] = self._order[source], None

    # -- joining -------------------------------------------------------------------------------------------

    @torch.inference_mode()
    def prefill(self, rows: Sequence[NewRow]) -> list[Admission]:
        """Prefills the rows and adds them to the batch, in order; each makes its first frame at the next
        `step()`. Rows are prefilled together, one forward per group of up to `PREFILL_TOKENS` padded positions,
        since a forward costs about the same for one prompt or many on a GPU (and a burst of callers would
        otherwise wait for every prefill before them). A row whose prompt fails gets its error back and
        takes no slot; the other rows are unaffected. More rows than free slots is refused whole
        (ValueError): admission is the scheduler's decision."""
        if len(rows) > len(self._free):
            raise ValueError(f"{len(rows)} rows for {len(self._free)} free slots")
        admissions: list[Admission | None] = [None] * len(rows)
        ready: list[_Ready] = []
        for index, new in enumerate(rows):
            try:
                ready.append(self._ready(index, new))
            except Exception as error:  # this row's own failure; nothing of it reached the batch
                admissions[index] = Admission(slot=None, error=error)
        for group in _prefill_groups(ready):
            for items, outcome in self._prefill_group(group):
                if isinstance(outcome, BaseException):
                    for item in items:
                        admissions[item.index] = Admission(slot=None, error=outcome)
                else:
                    for item, joined in zip(items, self._join(items, outcome), strict=True):
                        if isinstance(joined, BaseException):
                            admissions[item.index] = Admission(slot=None, error=joined)
                        else:
                            admissions[item.index] = Admission(slot=joined)
        assert all(admission is not None for admission in admissions)
        return [admission for admission in admissions if admission is not None]

    def _ready(self, index: int, new: NewRow) -> _Ready:
        """Everything about a row before its forward: checks, prompt, frame cap, sampling, generator."""
        check_request(self.model, new.request)
        max_frames = new.max_frames if new.max_frames is not None else new.request.max_frames
        if max_frames is not None and max_frames < 1:
            raise ValueError("max_frames must be >= 1")
        prompt = capture_prompt(self.model, new.request, self.sampling.merged(new.request.sampling))
        if self.max_len is not None:
            room = self.max_len - prompt.embeds.shape[1]
            if room < 1:
                raise ValueError(f"a prompt of {prompt.embeds.shape[1]} positions leaves no room in {self.max_len}")
            max_frames = room if max_frames is None else min(max_frames, room)
        sampling = self._configure(prompt)
        generator = new.generator or self._generator(new.request.seed)
        return _Ready(index, prompt, sampling, generator, max_frames, new.request.sampling is not None)

    def _prefill_group(
        self, group: list[_Ready], static: bool = True
    ) -> list[tuple[list[_Ready], Joining | BaseException]]:
        """The group prefilled together; if that fails (out of memory, one prompt the model chokes on), each
        row alone, so that a failure is only the failing row's. The generators are put back as they were
        before a retry: a retried row draws what it would have drawn alone. Retried rows prefill eagerly: each
        keeps its KV until all have been prefilled, and a static prefill's is overwritten by the next."""
        states = [item.generator.get_state() for item in group]
        try:
            return [(group, self._prefill(group, static))]
        except Exception as error:
            if len(group) == 1 and not static:
                return [(group, error)]
            log.warning("a prefill of %d rows failed; prefilling them one by one", len(group), exc_info=True)
        for item, state in zip(group, states, strict=True):
            item.generator.set_state(state)
        return [outcome for item in group for outcome in self._prefill_group([item], static=False)]

    def _join(self, items: list[_Ready], joining: Joining) -> list[int | BaseException]:
        """Adds rows prefilled together to the batch, in order; returns their slots (the lowest free ones), or
        for a row that could not join (out of memory copying its KV, say) the error: a slot is taken only by a
        row that joined, so nothing leaks."""
        slots = sorted(self._free)[: len(items)]  # the rows' names for the caller; batch indices may change
        rows = [
            _Row(slot, item.generator, item.sampling, item.prompt.trailing_text, item.max_frames, item.own_sampling)
            for slot, item in zip(slots, items, strict=True)
        ]
        if self.max_len is None:
            outcomes: list[int | BaseException] = []
            for g, row in enumerate(rows):
                try:
                    one = joining.row(g)
                    if self._store is None:
                        self._store = DynamicRows(one)
                    else:
                        assert isinstance(self._store, DynamicRows)
                        self._store.add(one)
                except Exception as error:
                    outcomes.append(error)
                    continue
                self._free.remove(row.slot)
                self._order.append(row)
                outcomes.append(row.slot)
            return outcomes
        try:
            if self._store is None:  # all three, or none
                store = StaticRows(joining, self.max_batch, self.max_len)
                noise = StepNoise(self.max_batch, *self._noise_shape, self._device)
                assert self._pad is not None  # set by _configure
                text = RowText(self.max_batch, self.max_len, self._pad)
                self._store, self._noise, self._text = store, noise, text
                self._order = [None] * self.max_batch
            assert isinstance(self._store, StaticRows) and self._text is not None
            free = (index for index, row in enumerate(self._order) if row is None)
            indices = [next(free) for _ in rows]  # the lowest: rows stay in a small bucket
            self._store.add(joining, indices)
        except Exception as error:
            return [error] * len(rows)
        for index, row in zip(indices, rows, strict=True):
            self._text.set(index, row.trailing_text)
            self._order[index] = row
            self._free.remove(row.slot)
        return list(slots)

    def _configure(self, prompt: Prompt) -> TalkerSampling:
        sampling = TalkerSampling.from_talker_kwargs(prompt.talker_kwargs)
        if self._logits is None:
            self._logits = TalkerLogits(sampling.shared, self._vocab, self._device)
            self._pad = prompt.pad
        elif sampling.shared != self._logits.shared:
            raise RuntimeError("the library chose another end token or suppressed tokens for this row")
        return sampling

    def _generator(self, seed: int | None) -> torch.Generator:
        generator = torch.Generator(device=self._device)
        if seed is None:
            # Drawn from torch's global generator, as the library's own sampling is: torch.manual_seed
            # still makes a run of unseeded rows reproducible.
            seed = int(torch.randint(2**62, (), dtype=torch.long))
        generator.manual_seed(seed)
        return generator

    def _prefill(self, group: Sequence[_Ready], static: bool = True) -> Joining:
        """The group's prompts in one forward, right-padded to the longest (to a width bucket, from the static
        prefill's buffers, where one holds them): under the causal mask a row's positions never attend to the
        padding after them, so its KV, hidden states and logits are what a forward of its prompt alone computes
        (up to the rounding of batched kernels). Then every row's first token, each drawn with its own
        generator."""
        assert self._logits is not None
        lengths = [item.prompt.embeds.shape[1] for item in group]
        count = len(group)
        rows = torch.arange(count, device=self._device)
        served: tuple[Any, torch.Tensor, torch.Tensor] | None = None
        if static and self.prefill_graphs is not None:
            served = self.prefill_graphs.forward([item.prompt.embeds for item in group])
        if served is not None:
            cache, last_hidden, logits = served
        else:
            cache, last_hidden, logits = self._eager_prefill(group, lengths, rows)
        samplings = [item.sampling for item in group]
        noise = torch.ones(count, self._vocab, device=self._device)
        for g, item in enumerate(group):
            if item.sampling.do_sample:
                noise[g].exponential_(generator=item.generator)
        seen = torch.zeros(count, self._vocab, dtype=torch.bool, device=self._device)
        none = torch.zeros(count, dtype=torch.long, device=self._device)
        params = torch.cat([sampling.params(self._device) for sampling in samplings])
        tokens = self._logits(logits, seen, none, params, noise, Features.of(samplings, sub=False))
        seen[rows, tokens] = True
        first = torch.tensor(lengths, dtype=torch.long, device=self._device)
        return Joining(cache, lengths, first, tokens, last_hidden, seen, none + 1, params)

    def _eager_prefill(
        self, group: Sequence[_Ready], lengths: list[int], rows: torch.Tensor
    ) -> tuple[DynamicCache, torch.Tensor, torch.Tensor]:
        """The forward of `_prefill` in a cache of its own: (KV, last hidden states (G, 1, D), logits (G, V))."""
        width, count = max(lengths), len(group)
        pads = [width - length for length in lengths]
        padded = [F.pad(item.prompt.embeds, (0, 0, 0, pad)) for item, pad in zip(group, pads, strict=True)]
        mask = torch.ones(count, width, dtype=torch.long, device=self._device)
        positions = torch.arange(width, device=self._device).view(1, 1, -1).expand(3, count, -1)
        cache = DynamicCache()
        columns = torch.arange(width, device=self._device)
        last = torch.tensor([length - 1 for length in lengths], device=self._device)
        hidden, logits = self._forward(torch.cat(padded), mask, positions, cache, columns, (rows, last))
        return cache, hidden[rows, last].unsqueeze(1), logits

    def build_prefills(self, capture: bool) -> None:
        """The static prefill of every (rows, width) bucket (static_prefill.py): captured as CUDA graphs (at
        warm-up, where the step's are), or run eagerly (`capture` False: how the tests check it on CPU).
        Raises if building fails; prefills then stay eager."""
        if self.max_len is None:
            raise ValueError("a static prefill needs a static cache (max_len): its rows join StaticRows")
        if self.before_build is not None:
            self.before_build()
        self.prefill_graphs = PrefillGraphs(self._talker, self.max_batch, self.max_len, PREFILL_TOKENS, capture)

    @torch.inference_mode()
    def warm_up(self, request: SynthesisRequest) -> int:
        """Builds the step of every batch-size bucket now, where building is slow (compiling, capturing), by
        stepping once at each bucket with copies of `request` capped at one frame. Only on an idle runner; the
        rows leave again and the runner is as it was. Returns the buckets built."""
        if self.max_len is None or not (self.cuda_graphs or self.compile_backend) or self.live_rows:
            return 0
        if request.seed is None:  # seeded, so warming up draws nothing from torch's global generator
            request = dataclasses.replace(request, seed=0)
        built = 0
        for bucket in buckets(self.max_batch):
            if bucket in self._steps:
                continue
            admissions = self.prefill([NewRow(request, max_frames=1)] * bucket)
            failed = next((a.error for a in admissions if a.error is not None), None)
            if failed is not None:
                for admission in admissions:
                    if admission.slot is not None:
                        self.release(admission.slot)
                raise failed
            self.step()  # every row ends at its cap
            built += 1
        if self.cuda_graphs and self.prefill_graphs is None:
            try:
                self.build_prefills(capture=True)
            except Exception:
                if self.graphs_required:
                    raise
                log.warning("capturing the prefill failed; prefills run eagerly", exc_info=True)
            else:
                log.info("captured %d CUDA graphs of the prefill", len(self.prefill_graphs or ()))
        return built

    # -- the step ------------------------------------------------------------------------------------------

    def _forward(
        self,
        embeds: torch.Tensor,
        mask: torch.Tensor,
        positions: torch.Tensor,
        cache: Any,
        cache_position: torch.Tensor,
        last: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The talker's forward without its side effect (it stores rope deltas on the module, for the whole
        batch): the last hidden state (B, L, D) and the float32 logits (B, V) of each row's last position
        (`last`: (rows, positions) of each row's last prompt position in a right-padded batch; default: the
        last position)."""
        out = self._talker.model(
            inputs_embeds=embeds,
            attention_mask=mask,
            position_ids=positions,
            past_key_values=cache,
            use_cache=True,
            cache_position=cache_position,
        )
        hidden = out.last_hidden_state
        # The head over every position, as the library does at prefill (then HF takes the last one).
        head = self._talker.codec_head(hidden)
        return hidden, (head[:, -1, :] if last is None else head[last]).float()

    @torch.inference_mode()
    def step(self) -> StepResult:
        """One frame for every live row. Rows whose frame is their last (EOS sampled next, or `max_frames`
        reached) leave the batch before this returns. If the step itself fails (out of memory, say), every
        row leaves, since each is half-advanced, and the error propagates; the runner stays usable."""
        if self._store is None or not self.live_rows:
            return StepResult([], StepTimings(0.0, 0.0, 0.0))
        start = self._clock()
        steps_built = len(self._steps)
        try:
            codes, tokens, predicted = self._advance(self._store)
        except BaseException:
            self._free.extend(row.slot for row in self._order if row is not None)
            self._store, self._order = None, []  # a static store may hold half a step's masks: rebuild it
            self._steps = {}
            raise
        stepped = self._clock()
        assert self._logits is not None
        frames, ended = [], []
        for index, token in enumerate(tokens):  # a static step covers a bucket; slots past it are free
            row = self._order[index]
            if row is None:
                continue
            row.frames += 1
            row.text_step += 1
            end: End | None = None
            if token == self._logits.eos_id:
                end = "eos"
            elif row.max_frames is not None and row.frames >= row.max_frames:
                end = "cap"
            if end is not None:
                ended.append(index)
            frames.append(RowFrame(row.slot, codes[index], end))
        if ended:
            self._drop(ended)
        built = len(self._steps) > steps_built
        return StepResult(frames, StepTimings(predicted - start, stepped - predicted, self._clock() - start, built))

    def _advance(self, store: DynamicRows | StaticRows) -> tuple[torch.Tensor, list[int], float]:
        """Frames (B, 16) and the next tokens, with the batch moved one position on."""
        if isinstance(store, StaticRows):
            return self._advance_static(store)
        assert self._logits is not None
        talker, order = self._talker, self._order
        rows = [row.sampling if row is not None else None for row in order]
        live = [sampling for sampling in rows if sampling is not None]
        noise = StepNoise(len(order), *self._noise_shape, self._device)
        self._draw(noise, order)
        first = talker.get_input_embeddings()(store.tokens.unsqueeze(1))
        prompt = torch.cat([store.hidden, first], dim=1)
        rest = self._predictor(prompt, store.params, noise.predictor, Features.of(live, sub=True))
        predicted = self._clock()

        tables = talker.code_predictor.get_input_embeddings()
        embeds = torch.cat([first] + [tables[i](rest[:, i : i + 1]) for i in range(rest.shape[1])], dim=1)
        embeds = embeds.sum(1, keepdim=True) + torch.cat([self._text_input(row) for row in order])
        mask, cache_position = store.next_column()
        positions = store.positions.view(1, -1, 1).expand(3, -1, 1)
        hidden, logits = self._forward(embeds, mask, positions, store.cache, cache_position)
        features = Features.of(live, sub=False)
        tokens = self._logits(logits, store.seen, store.generated, store.params, noise.talker, features)
        codes = torch.cat([store.tokens.unsqueeze(1), rest], dim=1)
        store.commit(mask, hidden[:, -1:], tokens)
        return codes, tokens.tolist(), predicted  # the step's one read-back: EOS is decided on the host

    def _advance_static(self, store: StaticRows) -> tuple[torch.Tensor, list[int], float]:
        """The same step over the rows [0, bucket) of fixed buffers (static_step.py); the host fills the step's
        inputs, runs (or replays) it and commits its outputs in place. The step is not split in two for
        timing: a captured graph is one launch, so its code-predictor share reads as 0."""
        assert self._noise is not None and self._text is not None
        start = self._clock()
        bucket = bucket_for(store.rows_in_use, self.max_batch)
        order = self._order[:bucket]
        store.next_column()
        rows = [row.sampling if row is not None else None for row in order]
        self._draw(self._noise, order)
        live = [sampling for sampling in rows if sampling is not None]
        features = Features.of(live, sub=False), Features.of(live, sub=True)
        step = self._steps.get(bucket) or self._build_step(store, bucket, features)
        step.run(*features)  # a captured step ignores them
        store.commit(bucket, step.next_hidden, step.next_tokens)
        self._text.advance(bucket)
        codes = step.codes.clone()  # the next replay overwrites the output buffer
        return codes, step.next_tokens.tolist(), start

    def _draw(self, noise: StepNoise, order: Sequence[_Row | None]) -> None:
        """The step's noise for the rows in batch order (None: a free slot)."""
        if not self.noise_block:
            noise.fill(
                [row.generator if row is not None else None for row in order],
                [row.sampling if row is not None else None for row in order],
            )
            return
        if self._blocks is None:
            self._blocks = NoiseBlocks(self.max_batch, self.noise_block, noise_width(*self._noise_shape), self._device)
        self._blocks.fill(
            noise,
            [BlockRow(row.generator, row.sampling, row.slot, row.frames) if row is not None else None for row in order],
        )

    def _build_step(
        self, store: StaticRows, bucket: int, features: tuple[Features, Features]
    ) -> StaticStep | CompiledStep | CapturedStep:
        """The bucket's step, compiled and captured as asked. Called inside a step whose inputs are ready: the
        extra runs compiling and capturing need write only outputs and the current KV column, which the step
        writes again with the same values. Compiled for `features` (the step's rows' processors), or for every
        processor when a CUDA graph will replay it for any mix."""
        assert self._logits is not None and self._noise is not None and self._text is not None
        if self.before_build is not None and (self.cuda_graphs or self.compile_backend is not None):
            self.before_build()
        eager = StaticStep(
            self._talker,
            store,
            bucket,
            self._logits,
            self._predictor,
            (self._noise.predictor, self._noise.talker),
            self._text,
        )
        base: StaticStep | CompiledStep = eager
        if self.compile_backend is not None:
            # The rows' own processors when they all sample as the server does; otherwise (and under a graph,
            # which must serve any mix) every processor: a bucket built first for one row with settings of its
            # own must not leave the server's sampling stepping eagerly ever after.
            own = any(row is not None and row.own_sampling for row in self._order[:bucket])
            compiled_for = (EVERY, EVERY) if self.cuda_graphs or own else features
            try:
                compiled = CompiledStep(eager, compiled_for, self.compile_backend)
                compiled.run(*compiled_for)  # compiles now: a failure is this method's, not the step's
            except Exception:
                log.warning("torch.compile failed; the step runs uncompiled from now on", exc_info=True)
                self.compile_backend = None
            else:
                base = compiled
        step: StaticStep | CompiledStep | CapturedStep = base
        if self.cuda_graphs:
            try:
                captured = CapturedStep(base, self._graph_pool)
            except Exception:
                if self.graphs_required:
                    raise
                log.warning("CUDA graph capture failed; the step runs eagerly from now on", exc_info=True)
                self.cuda_graphs = False
            else:
                self._graph_pool = captured.pool  # every bucket's graph shares one memory pool
                step = captured
        self._steps[bucket] = step
        return step

    def _text_input(self, row: _Row | None) -> torch.Tensor:
        """The library adds `trailing_text_hidden[:, generation_step]` while text remains, else the pad."""
        if row is not None and row.text_step < row.trailing_text.shape[1]:
            return row.trailing_text[:, row.text_step].unsqueeze(1)
        assert self._pad is not None
        return self._pad

    def _clock(self) -> float:
        """Now, once the step's kernels so far have run (they run ahead of Python). Only this thread's stream: a
        device-wide synchronize would also wait for the decode stage's stream, and so undo its overlap with the
        step."""
        if self._device.type == "cuda":
            torch.cuda.current_stream(self._device).synchronize()
        return time.perf_counter()
