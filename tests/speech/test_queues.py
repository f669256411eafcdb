"""The per-client queue state machine (`ClientQueues`) on a fake engine: no model, milliseconds per test.

Every test runs in its own `asyncio.run` and ends by checking that the queues drained and kept no client
state. Timeouts here are safety nets against a hang, never assertions about speed."""

from __future__ import annotations

import asyncio

import pytest

from qwen_stream.events import End, Mark
from qwen_stream.speech.queues import ClientQueues, Overloaded, QueueFull, ServerBusy
from qwen_stream.speech.utterance import Utterance
from qwen_stream.generation import SynthesisError, SynthesisRequest
from tests.speech.fake_engine import ENDLESS, FakeEngine, chunk_label

SAFETY = 10.0  # seconds; only ever reached when something hangs


def req(text: str, chunks: int | None = None) -> SynthesisRequest:
    return SynthesisRequest(text=text, max_frames=chunks)


def planned(**outcomes: str):
    """A plan for FakeEngine: the outcome of each request by its text, "done" for the rest."""
    return lambda request: outcomes.get(request.text, "done")


def scenario(
    test, *, max_queue: int = 8, max_clients: int = 16, max_wait: float | None = None, drain: bool = True,
    **engine_options,
) -> None:
    """Runs `test(engine, queues)`, then checks that the queues drained and keep no client state."""
    engine = FakeEngine(**engine_options)

    async def main():
        queues = ClientQueues(engine, max_queue=max_queue, max_clients=max_clients, max_wait=max_wait)
        await test(engine, queues)
        if not drain:
            return
        await within(queues.drained())
        assert (queues.client_count, queues.active, queues.waiting) == (0, 0, 0)

    try:
        asyncio.run(asyncio.wait_for(main(), SAFETY))
    except TimeoutError:
        # A short report: pytest (on Python 3.11) can crash rendering the traceback of a cancelled gather.
        pytest.fail(f"hung: nothing happened for {SAFETY:.0f} s (engine log: {engine.log[-6:]})", pytrace=False)
    finally:
        engine.close()


async def within(awaitable, timeout: float = SAFETY):
    return await asyncio.wait_for(awaitable, timeout)


async def play(utterance: Utterance) -> tuple[list[str], End]:
    """Reads an utterance to its end: the labels of its chunks, and its End."""
    labels: list[str] = []
    async for item in utterance.events():
        if isinstance(item, End):
            return labels, item
        labels.append(chunk_label(item))
    raise AssertionError("an utterance's stream ended without an End")


async def play_all(*utterances: Utterance) -> list[tuple[list[str], End]]:
    gathered = asyncio.gather(*(play(t) for t in utterances))
    try:
        return await within(gathered)
    finally:
        # A hung test's gather ends cancelled: retrieve that, or its "exception was never retrieved" log runs
        # from a finalizer, and on Python 3.11.7 that can break pytest's report (AST recursion SystemError).
        if gathered.done() and not gathered.cancelled():
            gathered.exception()


async def until(predicate, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + SAFETY
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.001)


def labels(text: str, chunks: int = 3) -> list[str]:
    return [f"{text}#{i}" for i in range(chunks)]


def spans(engine: FakeEngine, *names: str) -> None:
    """The named jobs ran one after another, in this order, never overlapping."""
    events = [entry for entry in engine.log if entry[1] in names]
    expected = [(kind, name) for name in names for kind in ("start", "end")]
    assert events == expected


# -- order within a client ------------------------------------------------------------------------------
def test_one_client_plays_in_arrival_order_one_at_a_time():
    async def test(engine, queues):
        utterances = [queues.enqueue("a", [req(f"A{i}")], 2) for i in range(1, 4)]
        assert queues.active == 1 and queues.waiting == 2
        results = await play_all(*utterances)
        for i, (got, ended) in enumerate(results, 1):
            assert got == labels(f"A{i}") and ended.outcome == "done"
        assert engine.started == ["A1", "A2", "A3"]
        spans(engine, "A1", "A2", "A3")  # even though the engine could run three at once
        assert all(t.stats.frames == 3 and t.stats.eos for t in utterances)

    scenario(test, slots=3)


