"""Token choice for the runner: the talker's logits processing and the code predictor's 15-step loop, batched
over rows that each own their settings and a `torch.Generator`.

Both reproduce what qwen-tts 0.1.1 gets from HF `generate` (transformers 4.57) at batch 1: the same processors
in the same order with the same float32 arithmetic, and one exponential draw per token (what `multinomial`
does) from the row's own generator, in the order the library draws (the 15 code-predictor tokens of a frame,
then the talker's next token). So a seeded row yields the library's frames whatever its batch mates do or ask
for: every setting is a column of a per-row tensor (`RowParams`), so rows with different temperatures, top-k,
top-p, penalties or greedy choice share one batched kernel per processor, and one draw serves the batch.

A step's noise is drawn before the step (`StepNoise`), so inside the step nothing touches a generator or reads
a value back to the host, which is what a captured CUDA graph needs. Drawn a token at a time, that is 16 calls
per row per step, each a kernel launch on a GPU; `NoiseBlocks` draws a row's noise for several steps in one call
instead (`--noise-draws`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers.cache_utils import DynamicCache

_INF = float("inf")
ALL = 1 << 30  # a top-k bound above any vocabulary: every k a row may ask for


@dataclass(frozen=True)
class TalkerSampling:
    """What the library's `Qwen3TTSForConditionalGeneration.generate` hands the talker's HF `generate`
    (read from its captured keyword arguments, so checkpoint defaults and operator or request overrides hold)."""

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

    @property
    def shared(self) -> tuple[int, tuple[int, ...]]:
        """What the model fixes for every row (end token, tokens never sampled): one value per batch."""
        return self.eos_id, self.suppress_tokens

    def params(self, device: torch.device) -> torch.Tensor:
        """This row's settings as one (1, RowParams.WIDTH) float32 row; unset means "no such processor"."""
        return RowParams.row(self, device)


class RowParams:
    """Columns of the per-row settings tensor (B, WIDTH) float32. Values are stored so that the batched
    arithmetic equals HF's with a Python scalar: the temperature and penalty as float32 (what HF's scalar
    becomes), the top-p threshold as `1 - top_p` computed in double first, as HF computes it."""

    DO_SAMPLE, TEMPERATURE, TOP_K, TOP_P_FLOOR, PENALTY, MIN_NEW = range(6)
    SUB_DO_SAMPLE, SUB_TEMPERATURE, SUB_TOP_K, SUB_TOP_P_FLOOR = range(6, 10)
    WIDTH = 10

    @staticmethod
    def row(s: TalkerSampling, device: torch.device) -> torch.Tensor:
        values = [0.0] * RowParams.WIDTH
        values[RowParams.DO_SAMPLE] = float(s.do_sample)
        values[RowParams.PENALTY] = s.repetition_penalty if s.repetition_penalty is not None else 1.0
        values[RowParams.MIN_NEW] = float(s.min_new_tokens)
        values[RowParams.SUB_DO_SAMPLE] = float(s.subtalker_do_sample)
        for temperature, top_k, top_p, (t, k, p) in (
            (s.temperature, s.top_k, s.top_p, (RowParams.TEMPERATURE, RowParams.TOP_K, RowParams.TOP_P_FLOOR)),
            (
                s.subtalker_temperature,
                s.subtalker_top_k,
                s.subtalker_top_p,
                (RowParams.SUB_TEMPERATURE, RowParams.SUB_TOP_K, RowParams.SUB_TOP_P_FLOOR),
            ),
        ):
            values[t] = temperature if temperature is not None else 1.0
            values[k] = float(top_k or 0)  # 0: no top-k
            values[p] = 1 - top_p if top_p is not None else 0.0  # 0: no top-p (nothing has cumulative p <= 0)
        return torch.tensor([values], dtype=torch.float32, device=device)

    @staticmethod
    def idle(device: torch.device) -> torch.Tensor:
        """A free slot of a static batch: greedy everywhere, so it draws nothing."""
        values = [0.0] * RowParams.WIDTH
        values[RowParams.TEMPERATURE] = values[RowParams.SUB_TEMPERATURE] = 1.0
        values[RowParams.PENALTY] = 1.0
        return torch.tensor([values], dtype=torch.float32, device=device)


