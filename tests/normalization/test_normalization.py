"""The text front end: readings (table in normalization_cases.py), splitting, language pick, threads,
offline use, and pathological input. CPU only, no network; the grammars load once per session."""

from __future__ import annotations

import random
import subprocess
import sys
import textwrap
import threading
from concurrent.futures import Future
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import normalization  # noqa: E402 - after the path set-up above
from normalization import (  # noqa: E402
    LANGUAGES,
    Segment,
    UnsupportedLanguage,
    canonical_language,
    normalize,
    normalize_in_worker,
    tn_worker,
    warmup,
)
from normalization.splitting import CJK_MAX_CHARS, DEFAULT_MAX_CHARS, cap_length, split_sentences  # noqa: E402
from normalization_cases import CASES  # noqa: E402


def _texts(text: str, language: str = "Auto", **kw: object) -> list[str]:
    return [s.text for s in normalize(text, language, **kw)]


# --- readings ---------------------------------------------------------------------------------------


def test_the_table_covers_every_rule() -> None:
    rules = {rule for rule, *_ in CASES}
    assert len(CASES) >= 80
    assert {
        "spell-out",
        "hyphen",
        "units",
        "versions",
        "money",
        "phones",
        "years",
        "percentages",
        "times",
        "dates",
        "ordinals",
        "ranges",
        "web",
        "fast path",
    } <= rules


@pytest.mark.parametrize(("rule", "language", "text", "expected"), CASES, ids=[f"{c[0]}:{c[2]}" for c in CASES])
def test_reading(rule: str, language: str, text: str, expected: str | list[str]) -> None:
    want = [expected] if isinstance(expected, str) else expected
    assert _texts(text, language) == want


def test_auto_picks_the_normalizer_per_sentence() -> None:
    segments = normalize("我在2025年毕业。It costs $12.50! Das ist nicht teuer, nur 5 Euro.")
    assert segments == [
        Segment("我在二零二五年毕业。", "Chinese"),
        Segment("It costs twelve dollars fifty cents!", "English"),
        Segment("Das ist nicht teuer, nur fünf Euro.", "German"),  # German rules (docs/normalization.md)
    ]


def test_spoken_words_extend_the_list_per_call() -> None:
    assert _texts("ACME ships today.", "English") == ["A C M E ships today."]
    assert _texts("ACME ships today.", "English", spoken_words=["acme"]) == ["ACME ships today."]
    assert "NASA" in normalization.SPOKEN_AS_WORDS and "OK" in normalization.SPOKEN_AS_WORDS


def test_no_digit_left_in_number_heavy_text() -> None:
    text = (
        "On 2025-03-14 at 3:30pm, 12.5% of 1,200 users paid $12.50 for v1.2.3; call 555-123-4567. "
        "会议在2025年3月14日下午3:30，价格¥1200.50，增长15%，电话13812345678。"
    )
    for segment in normalize(text):
        assert not any(ch.isdigit() for ch in segment.text), segment


# --- enable_tn=False, empty input, errors -----------------------------------------------------------------


def test_enable_tn_false_changes_no_characters() -> None:
    text = "我用iPhone打电话，花了$12.50。 GPT-4 costs $20/month; see example.com!  Bonjour à tous.\nЯ тут."
    segments = normalize(text, enable_tn=False)
    assert "".join(s.text for s in segments).replace(" ", "") == "".join(text.split())
    assert all(s.text in text for s in segments)
    assert [s.language for s in segments] == ["Chinese", "English", "French", "Russian"]


def test_enable_tn_false_still_splits_long_text() -> None:
    text = "word " * 100
    segments = normalize(text, "English", enable_tn=False, max_chars=50)
    assert len(segments) > 1 and all(len(s.text) <= 50 for s in segments)


@pytest.mark.parametrize("text", ["", "   ", "\n\t \n"])
def test_blank_text_gives_no_segments(text: str) -> None:
    assert normalize(text) == []


def test_canonical_language_is_case_insensitive() -> None:
    assert canonical_language("english") == "English"
    assert canonical_language(" AUTO ") == "Auto"
    assert LANGUAGES[0] == "Auto" and len(LANGUAGES) == 11


def test_unsupported_language_lists_valid_names() -> None:
    with pytest.raises(UnsupportedLanguage) as info:
        normalize("hello", "Klingon")
    assert isinstance(info.value, ValueError)
    assert "Klingon" in str(info.value) and "English" in str(info.value) and "Auto" in str(info.value)


