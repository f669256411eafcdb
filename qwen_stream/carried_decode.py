"""Streaming decode with carried state: each chunk runs the 12 Hz decoder on its new frames only.

The decoder (qwen-tts' Qwen3TTSTokenizerV2Decoder) is causal end to end: stride-1 convolutions padded on the
left only, transposed convolutions whose output block t depends on input frames t-1 and t, a transformer with
sliding-window causal attention, and per-frame or per-sample layers in between. So instead of decoding a
window of context + new frames at every chunk (decoder.py's sliding window), a row keeps, between chunks, what
each layer needs from the past: the last `kernel - 1` inputs of every convolution, the last input frame of
every transposed convolution, and the transformer's keys and values over its window. A chunk then costs its
own frames only, and its samples are those of a one-shot decode of the whole utterance (up to float rounding):
zeros as the first state are exactly the convolutions' left padding, and an empty history is exactly the
start of the utterance.

`CarriedDecoder.decode(codes (B, T, 16), states)` decodes one chunk for B rows at once (rows at different
points of their utterances share the call: each row's positions and history are its own) and returns their
waveforms and new states; the states passed in are not changed, so a failed call can be retried.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from .captured_decode import ChunkGraphs

# Frames of context the sample-rate stack needs to make a frame's samples (to float rounding): its receptive
# field. Measured on random weights (kernels and dilations are architectural, the same in every checkpoint):
# cropping with 4 frames leaves 4e-5 error, with 5 frames 2e-7 (float noise); 6 keeps a margin. The window
# decode runs the stack on `keep` + this many frames; so does priming a carried state.
CONV_CONTEXT_FRAMES = 6
_NO_POSITION = -(2**30)  # a history slot not filled yet: too far back for any query's window


def _empty_like(tensor: torch.Tensor) -> torch.Tensor:
    """A carried tensor's value before any frame: no history position, or zeros."""
    if tensor.dtype == torch.long:  # the transformer's history positions
        return torch.full_like(tensor, _NO_POSITION)
    return torch.zeros_like(tensor)


@dataclass
class DecoderState:
    """One row's carried state; empty (`tensors` None) before its first chunk."""

    tensors: list[torch.Tensor] | None = None  # (1, ...) each, in the order CarriedDecoder walks the layers
    frames: int = 0  # frames decoded so far: the position of the next frame


@dataclass
class _Walk:
    """The batched states read while walking the decoder's layers, and the new ones written."""

    old: list[torch.Tensor] | None
    new: list[torch.Tensor] = field(default_factory=list)
    read: int = 0

    def take(self, empty: torch.Tensor) -> torch.Tensor:
        """The next carried tensor; `empty` (the state before any frame) when no row has one yet."""
        self.read += 1
        return empty if self.old is None else self.old[self.read - 1]

    def put(self, tensor: torch.Tensor) -> None:
        self.new.append(tensor)


class _WindowCache:
    """The pre-transformer's cache for one chunk: each layer's carried keys and values (B, H, W, D) before the
    chunk's own; `update` is the one method the attention layers call."""

    def __init__(self, keys: list[torch.Tensor], values: list[torch.Tensor]):
        self.keys, self.values = keys, values
        self.full_keys: list[torch.Tensor] = []
        self.full_values: list[torch.Tensor] = []

    def update(self, keys: torch.Tensor, values: torch.Tensor, layer_idx: int, cache_kwargs: Any = None):
        full_keys = torch.cat([self.keys[layer_idx], keys], dim=2)
        full_values = torch.cat([self.values[layer_idx], values], dim=2)
        self.full_keys.append(full_keys)
        self.full_values.append(full_values)
        return full_keys, full_values