def test_reservations_keep_arrival_order_when_filled_out_of_order():
    async def test(engine, queues):
        first = queues.reserve("a")
        second = queues.reserve("a")
        queues.fill(second, [req("A2")])
        assert engine.submitted() == []  # A2 waits for A1, which is still being prepared
        await asyncio.sleep(0.01)
        assert engine.submitted() == [] and not second.ended
        queues.fill(first, [req("A1")])
        results = await play_all(first, second)
        assert [r[0] for r in results] == [labels("A1"), labels("A2")]
        assert engine.started == ["A1", "A2"]
        spans(engine, "A1", "A2")

    scenario(test, slots=2)


def test_multi_segment_utterance_plays_its_segments_in_order():
    async def test(engine, queues):
        utterance = queues.enqueue("a", [req("S1"), req("S2", 2), req("S3")], 10)
        other = queues.enqueue("b", [req("B1")], 2)
        (got, ended), (_, other_end) = await play_all(utterance, other)
        assert got == labels("S1") + labels("S2", 2) + labels("S3")
        assert ended.outcome == "done" and other_end.outcome == "done"
        assert utterance.stats.frames == 8
        spans(engine, "S1", "S2", "S3")
        # Each segment is its own job: the other client's head gets its turn after the first one.
        assert engine.started == ["S1", "B1", "S2", "S3"]
        # Its sentences are one stream to its reader: every job adds to the utterance's own playback estimate.
        assert [engine.job(s).playback for s in ("S1", "S2", "S3")] == [utterance.playback] * 3
        assert engine.job("B1").playback is other.playback is not utterance.playback

    scenario(test)


# -- fairness across clients ----------------------------------------------------------------------------
def test_clients_share_the_engine_in_turn():
    async def test(engine, queues):
        utterances = [
            queues.enqueue(client, [req(f"{client.upper()}{i}")], 2) for client in ("a", "b", "c") for i in range(1, 4)
        ]
        results = await play_all(*utterances)
        assert all(ended.outcome == "done" for _, ended in results)
        assert engine.started == ["A1", "B1", "C1", "A2", "B2", "C2", "A3", "B3", "C3"]

    scenario(test)


def test_each_client_has_at_most_one_job_in_the_engine():
    async def test(engine, queues):
        engine.hold()
        for client in ("a", "b"):
            for i in range(1, 4):
                queues.enqueue(client, [req(f"{client}{i}")], 2)
        assert engine.submitted() == ["a1", "b1"]
        assert queues.active == 2 and queues.waiting == 4
        engine.release()

    scenario(test, slots=4)


# -- interrupt ------------------------------------------------------------------------------------------
def test_interrupt_stops_the_running_drops_the_queued_and_later_requests_run():
    async def test(engine, queues):
        running = queues.enqueue("a", [req("A1", ENDLESS)], 2)
        queued = [queues.enqueue("a", [req(f"A{i}")], 2) for i in (2, 3)]
        preparing = queues.reserve("a")
        bystander = queues.enqueue("b", [req("B1", 20)], 2)
        await until(lambda: running.stats.frames >= 1, "A1's first chunk")
        engine.hold()
        frames, sent = running.stats.frames, engine.job("A1").sent

        assert queues.interrupt("a") == (True, 3)
        for utterance in [running, *queued, preparing]:
            assert utterance.outcome == "interrupted"
        queues.fill(preparing, [req("A4")])  # its text came too late: nothing runs
        later = queues.enqueue("a", [req("A5")], 2)
        assert engine.submitted() == ["A1", "B1"]  # A5 waits until the engine has let go of A1
        engine.release()
        (got, ended), *_ = await play_all(running, *queued, preparing)
        assert ended.outcome == "interrupted" and len(got) == frames
        await within(asyncio.to_thread(engine.job("A1").wait, SAFETY))
        assert engine.job("A1").result == "cancelled"
        assert engine.job("A1").sent == sent + 1  # the engine's late chunk ...
        assert running.stats.frames == frames  # ... reached nobody
        assert "A4" not in engine.submitted() and "A2" not in engine.submitted()

        results = await play_all(later, bystander)
        assert [e.outcome for _, e in results] == ["done", "done"]
        assert results[1][0] == labels("B1", 20)  # the other client was never touched
        spans(engine, "A1", "A5")
        assert queues.interrupt("nobody") == (False, 0)

    scenario(test, slots=2, late_chunks=1)


