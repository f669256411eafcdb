"""The prefill forward over fixed buffers, per (rows, width) bucket: the shape a CUDA graph can capture.

On a GPU an eager prefill is launch-bound: the talker's forward over a group's prompts is the same few hundred
kernels whatever their length, 28 to 40 ms on an H200 for the 1.7B talker (docs/benchmarks.md), most of a
first audio at c = 1. `StaticPrefill` runs that forward (the talker's model and codec head, the KV written into
buffers of its own) for `rows` prompts right-padded to `width` positions; `PrefillGraphs` keeps one per
batch-size bucket and width bucket (powers of two from 32, within `PREFILL_TOKENS` padded positions), captured
as CUDA graphs at warm-up, and serves a group whose padded shape fits one. A longer prompt or a larger group
prefills eagerly, as does a retry after a failure.

Under the causal mask a prompt's positions never attend to what follows them, so the padding (zeros, as the
eager prefill's) changes nothing a row keeps; on CPU the same class runs eagerly in the tests.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch

from .kv import KVLayer, PrefilledKV, RowsCache
from .static_step import bucket_for, buckets, capture_graph

log = logging.getLogger(__name__)

MIN_WIDTH = 32


def widths(max_len: int, tokens: int) -> list[int]:
    """Width buckets: powers of two from MIN_WIDTH, each below the cache's length and within `tokens`."""
    sizes, size = [], MIN_WIDTH
    while size < max_len and size <= tokens:
        sizes.append(size)
        size *= 2
    return sizes


