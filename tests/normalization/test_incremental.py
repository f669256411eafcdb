"""SentenceBuffer: streamed text gives the sentences split_sentences gives the whole text, released early.

The main check feeds each paragraph whole, one character at a time and in seeded random pieces, and
compares the units with split_sentences (and cap_length) on the whole text. CPU only, no grammars.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from normalization.incremental import SentenceBuffer  # noqa: E402 - after the path set-up above
from normalization.language import UnsupportedLanguage  # noqa: E402
from normalization.splitting import CJK_MAX_CHARS, DEFAULT_MAX_CHARS, cap_length, split_sentences  # noqa: E402

LONG_ENGLISH = (
    "A long sentence that goes on and on without any end marks whatsoever, with commas, clauses "
    "and a lot of words that should exceed the cap of one hundred and twenty characters by far so "
    "that the buffer has to cut it somewhere before it ends"
)
LONG_CHINESE = (
    "这是一个非常非常长的句子没有任何标点符号它会一直持续下去直到超过"
    "六十个字符的上限为止所以缓冲区必须在某个地方切断它才行否则延迟太高了"
)

CORPUS = [
    "Hello there. How are you today? I'm fine, thanks!",
    "Mr. Smith met Dr. Jones at 3 p.m. Then they left. It was Jan. 5th, 2024.",
    "It costs $1,000.50 today. Tomorrow it will cost $1,200.75, or about 3.14% more.",
    "Pi is roughly 3.14159. The ratio is 2.5:1. Version 1.2.3 shipped on 2024.01.15.",
    "Visit https://example.com/a.b?c=d&e=f now. Or email me at john.doe@example.org. Thanks.",
    "I read it e.g. in the paper, i.e. the one from the U.S. Army. That's all.",
    "Wait... what? Really... No way. Well... fine.",
    'He said "Stop." Then he left. She asked, "Why?" and laughed.',
    "The list: 1. First item. 2. Second item.\n\n1. Again.\n2. And again.",
    "John F. Kennedy was born in 1917. The U.S.A. is big. Prof. X agrees.",
    "我用iPhone打电话，价格是¥1200.50。然后呢？他说：“好的！”我们走吧。",
    "今天天气很好。我们去公园散步吧！你觉得怎么样？",
    "「你好。」她说。「再见！」他回答。",
    "你好。Mr. Smith来了。他说Hello!然后走了。",
    "The price is 3,5 euros in Germany; in the U.K. it's £3.50. Ok.",
    "Ellipsis at the end...",
    "No end mark at all, just a trailing clause",
    "Numbers like 1. and 2. matter. See section 4. It's there.",
    "She said: 'It's done.' He nodded. (It really was.) Good.",
    "Hmm!!! Really?! Yes!? OK.",
    "Line one\nLine two\n\nLine three.",
    "Meet at 10 a.m. tomorrow, or at 2 p.m. Friday. Bring approx. 20 items, etc. Thanks.",
    "我的电话是138-0013-8000。请在3.5小时内回复，谢谢！Email: a.b@c.cn。",
    "Temperatures hit 40.5°C in Aug. and Sept. Records fell. 50% of stations reported.",
    "He wrote “Done.” and left… Then? Nothing.",
    LONG_ENGLISH,
    LONG_CHINESE,
    "See http://example.com/some/really/long/path/that/keeps/going/and/going/and/going/and/going/"
    "and/going/forever/and/ever/index.html?with=params now. Done.",
    # A list number after a closing quote is a sentence of its own: the rule reads the released text.
    'He said "Stop." 1. Next one. 2. Last one.',
    "Wir treffen uns am 3. März in Berlin. Das steht auf Seite 3. Mais ist gelb. Es kostet 2 Mio. Euro.",
    "Our GPU costs ¥12,000.50，比去年贵了3.5%。Next year, maybe less! 真的吗？Yes.",
]

SPLITS = ("whole", "chars", "random0", "random1", "random2")


def _deltas(text: str, how: str) -> list[str]:
    if how == "whole":
        return [text]
    if how == "chars":
        return list(text)
    rng = random.Random(f"{how}:{text}")
    deltas, pos = [], 0
    while pos < len(text):
        step = rng.randint(1, 7)
        deltas.append(text[pos : pos + step])
        pos += step
    return deltas


def _stream(buffer: SentenceBuffer, deltas: list[str]) -> list[str]:
    units = []
    for delta in deltas:
        units.extend(buffer.feed(delta))
    return units + buffer.flush()


def _refines(units: list[str], sentences: list[str]) -> bool:
    """Whether the units cut the sentences further, in order, with only whitespace dropped between."""
    it = iter(units)
    for sentence in sentences:
        pos = 0
        while pos < len(sentence):
            unit = next(it, None)
            if unit is None or not sentence.startswith(unit, pos):
                return False
            pos += len(unit)
            while pos < len(sentence) and sentence[pos].isspace():
                pos += 1
    return next(it, None) is None


def test_corpus_is_big_enough():
    assert len(CORPUS) >= 20
    assert sum(any("\u4e00" <= ch <= "\u9fff" for ch in text) for text in CORPUS) >= 4


@pytest.mark.parametrize("how", SPLITS)
def test_sentences_match_split_sentences(how):
    for text in CORPUS:
        buffer = SentenceBuffer("English", clauses=False, max_chars=100_000)
        assert _stream(buffer, _deltas(text, how)) == split_sentences(text), text


@pytest.mark.parametrize("how", SPLITS)
@pytest.mark.parametrize("language", ["English", "Chinese"])
def test_cap_pieces_match_the_pipeline(how, language):
    # The pipeline caps every unit again; a streamed cap cut must be the cut cap_length makes anyway.
    cap = CJK_MAX_CHARS if language == "Chinese" else DEFAULT_MAX_CHARS
    for text in CORPUS:
        units = _stream(SentenceBuffer(language, clauses=False), _deltas(text, how))
        expected = [p for s in split_sentences(text) for p in cap_length(s, cap)]
        assert [p for u in units for p in cap_length(u, cap)] == expected, text


@pytest.mark.parametrize("how", SPLITS)
@pytest.mark.parametrize("min_clause_chars", [None, 1, 10])
def test_default_units_refine_the_sentences(how, min_clause_chars):
    for text in CORPUS:
        units = _stream(SentenceBuffer(min_clause_chars=min_clause_chars), _deltas(text, how))
        assert all(u and u == u.strip() for u in units), units
        assert _refines(units, split_sentences(text)), (text, units)


def test_random_text_in_random_pieces_matches_split_sentences():
    # Text made of the characters the rules look at, so that ends land on every kind of boundary.
    alphabet = ["a", "b", "Mr", "F", "e.g", "U.S", "etc", "p.m", "1", "3", "x" * 70, "中", "文"]
    alphabet += [".", ".", ".", "!", "?", "。", "！", "”", '"', ")", "」", ",", "，", " ", " ", " ", "\n", "\t"]
    alphabet += ["am", " März", " Mai", "Seite", " 3.", "。1.", '"Stop." 1.']
    rng = random.Random(7)
    for _ in range(400):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 40)))
        buffer = SentenceBuffer("English", clauses=False, max_chars=100_000)
        deltas = _deltas(text, f"random{rng.random()}")
        assert _stream(buffer, deltas) == split_sentences(text), repr(text)


def test_number_split_across_deltas_is_not_cut():
    buffer = SentenceBuffer("English", min_clause_chars=5)
    assert buffer.feed("It costs $1") == []
    assert buffer.feed(",") == []
    assert buffer.feed("000.50 today. Next") == []  # "Next" may still grow into a word the rules look at
    assert buffer.feed(" one") == ["It costs $1,000.50 today."]
    assert buffer.flush() == ["Next one"]


@pytest.mark.parametrize(
    ("head", "rest", "first"),
    [
        ("Hello Mr.", " Smith arrived. Then", "Hello Mr. Smith arrived."),
        ("It is 3.", "14 today. Then", "It is 3.14 today."),
        ("Use it e.g.", " here. Then", "Use it e.g. here."),
        ("The U.S.", " Army won. Then", "The U.S. Army won."),
        ("Go to example.com/a.", "b now. Then", "Go to example.com/a.b now."),
        ("Wait.", ".. what? Then", "Wait... what?"),
        ('He said "Stop.', '" Then', 'He said "Stop."'),
        ("I met John F.", " Kennedy there. Then", "I met John F. Kennedy there."),
        ("We met at 3 p.m.", " today. Then", "We met at 3 p.m. today."),
        ("「你好。", "」她说。", "「你好。」"),
        ("Really?", "! Then", "Really?!"),
    ],
)
def test_an_end_is_not_released_before_the_text_after_it_proves_it(head, rest, first):
    buffer = SentenceBuffer(clauses=False)
    assert buffer.feed(head) == []
    if rest.startswith(" "):
        assert buffer.feed(" ") == []  # a space proves nothing yet
    assert buffer.feed(rest.removeprefix(" ")) + buffer.feed(" ") == [first]


def test_an_end_is_released_once_the_next_sentence_starts():
    buffer = SentenceBuffer("English")
    assert buffer.feed("Hello there.") == []
    assert buffer.feed(" ") == []
    # After a period the first word must be whole: "Seite 3. Mai" is one sentence, "Seite 3. Mais" two.
    assert buffer.feed("Ho") == []
    assert buffer.feed("w ") == ["Hello there."]
    assert buffer.pending == " How "
    # Other marks are decided by the next character.
    assert buffer.feed("are you? Y") == ["How are you?"]


def test_a_period_waits_for_the_whole_next_word():
    buffer = SentenceBuffer("German", clauses=False)
    assert buffer.feed("Wir treffen uns Seite 3. Ma") == []
    assert buffer.feed("i") == []
    assert buffer.feed(" oder so. Dann") == []
    assert buffer.feed(" ") == ["Wir treffen uns Seite 3. Mai oder so."]
    buffer = SentenceBuffer("German", clauses=False)
    assert buffer.feed("Das steht auf Seite 3. Mais") == []
    assert buffer.feed(" ist gelb. ") == ["Das steht auf Seite 3."]
    assert buffer.flush() == ["Mais ist gelb."]
    for text in ("Wir treffen uns am 3. März wieder. Gut", "Kapitel 3. Mais wächst. Gut", "Seite 12. Mai 2024. Gut"):
        assert _stream(SentenceBuffer("German", clauses=False), list(text)) == split_sentences(text), text


def test_first_unit_is_released_before_the_paragraph_ends():
    text = CORPUS[1] + " " + CORPUS[0]
    buffer = SentenceBuffer("English")
    released_at = None
    for i, ch in enumerate(text):
        if buffer.feed(ch) and released_at is None:
            released_at = i
    assert released_at is not None and released_at < 40


def test_cjk_sentence_is_released_at_the_next_character():
    buffer = SentenceBuffer("Chinese")
    assert buffer.feed("今天天气很好。") == []
    assert buffer.feed("我") == ["今天天气很好。"]


def test_clause_cut_waits_for_its_length_and_for_the_character_after_the_mark():
    buffer = SentenceBuffer("English", min_clause_chars=20)
    assert buffer.feed("Short, but") == []  # the clause before the comma is too short
    head = " not this one at all, since it is long"
    assert buffer.feed(head[: head.index(",") + 1]) == []  # the comma is the last character seen
    assert buffer.feed(" ") == []  # text after the mark could still be the start of a new sentence
    assert buffer.feed("s") == ["Short, but not this one at all,"]
    assert buffer.feed("ince it is long. Next ") == ["since it is long."]


def test_default_clause_cut_on_a_long_sentence():
    text = (
        "When the storm finally passed over the valley late in the evening, the villagers came out "
        "of their houses and began to clear the roads. Next"
    )
    units = []
    buffer = SentenceBuffer()
    for ch in text:
        units.extend(buffer.feed(ch))
        if ch == ",":
            assert units == []
    assert units[0] == "When the storm finally passed over the valley late in the evening,"
    assert _refines(units + buffer.flush(), split_sentences(text))


def test_clause_cuts_never_split_numbers_or_urls():
    text = "Our long preamble goes here, prices are 1,000 and 3,5 and 1，000 and 3:30 at https://a.b/c,d,e now"
    units = _stream(SentenceBuffer("English", min_clause_chars=1), list(text))
    assert units == [
        "Our long preamble goes here,",
        "prices are 1,000 and 3,5 and 1，000 and 3:30 at https://a.b/c,d,e now",
    ]


def test_cjk_clause_cut():
    buffer = SentenceBuffer("Chinese")
    assert buffer.feed("我们今天讨论的问题非常重要而且复杂，") == []  # 17 characters, mark not followed yet
    assert buffer.feed("」") == []  # a closing quote belongs to the clause
    assert buffer.feed("所") == ["我们今天讨论的问题非常重要而且复杂，」"]
    assert buffer.feed("以，要小心。") == []  # a clause shorter than 15 characters is not cut
    assert buffer.flush() == ["所以，要小心。"]


def test_em_dash_clause_cut():
    units = _stream(SentenceBuffer("English", min_clause_chars=10), list("The answer was clear — we go now."))
    assert units == ["The answer was clear —", "we go now."]


def test_cap_cut_at_a_space_before_the_sentence_ends():
    text = LONG_ENGLISH
    buffer = SentenceBuffer("English", clauses=False)
    units = []
    for i, ch in enumerate(text):
        units.extend(buffer.feed(ch))
        if units:
            assert i < len(text) - 1  # released before the end
            break
    assert units == [cap_length(text, DEFAULT_MAX_CHARS)[0]]
    assert len(units[0]) <= DEFAULT_MAX_CHARS and text[len(units[0])] == " "


def test_cjk_cap_cut_at_the_cap():
    text = LONG_CHINESE
    units = _stream(SentenceBuffer("Chinese"), list(text))
    assert units == cap_length(text, CJK_MAX_CHARS)
    assert len(units[0]) == CJK_MAX_CHARS


def test_long_url_is_not_cut_at_the_cap():
    url = "https://example.com/" + "a/" * 75 + "end"  # 173 characters, over the cap of 120
    buffer = SentenceBuffer("English")
    assert [u for ch in url + " is the page." for u in buffer.feed(ch)] == []
    assert buffer.feed(" Next ") == [url + " is the page."]
    # Over the cap, the run goes out with the piece after it, so that capping the unit again keeps it.
    words = " ".join(["word"] * 40)
    units = _stream(SentenceBuffer("English"), list(url + " " + words))
    assert units[0].startswith(url + " word") and cap_length(units[0], DEFAULT_MAX_CHARS)[0] == url
    assert [p for u in units for p in cap_length(u, DEFAULT_MAX_CHARS)] == cap_length(url + " " + words, 120)


def test_auto_picks_cjk_limits_by_script():
    buffer = SentenceBuffer()
    assert buffer.feed("我们今天讨论的问题非常重要而且复杂，所") == ["我们今天讨论的问题非常重要而且复杂，"]


def test_flush_returns_the_tail_and_the_buffer_continues():
    buffer = SentenceBuffer()
    assert buffer.feed("One! Two") == ["One!"]
    assert buffer.flush() == ["Two"]
    assert buffer.flush() == []
    assert buffer.feed(" three. Four") == []
    assert buffer.flush() == ["three.", "Four"]


@pytest.mark.parametrize("text", ["", " ", "\n\n", " \t \n "])
def test_whitespace_only_gives_nothing(text):
    buffer = SentenceBuffer()
    assert buffer.feed(text) == []
    assert buffer.flush() == []


def test_units_are_exact_slices():
    text = "  Hello,   world!  \n\n  Bye…  "
    units = _stream(SentenceBuffer(min_clause_chars=1), list(text))
    assert units == ["Hello,", "world!", "Bye…"]


def test_long_stream_releases_everything():
    text = " ".join(CORPUS) * 3
    units = _stream(SentenceBuffer("English", clauses=False, max_chars=100_000), _deltas(text, "random9"))
    assert units == split_sentences(text)


def test_bad_arguments():
    with pytest.raises(UnsupportedLanguage):
        SentenceBuffer("Klingon")
    for bad in (0, -1, True, 2.5):
        with pytest.raises(ValueError):
            SentenceBuffer(min_clause_chars=bad)
        with pytest.raises(ValueError):
            SentenceBuffer(max_chars=bad)
    with pytest.raises(TypeError):
        SentenceBuffer().feed(b"bytes")  # type: ignore[arg-type]
