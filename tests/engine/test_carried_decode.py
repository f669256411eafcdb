"""Carried-state decoding (carried_decode.py) against one decoder call over the whole utterance."""

from __future__ import annotations

import pytest
import torch

from qwen_stream.carried_decode import CarriedDecoder, DecoderState


@pytest.fixture(scope="module")
def utterances(custom_voice_model):
    generator = torch.Generator().manual_seed(0)
    codes = torch.randint(0, 2048, (3, 100, 16), generator=generator)  # past the 72-frame attention window
    return codes, torch.stack([custom_voice_model.decode(row) for row in codes])


def test_rows_at_different_points_share_a_call_and_each_equals_the_one_shot_decode(custom_voice_model, utterances):
    """Row 0 starts at once, row 1 three chunks later, row 2 alone first; every call mixes rows whose states
    are at different frames (or empty), and every row's samples equal the one-shot decode's."""
    codes, one_shot = utterances
    carried = CarriedDecoder(custom_voice_model._decoder)
    states = [DecoderState() for _ in range(3)]
    got: list[list[torch.Tensor]] = [[], [], []]
    done = [0, 0, 0]

    def chunk(rows: list[int], frames: int) -> None:
        batch = torch.stack([codes[row, done[row] : done[row] + frames] for row in rows])
        wav, new = carried.decode(batch, [states[row] for row in rows])
        for i, row in enumerate(rows):
            got[row].append(wav[i])
            states[row] = new[i]
            done[row] += frames

    chunk([2], 5)
    chunk([0, 2], 1)
    for _ in range(3):
        chunk([0, 2], 4)
    while done[1] < 100:
        rows = [row for row in range(3) if done[row] + 4 <= 100]
        chunk(rows, 4)
        for row in range(3):
            if 0 < 100 - done[row] < 4:
                chunk([row], 100 - done[row])
    for row in range(3):
        assert done[row] == 100 and states[row].frames == 100
        streamed = torch.cat(got[row])
        assert streamed.shape == one_shot[row].shape
        assert (streamed - one_shot[row]).abs().max() <= 1e-5 * one_shot[row].abs().max()


def test_a_call_leaves_the_states_it_was_given_unchanged(custom_voice_model, utterances):
    """So a failed batched call can be retried row by row from the same states."""
    codes, one_shot = utterances
    carried = CarriedDecoder(custom_voice_model._decoder)
    _, (state,) = carried.decode(codes[:1, :10], [DecoderState()])
    first, _ = carried.decode(codes[:1, 10:14], [state])
    again, _ = carried.decode(codes[:1, 10:14], [state])
    assert torch.equal(first, again)
    assert (first[0] - one_shot[0, 10 * 1920 : 14 * 1920]).abs().max() <= 1e-5 * one_shot[0].abs().max()


def test_a_decoder_with_a_layer_it_does_not_know_is_refused_at_load(custom_voice_model):
    import copy

    decoder = copy.deepcopy(custom_voice_model._decoder)
    decoder.decoder.append(torch.nn.Tanh())
    with pytest.raises(ValueError, match="Tanh"):
        CarriedDecoder(decoder)


def test_a_decoder_on_flash_attention_is_refused_at_load(custom_voice_model):
    """Rows' windows differ, which needs a 4-D mask; chunks then decode with a window of context instead."""
    import copy

    decoder = copy.deepcopy(custom_voice_model._decoder)
    decoder.pre_transformer.config._attn_implementation = "flash_attention_2"
    with pytest.raises(ValueError, match="flash_attention_2"):
        CarriedDecoder(decoder)


def _decoders(model, count: int, settings):
    from qwen_stream.decoder import StreamingDecoder

    return [StreamingDecoder(model.decode, settings, carried=model.carried) for _ in range(count)]