class Buffers:
    """What every bucket's prefill reads and writes, for `tokens` padded positions: one flat buffer per tensor,
    each bucket viewing its first rows x width. Prefills run one at a time and their outputs are copied into
    the batch (or read) before the next, so they share them."""

    def __init__(self, talker: Any, tokens: int, device: torch.device, dtype: torch.dtype):
        config = talker.config
        self.tokens = tokens
        self.hidden_size = int(config.hidden_size)
        self.kv_heads = int(config.num_key_value_heads)
        self.head_dim = int(getattr(config, "head_dim", config.hidden_size // config.num_attention_heads))
        self.layers = int(config.num_hidden_layers)
        self.embeds = torch.zeros(tokens * self.hidden_size, dtype=dtype, device=device)
        size = tokens * self.kv_heads * self.head_dim
        self.keys = [torch.zeros(size, dtype=dtype, device=device) for _ in range(self.layers)]
        self.values = [torch.zeros(size, dtype=dtype, device=device) for _ in range(self.layers)]
        self.last = torch.zeros(tokens, dtype=torch.long, device=device)

    def kv(self, flat: torch.Tensor, rows: int, width: int) -> torch.Tensor:
        return flat[: rows * self.kv_heads * width * self.head_dim].view(rows, self.kv_heads, width, self.head_dim)


class StaticPrefill:
    """The talker's forward over `rows` prompts right-padded to `width`, from and into fixed buffers; the outputs
    are each row's last hidden state (rows, 1, D) and float32 logits (rows, V) at its last prompt position."""

    def __init__(self, talker: Any, buffers: Buffers, rows: int, width: int):
        self.rows, self.width = rows, width
        self._talker = talker
        device = buffers.embeds.device
        self.embeds = buffers.embeds[: rows * width * buffers.hidden_size].view(rows, width, buffers.hidden_size)
        keys = [buffers.kv(flat, rows, width) for flat in buffers.keys]
        values = [buffers.kv(flat, rows, width) for flat in buffers.values]
        self.kv = PrefilledKV([KVLayer(k, v) for k, v in zip(keys, values, strict=True)])
        self._cache = RowsCache(keys, values, rows)
        self.last = buffers.last[:rows]
        self._rows = torch.arange(rows, device=device)
        self._columns = torch.arange(width, device=device)
        self._positions = self._columns.view(1, 1, -1).expand(3, rows, -1)
        causal = torch.ones(width, width, dtype=torch.bool, device=device).tril()
        mask = causal.view(1, 1, width, width).expand(rows, 1, width, width)
        if talker.config._attn_implementation == "eager":  # an additive mask; sdpa takes a boolean one
            dtype = self.embeds.dtype
            mask = torch.zeros(mask.shape, dtype=dtype, device=device).masked_fill(~mask, torch.finfo(dtype).min)
        self._mask = mask
        self.hidden = torch.empty(0)
        self.logits = torch.empty(0)

    def load(self, prompts: Sequence[torch.Tensor]) -> None:
        """Each prompt (1, L, D) into its row, left-aligned, zeros after it (as the eager prefill pads: a value
        left by an earlier prompt, should it be infinite, would reach every position through the masked
        scores); each row's last position, 0 for the rows past the group (an earlier, wider bucket's would
        index past this width: on CUDA a device-side assert, fatal to the process)."""
        lengths = [prompt.shape[1] for prompt in prompts]
        self.embeds.zero_()
        for row, prompt in enumerate(prompts):
            self.embeds[row, : lengths[row]].copy_(prompt[0])
        last = [length - 1 for length in lengths] + [0] * (self.rows - len(prompts))
        self.last.copy_(torch.tensor(last, dtype=torch.long))

    def run(self) -> None:
        out = self._talker.model(
            inputs_embeds=self.embeds,
            attention_mask=self._mask,
            position_ids=self._positions,
            past_key_values=self._cache,
            use_cache=True,
            cache_position=self._columns,
        )
        hidden = out.last_hidden_state
        # The head over every position, as the library does at prefill (then HF takes the last one).
        head = self._talker.codec_head(hidden)
        self.logits = head[self._rows, self.last].float()
        self.hidden = hidden[self._rows, self.last].unsqueeze(1)


class CapturedPrefill:
    """A StaticPrefill recorded as a CUDA graph; `run()` replays it into the prefill's outputs."""

    def __init__(self, prefill: StaticPrefill, device: torch.device, pool: Any = None):
        self.graph = capture_graph(prefill.run, device, pool)
        self.pool = self.graph.pool()

    def run(self) -> None:
        self.graph.replay()


class PrefillGraphs:
    """Every (rows bucket, width bucket) prefill within `tokens` padded positions, captured (on CUDA) or eager."""

    def __init__(self, talker: Any, max_batch: int, max_len: int, tokens: int, capture: bool):
        parameter = next(talker.parameters())
        self.captured = capture
        self.max_batch = max_batch
        self.widths = widths(max_len, tokens)
        shapes = [(rows, width) for rows in buckets(max_batch) for width in self.widths if rows * width <= tokens]
        # As large as the largest bucket: 1 GB of KV at PREFILL_TOKENS positions for the 1.7B talker in bf16.
        self.buffers = Buffers(talker, max((r * w for r, w in shapes), default=0), parameter.device, parameter.dtype)
        self._prefills: dict[tuple[int, int], tuple[StaticPrefill, StaticPrefill | CapturedPrefill]] = {}
        pool = None
        with torch.inference_mode():
            for rows, width in shapes:
                prefill = StaticPrefill(talker, self.buffers, rows, width)
                runs: StaticPrefill | CapturedPrefill = prefill
                if capture:
                    runs = CapturedPrefill(prefill, parameter.device, pool)
                    pool = runs.pool  # one memory pool: prefills run one after another
                self._prefills[(rows, width)] = (prefill, runs)

    def __len__(self) -> int:
        return len(self._prefills)

    def forward(self, prompts: Sequence[torch.Tensor]) -> tuple[PrefilledKV, torch.Tensor, torch.Tensor] | None:
        """The prompts' forward if a bucket holds their padded shape: (their KV, last hidden states (G, 1, D),
        logits (G, V)), views of the buffers that the next prefill overwrites; None otherwise."""
        count, longest = len(prompts), max(prompt.shape[1] for prompt in prompts)
        if count > self.max_batch:
            return None
        width = next((size for size in self.widths if size >= longest), None)
        entry = None if width is None else self._prefills.get((bucket_for(count, self.max_batch), width))
        if entry is None:
            return None
        prefill, runs = entry
        prefill.load(prompts)
        runs.run()
        return prefill.kv, prefill.hidden[:count], prefill.logits[:count]