def test_bad_arguments_raise_before_any_work() -> None:
    with pytest.raises(UnsupportedLanguage):
        normalize_in_worker("hello", "Elvish")
    with pytest.raises(ValueError):
        normalize("hello", max_chars=0)
    with pytest.raises(TypeError):
        normalize(None)  # type: ignore[arg-type]


# --- language pick -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "language"),
    [
        ("こんにちは、元気ですか。", "Japanese"),
        ("東京大学に行きます。", "Japanese"),
        ("안녕하세요, 반갑습니다.", "Korean"),
        ("今天天气很好。", "Chinese"),
        ("我用iPhone打电话。", "Chinese"),
        ("迈克尔・乔丹是篮球运动员。", "Chinese"),
        ("Привет, как дела?", "Russian"),
        ("The weather is nice today.", "English"),
        ("La La Land is a great film.", "English"),
        ("I want to die hard.", "English"),
        ("Ich bin heute sehr müde.", "German"),
        ("Straße", "German"),
        ("Je suis très content de te voir.", "French"),
        ("Merci beaucoup!", "French"),
        ("¿Dónde está la biblioteca?", "Spanish"),
        ("Hola, ¿cómo estás?", "Spanish"),
        ("Ciao, come stai?", "Italian"),
        ("Questo è molto bello.", "Italian"),
        ("Obrigado, você é muito gentil.", "Portuguese"),
        ("Não sei.", "Portuguese"),
    ],
)
def test_language_pick(text: str, language: str) -> None:
    assert [s.language for s in normalize(text, enable_tn=False)] == [language]


def test_sentence_without_letters_takes_its_neighbours_language() -> None:
    segments = normalize("It happened in 2025. 2025! Then more.")
    assert [s.language for s in segments] == ["English", "English", "English"]
    assert segments[1].text == "twenty twenty-five!"
    assert normalize("12345", enable_tn=False) == [Segment("12345", "Auto")]


def test_explicit_language_wins() -> None:
    assert normalize("Bonjour tout le monde.", "English") == [Segment("Bonjour tout le monde.", "English")]
    assert [s.language for s in normalize("今天很好。It is fine.", "chinese")] == ["Chinese", "Chinese"]


# --- splitting ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Dr. Smith arrived. He sat down.", ["Dr. Smith arrived.", "He sat down."]),
        ("Use e.g. apples. Then stop.", ["Use e.g. apples.", "Then stop."]),
        ("The U.S. Army is big. Yes.", ["The U.S. Army is big.", "Yes."]),
        ("Mr. Li paid 3.5 dollars for v1.2 today.", ["Mr. Li paid 3.5 dollars for v1.2 today."]),
        ("Is it? Yes! Fine.", ["Is it?", "Yes!", "Fine."]),
        ("你好。我很好！你呢？好的；走吧", ["你好。", "我很好！", "你呢？", "好的；", "走吧"]),
        ('他说："你好。"然后走了。', ['他说："你好。"', "然后走了。"]),
        ("Wait!!! Really?!", ["Wait!!!", "Really?!"]),
        ("See example.com/a?b=1 now. Ok.", ["See example.com/a?b=1 now.", "Ok."]),
        ("1. First step\n2. Second step", ["1. First step", "2. Second step"]),
        ("John F. Kennedy spoke.", ["John F. Kennedy spoke."]),
        ("Hi. Ok.", ["Hi.", "Ok."]),  # short sentences are not merged
        ("—— Hello.", ["—— Hello."]),  # punctuation alone joins a neighbour
    ],
)
def test_sentence_split(text: str, expected: list[str]) -> None:
    assert split_sentences(text) == expected


def test_cap_falls_back_to_commas_then_spaces_and_never_cuts_words() -> None:
    text = (
        "This is a rather long sentence that keeps going, with several clauses and commas, and it does "
        "not stop for a very long time because the model wrote it that way, you know, like models do."
    )
    pieces = cap_length(text, 60)
    assert all(len(p) <= 60 for p in pieces)
    assert pieces[0] == "This is a rather long sentence that keeps going,"
    assert " ".join(pieces).split() == text.split()  # every word whole, in order

    no_commas = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho"
    pieces = cap_length(no_commas, 30)
    assert all(len(p) <= 30 for p in pieces) and " ".join(pieces) == no_commas


