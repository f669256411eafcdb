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

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from transformers.cache_utils import Cache, DynamicCache

from .sampling import RowParams


@dataclass
class KVLayer:
    keys: torch.Tensor
    values: torch.Tensor


@dataclass
class PrefilledKV:
    """A static prefill's KV (static_prefill.py) as `Joining` reads a cache: `.layers[i].keys` and `.values`,
    (rows, heads, width, dim) views of buffers that the next prefill overwrites."""

    layers: list[KVLayer]


@dataclass
class Joining:
    """Rows just prefilled together (a batch of G, right-padded): row g's history is the columns
    [0, lengths[g]) of `cache`; the rest is its per-row state, (G, ...)."""

    cache: Any  # a DynamicCache or a PrefilledKV: what is read is `.layers[i].keys` and `.values`
    lengths: list[int]
    positions: torch.Tensor  # (G,) the rope position of each row's next token = its prompt length
    tokens: torch.Tensor  # (G,) the codebook-0 token sampled at prefill
    hidden: torch.Tensor  # (G, 1, D) each row's last hidden state: the code predictor's first input
    seen: torch.Tensor  # (G, V) bool: tokens sampled so far, for the repetition penalty
    generated: torch.Tensor  # (G,) tokens sampled so far, for min_new_tokens
    params: torch.Tensor  # (G, RowParams.WIDTH) each row's sampling settings (sampling.py)

    @property
    def length(self) -> int:
        """Columns of a single row's history (the dynamic layout takes rows one at a time)."""
        assert len(self.lengths) == 1, "a group's rows have lengths of their own"
        return self.lengths[0]

    def row(self, g: int) -> Joining:
        """Row g alone, with its own copy of its KV columns (itself when it is alone)."""
        if len(self.lengths) == 1:
            return self
        length = self.lengths[g]
        cache = DynamicCache()
        for index, layer in enumerate(self.cache.layers):
            cache.update(_kv(layer.keys)[g : g + 1, :, :length], _kv(layer.values)[g : g + 1, :, :length], index)
        state = {name: getattr(self, name)[g : g + 1] for name in _PER_ROW}
        return Joining(cache, [length], **state)


_PER_ROW = ("positions", "tokens", "hidden", "seen", "generated", "params")


def _kv(tensor: torch.Tensor | None) -> torch.Tensor:
    assert tensor is not None, "a filled cache layer holds tensors"
    return tensor