def test_interrupt_with_nothing_running_drops_the_queue():
    async def test(engine, queues):
        reservation = queues.reserve("a")
        queued = queues.enqueue("a", [req("A2")], 2)
        assert queues.interrupt("a") == (False, 2)
        assert [reservation.outcome, queued.outcome] == ["interrupted", "interrupted"]
        assert engine.submitted() == []

    scenario(test)


def test_drained_waits_for_the_engine_to_let_go_of_an_interrupted_job():
    async def test(engine, queues):
        utterance = queues.enqueue("a", [req("A1", ENDLESS)], 2)
        await until(lambda: utterance.stats.frames >= 1, "A1's first chunk")
        engine.hold()
        queues.interrupt("a")
        assert utterance.ended
        drained = asyncio.ensure_future(queues.drained())
        await asyncio.sleep(0.01)
        assert not drained.done() and queues.client_count == 1  # the engine is parked, still holding A1
        engine.release()
        await within(drained)
        assert engine.job("A1").result == "cancelled"  # its End came before drained() returned

    scenario(test)


# -- a reader's disconnect ------------------------------------------------------------------------------
def test_cancel_of_a_queued_utterance_leaves_the_others_alone():
    async def test(engine, queues):
        first = queues.enqueue("a", [req("A1", 10)], 2)
        gone = queues.enqueue("a", [req("A2")], 2)
        last = queues.enqueue("a", [req("A3")], 2)
        queues.cancel(gone)
        results = await play_all(first, gone, last)
        assert [e.outcome for _, e in results] == ["done", "disconnected", "done"]
        assert results[0][0] == labels("A1", 10) and results[1][0] == []
        assert engine.started == ["A1", "A3"]

    scenario(test)


def test_cancel_of_an_unfilled_head_lets_the_next_one_start():
    async def test(engine, queues):
        gone = queues.reserve("a")
        after = queues.enqueue("a", [req("A2")], 2)
        assert engine.submitted() == []
        queues.cancel(gone)
        assert engine.submitted() == ["A2"]
        results = await play_all(gone, after)
        assert [e.outcome for _, e in results] == ["disconnected", "done"]
        lone = queues.reserve("b")
        queues.cancel(lone)
        assert queues.client_count == 0  # a client whose only request left keeps no state

    scenario(test)


def test_cancel_of_the_running_utterance_stops_its_job_and_the_queue_goes_on():
    async def test(engine, queues):
        running = queues.enqueue("a", [req("A1", ENDLESS)], 2)
        after = queues.enqueue("a", [req("A2")], 2)
        other = queues.enqueue("b", [req("B1", 10)], 2)
        await until(lambda: running.stats.frames >= 1, "A1's first chunk")
        engine.hold()
        queues.cancel(running)
        assert engine.submitted() == ["A1", "B1"]  # A2 waits until the engine has let go of A1
        engine.release()
        results = await play_all(running, after, other)
        assert [e.outcome for _, e in results] == ["disconnected", "done", "done"]
        assert results[1][0] == labels("A2") and results[2][0] == labels("B1", 10)
        assert engine.job("A1").result == "cancelled"
        spans(engine, "A1", "A2")  # A2 started only once the engine had let go of A1
        queues.cancel(running)  # a second cancel (the handler's finally) changes nothing
        assert running.outcome == "disconnected"

    scenario(test, slots=2)


def test_cancel_between_segments_stops_the_rest():
    async def test(engine, queues):
        utterance = queues.enqueue("a", [req("S1", ENDLESS), req("S2")], 2)
        await until(lambda: utterance.stats.frames >= 1, "S1's first chunk")
        queues.cancel(utterance)
        _, ended = (await play_all(utterance))[0]
        assert ended.outcome == "disconnected"
        await within(asyncio.to_thread(engine.job("S1").wait, SAFETY))
        await within(queues.drained())
        assert engine.submitted() == ["S1"]

    scenario(test)


# -- reservation expiry ---------------------------------------------------------------------------------
def test_an_unfilled_reservation_expires_and_unblocks_the_queue():
    async def test(engine, queues):
        stale = queues.reserve("a", expire_after=0.02)
        after = queues.enqueue("a", [req("A2")], 2)
        results = await play_all(stale, after)
        assert [e.outcome for _, e in results] == ["expired", "done"]
        assert engine.started == ["A2"]

    scenario(test)


