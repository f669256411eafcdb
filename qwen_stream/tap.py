"""The forward hook that hands each new codec frame of each batch row to that row's sink.

One decode step of `model.talker` emits one frame: its forward output carries the 16 codes of the
previously sampled token as `output.hidden_states[1]`, shape (B, 16), or None at prefill. The hook is
installed once per loaded model; which sink owns which row is set per generate call with `route()`.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager
from typing import Protocol

import torch


class FrameSink(Protocol):
    """Per-request receiver of frames. `stopped` turns True once it wants no more (cancel, cap, EOS)."""

    @property
    def stopped(self) -> bool: ...

    def on_frame(self, codes: torch.Tensor) -> None: ...

    def on_eos(self) -> None: ...

    def on_error(self, error: BaseException) -> None:
        """This row's own handling of a frame failed: it must stop; the other rows go on."""

    def on_stopped(self) -> None:
        """Called at each step while the row is stopped (first at the step it stopped): it may end now,
        without waiting for the rest of its batch. Must be idempotent."""


class FrameTap:
    def __init__(self, talker: torch.nn.Module, eos_id: int):
        self._eos_id = eos_id
        self._rows: Sequence[FrameSink] = ()
        self.steps = 0  # talker decode steps seen, all rows together: proof that work stopped or went on
        self._handle = talker.register_forward_hook(self._hook)

    @contextmanager
    def route(self, sinks: Sequence[FrameSink]):
        """Row i of the next generate call goes to sinks[i] while the context is open."""
        if self._rows:
            raise RuntimeError("a generation is already routed through this model")
        self._rows = list(sinks)
        try:
            yield
        finally:
            self._rows = ()

    def count_step(self) -> None:
        """A talker step made outside HF generate (the continuous loop's runner, which the hook does not
        see): `steps` counts the model's steps whichever path made them."""
        self.steps += 1

    def remove(self) -> None:
        self._handle.remove()

    def _hook(self, module, args, output) -> None:
        codes = output.hidden_states[1] if output.hidden_states is not None else None
        if codes is None:
            return
        self.steps += 1
        if not self._rows:
            return
        # One device->host copy of codebook 0 per step, for the EOS test of every row.
        first = codes[:, 0].tolist()
        for row, sink in enumerate(self._rows):
            if not sink.stopped:
                try:
                    if first[row] == self._eos_id:
                        sink.on_eos()
                    else:
                        sink.on_frame(codes[row])
                except Exception as error:  # one row's failure (its decoder, say) is that row's alone
                    sink.on_error(error)
            if sink.stopped:
                try:
                    sink.on_stopped()
                except Exception as error:
                    sink.on_error(error)


def stopped_rows(sinks: Sequence[FrameSink], device: torch.device) -> torch.Tensor:
    return torch.tensor([sink.stopped for sink in sinks], dtype=torch.bool, device=device)
