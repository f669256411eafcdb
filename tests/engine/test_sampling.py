"""The batched token choice (sampling.py) against what HF and torch do row by row."""

import pytest
import torch

from qwen_stream.code_predictor import _warpers
from qwen_stream.sampling import (
    BlockRow,
    Features,
    NoiseBlocks,
    RowParams,
    StepNoise,
    TalkerSampling,
    draw,
    noise_width,
    warp,
)

V = 2048


def sampling(**fields) -> TalkerSampling:
    base = dict(
        do_sample=True,
        temperature=None,
        top_k=None,
        top_p=None,
        repetition_penalty=None,
        min_new_tokens=0,
        eos_id=0,
        suppress_tokens=(),
        subtalker_do_sample=True,
        subtalker_temperature=None,
        subtalker_top_k=None,
        subtalker_top_p=None,
    )
    return TalkerSampling(**{**base, **fields})


ROWS = [
    sampling(),
    sampling(temperature=0.7),
    sampling(top_k=50),
    sampling(top_p=0.8),
    sampling(temperature=0.9, top_k=30, top_p=0.95),
    sampling(temperature=1.3, top_k=V + 10, top_p=1.0),
    sampling(top_k=1),
    sampling(top_p=0.01),
]


def test_batched_draws_equal_torch_multinomial_row_by_row():
    """`draw` skips multinomial's host read-back; each row must still get what multinomial gives it."""
    scores = torch.randn(3, V, generator=torch.Generator().manual_seed(0)) * 4
    scores[1, :1000] = -float("inf")  # what top-k and suppressed tokens leave behind
    ours = [torch.Generator().manual_seed(seed) for seed in (5, 6, 7)]
    theirs = [torch.Generator().manual_seed(seed) for seed in (5, 6, 7)]
    probs = torch.softmax(scores, dim=-1)
    sample = torch.ones(3, 1)
    for _ in range(20):
        expected = [int(torch.multinomial(probs[i : i + 1], 1, generator=g)) for i, g in enumerate(theirs)]
        noise = torch.stack([torch.empty(V).exponential_(generator=g) for g in ours])
        assert draw(scores, scores, noise, sample).tolist() == expected
    # A greedy row takes the argmax of the processed scores, whatever its noise.
    assert draw(scores, scores, noise, torch.tensor([[1.0], [0.0], [1.0]]))[1] == scores[1].argmax()


@pytest.mark.parametrize("features", ["all", "of the rows"])
def test_per_row_warpers_equal_hf_warpers_row_by_row(features):
    """Both the captured graph's choice (every processor, any k) and the eager one (what the rows use)."""
    scores = torch.randn(len(ROWS), V, generator=torch.Generator().manual_seed(1)) * 3
    assert_warp_is_hf_row_by_row(ROWS, scores, features)


def assert_warp_is_hf_row_by_row(rows: list[TalkerSampling], scores: torch.Tensor, features: str) -> None:
    params = torch.cat([row.params(torch.device("cpu")) for row in rows])
    chosen = Features() if features == "all" else Features.of(rows, sub=False)
    columns = [params[:, c : c + 1] for c in (RowParams.TEMPERATURE, RowParams.TOP_K, RowParams.TOP_P_FLOOR)]
    warped = warp(scores, *columns, chosen)
    for i, row in enumerate(rows):
        expected = _warpers(row.temperature, row.top_k, row.top_p)(None, scores[i : i + 1].clone())
        assert torch.equal(warped[i : i + 1], expected), (i, row)


@pytest.mark.parametrize("features", ["all", "of the rows"])
def test_top_p_over_tied_scores_removes_the_tokens_hf_removes(features):
    """Scores rounded to bfloat16 (as a bf16 model's logits are) tie often; when tied scores straddle the top-p
    cut, one is removed and the other kept, so the order a sort leaves ties in must be HF's own."""
    rows = [sampling(top_p=p, top_k=k) for p in (0.8, 0.95) for k in (None, 50, V + 10)] * 16
    scores = (torch.randn(len(rows), V, generator=torch.Generator().manual_seed(2)) * 3).bfloat16().float()
    assert_warp_is_hf_row_by_row(rows, scores, features)