@dataclass(frozen=True)
class Features:
    """Which processors any row of the batch uses, so the eager path skips work nobody needs: `top_k` is the
    largest k of any row (0: no row filters by k), so one `topk` of that size serves every row. A captured
    graph takes them all (the default): each is an exact no-op for a row that does not use it."""

    sample: bool = True
    top_k: int = ALL
    top_p: bool = True

    @classmethod
    def of(cls, rows: Sequence[TalkerSampling], sub: bool) -> Features:
        if sub:
            sampled = [s for s in rows if s.subtalker_do_sample]
            ks = [s.subtalker_top_k or 0 for s in sampled]
            return cls(bool(sampled), max(ks, default=0), any(_top_p(s.subtalker_top_p) for s in sampled))
        sampled = [s for s in rows if s.do_sample]
        return cls(
            bool(sampled), max((s.top_k or 0 for s in sampled), default=0), any(_top_p(s.top_p) for s in sampled)
        )


def _top_p(top_p: float | None) -> bool:
    return top_p is not None and top_p < 1.0


def warp(
    scores: torch.Tensor, temperature: torch.Tensor, top_k: torch.Tensor, top_p_floor: torch.Tensor, features: Features
) -> torch.Tensor:
    """HF's TemperatureLogitsWarper, TopKLogitsWarper and TopPLogitsWarper (min_tokens_to_keep 1) with a
    setting per row: scores (B, V) float32; the settings (B, 1). Dividing by 1.0 is an exact no-op, and a row
    without top-k gets a threshold of -inf, so a row without a warper gets what HF gives it without one."""
    scores = scores / temperature
    vocab = scores.shape[-1]
    if features.top_k:
        largest = min(features.top_k, vocab)
        k = top_k.long().clamp(max=largest)  # HF: min(top_k, vocab)
        kth = torch.topk(scores, largest).values.gather(1, (k - 1).clamp(min=0))
        threshold = torch.where(k > 0, kth, -_INF)
        scores = scores.masked_fill(scores < threshold, -_INF)
    if features.top_p:
        ordered, indices = torch.sort(scores, descending=False)
        remove = ordered.softmax(dim=-1).cumsum(dim=-1) <= top_p_floor
        remove[..., -1:] = False
        scores = scores.masked_fill(remove.scatter(1, indices, remove), -_INF)
    return scores


def draw(processed: torch.Tensor, warped: torch.Tensor, noise: torch.Tensor, do_sample: torch.Tensor) -> torch.Tensor:
    """One token per row, (B,) long. A sampling row takes `multinomial(softmax(warped))` computed the way
    torch computes it, `argmax(p / q)` with q ~ Exp(1) its noise (B, V); a greedy row takes the argmax of the
    processed scores, as HF's greedy search does. do_sample: (B, 1) 0/1."""
    sampled = torch.argmax(torch.softmax(warped, dim=-1) / noise, dim=-1)
    return torch.where(do_sample[:, 0] > 0, sampled, torch.argmax(processed, dim=-1))


def noise_width(predictor_vocab: int, predictor_steps: int, talker_vocab: int) -> int:
    """Noise values one row draws per step: the code predictor's 15 tokens, then the talker's."""
    return predictor_vocab * predictor_steps + talker_vocab


class StepNoise:
    """The exponential noise of one step for every row, drawn before the step: the 15 code-predictor draws
    then the talker's, each row's from its own generator, one call per token as the library draws them (on
    CUDA a call's size moves the generator's offset, so the calls must match the library's, not just the
    values). A row that does not sample a part draws nothing for it, as the library draws nothing when greedy."""

    def __init__(self, rows: int, predictor_vocab: int, predictor_steps: int, talker_vocab: int, device: torch.device):
        self.buffer = torch.ones(rows, noise_width(predictor_vocab, predictor_steps, talker_vocab), device=device)
        split = predictor_vocab * predictor_steps
        self.predictor = self.buffer[:, :split].view(rows, predictor_steps, predictor_vocab)
        self.talker = self.buffer[:, split:]

    def fill(self, generators: Sequence[torch.Generator | None], rows: Sequence[TalkerSampling | None]) -> None:
        """Rows [0, len(rows)); a free slot (no generator) gets ones."""
        for i, (generator, sampling) in enumerate(zip(generators, rows, strict=True)):
            self.fill_row(i, generator, sampling)

    def fill_row(self, i: int, generator: torch.Generator | None, sampling: TalkerSampling | None) -> None:
        if generator is None or sampling is None:
            self.buffer[i].fill_(1.0)
            return
        if sampling.subtalker_do_sample:
            for token in self.predictor[i]:
                token.exponential_(generator=generator)
        else:
            self.predictor[i].fill_(1.0)
        if sampling.do_sample:
            self.talker[i].exponential_(generator=generator)
        else:
            self.talker[i].fill_(1.0)