def test_cap_defaults_per_language() -> None:
    zh = "我们今天讨论的问题非常复杂，需要从多个角度进行分析，首先是经济方面，然后是技术方面，最后是社会方面的影响。"
    segments = normalize(zh * 2, enable_tn=False)
    assert len(segments) > 1 and all(len(s.text) <= CJK_MAX_CHARS for s in segments)
    en = "The quick brown fox jumps over the lazy dog, " * 10
    segments = normalize(en, enable_tn=False)
    assert len(segments) > 1 and all(len(s.text) <= DEFAULT_MAX_CHARS for s in segments)
    assert all(len(s.text) <= 40 for s in normalize(en, enable_tn=False, max_chars=40))


def test_cap_cuts_chinese_without_punctuation_between_characters_only() -> None:
    text = "我们今天讨论的问题非常复杂需要从多个角度进行分析首先是经济方面然后是技术方面iPhone最后是社会方面"
    pieces = cap_length(text, 20)
    assert all(len(p) <= 20 for p in pieces) and "".join(pieces) == text
    assert any("iPhone" in p for p in pieces)  # the Latin word stays whole


def test_long_text_segments_come_out_in_order() -> None:
    sentences = [f"Sentence number {i} is here." for i in range(1, 30)]
    texts = _texts(" ".join(sentences), "English")
    assert texts[0] == "Sentence number one is here." and texts[-1] == "Sentence number twenty-nine is here."
    assert len(texts) == 29


# --- threads, worker, warmup ----------------------------------------------------------------------------


def test_warmup_is_idempotent() -> None:
    assert isinstance(warmup(), float)
    assert isinstance(warmup(), float)


def test_normalize_in_worker_returns_a_future() -> None:
    future = normalize_in_worker("It costs $12.50.", "English")
    assert isinstance(future, Future)
    assert future.result(timeout=60) == [Segment("It costs twelve dollars fifty cents.", "English")]


def test_normalize_from_the_worker_thread_does_not_deadlock() -> None:
    future = tn_worker.submit(normalize, "我在2025年毕业。")
    assert future.result(timeout=60) == [Segment("我在二零二五年毕业。", "Chinese")]


def test_grammar_refuses_other_threads() -> None:
    with pytest.raises(RuntimeError):
        tn_worker.run_grammar.__wrapped__("3", "English")


def test_many_threads_get_the_serial_results() -> None:
    texts = [text for _, _, text, _ in CASES[::7]] + ["我在2025年毕业。It costs $12.50!", "Meet at 3:30pm."]
    serial = [normalize(t) for t in texts]
    results: dict[tuple[int, int], list[Segment]] = {}
    errors: list[BaseException] = []

    def worker(thread: int) -> None:
        try:
            for call in range(50):
                index = (thread + call) % len(texts)
                results[(thread, call)] = normalize(texts[index])
        except BaseException as e:  # reported by the main thread
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors and len(results) == 16 * 50
    for (thread, call), segments in results.items():
        assert segments == serial[(thread + call) % len(texts)]


# --- offline, no torch, pathological input ------------------------------------------------------------


def test_no_network_and_no_torch_at_import_or_first_use() -> None:
    code = textwrap.dedent(
        """
        import socket, sys

        def refuse(*args, **kwargs):
            raise OSError("network use in the text front end")

        socket.socket.connect = refuse
        socket.socket.connect_ex = refuse
        socket.create_connection = refuse
        socket.getaddrinfo = refuse

        import normalization
        assert "tn" not in sys.modules and "pynini" not in sys.modules, "work at import time"
        print(normalization.normalize("我在2025年毕业。It costs $12.50!"))
        assert "torch" not in sys.modules, "torch imported"
        print("ok")
        """
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("ok")
    assert "二零二五年" in done.stdout and "twelve dollars fifty cents" in done.stdout


@pytest.mark.parametrize("language", ["English", "Chinese", "Auto"])
def test_pathological_input_finishes(language: str) -> None:
    rng = random.Random(7)
    texts = ["1-" * 10_000, "".join(rng.choice("0123456789-") for _ in range(20_000)), "9" * 20_000]
    outcome: list[object] = []

    def run() -> None:
        try:
            outcome.append([normalize(t, language) for t in texts])
        except BaseException as e:  # reported by the main thread
            outcome.append(e)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(60)
    assert not thread.is_alive(), "normalization did not finish"
    assert outcome and not isinstance(outcome[0], BaseException), outcome
    for segments in outcome[0]:
        assert segments and all(s.text for s in segments)
