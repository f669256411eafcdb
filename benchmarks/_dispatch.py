"""Counting the torch operators a piece of code dispatches: on a GPU, nearly each is a kernel launch, which is
what an eager (launch-bound) stage costs; on CPU it is the same count, so it can be measured here."""

from __future__ import annotations

from torch.utils._python_dispatch import TorchDispatchMode


class Dispatched(TorchDispatchMode):
    """`with Dispatched() as ops: ...`, then `ops.count`. Counting slows every call: time apart from it."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += 1
        return func(*args, **(kwargs or {}))