@dataclass(frozen=True)
class BlockRow:
    """A row as `NoiseBlocks.fill` sees it: its generator and settings, the slot that keeps its block, and the
    steps it has made (which step of its block comes next)."""

    generator: torch.Generator
    sampling: TalkerSampling
    slot: int
    steps: int


class NoiseBlocks:
    """Each row's step noise drawn `steps` steps at a time, in one call on its own generator, and kept per slot
    until used; a step's noise is then one gather over the rows' blocks. On a GPU that is a launch per row per
    `steps` steps instead of 16 per row per step, which a large batch pays for on every step.

    A row still takes its values from its own generator in the order its steps use them, so its frames depend
    only on its seed, never on its batch mates. On CPU they are even the per-token draws' values (torch's CPU
    generator fills a tensor element by element, so one call of n values is n calls of one); on CUDA they are
    not the library's (a call's size moves the generator's offset). A row that samples only one part draws per
    token, as the library does, and a row that samples nothing draws nothing."""

    def __init__(self, slots: int, steps: int, width: int, device: torch.device):
        if steps < 1:
            raise ValueError("a noise block holds at least one step")
        self.steps = steps
        # Every slot's block, then one row of ones: what a row that draws nothing here reads.
        self.flat = torch.ones(slots * steps + 1, width, device=device)
        self.ones = slots * steps

    def fill(self, noise: StepNoise, rows: Sequence[BlockRow | None]) -> None:
        """`noise` rows [0, len(rows)); None: a free slot, which gets ones."""
        picks: list[int] = []
        own: list[tuple[int, BlockRow]] = []
        for i, row in enumerate(rows):
            if row is None:
                picks.append(self.ones)
            elif row.sampling.do_sample and row.sampling.subtalker_do_sample:
                picks.append(self._take(row))
            else:
                picks.append(self.ones)
                if row.sampling.do_sample or row.sampling.subtalker_do_sample:
                    own.append((i, row))
        device = self.flat.device
        if device.type == "cuda":  # from pinned memory, so the host does not wait for the block draws queued above
            index = torch.tensor(picks, dtype=torch.long, pin_memory=True).to(device, non_blocking=True)
        else:
            index = torch.tensor(picks, dtype=torch.long)
        torch.index_select(self.flat, 0, index, out=noise.buffer[: len(picks)])
        for i, row in own:
            noise.fill_row(i, row.generator, row.sampling)

    def _take(self, row: BlockRow) -> int:
        """The flat index of the row's next step, drawing its next block first when the last one is used up."""
        first = row.slot * self.steps
        if row.steps % self.steps == 0:
            self.flat[first : first + self.steps].exponential_(generator=row.generator)
        return first + row.steps % self.steps


