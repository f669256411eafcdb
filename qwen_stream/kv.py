"""Where the runner's rows live between steps: the talker's KV cache plus each row's small state.

Rows are right-aligned in the cache: every row writes the same column at each step and a row's left
padding is masked. Two layouts:

- `DynamicRows`: a DynamicCache whose tensors grow one column per step; leaving rows are compacted away
  (batch index = order of joining) and columns no row attends to are trimmed. Simple and tight on CPU.
- `StaticRows`: preallocated `max_batch x max_len` buffers (a StaticCache); batch index = slot, a free slot is
  a masked row that still runs (fixed shapes, the precondition for CUDA graphs). When the write column
  reaches `max_len`, every row shifts left by the padding all rows share; a joining prompt longer than the
  history so far shifts every row right. Attention spans all `max_len` columns at every step.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers.cache_utils import Cache, DynamicCache, StaticCache

from .sampling import RowParams


@dataclass
class Joining:
    """One row just prefilled alone (batch of one), in the layout of `DynamicRows`."""

    cache: DynamicCache
    positions: torch.Tensor  # (1,) the rope position of the row's next token = its prompt length
    tokens: torch.Tensor  # (1,) the codebook-0 token sampled at prefill
    hidden: torch.Tensor  # (1, 1, D) the last hidden state: the code predictor's first input
    seen: torch.Tensor  # (1, V) bool: tokens sampled so far, for the repetition penalty
    generated: torch.Tensor  # (1,) tokens sampled so far, for min_new_tokens
    params: torch.Tensor  # (1, RowParams.WIDTH) the row's sampling settings (sampling.py)

    @property
    def length(self) -> int:
        return self.cache.get_seq_length()


_PER_ROW = ("positions", "tokens", "hidden", "seen", "generated", "params")


def _kv(tensor: torch.Tensor | None) -> torch.Tensor:
    assert tensor is not None, "a filled cache layer holds tensors"
    return tensor


class DynamicRows:
    compacts = True

    def __init__(self, first: Joining):
        self.cache: Cache = first.cache
        self.mask = torch.ones(1, first.length, dtype=torch.long, device=first.tokens.device)
        self.positions, self.tokens, self.hidden = first.positions, first.tokens, first.hidden
        self.seen, self.generated, self.params = first.seen, first.generated, first.params

    @property
    def length(self) -> int:
        return int(self.mask.shape[1])

    def add(self, row: Joining, slot: int) -> int:
        width = max(self.length, row.length)
        grow, pad = width - self.length, width - row.length
        for ours, theirs in zip(self.cache.layers, row.cache.layers, strict=True):
            ours.keys = torch.cat([F.pad(_kv(ours.keys), (0, 0, grow, 0)), F.pad(_kv(theirs.keys), (0, 0, pad, 0))])
            ours.values = torch.cat(
                [F.pad(_kv(ours.values), (0, 0, grow, 0)), F.pad(_kv(theirs.values), (0, 0, pad, 0))]
            )
        row_mask = torch.ones(1, row.length, dtype=torch.long, device=self.mask.device)
        self.mask = torch.cat([F.pad(self.mask, (grow, 0)), F.pad(row_mask, (pad, 0))])
        for name in _PER_ROW:
            setattr(self, name, torch.cat([getattr(self, name), getattr(row, name)]))
        return self.mask.shape[0] - 1

    def remove(self, indices: Collection[int]) -> None:
        gone = set(indices)
        keep = [i for i in range(self.mask.shape[0]) if i not in gone]
        index = torch.tensor(keep, dtype=torch.long, device=self.mask.device)
        mask = self.mask.index_select(0, index)
        trim = int(mask.any(dim=0).long().argmax())  # the columns only the departed rows' histories needed
        self.mask = mask[:, trim:]
        for layer in self.cache.layers:
            layer.keys = _kv(layer.keys).index_select(0, index)[:, :, trim:]
            layer.values = _kv(layer.values).index_select(0, index)[:, :, trim:]
        for name in _PER_ROW:
            setattr(self, name, getattr(self, name).index_select(0, index))

    def next_column(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The attention mask for a step (each row's history plus the new column) and the cache position."""
        mask = F.pad(self.mask, (0, 1), value=1)
        return mask, torch.tensor([self.length], device=mask.device)

    def commit(self, mask: torch.Tensor, hidden: torch.Tensor, tokens: torch.Tensor) -> None:
        self.mask = mask
        _advance(self, hidden, tokens)