def test_a_failed_group_leaves_every_row_of_the_step_where_it_was(custom_voice_model, utterances, monkeypatch):
    """Two rows whose windows differ in shape decode in two calls; the second fails. Neither row's state moves
    (the first group's result is not kept), so decoding each window again alone continues both exactly."""
    from qwen_stream.decoder import decode_windows
    from qwen_stream.settings import StreamingSettings

    codes, one_shot = utterances
    rows = _decoders(custom_voice_model, 2, StreamingSettings(chunk_size=4, first_chunk_size=1))
    pcm: list[list[torch.Tensor]] = [[], []]
    done = [0, 0]
    calls = []
    decode = custom_voice_model.carried.decode

    def second_call_fails(batch, states, keep=None):
        calls.append(batch.shape[1])
        if len(calls) == 2:
            raise RuntimeError("out of memory (simulated)")
        return decode(batch, states, keep)

    for frame in range(4):  # row 0 is four frames ahead: its 4-frame chunk is due with row 1's 2-frame one
        window = rows[0].take(codes[0, frame])
        if window is not None:
            pcm[0].append(decode_windows(custom_voice_model.decode_batch, [window])[0][-window.new * 1920 :])
        done[0] += 1
    windows = []
    while not windows or len({len(w.codes) for _, w in windows}) < 2:
        windows = []
        for row in (0, 1):
            window = rows[row].take(codes[row, done[row]])
            done[row] += 1
            if window is not None:
                windows.append((row, window))
        if len({len(w.codes) for _, w in windows}) < 2:  # not two shapes yet: decode and go on
            for row, window in windows:
                pcm[row].append(decode_windows(custom_voice_model.decode_batch, [window])[0][-window.new * 1920 :])
    before = [row._carry.state.frames for row in rows]
    monkeypatch.setattr(custom_voice_model.carried, "decode", second_call_fails)
    with pytest.raises(RuntimeError):
        decode_windows(custom_voice_model.decode_batch, [window for _, window in windows])
    assert len(calls) == 2 and [row._carry.state.frames for row in rows] == before
    monkeypatch.undo()
    for row, window in windows:  # the loop's fallback: each window alone
        pcm[row].append(decode_windows(custom_voice_model.decode_batch, [window])[0][-window.new * 1920 :])
    for row in (0, 1):
        streamed = torch.cat(pcm[row])
        expected = one_shot[row, : done[row] * 1920]
        assert streamed.shape == expected.shape
        assert (streamed - expected).abs().max() <= 1e-5 * one_shot[row].abs().max()


def test_a_rows_state_holds_its_own_columns_not_the_calls_activations(custom_voice_model, utterances):
    codes, _ = utterances
    _, states = custom_voice_model.carried.decode(codes[:, :12], [DecoderState() for _ in range(3)])
    for tensor in states[0].tensors:
        # a row of a compact copy of the call's carried columns, never a view into its activations
        assert tensor.untyped_storage().nbytes() == 3 * tensor.numel() * tensor.element_size()


def test_priming_with_a_reference_runs_the_sample_rate_stack_on_the_last_frames_only(custom_voice_model, utterances):
    """An ICL voice's first chunk primes a fresh state with the reference's codes: the transformer reads them
    all, the costly sample-rate stack only the frames heard plus its receptive field."""
    from qwen_stream.carried_decode import CONV_CONTEXT_FRAMES

    codes, one_shot = utterances
    carried = custom_voice_model.carried
    seen = []
    handle = custom_voice_model._decoder.upsample[0][0].conv.register_forward_hook(
        lambda module, args, out: seen.append(args[0].shape[-1])
    )
    try:
        wav, _ = carried.decode(codes[:1, :73], [DecoderState()], keep=1)
    finally:
        handle.remove()
    assert seen == [1 + CONV_CONTEXT_FRAMES]
    assert (wav[0, -1920:] - one_shot[0, 72 * 1920 : 73 * 1920]).abs().max() <= 1e-4 * one_shot[0].abs().max()