class CarriedDecoder:
    """Chunk-by-chunk decoding of a Qwen3TTSTokenizerV2Decoder with each row's state carried (module doc)."""

    def __init__(self, decoder: Any):
        self.decoder = decoder
        transformer = decoder.pre_transformer
        config = transformer.config
        if any(kind != "sliding_attention" for kind in getattr(config, "layer_types", ["sliding_attention"])):
            raise ValueError("carried decoding needs the pre-transformer's sliding-window attention on every layer")
        self.window = int(config.sliding_window)
        self.layers = int(config.num_hidden_layers)
        self.kv_heads = int(config.num_key_value_heads)
        self.head_dim = int(getattr(config, "head_dim", config.hidden_size // config.num_attention_heads))
        self.attention = config._attn_implementation
        parameter = next(transformer.parameters())  # the decoder stays where it was loaded
        self.device, self.dtype = parameter.device, parameter.dtype
        self._zero = torch.zeros(1, dtype=torch.long, device=self.device)
        self._empty: list[torch.Tensor] | None = None
        # The chunk decode captured as CUDA graphs per (rows, frames), once the engine has captured them.
        self.graphs: ChunkGraphs | None = None
        if self.attention not in ("sdpa", "eager"):  # the per-row window mask is a 4-D mask: flash kernels take none
            raise ValueError(f"carried decoding needs sdpa or eager attention in the decoder, not {self.attention}")
        for module in [decoder.pre_conv, *(block for blocks in decoder.upsample for block in blocks), *decoder.decoder]:
            self._check(module)

    def _check(self, module: Any) -> None:
        """Every layer is one whose state this class knows how to carry (else ValueError, at load time)."""
        name = type(module).__name__
        if name.endswith("CausalConvNet"):
            if module.stride != 1:
                raise ValueError(f"a strided convolution ({name}) in the decoder")
        elif name.endswith("CausalTransConvNet"):
            stride, kernel = int(module.conv.stride[0]), int(module.conv.kernel_size[0])
            if not (kernel == stride or (kernel == 2 * stride and module.right_pad == stride)):
                raise ValueError(f"a transposed convolution of kernel {kernel}, stride {stride} in the decoder")
        elif name.endswith("ConvNeXtBlock"):
            self._check(module.dwconv)
        elif name.endswith("DecoderBlock"):
            for inner in module.block:
                self._check(inner)
        elif name.endswith("ResidualUnit"):
            self._check(module.conv1)
            self._check(module.conv2)
        elif name != "SnakeBeta":
            raise ValueError(f"a decoder layer carried decoding does not know: {name}")

    @torch.inference_mode()
    def decode(
        self, codes: torch.Tensor, states: list[DecoderState], keep: int | None = None
    ) -> tuple[torch.Tensor, list[DecoderState]]:
        """codes (B, T, 16) long, the next T frames of each row -> waveforms (B, samples) float32 and each row's
        state after them. Samples: T frames' worth; with `keep` (fresh states only: frames that prime a state,
        an ICL reference's codes, then `keep` frames to hear), at least the last `keep` frames' worth, since
        the sample-rate stack then starts `CONV_CONTEXT_FRAMES` before them, as the window decode does."""
        if codes.shape[0] != len(states):
            raise ValueError(f"{codes.shape[0]} rows of codes for {len(states)} states")
        fresh = all(s.tensors is None for s in states)
        trim = keep if fresh and keep is not None and codes.shape[1] > keep + CONV_CONTEXT_FRAMES else None
        if self.graphs is not None and trim is None:
            served = self.graphs.decode(codes, states)
            if served is not None:
                return served
        starts = torch.tensor([s.frames for s in states], dtype=torch.long, device=self.device)
        wav, carried = self.run(codes.to(self.device), starts, None if fresh else self.stack(states), trim)
        # Copied out of the call's activations, so a row's state holds its own few columns, not the whole call's.
        return wav, self.split([tensor.clone() for tensor in carried], states, codes.shape[1])

    def run(
        self, codes: torch.Tensor, starts: torch.Tensor, old: list[torch.Tensor] | None, trim: int | None = None
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The decode itself, on the decoder's device: codes (B, T, 16), each row's first position `starts` (B,)
        and the rows' batched state `old` (None: every row fresh) -> waveforms (B, samples) and the batched new
        state. Nothing in it reads a value back to the host, so it can be captured (captured_decode.py).
        `trim`: the sample-rate stack runs on the last `trim + CONV_CONTEXT_FRAMES` frames only."""
        dec = self.decoder
        walk = _Walk(old)
        hidden = dec.quantizer.decode(codes.long().clamp(min=0).transpose(1, 2))
        hidden = self._conv(dec.pre_conv, hidden, walk)
        hidden = self._transformer(hidden.transpose(1, 2), starts, walk).permute(0, 2, 1)
        if trim is not None:
            hidden = hidden[..., hidden.shape[-1] - trim - CONV_CONTEXT_FRAMES :]
        for blocks in dec.upsample:
            for block in blocks:
                hidden = self._layer(block, hidden, walk)
        for block in dec.decoder:
            hidden = self._layer(block, hidden, walk)
        return hidden.clamp(min=-1, max=1)[:, 0].float(), walk.new

    # -- state ---------------------------------------------------------------------------------------------

    def empty_state(self) -> list[torch.Tensor]:
        """One row's state before its first frame, a (1, ...) tensor per carried tensor: what a fresh row gets
        beside rows that have states (zeros, the convolutions' left padding; no history positions)."""
        if self._empty is None:
            one = torch.zeros(1, 1, 16, dtype=torch.long, device=self.device)
            self._empty = [_empty_like(tensor) for tensor in self.run(one, self._zero, None)[1]]
        return self._empty

    def stack(self, states: list[DecoderState]) -> list[torch.Tensor]:
        """The rows' states as batched tensors on the decoder's device; a fresh row gets the empty state."""
        empty = self.empty_state()
        return [
            torch.cat([empty[index] if s.tensors is None else s.tensors[index] for s in states]).to(self.device)
            for index in range(len(empty))
        ]

    @staticmethod
    def split(carried: list[torch.Tensor], states: list[DecoderState], frames: int) -> list[DecoderState]:
        """A batched new state -> each row's (views of its row), `frames` on from the state it had."""
        return [
            DecoderState([tensor[row : row + 1] for tensor in carried], state.frames + frames)
            for row, state in enumerate(states)
        ]

    # -- layers --------------------------------------------------------------------------------------------

    def _layer(self, module: Any, hidden: torch.Tensor, walk: _Walk) -> torch.Tensor:
        """One module of the upsampling or decoder stack, with the state its convolutions carry."""
        name = type(module).__name__
        if name.endswith("CausalConvNet"):
            return self._conv(module, hidden, walk)
        if name.endswith("CausalTransConvNet"):
            return self._transposed(module, hidden, walk)
        if name.endswith("ConvNeXtBlock"):
            residual = hidden
            hidden = self._conv(module.dwconv, hidden, walk).permute(0, 2, 1)
            hidden = module.pwconv2(module.act(module.pwconv1(module.norm(hidden))))
            return residual + (module.gamma * hidden).permute(0, 2, 1)
        if name.endswith("DecoderBlock"):
            for inner in module.block:
                hidden = self._layer(inner, hidden, walk)
            return hidden
        if name.endswith("ResidualUnit"):
            residual = hidden
            hidden = self._conv(module.conv1, module.act1(hidden), walk)
            hidden = self._conv(module.conv2, module.act2(hidden), walk)
            return hidden + residual
        if name == "SnakeBeta":
            return module(hidden)
        raise AssertionError(f"{name} passed _check")

    def _conv(self, module: Any, hidden: torch.Tensor, walk: _Walk) -> torch.Tensor:
        """A causal stride-1 convolution: its input continues the last `kernel - 1` inputs of the chunk before."""
        past = module.kernel_size - 1  # the kernel's span, dilation included
        if past == 0:
            return module.conv(hidden)
        carried = walk.take(hidden.new_zeros(hidden.shape[0], hidden.shape[1], past))
        joined = torch.cat([carried, hidden], dim=-1)
        walk.put(joined[..., -past:])
        return module.conv(joined)

    def _transposed(self, module: Any, hidden: torch.Tensor, walk: _Walk) -> torch.Tensor:
        """A transposed convolution of stride s and kernel s (no overlap) or 2s (output block t from input frames
        t-1 and t): with the last frame before the chunk in front, its blocks are the one-shot decode's."""
        conv = module.conv
        stride, kernel = int(conv.stride[0]), int(conv.kernel_size[0])
        if kernel == stride:
            return conv(hidden)
        carried = walk.take(hidden.new_zeros(hidden.shape[0], hidden.shape[1], 1))
        walk.put(hidden[..., -1:])
        full = conv(torch.cat([carried, hidden], dim=-1))  # (T + 1) * s + s samples
        return full[..., stride : stride + hidden.shape[-1] * stride]

    def _transformer(self, hidden: torch.Tensor, starts: torch.Tensor, walk: _Walk) -> torch.Tensor:
        """The pre-transformer over the chunk's frames (B, T, C), attending to the carried window."""
        batch, frames = hidden.shape[0], hidden.shape[1]
        device = hidden.device
        dtype = self.dtype
        shape = (batch, self.kv_heads, self.window, self.head_dim)
        keys = [walk.take(torch.zeros(shape, dtype=dtype, device=device)) for _ in range(self.layers)]
        values = [walk.take(torch.zeros(shape, dtype=dtype, device=device)) for _ in range(self.layers)]
        history = walk.take(torch.full((batch, self.window), _NO_POSITION, dtype=torch.long, device=device))
        positions = starts.view(-1, 1) + torch.arange(frames, device=device)  # (B, T) each row's own
        key_positions = torch.cat([history, positions], dim=1)  # (B, W + T)
        query = positions.unsqueeze(2)
        key = key_positions.unsqueeze(1)
        allowed = (key <= query) & (query - key < self.window)  # causal, within the sliding window
        mask: torch.Tensor = allowed.unsqueeze(1)  # (B, 1, T, W + T)
        if self.attention == "eager":
            mask = torch.zeros(mask.shape, dtype=dtype, device=device).masked_fill(~mask, torch.finfo(dtype).min)
        cache = _WindowCache(keys, values)
        out = self.decoder.pre_transformer(
            inputs_embeds=hidden,
            attention_mask={"sliding_attention": mask, "full_attention": mask},
            position_ids=positions,
            past_key_values=cache,
            use_cache=True,
            cache_position=torch.arange(frames, device=device),
        ).last_hidden_state
        for full in cache.full_keys:
            walk.put(full[:, :, -self.window :])
        for full in cache.full_values:
            walk.put(full[:, :, -self.window :])
        walk.put(key_positions[:, -self.window :])
        return out