class StaticRows:
    compacts = False

    def __init__(self, first: Joining, slot: int, max_batch: int, max_len: int, config):
        layer = _kv(first.cache.layers[0].keys)
        device, dtype = layer.device, layer.dtype
        self.max_len = max_len
        self.cache = StaticCache(config=config, max_cache_len=max_len)
        self.cache.early_initialization(max_batch, layer.shape[1], layer.shape[3], dtype, device)
        self.mask = torch.zeros(max_batch, max_len, dtype=torch.long, device=device)
        self.write = 0  # the column every row writes at the next step; histories end just before it

        def rows_like(tensor: torch.Tensor) -> torch.Tensor:
            return torch.zeros((max_batch, *tensor.shape[1:]), dtype=tensor.dtype, device=device)

        self.positions, self.tokens, self.hidden = (rows_like(getattr(first, n)) for n in _PER_ROW[:3])
        self.seen, self.generated = rows_like(first.seen), rows_like(first.generated)
        self.params = RowParams.idle(device).expand(max_batch, -1).clone()  # free slots: greedy, finite
        self.add(first, slot)

    @property
    def length(self) -> int:
        """Columns in use: the write column (padding that all rows share on the left included)."""
        return self.write

    def add(self, row: Joining, slot: int) -> int:
        if row.length > self.write:
            self._shift(row.length - self.write)
        start = self.write - row.length
        for ours, theirs in zip(self.cache.layers, row.cache.layers, strict=True):
            _kv(ours.keys)[slot, :, start : self.write] = _kv(theirs.keys)[0]
            _kv(ours.values)[slot, :, start : self.write] = _kv(theirs.values)[0]
        self.mask[slot] = 0
        self.mask[slot, start : self.write] = 1
        for name in _PER_ROW:
            getattr(self, name)[slot] = getattr(row, name)[0]
        return slot

    def remove(self, indices: Collection[int]) -> None:
        self.mask[sorted(indices)] = 0
        if not bool(self.mask.any()):
            self.write = 0

    def next_column(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.write == self.max_len:
            used = self.mask.any(dim=0)
            shared = int(used.long().argmax()) if bool(used.any()) else self.write
            if shared == 0:
                raise RuntimeError("a row's history fills the whole static cache")  # rows are capped to fit
            self._shift(-shared)
        # Free slots attend to their own new column only: finite outputs, which nobody reads.
        self.mask[:, self.write] = 1
        return self.mask, torch.tensor([self.write], device=self.mask.device)

    def commit(self, mask: torch.Tensor, hidden: torch.Tensor, tokens: torch.Tensor) -> None:
        free = ~mask[:, : self.write].any(dim=1)
        self.mask[free, self.write] = 0  # a free slot keeps no history
        self.write += 1
        _advance(self, hidden, tokens)

    def _shift(self, columns: int) -> None:
        """Moves every row's history `columns` to the right (negative: to the left); the write column too."""
        for layer in self.cache.layers:
            for tensor in (_kv(layer.keys), _kv(layer.values)):
                tensor.copy_(torch.roll(tensor, columns, dims=2))
        self.mask.copy_(torch.roll(self.mask, columns, dims=1))
        if columns > 0:
            self.mask[:, :columns] = 0
        else:
            self.mask[:, columns:] = 0
        self.write += columns


def _advance(rows: DynamicRows | StaticRows, hidden: torch.Tensor, tokens: torch.Tensor) -> None:
    rows.hidden, rows.tokens = hidden, tokens
    rows.positions = rows.positions + 1
    rows.generated = rows.generated + 1
    rows.seen.scatter_(1, tokens.unsqueeze(1), True)
