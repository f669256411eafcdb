"""The carried chunk decode over fixed buffers, captured as one CUDA graph per (rows, frames).

On a GPU the 12 Hz decoder's chunk is several hundred small kernels, so it is launch-bound: 24 to 47 ms per
chunk on an H200 whatever its length (docs/benchmarks.md), more than a whole talker step. Carried decoding
(carried_decode.py) gives a chunk fixed shapes: its frames and fixed-size states. `StaticChunk` runs
`CarriedDecoder.run` for `rows` rows of `frames` frames from buffers of its own, so a graph recorded once
replays it; `ChunkGraphs` keeps one per batch-size bucket and chunk length (1 to chunk_size frames: the first
chunks, the steady ones and the tails) and serves a decode of those shapes, its rows padded up to the bucket.
Anything else (an ICL reference priming a state, a model warmed up without them) decodes eagerly.

On CPU the same `StaticChunk` runs eagerly (`capture=False`), which is how the tests check the buffer logic;
the graphs themselves are checked against it on CUDA.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterable, Sequence
from typing import Any

import torch

from .carried_decode import CarriedDecoder, DecoderState
from .static_step import capture_graph

log = logging.getLogger(__name__)


class Inputs:
    """Input buffers for up to `rows` rows: each chunk shape's StaticChunk reads views of its first rows (chunks
    run one at a time, so they share them; the states are 5 MB a row at real size in float32)."""

    def __init__(self, carried: CarriedDecoder, rows: int):
        self.rows = rows
        self.starts = torch.zeros(rows, dtype=torch.long, device=carried.device)
        self.states = [empty.expand(rows, *empty.shape[1:]).clone() for empty in carried.empty_state()]
        self.codes: dict[int, torch.Tensor] = {}  # per chunk length

    def codes_for(self, frames: int) -> torch.Tensor:
        if frames not in self.codes:
            self.codes[frames] = torch.zeros(self.rows, frames, 16, dtype=torch.long, device=self.starts.device)
        return self.codes[frames]


class StaticChunk:
    """`CarriedDecoder.run` for `rows` rows of `frames` frames, reading its inputs from fixed buffers. A padding
    row (past the rows of a call) keeps whatever it last held: rows never mix, and its output is not read."""

    def __init__(self, carried: CarriedDecoder, rows: int, frames: int, inputs: Inputs | None = None):
        self.rows, self.frames = rows, frames
        self._carried = carried
        inputs = inputs or Inputs(carried, rows)
        self.codes = inputs.codes_for(frames)[:rows]
        self.starts = inputs.starts[:rows]
        self.states = [buffer[:rows] for buffer in inputs.states]
        # Outputs: a captured run's are at fixed addresses, which every replay writes again.
        self.wav = torch.empty(0)
        self.new: list[torch.Tensor] = []

    def load(self, codes: torch.Tensor, states: Sequence[DecoderState]) -> None:
        """The call's rows into the first len(states) rows of the buffers: one copy per carried tensor."""
        count = len(states)
        self.codes[:count].copy_(codes)
        self.starts[:count].copy_(torch.tensor([state.frames for state in states], dtype=torch.long))
        empty = self._carried.empty_state()
        for index, buffer in enumerate(self.states):
            rows = [empty[index] if state.tensors is None else state.tensors[index] for state in states]
            torch.cat(rows, out=buffer[:count])

    def run(self) -> None:
        wav, new = self._carried.run(self.codes, self.starts, self.states)
        # Compact copies (inside the graph when captured): views would keep each layer's whole activations
        # allocated in the graphs' pool for good, several times the states' size.
        self.wav, self.new = wav, [tensor.clone() for tensor in new]


class CapturedChunk:
    """A StaticChunk recorded as a CUDA graph; `run()` replays it into the chunk's outputs."""

    def __init__(self, chunk: StaticChunk, device: torch.device, pool: Any = None, stream: Any = None):
        self.graph = capture_graph(chunk.run, device, pool, stream)
        self.pool = self.graph.pool()

    def run(self) -> None:
        self.graph.replay()


class ChunkGraphs:
    """The chunk decodes of one decoder for every (bucket, frames) given, captured (on CUDA) or eager."""

    def __init__(self, carried: CarriedDecoder, buckets: Iterable[int], frames: Iterable[int], capture: bool):
        self.buckets = sorted(set(buckets))
        self.captured = capture
        self.device = carried.device
        self._chunks: dict[tuple[int, int], tuple[StaticChunk, StaticChunk | CapturedChunk]] = {}
        # Replays and the copies out of their outputs are one at a time, whichever thread decodes; `_done` is
        # when the last call's copies were queued, so a call on another stream never overwrites them first.
        self._lock = threading.Lock()
        self._done: torch.cuda.Event | None = None
        pool = None
        # Recorded on a stream of their own: cuBLAS's workspace is per stream, and these graphs replay while the
        # step's (recorded on torch's default capture stream) replay on another (static_step.capture_graph).
        # High priority: those streams come from another pool than the default capture stream's.
        stream = torch.cuda.Stream(self.device, priority=-1) if capture else None
        with torch.inference_mode():
            inputs = Inputs(carried, self.buckets[-1])
            for count in self.buckets:
                for length in sorted(set(frames)):
                    chunk = StaticChunk(carried, count, length, inputs)
                    runs: StaticChunk | CapturedChunk = chunk
                    if capture:
                        runs = CapturedChunk(chunk, self.device, pool, stream)
                        pool = runs.pool  # one memory pool: the decodes replay one after another
                    self._chunks[(count, length)] = (chunk, runs)

    def __len__(self) -> int:
        return len(self._chunks)

    @torch.inference_mode()
    def decode(
        self, codes: torch.Tensor, states: Sequence[DecoderState]
    ) -> tuple[torch.Tensor, list[DecoderState]] | None:
        """As CarriedDecoder.decode, for a shape it holds: codes (B, T, 16) and B states; None otherwise."""
        count, frames = codes.shape[0], codes.shape[1]
        bucket = next((size for size in self.buckets if size >= count), None)
        entry = self._chunks.get((bucket, frames)) if bucket is not None else None
        if entry is None:
            return None
        chunk, runs = entry
        with self._lock, _on(self.device):
            if self._done is not None:
                torch.cuda.current_stream(self.device).wait_event(self._done)
            chunk.load(codes, states)
            runs.run()
            # Copied out of the outputs, which the next call writes again: each row keeps its own state.
            wav = chunk.wav[:count].clone()
            carried = [tensor[:count].clone() for tensor in chunk.new]
            if self.captured:
                self._done = torch.cuda.Event()
                self._done.record(torch.cuda.current_stream(self.device))
        return wav, CarriedDecoder.split(carried, list(states), frames)


def _on(device: torch.device) -> Any:
    """The device current while a graph replays (it replays on the current device's current stream)."""
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


def capture_chunk_graphs(carried: CarriedDecoder, buckets: Iterable[int], chunk_size: int) -> ChunkGraphs:
    """Captures the chunk decodes a stream with `chunk_size` makes (every length 1..chunk_size) for every
    bucket, and has `carried` replay them from now on. Raises if capturing fails; `carried` is then unchanged."""
    graphs = ChunkGraphs(carried, buckets, range(1, chunk_size + 1), capture=True)
    carried.graphs = graphs
    log.info("captured %d CUDA graphs of the chunk decode", len(graphs))
    return graphs
