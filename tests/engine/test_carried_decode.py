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