def test_a_filled_reservation_never_expires():
    async def test(engine, queues):
        engine.hold()
        filled = queues.reserve("a", expire_after=0.01)
        queues.fill(filled, [req("A1")])
        waiting = queues.reserve("a", expire_after=0.01)
        queues.fill(waiting, [req("A2")])
        marker = queues.reserve("z", expire_after=0.01)  # its timer fires after theirs
        _, ended = (await play_all(marker))[0]
        assert ended.outcome == "expired"
        assert not filled.ended and not waiting.ended
        engine.release()
        results = await play_all(filled, waiting)
        assert [e.outcome for _, e in results] == ["done", "done"]

    scenario(test)


# -- limits ---------------------------------------------------------------------------------------------
def test_queue_full_counts_the_waiting_requests_of_one_client():
    async def test(engine, queues):
        engine.hold()
        utterances = [queues.enqueue("a", [req(f"A{i}")], 2) for i in range(1, 4)]  # one running, two waiting
        with pytest.raises(QueueFull) as caught:
            queues.reserve("a")
        assert caught.value.code == "queue_full" and caught.value.limit == 2
        assert caught.value.client_id == "a"
        assert not isinstance(caught.value, ServerBusy)
        other = queues.enqueue("b", [req("B1")], 2)  # another client is not affected
        engine.release()
        await play_all(*utterances, other)
        more = queues.enqueue("a", [req("A4")], 2)  # room again
        await play_all(more)

    scenario(test, max_queue=2)


def test_overloaded_refuses_at_once_when_the_estimated_wait_is_over_the_bound_and_queues_nothing():
    async def test(engine, queues):
        a = queues.enqueue("a", [req("A1")], 2)
        await within(_until(lambda: engine.started == ["A1"]))
        engine.hold()  # a holds the one slot: b waits about one job (0.5 s), a newcomer behind b two (1 s)
        b = queues.enqueue("b", [req("B1")], 2)
        assert engine.estimated_wait() == pytest.approx(1.0)
        before = (queues.client_count, queues.waiting, engine.submitted())
        with pytest.raises(Overloaded) as caught:
            queues.reserve("c")
        assert caught.value.code == "overloaded" and caught.value.retry_after >= 1
        assert isinstance(caught.value, QueueFull)  # handled wherever a full queue is
        assert (queues.client_count, queues.waiting, engine.submitted()) == before  # nothing queued for c
        queues.interrupt("a")
        queues.interrupt("b")
        engine.release()
        await play_all(a, b)

    scenario(test, max_wait=0.7, slots=1, chunks=50, interval=0.01)


def test_no_wait_bound_never_refuses():
    async def test(engine, queues):
        engine.hold()
        utterances = [queues.enqueue(name, [req(name)], 2) for name in "abcdef"]
        assert engine.estimated_wait() > 0
        engine.release()
        await play_all(*utterances)

    scenario(test, slots=1, chunks=2)


async def _until(condition, poll: float = 0.005):
    while not condition():
        await asyncio.sleep(poll)


def test_server_busy_bounds_clients_in_flight():
    async def test(engine, queues):
        engine.hold()
        a = queues.enqueue("a", [req("A1")], 2)
        b = queues.reserve("b")
        with pytest.raises(ServerBusy) as caught:
            queues.reserve("c")
        assert caught.value.code == "server_busy" and caught.value.limit == 2
        assert isinstance(caught.value, QueueFull)
        a2 = queues.enqueue("a", [req("A2")], 2)  # a client already in flight may still queue
        queues.cancel(b)
        c = queues.enqueue("c", [req("C1")], 2)  # b left: there is room
        engine.release()
        await play_all(a, b, a2, c)

    scenario(test, max_clients=2)


# -- failures and stalls --------------------------------------------------------------------------------
def test_a_stream_error_ends_only_its_utterance():
    async def test(engine, queues):
        before = queues.enqueue("a", [req("A1")], 2)
        broken = queues.enqueue("a", [req("boom", 2)], 2)
        after = queues.enqueue("a", [req("A3")], 2)
        other = queues.enqueue("b", [req("B1", 6)], 2)
        results = await play_all(before, broken, after, other)
        assert [e.outcome for _, e in results] == ["done", "error", "done", "done"]
        assert results[1][0] == labels("boom", 2)  # what was spoken before the failure was delivered
        assert "fake failure in boom" in str(results[1][1].error)
        assert results[2][0] == labels("A3") and results[3][0] == labels("B1", 6)

    scenario(test, plan=planned(boom="error"))


