"""Where the runner's rows live between steps: the talker's KV cache plus each row's small state.

Rows are right-aligned in the cache: every row writes the same column at each step and a row's left
padding is masked. Two layouts:

- `DynamicRows`: a DynamicCache whose tensors grow one column per step; leaving rows are compacted away
  (batch index = order of joining) and columns no row attends to are trimmed. Simple and tight on CPU.
- `StaticRows`: preallocated `max_batch x max_len` buffers; a free batch index is a masked row that still runs
  (fixed shapes and addresses, the precondition for CUDA graphs). A step runs over the rows [0, bucket) that
  cover every row in use, through views of the same buffers (`RowsCache`), and every per-step update is in
  place; a row may move to a lower free index (`move`) so that the bucket shrinks. When the write column
  reaches `max_len`, every row shifts left by the padding all rows share; a joining prompt longer than the
  history so far shifts every row right. Attention spans all `max_len` columns at every step.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers.cache_utils import Cache, DynamicCache

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
    def __init__(self, first: Joining):
        self.cache: Cache = first.cache
        self.mask = torch.ones(1, first.length, dtype=torch.long, device=first.tokens.device)
        self.positions, self.tokens, self.hidden = first.positions, first.tokens, first.hidden
        self.seen, self.generated, self.params = first.seen, first.generated, first.params

    @property
    def length(self) -> int:
        return int(self.mask.shape[1])

    def add(self, row: Joining) -> int:
        """Appends the row; returns its batch index."""
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


class RowsCache:
    """The talker's KV for the batch rows [0, rows) of `StaticRows`' buffers, as views: the one method the talker's
    attention layers call on a cache. Writes go into the shared buffers in place, so a captured graph that holds
    these views sees every later change of the buffers, and one set of buffers serves every bucket size."""

    def __init__(self, keys: list[torch.Tensor], values: list[torch.Tensor], rows: int):
        self.keys = [k[:rows] for k in keys]
        self.values = [v[:rows] for v in values]

    def update(self, keys: torch.Tensor, values: torch.Tensor, layer_idx: int, cache_kwargs: dict):
        position = cache_kwargs["cache_position"]
        self.keys[layer_idx].index_copy_(2, position, keys)  # what HF's StaticLayer does
        self.values[layer_idx].index_copy_(2, position, values)
        return self.keys[layer_idx], self.values[layer_idx]


class StaticRows:
    def __init__(self, first: Joining, index: int, max_batch: int, max_len: int):
        device = first.tokens.device
        self.max_batch, self.max_len = max_batch, max_len
        layers = first.cache.layers
        self.keys = [_kv(layer.keys).new_zeros(_rows_shape(layer, max_batch, max_len)) for layer in layers]
        self.values = [_kv(layer.values).new_zeros(_rows_shape(layer, max_batch, max_len)) for layer in layers]
        self.mask = torch.zeros(max_batch, max_len, dtype=torch.long, device=device)
        self.live = torch.zeros(max_batch, dtype=torch.long, device=device)  # 1: a row is at that batch index
        self.position = torch.zeros(1, dtype=torch.long, device=device)  # the write column, as the step reads it
        self.write = 0  # the column every row writes at the next step; histories end just before it
        self._rows: set[int] = set()

        def rows_like(tensor: torch.Tensor) -> torch.Tensor:
            return torch.zeros((max_batch, *tensor.shape[1:]), dtype=tensor.dtype, device=device)

        self.positions, self.tokens, self.hidden = (rows_like(getattr(first, n)) for n in _PER_ROW[:3])
        self.seen, self.generated = rows_like(first.seen), rows_like(first.generated)
        self.params = RowParams.idle(device).expand(max_batch, -1).clone()  # free rows: greedy, finite
        self.add(first, index)

    @property
    def length(self) -> int:
        """Columns in use: the write column (padding that all rows share on the left included)."""
        return self.write

    @property
    def rows_in_use(self) -> int:
        """One past the highest batch index in use: a step over fewer rows would leave one out."""
        return max(self._rows) + 1 if self._rows else 0

    def view(self, rows: int) -> RowsCache:
        return RowsCache(self.keys, self.values, rows)

    def add(self, row: Joining, index: int) -> int:
        if row.length > self.write:
            self._shift(row.length - self.write)
        start = self.write - row.length
        for ours, theirs in zip(self.keys, (layer.keys for layer in row.cache.layers), strict=True):
            ours[index, :, start : self.write] = _kv(theirs)[0]
        for ours, theirs in zip(self.values, (layer.values for layer in row.cache.layers), strict=True):
            ours[index, :, start : self.write] = _kv(theirs)[0]
        self.mask[index] = 0
        self.mask[index, start : self.write] = 1
        self.live[index] = 1
        self._rows.add(index)
        for name in _PER_ROW:
            getattr(self, name)[index] = getattr(row, name)[0]
        return index

    def move(self, source: int, destination: int) -> None:
        """The row at batch index `source` continues at the free index `destination`, unchanged."""
        assert destination not in self._rows and source in self._rows
        for tensor in (*self.keys, *self.values, self.mask, *(getattr(self, name) for name in _PER_ROW)):
            tensor[destination].copy_(tensor[source])
        self.live[destination] = 1
        self._rows.add(destination)
        self.remove([source])

    def remove(self, indices: Collection[int]) -> None:
        gone = sorted(indices)
        self.mask[gone] = 0
        self.live[gone] = 0
        self._rows.difference_update(gone)
        if not self._rows:
            self.write = 0

    def next_column(self) -> torch.Tensor:
        """Opens the write column; returns the mask (max_batch, max_len). Reads a value back to the host only
        when the buffer is full and every row shifts left (once per `max_len` steps at most)."""
        if self.write == self.max_len:
            used = self.mask.any(dim=0)
            shared = int(used.long().argmax()) if bool(used.any()) else self.write
            if shared == 0:
                raise RuntimeError("a row's history fills the whole static cache")  # rows are capped to fit
            self._shift(-shared)
        # Free slots attend to their own new column only: finite outputs, which nobody reads.
        self.mask[:, self.write] = 1
        self.position.fill_(self.write)
        return self.mask

    def commit(self, rows: int, hidden: torch.Tensor, tokens: torch.Tensor) -> None:
        """The step over rows [0, rows) made `hidden` (rows, 1, D) and sampled `tokens` (rows,): in place, so the
        buffers keep their addresses."""
        self.mask[:, self.write] = self.live  # a free slot keeps no history
        self.write += 1
        self.hidden[:rows].copy_(hidden)
        self.tokens[:rows].copy_(tokens)
        self.positions[:rows] += 1
        self.generated[:rows] += 1
        self.seen[:rows].scatter_(1, tokens.unsqueeze(1), True)

    def _shift(self, columns: int) -> None:
        """Moves every row's history `columns` to the right (negative: to the left); the write column too."""
        for tensor in (*self.keys, *self.values):
            tensor.copy_(torch.roll(tensor, columns, dims=2))
        self.mask.copy_(torch.roll(self.mask, columns, dims=1))
        if columns > 0:
            self.mask[:, :columns] = 0
        else:
            self.mask[:, columns:] = 0
        self.write += columns


def _rows_shape(layer, max_batch: int, max_len: int) -> tuple[int, ...]:
    _, heads, _, dim = _kv(layer.keys).shape
    return (max_batch, heads, max_len, dim)


def _advance(rows: DynamicRows, hidden: torch.Tensor, tokens: torch.Tensor) -> None:
    rows.hidden, rows.tokens = hidden, tokens
    rows.positions = rows.positions + 1
    rows.generated = rows.generated + 1
    rows.seen.scatter_(1, tokens.unsqueeze(1), True)