class TalkerLogits:
    """HF's processors for the talker, in `_get_logits_processor`'s order: repetition penalty, min new tokens,
    suppress tokens, then (sampling rows only) temperature, top-k, top-p.

    HF's repetition penalty gathers the scores of the tokens in `input_ids`, penalizes and scatters them back;
    a per-row boolean `seen` mask over the vocabulary applies the same arithmetic to the same entries without
    needing equal history lengths across rows."""

    def __init__(self, shared: tuple[int, tuple[int, ...]], vocab_size: int, device: torch.device):
        self.shared = shared
        eos_id, suppress = shared
        vocab = torch.arange(vocab_size, device=device)
        self.eos_id = eos_id
        self._eos = vocab == eos_id
        self._suppress = torch.isin(vocab, torch.tensor(suppress, dtype=torch.long, device=device))
        self._any_suppressed = bool(suppress)

    def __call__(
        self,
        logits: torch.Tensor,
        seen: torch.Tensor,
        generated: torch.Tensor,
        params: torch.Tensor,
        noise: torch.Tensor,
        features: Features,
    ) -> torch.Tensor:
        """logits (B, V) float32; seen (B, V) bool; generated (B,) tokens sampled so far; params (B, WIDTH);
        noise (B, V). Returns the next token per row (B,)."""
        penalty = params[:, RowParams.PENALTY : RowParams.PENALTY + 1]
        penalized = torch.where(logits < 0, logits * penalty, logits / penalty)
        scores = torch.where(seen, penalized, logits)
        early = (generated.unsqueeze(1) < params[:, RowParams.MIN_NEW : RowParams.MIN_NEW + 1]) & self._eos
        scores = scores.masked_fill(early, -_INF)
        if self._any_suppressed:
            scores = scores.masked_fill(self._suppress, -_INF)
        do_sample = params[:, RowParams.DO_SAMPLE : RowParams.DO_SAMPLE + 1]
        if not features.sample:
            return torch.argmax(scores, dim=-1)
        warped = warp(
            scores,
            params[:, RowParams.TEMPERATURE : RowParams.TEMPERATURE + 1],
            params[:, RowParams.TOP_K : RowParams.TOP_K + 1],
            params[:, RowParams.TOP_P_FLOOR : RowParams.TOP_P_FLOOR + 1],
            features,
        )
        return draw(scores, warped, noise, do_sample)


class BatchedCodePredictor:
    """Codebooks 1..15 for every row at once: the forward passes of `FastCodePredictor` (and of the library's
    per-frame HF `generate`) over a (B, ...) batch, each row with its own settings and noise.

    Every row's prompt is the same two positions (`[past_hidden, embed(cb0)]`), so no padding is needed and the
    cache starts empty at each frame."""

    def __init__(self, code_predictor: Any):
        # A qwen_tts module, used untyped: torch types its submodules as Tensor | Module.
        self._cp = code_predictor
        self.steps = len(self._cp.lm_head)
        self.vocab = int(self._cp.lm_head[0].out_features)

    def __call__(
        self, prompt: torch.Tensor, params: torch.Tensor, noise: torch.Tensor, features: Features
    ) -> torch.Tensor:
        """prompt (B, 2, D_talker); params (B, WIDTH); noise (B, 15, V_cp) -> codes (B, 15) long."""
        cp = self._cp
        cache = DynamicCache()
        embeds = cp.small_to_mtp_projection(prompt)
        position = torch.arange(prompt.shape[1], device=prompt.device)
        tables = cp.model.get_input_embeddings()
        temperature = params[:, RowParams.SUB_TEMPERATURE : RowParams.SUB_TEMPERATURE + 1]
        top_k = params[:, RowParams.SUB_TOP_K : RowParams.SUB_TOP_K + 1]
        top_p_floor = params[:, RowParams.SUB_TOP_P_FLOOR : RowParams.SUB_TOP_P_FLOOR + 1]
        do_sample = params[:, RowParams.SUB_DO_SAMPLE : RowParams.SUB_DO_SAMPLE + 1]
        picks = []
        for step in range(self.steps):
            hidden = cp.model(
                inputs_embeds=embeds,
                past_key_values=cache,
                use_cache=True,
                cache_position=position,
                position_ids=position.unsqueeze(0),
            ).last_hidden_state
            # HF's code-predictor forward applies the head to every position, then generate takes the last.
            logits = cp.lm_head[step](hidden)[:, -1, :].float()
            if features.sample:
                warped = warp(logits, temperature, top_k, top_p_floor, features)
                tokens = draw(logits, warped, noise[:, step], do_sample).unsqueeze(1)
            else:
                tokens = torch.argmax(logits, dim=-1, keepdim=True)
            picks.append(tokens)
            if step + 1 < self.steps:
                embeds = cp.small_to_mtp_projection(tables[step](tokens))
                position = position[-1:] + 1
        return torch.cat(picks, dim=1)
