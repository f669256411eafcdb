"""The decode step over fixed buffers: the shape a CUDA graph can capture, run eagerly everywhere else.

`StaticStep` is one talker step (code predictor, talker forward, logits processing, draws) for the batch rows
[0, bucket) of `kv.StaticRows`, reading its inputs from the store's buffers and the runner's noise and text
buffers, and writing its outputs into buffers of its own. It reads nothing back to the host and allocates
nothing that outlives it, so `CapturedStep` can record it once per bucket and replay it at each step; the
host does the rest between replays (opening the write column, drawing each row's noise, committing the
outputs, moving every row's text one position on). On CPU, and wherever capture is off or fails, the same
`StaticStep` runs eagerly, which is how the tests check its logic against the library's frames.

Captured, every processor runs for every row (`Features()`): each is an exact no-op for a row that does not
use it, so one graph serves any mix of settings; eagerly, only what the bucket's rows use.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch

from .kv import StaticRows
from .sampling import BatchedCodePredictor, Features, TalkerLogits

log = logging.getLogger(__name__)

EVERY = Features()  # every processor: what a captured step runs
ATTENTION = ("sdpa", "eager")  # implementations that take our 4D mask; flash attention takes none


def graphs_possible(model: Any) -> bool:
    """Whether a captured step can serve this model: a CUDA device and an attention that takes a 4D mask."""
    return model.device.type == "cuda" and model.inner.talker.config._attn_implementation in ATTENTION


def buckets(max_batch: int) -> list[int]:
    """Batch sizes a step may run at: powers of two below max_batch, then max_batch."""
    sizes, size = [], 1
    while size < max_batch:
        sizes.append(size)
        size *= 2
    return [*sizes, max_batch]


def bucket_for(rows: int, max_batch: int) -> int:
    return next(size for size in buckets(max_batch) if size >= rows)


class RowText:
    """Each row's trailing text in a fixed buffer, fed inside the step: the library adds
    `trailing_text_hidden[:, step]` to a row's input while text remains, then the pad embedding. `length` is the
    static cache's: a row never takes more steps than that, so text past it is never read."""

    def __init__(self, max_batch: int, length: int, pad: torch.Tensor):
        self.pad = pad  # (1, 1, D)
        self.buffer = pad.new_zeros(max_batch, length, pad.shape[-1])
        self.lengths = torch.zeros(max_batch, dtype=torch.long, device=pad.device)
        self.steps = torch.zeros(max_batch, dtype=torch.long, device=pad.device)

    def set(self, index: int, trailing: torch.Tensor) -> None:
        """trailing (1, N, D): a row joining at batch index `index`."""
        kept = min(trailing.shape[1], self.buffer.shape[1])
        self.buffer[index, :kept] = trailing[0, :kept]
        self.lengths[index] = trailing.shape[1]
        self.steps[index] = 0

    def move(self, source: int, destination: int) -> None:
        for tensor in (self.buffer, self.lengths, self.steps):
            tensor[destination] = tensor[source]

    def inputs(self, rows: int) -> torch.Tensor:
        """(rows, 1, D) for the rows [0, rows): their text at their step, or the pad; nothing read back."""
        steps = self.steps[:rows]
        index = steps.clamp(max=self.buffer.shape[1] - 1).view(-1, 1, 1).expand(-1, 1, self.buffer.shape[2])
        picked = self.buffer[:rows].gather(1, index)
        return torch.where((steps < self.lengths[:rows]).view(-1, 1, 1), picked, self.pad)

    def advance(self, rows: int) -> None:
        self.steps[:rows] += 1


class StaticStep:
    def __init__(
        self,
        talker: Any,
        store: StaticRows,
        rows: int,
        logits: TalkerLogits,
        predictor: BatchedCodePredictor,
        noise: tuple[torch.Tensor, torch.Tensor],
        text: RowText,
    ):
        self.rows = rows
        self._talker = talker
        self._logits, self._predictor = logits, predictor
        self._cache = store.view(rows)
        self._tokens, self._hidden, self._positions = store.tokens[:rows], store.hidden[:rows], store.positions[:rows]
        self._seen, self._generated, self._params = store.seen[:rows], store.generated[:rows], store.params[:rows]
        self._mask, self._position = store.mask[:rows], store.position
        self._predictor_noise, self._talker_noise = noise[0][:rows], noise[1][:rows]
        self._text = text
        self._additive = talker.config._attn_implementation == "eager"
        # Outputs, at fixed addresses.
        self.codes = torch.zeros(rows, 1 + predictor.steps, dtype=torch.long, device=store.tokens.device)
        self.next_tokens = torch.zeros_like(self._tokens)
        self.next_hidden = torch.zeros_like(self._hidden)

    def run(self, talker_features: Features = EVERY, predictor_features: Features = EVERY) -> None:
        """Eagerly, the features of the rows in the bucket skip work nobody needs; captured, the defaults (every
        processor) serve any mix of settings."""
        talker = self._talker
        first = talker.get_input_embeddings()(self._tokens.unsqueeze(1))
        prompt = torch.cat([self._hidden, first], dim=1)
        rest = self._predictor(prompt, self._params, self._predictor_noise, predictor_features)
        tables = talker.code_predictor.get_input_embeddings()
        embeds = torch.cat([first] + [tables[i](rest[:, i : i + 1]) for i in range(rest.shape[1])], dim=1)
        embeds = embeds.sum(1, keepdim=True) + self._text.inputs(self.rows)
        out = talker.model(
            inputs_embeds=embeds,
            attention_mask=self._attention_mask(embeds.dtype),
            position_ids=self._positions.view(1, -1, 1).expand(3, -1, 1),
            past_key_values=self._cache,
            use_cache=True,
            cache_position=self._position,
        )
        hidden = out.last_hidden_state
        logits = talker.codec_head(hidden)[:, -1, :].float()
        tokens = self._logits(logits, self._seen, self._generated, self._params, self._talker_noise, talker_features)
        self.codes.copy_(torch.cat([self._tokens.unsqueeze(1), rest], dim=1))
        self.next_tokens.copy_(tokens)
        self.next_hidden.copy_(hidden[:, -1:])

    def _attention_mask(self, dtype: torch.dtype) -> torch.Tensor:
        """(rows, 1, 1, max_len), the mask HF builds from a 2D padding mask for one query position: a 4D mask
        is taken as it is, so HF's own mask building (which reads values back) never runs."""
        attend = (self._mask != 0)[:, None, None, :]
        if not self._additive:
            return attend  # sdpa takes a boolean mask
        return torch.zeros(attend.shape, dtype=dtype, device=attend.device).masked_fill(~attend, torch.finfo(dtype).min)