class DynamicRows:
    """Takes rows one at a time (`Joining.row`)."""

    def __init__(self, first: Joining):
        self.cache: Cache = first.cache
        self.mask = torch.ones(1, first.length, dtype=torch.long, device=first.tokens.device)
        self.positions, self.tokens, self.hidden = first.positions, first.tokens, first.hidden
        self.seen, self.generated, self.params = first.seen, first.generated, first.params

    @property
    def length(self) -> int:
        return int(self.mask.shape[1])

    def add(self, row: Joining) -> int:
        """Appends the row; returns its batch index. Every new tensor is made before any is stored, so a
        failure on the way (out of memory) leaves the rows as they were."""
        width = max(self.length, row.length)
        grow, pad = width - self.length, width - row.length

        def joined(ours: torch.Tensor | None, theirs: torch.Tensor | None) -> torch.Tensor:
            return torch.cat([F.pad(_kv(ours), (0, 0, grow, 0)), F.pad(_kv(theirs), (0, 0, pad, 0))])

        layers = [
            (joined(ours.keys, theirs.keys), joined(ours.values, theirs.values))
            for ours, theirs in zip(self.cache.layers, row.cache.layers, strict=True)
        ]
        row_mask = torch.ones(1, row.length, dtype=torch.long, device=self.mask.device)
        mask = torch.cat([F.pad(self.mask, (grow, 0)), F.pad(row_mask, (pad, 0))])
        state = {name: torch.cat([getattr(self, name), getattr(row, name)]) for name in _PER_ROW}
        for layer, (keys, values) in zip(self.cache.layers, layers, strict=True):
            layer.keys, layer.values = keys, values
        self.mask = mask
        for name, tensor in state.items():
            setattr(self, name, tensor)
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
    def __init__(self, like: Joining, max_batch: int, max_len: int):
        """Empty buffers for `max_batch` rows of `max_len` positions, shaped and typed like `like`'s rows."""
        device = like.tokens.device
        self.max_batch, self.max_len = max_batch, max_len
        layers = like.cache.layers
        self.keys = [_kv(layer.keys).new_zeros(_rows_shape(layer, max_batch, max_len)) for layer in layers]
        self.values = [_kv(layer.values).new_zeros(_rows_shape(layer, max_batch, max_len)) for layer in layers]
        self.mask = torch.zeros(max_batch, max_len, dtype=torch.long, device=device)
        # What a shift copies through (one layer's keys or values, then the mask), allocated now: a shift then
        # allocates nothing, so it cannot run out of memory half-way and leave some layers shifted.
        self._scratch = {tensor.shape: torch.empty_like(tensor) for tensor in (*self.keys, *self.values)}
        self._mask_scratch = torch.empty_like(self.mask)
        self.live = torch.zeros(max_batch, dtype=torch.long, device=device)  # 1: a row is at that batch index
        self.position = torch.zeros(1, dtype=torch.long, device=device)  # the write column, as the step reads it
        self.write = 0  # the column every row writes at the next step; histories end just before it
        self._rows: set[int] = set()

        def rows_like(tensor: torch.Tensor) -> torch.Tensor:
            return torch.zeros((max_batch, *tensor.shape[1:]), dtype=tensor.dtype, device=device)

        self.positions, self.tokens, self.hidden = (rows_like(getattr(like, n)) for n in _PER_ROW[:3])
        self.seen, self.generated = rows_like(like.seen), rows_like(like.generated)
        self.params = RowParams.idle(device).expand(max_batch, -1).clone()  # free rows: greedy, finite

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

    def add(self, rows: Joining, indices: Sequence[int]) -> None:
        """Row g of `rows` joins at the free batch index `indices[g]`, right-aligned at the write column. A
        fixed number of copies for the whole group (one gather and one scatter per layer, not one per row
        and layer): on a GPU each is a kernel launch, which is what a joining row costs there."""
        assert len(indices) == len(rows.lengths) and not self._rows.intersection(indices)
        longest = max(rows.lengths)
        if longest > self.write:
            self._shift(longest - self.write)
        source_rows: list[int] = []
        source_columns: list[int] = []
        rows_to: list[int] = []
        columns_to: list[int] = []
        for g, (index, length) in enumerate(zip(indices, rows.lengths, strict=True)):
            source_rows += [g] * length
            source_columns += range(length)
            rows_to += [index] * length
            columns_to += range(self.write - length, self.write)
        device = self.mask.device
        # One host-to-device copy for the four index lists.
        source_rows_t, source_columns_t, rows_to_t, columns_to_t = torch.tensor(
            [source_rows, source_columns, rows_to, columns_to], dtype=torch.long
        ).to(device)
        # Only free rows' buffers are written until the mask admits them, so a failure on the way (out of
        # memory) leaves the live rows as they were.
        for ours, layer in zip(self.keys, rows.cache.layers, strict=True):
            ours[rows_to_t, :, columns_to_t] = _kv(layer.keys)[source_rows_t, :, source_columns_t]
        for ours, layer in zip(self.values, rows.cache.layers, strict=True):
            ours[rows_to_t, :, columns_to_t] = _kv(layer.values)[source_rows_t, :, source_columns_t]
        index_t = torch.tensor(list(indices), dtype=torch.long).to(device, non_blocking=True)
        for name in _PER_ROW:
            getattr(self, name)[index_t] = getattr(rows, name)
        self.mask[index_t] = 0
        self.mask[rows_to_t, columns_to_t] = 1
        self.live[index_t] = 1
        self._rows.update(indices)

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
        """Moves every row's history `columns` to the right (negative: to the left); the write column too. The
        columns it vacates are masked (their keys and values are left as they were: nobody attends to them)."""
        if columns == 0:
            return
        width = self.max_len - abs(columns)
        # Column ranges: what moves (source) and where it lands (target), the same width.
        source = slice(0, width) if columns > 0 else slice(-columns, self.max_len)
        target = slice(columns, self.max_len) if columns > 0 else slice(0, width)
        for tensor in (*self.keys, *self.values):
            scratch = self._scratch[tensor.shape]
            scratch.copy_(tensor)
            tensor[:, :, target].copy_(scratch[:, :, source])
        self._mask_scratch.copy_(self.mask)
        self.mask.zero_()
        self.mask[:, target].copy_(self._mask_scratch[:, source])
        self.write += columns


def _rows_shape(layer, max_batch: int, max_len: int) -> tuple[int, ...]:
    _, heads, _, dim = _kv(layer.keys).shape
    return (max_batch, heads, max_len, dim)


def _advance(rows: DynamicRows, hidden: torch.Tensor, tokens: torch.Tensor) -> None:
    rows.hidden, rows.tokens = hidden, tokens
    rows.positions = rows.positions + 1
    rows.generated = rows.generated + 1
    rows.seen.scatter_(1, tokens.unsqueeze(1), True)