def test_an_error_in_a_middle_segment_ends_the_utterance_there():
    async def test(engine, queues):
        utterance = queues.enqueue("a", [req("S1"), req("boom"), req("S3")], 2)
        got, ended = (await play_all(utterance))[0]
        assert ended.outcome == "error" and got == labels("S1") + labels("boom")
        assert engine.submitted() == ["S1", "boom"]

    scenario(test, plan=planned(boom="error"))


def test_a_request_the_engine_refuses_fails_alone():
    async def test(engine, queues):
        refused = queues.reserve("a")
        after = queues.reserve("a")
        queues.fill(after, [req("A2")])
        queues.fill(refused, [req("bad")])  # refused at once: the one behind it starts
        assert engine.submitted() == ["A2"]
        segments = queues.enqueue("b", [req("B1"), req("bad")], 2)  # refused at its second segment
        results = await play_all(refused, after, segments)
        assert [e.outcome for _, e in results] == ["error", "done", "error"]
        assert isinstance(results[0][1].error, SynthesisError)
        assert results[2][0] == labels("B1")

    scenario(test, plan=planned(bad="refuse"))


def test_a_stalled_stream_ends_stalled_and_abandoned():
    async def test(engine, queues):
        stalled = queues.enqueue("a", [req("slow", 2), req("never")], 2)
        after = queues.enqueue("a", [req("A2")], 2)
        results = await play_all(stalled, after)
        assert [e.outcome for _, e in results] == ["stalled", "done"]
        assert stalled.abandoned.is_set() and not after.abandoned.is_set()
        assert not stalled.stats.eos
        assert engine.submitted() == ["slow", "A2"]  # a stalled segment stops its utterance's other segments

    scenario(test, plan=planned(slow="stalled"))


def test_stalled_by_the_server_stops_the_job_or_relabels_a_finished_one():
    async def test(engine, queues):
        running = queues.enqueue("a", [req("A1", ENDLESS)], 2)
        await until(lambda: running.stats.frames >= 1, "A1's first chunk")
        queues.stalled(running)
        _, ended = (await play_all(running))[0]
        assert ended.outcome == "stalled" and running.abandoned.is_set()
        await within(asyncio.to_thread(engine.job("A1").wait, SAFETY))
        assert engine.job("A1").result == "cancelled"

        finished = queues.enqueue("b", [req("B1")], 2)
        await play_all(finished)
        queues.stalled(finished)  # the audio was generated but never reached the reader
        assert finished.outcome == "stalled"

    scenario(test)


def test_a_job_the_engine_cancels_itself_ends_as_shutdown():
    async def test(engine, queues):
        utterance = queues.enqueue("a", [req("gone")], 2)
        after = queues.enqueue("a", [req("A2")], 2)
        results = await play_all(utterance, after)
        assert [e.outcome for _, e in results] == ["shutdown", "done"]

    scenario(test, plan=planned(gone="cancelled"))


# -- draining and shutdown ------------------------------------------------------------------------------
def test_drained_returns_once_everything_ended():
    async def test(engine, queues):
        await within(queues.drained())  # nothing in flight: at once
        engine.hold()
        utterances = [queues.enqueue(c, [req(f"{c}{i}")], 2) for c in "ab" for i in (1, 2)]
        reservation = queues.reserve("c")
        drained = asyncio.ensure_future(queues.drained())
        await asyncio.sleep(0.01)
        assert not drained.done()  # the engine is held: nothing can have ended
        engine.release()
        await until(lambda: all(t.ended for t in utterances), "the filled utterances to end")
        await asyncio.sleep(0.01)
        assert not drained.done()  # the reservation is still in line
        queues.fill(reservation, [req("c1")])
        await within(drained)
        assert all(t.outcome == "done" for t in [*utterances, reservation])
        assert queues.client_count == 0

    scenario(test)


def test_shutdown_ends_every_utterance():
    async def test(engine, queues):
        running = queues.enqueue("a", [req("A1", ENDLESS)], 2)
        queued = queues.enqueue("a", [req("A2")], 2)
        reservation = queues.reserve("b")
        await until(lambda: running.stats.frames >= 1, "A1's first chunk")
        queues.shutdown()
        results = await play_all(running, queued, reservation)
        assert [e.outcome for _, e in results] == ["shutdown"] * 3
        await within(asyncio.to_thread(engine.job("A1").wait, SAFETY))
        assert engine.submitted() == ["A1"]

    scenario(test)  # and no client state is left behind: drained() returns