def test_step_noise_is_the_librarys_sixteen_draws():
    """The library draws 15 code-predictor tokens then the talker's, each a call of its own: a row's step noise
    holds the same values, drawn before the step."""
    cp_vocab, steps, talker_vocab = 37, 15, 101
    rows = [sampling(), sampling(do_sample=False), sampling(subtalker_do_sample=False), None]
    generators = [torch.Generator().manual_seed(s) for s in (1, 2, 3)] + [None]
    noise = StepNoise(len(rows), cp_vocab, steps, talker_vocab, torch.device("cpu"))
    noise.fill(generators, rows)
    for i, row in enumerate(rows[:3]):
        g = torch.Generator().manual_seed(i + 1)
        predictor = (
            [torch.empty(1, cp_vocab).exponential_(generator=g) for _ in range(steps)]
            if row.subtalker_do_sample
            else []
        )
        talker = torch.empty(1, talker_vocab).exponential_(generator=g) if row.do_sample else None
        if predictor:
            assert torch.equal(noise.predictor[i], torch.cat(predictor))
        else:
            assert bool((noise.predictor[i] == 1).all())
        if talker is not None:
            assert torch.equal(noise.talker[i : i + 1], talker)
        else:
            assert bool((noise.talker[i] == 1).all())
        # A part the row does not sample takes nothing from its generator.
        assert torch.equal(g.get_state(), generators[i].get_state())
    assert bool((noise.buffer[3] == 1).all())


def test_noise_blocks_give_each_row_its_own_per_token_draws_in_step_order():
    """Blocks of three steps, rows joining at different steps in scattered slots, blocks used up and drawn
    again: every row's step noise is what its own generator gives a token at a time (on CPU a call of n values
    is n calls of one); a row that samples one part only draws per token; greedy rows and free slots read ones
    and draw nothing; rows past the step's are not written."""
    cp_vocab, steps, talker_vocab = 37, 15, 101
    cpu = torch.device("cpu")
    both = sampling()
    kinds = {
        2: both,
        0: both,
        3: sampling(subtalker_do_sample=False),
        1: sampling(do_sample=False, subtalker_do_sample=False),
    }
    joins = {2: 0, 0: 2, 3: 1, 1: 0}  # slot -> the step it joins at
    order = [2, None, 0, 3, 1]  # batch index -> slot
    generators = {slot: torch.Generator().manual_seed(10 + slot) for slot in kinds}
    expected = {slot: torch.Generator().manual_seed(10 + slot) for slot in kinds}
    blocks = NoiseBlocks(slots=4, steps=3, width=noise_width(cp_vocab, steps, talker_vocab), device=cpu)
    made = dict.fromkeys(kinds, 0)
    for step in range(8):
        live = [slot if slot is not None and joins[slot] <= step else None for slot in order]
        rows = [None if slot is None else BlockRow(generators[slot], kinds[slot], slot, made[slot]) for slot in live]
        noise = StepNoise(len(order) + 2, cp_vocab, steps, talker_vocab, cpu)
        noise.buffer.fill_(7.0)
        blocks.fill(noise, rows)
        for i, slot in enumerate(live):
            if slot is None:
                assert bool((noise.buffer[i] == 1).all())
                continue
            reference = StepNoise(1, cp_vocab, steps, talker_vocab, cpu)
            reference.fill([expected[slot]], [kinds[slot]])
            assert torch.equal(noise.buffer[i], reference.buffer[0]), (step, slot)
            made[slot] += 1
        assert bool((noise.buffer[len(order) :] == 7).all())
    for slot in (3, 1):  # per token, or nothing: exactly where the library's calls leave the generator
        assert torch.equal(generators[slot].get_state(), expected[slot].get_state())
    for slot in (2, 0):  # a block row has drawn its block to the end, no further
        for _ in range(-made[slot] % 3):
            StepNoise(1, cp_vocab, steps, talker_vocab, cpu).fill([expected[slot]], [both])
        assert torch.equal(generators[slot].get_state(), expected[slot].get_state())


@pytest.mark.parametrize("sub", [False, True])
def test_features_name_only_what_a_sampling_row_uses(sub):
    prefix = "subtalker_" if sub else ""
    greedy = {"subtalker_do_sample" if sub else "do_sample": False, f"{prefix}top_k": 5}
    assert Features.of([sampling(**greedy)], sub) == Features(False, 0, False)
    assert Features.of([sampling(**{f"{prefix}top_p": 0.9})], sub) == Features(True, 0, True)
    rows = [sampling(**{f"{prefix}top_k": 5}), sampling(), sampling(**{f"{prefix}top_k": 9})]
    assert Features.of(rows, sub) == Features(True, 9, False)  # one topk of the largest k serves every row