class CompiledStep:
    """A StaticStep through torch.compile, as one graph (`fullgraph`: a break would be an error, not a slow
    path), specialised to `features`: the server's own sampling, or every processor (the defaults), which serves
    any mix exactly (under a CUDA graph, or when a bucket is first built for rows with settings of their own).
    A step asking for processors the compiled code lacks runs eagerly instead, so serving never waits for a
    compile (tens of seconds per bucket with inductor, which is why the engine builds every bucket at warm-up)."""

    def __init__(self, step: StaticStep, features: tuple[Features, Features], backend: str = "inductor"):
        self.rows = step.rows
        self.codes, self.next_tokens, self.next_hidden = step.codes, step.next_tokens, step.next_hidden
        self.features = features
        self._eager = step
        _allow_recompiles()
        # dynamic=False: each bucket gets code specialised to its shapes, as each gets a graph of its own.
        self._compiled = torch.compile(step.run, fullgraph=True, dynamic=False, backend=backend)

    def run(self, talker_features: Features = EVERY, predictor_features: Features = EVERY) -> None:
        if (talker_features, predictor_features) == self.features or self.features == (EVERY, EVERY):
            self._compiled(*self.features)
        else:
            self._eager.run(talker_features, predictor_features)


def _allow_recompiles(limit: int = 64) -> None:
    """Every bucket of every model size is one more compiled variant of the same function (`StaticStep.run`),
    and torch's default limit (8 variants, then an error under `fullgraph`) would turn compiling off for the
    later ones."""
    config: Any = torch._dynamo.config
    config.recompile_limit = max(config.recompile_limit, limit)
    config.accumulated_recompile_limit = max(config.accumulated_recompile_limit, 4 * limit)


class CapturedStep:
    """A StaticStep (or CompiledStep) recorded as a CUDA graph: `run()` replays it. The warm-up runs that capture
    needs write only the step's outputs and the KV of the current write column, which the real step writes again
    with the same values, so capturing in the middle of serving changes nothing."""

    def __init__(self, step: StaticStep | CompiledStep, pool: Any = None):
        self.rows = step.rows
        self.codes, self.next_tokens, self.next_hidden = step.codes, step.next_tokens, step.next_hidden
        self.graph = capture_graph(step.run, step.codes.device, pool)
        self.pool = self.graph.pool()

    def run(self, *_features: Features) -> None:
        self.graph.replay()


_WARM_UP_STREAMS: dict[torch.device, Any] = {}


def capture_graph(
    run: Callable[[], object], device: torch.device, pool: Any = None, stream: Any = None
) -> torch.cuda.CUDAGraph:
    """`run` recorded as a CUDA graph on `device` (in memory `pool`, a new one when None), after two runs on a
    side stream: lazy initialisation (cuBLAS and cuDNN handles, autotuning) stays out of the graph.

    `stream`: where to record (torch's one default capture stream when None). cuBLAS keeps a workspace per
    stream and a graph keeps the address of its capture stream's, so graphs that may replay at the same time
    (the step's and the chunk decode's, on two streams) must be recorded on different streams. The side
    stream is one per device: each stream that runs a GEMM holds a cuBLAS workspace for good."""
    with torch.cuda.device(device):
        caller = torch.cuda.current_stream()
        side = _WARM_UP_STREAMS.get(device)
        if side is None:
            side = _WARM_UP_STREAMS[device] = torch.cuda.Stream(device)
        side.wait_stream(caller)
        with torch.cuda.stream(side):
            for _ in range(2):
                run()
        caller.wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph, pool=pool, stream=stream):
                run()
        finally:  # a capture that fails at its end leaves the capture stream current otherwise
            torch.cuda.set_stream(caller)
    return graph