# -- open-ended utterances: text that arrives over time (a WebSocket context) ---------------------------
def open_ended(queues: ClientQueues, client_id: str) -> Utterance:
    """An utterance opened before its text: its sentences come with append(), its end with close_input()."""
    utterance = queues.reserve(client_id, expire_after=None)
    utterance.open()
    return utterance


def test_sentences_appended_over_time_play_in_order_and_close_input_ends_it():
    async def test(engine, queues):
        utterance = open_ended(queues, "a")
        reader = asyncio.ensure_future(play(utterance))
        utterance.append(req("S1"))
        await until(lambda: engine.job("S1").ended, "S1 spoken")
        assert not utterance.ended  # its input is still open: it waits for more text
        utterance.append(req("S2"))
        utterance.append(req("S3"))
        utterance.close_input()
        got, ended = await within(reader)
        assert got == labels("S1") + labels("S2") + labels("S3") and ended.outcome == "done"
        assert engine.started == ["S1", "S2", "S3"] and utterance.segment_count == 3

    scenario(test)


def test_the_next_utterance_of_a_client_waits_for_an_open_one_to_close():
    async def test(engine, queues):
        first = open_ended(queues, "a")
        first.append(req("A1"))
        second = queues.enqueue("a", [req("A2")], 2)
        other = queues.enqueue("b", [req("B1")], 2)  # another client is not held back
        await until(lambda: engine.job("A1").ended and engine.job("B1").ended, "A1 and B1 spoken")
        await asyncio.sleep(0.02)
        assert "A2" not in engine.started and not second.ended  # still behind the open utterance
        first.close_input()
        results = await play_all(first, second, other)
        assert [e.outcome for _, e in results] == ["done", "done", "done"]
        spans(engine, "A1", "A2")

    scenario(test)


def test_close_input_with_nothing_given_ends_it_done_without_the_engine():
    async def test(engine, queues):
        utterance = open_ended(queues, "a")
        utterance.close_input()
        got, ended = (await play_all(utterance))[0]
        assert got == [] and ended.outcome == "done" and engine.started == []

    scenario(test)


def test_interrupt_while_an_utterance_waits_for_text_ends_it_and_later_text_is_ignored():
    async def test(engine, queues):
        utterance = open_ended(queues, "a")
        utterance.append(req("A1"))
        await until(lambda: engine.job("A1").ended, "A1 spoken")
        assert queues.interrupt("a") == (True, 0)
        utterance.append(req("A2"))  # the text the LLM was still writing: dropped, nothing raises
        utterance.close_input()
        _, ended = (await play_all(utterance))[0]
        assert ended.outcome == "interrupted" and engine.started == ["A1"]

    scenario(test)


def test_text_after_close_input_is_refused():
    async def test(engine, queues):
        from qwen_stream.speech.utterance import InputClosed

        utterance = open_ended(queues, "a")
        utterance.append(req("A1"))
        utterance.close_input()
        with pytest.raises(InputClosed):
            utterance.append(req("A2"))
        _, ended = (await play_all(utterance))[0]
        assert ended.outcome == "done" and engine.started == ["A1"]

    scenario(test)


def test_an_utterance_appended_while_its_sentence_runs_goes_on_without_a_gap_in_order():
    async def test(engine, queues):
        utterance = open_ended(queues, "a")
        utterance.append(req("S1", 6))
        await until(lambda: utterance.stats.frames >= 1, "S1's first chunk")
        utterance.append(req("S2"))  # arrives while S1 is in the engine: queued behind it, never beside it
        utterance.close_input()
        got, ended = (await play_all(utterance))[0]
        assert got == labels("S1", 6) + labels("S2") and ended.outcome == "done"
        spans(engine, "S1", "S2")

    scenario(test)


def test_marks_arrive_after_the_audio_given_before_them_and_before_the_rest():
    async def test(engine, queues):
        utterance = open_ended(queues, "a")
        utterance.mark("start")  # nothing before it: handed out at once
        utterance.append(req("S1"))
        utterance.mark("after S1")
        utterance.append(req("S2"))
        utterance.close_input()
        items = []
        async for item in utterance.events():
            items.append(item.value if isinstance(item, Mark) else chunk_label(item) if hasattr(item, "pcm") else "END")
        assert items == ["start", *labels("S1"), "after S1", *labels("S2"), "END"]

    scenario(test)
