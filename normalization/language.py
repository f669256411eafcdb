"""Language names and the offline per-sentence language pick.

Script decides where it is surer than statistics: kana -> Japanese, Hangul -> Korean, Han -> Chinese
(Chinese with embedded English stays Chinese), more Cyrillic than Latin -> Russian. Latin text goes to
the lingua detector (detector.py); when lingua is not confident (short or ambiguous text, below
LINGUA_MIN_CONFIDENCE) a small stopword-and-diacritics scorer decides, and unsure means English.
Nothing here downloads anything.
"""

from __future__ import annotations

import re

from . import detector

# The one list of the languages Qwen3-TTS speaks (display case, "Auto" first). It lives here, not in
# qwen_stream/catalog.py, because this package is the lower layer: the server imports it, it imports nothing
# of the server (and never torch). catalog.py re-exports it for the server's modules and the WebUI.
LANGUAGES: tuple[str, ...] = (
    "Auto",
    "Chinese",
    "English",
    "Japanese",
    "Korean",
    "German",
    "French",
    "Russian",
    "Portuguese",
    "Spanish",
    "Italian",
)
_BY_LOWER = {name.lower(): name for name in LANGUAGES}


class UnsupportedLanguage(ValueError):
    """A language name that is not one of LANGUAGES."""


def canonical_language(name: str) -> str:
    """Case-insensitive match against LANGUAGES: 'english' -> 'English'."""
    found = _BY_LOWER.get(name.strip().lower()) if isinstance(name, str) else None
    if found is None:
        raise UnsupportedLanguage(f"unsupported language {name!r}; valid names: {', '.join(LANGUAGES)}")
    return found


def _count_scripts(text: str) -> dict[str, int]:
    counts = {"kana": 0, "hangul": 0, "han": 0, "cyrillic": 0, "latin": 0}
    for ch in text:
        cp = ord(ch)
        if cp < 0x80:
            if ch.isalpha():
                counts["latin"] += 1
        elif 0x3040 <= cp <= 0x30FF or 0x31F0 <= cp <= 0x31FF or 0xFF66 <= cp <= 0xFF9F:
            # U+30FB/U+30FC (middle dot, long mark) also appear in Chinese transliterations.
            if cp not in (0x30FB, 0x30FC):
                counts["kana"] += 1
        elif 0xAC00 <= cp <= 0xD7AF or 0x1100 <= cp <= 0x11FF or 0x3130 <= cp <= 0x318F:
            counts["hangul"] += 1
        elif 0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0xF900 <= cp <= 0xFAFF or 0x20000 <= cp <= 0x2FFFF:
            counts["han"] += 1
        elif 0x0400 <= cp <= 0x04FF:
            counts["cyrillic"] += 1
        elif 0xC0 <= cp <= 0x24F and ch.isalpha():
            counts["latin"] += 1
    return counts


def detect_language(sentence: str) -> str:
    """The language of one sentence, or 'Auto' when it has no letters to decide on."""
    return guess_language(sentence)[0]


def guess_language(sentence: str) -> tuple[str, bool]:
    """(language, sure): ``sure`` is False for Latin text that neither lingua nor the scorer could place
    and that is English only by default ("Pesa 200 kg."); the pipeline lets such a sentence take a
    sure Latin-script neighbour's language."""
    c = _count_scripts(sentence)
    if c["latin"] and not (c["kana"] or c["hangul"] or c["han"]) and c["cyrillic"] <= c["latin"]:
        return _detect_latin_statistically(sentence)
    return _detect_by_script(c), True


def _detect_by_script(c: dict[str, int]) -> str:
    # Japanese mixes kanji with kana; a tenth of kana is plenty, a stray の in Chinese is not.
    if c["kana"] and c["kana"] * 10 >= c["kana"] + c["han"]:
        return "Japanese"
    if c["hangul"] and c["hangul"] >= c["han"]:
        return "Korean"
    if c["han"]:
        return "Chinese"  # Chinese with embedded English ("我用iPhone打电话") is Chinese.
    if c["kana"]:
        return "Japanese"
    if c["cyrillic"] > c["latin"]:
        return "Russian"
    return "Auto"


# lingua's confidences sum to 1 over the candidates. Above this the detector decides alone; below it
# (one- to three-word sentences: "Fine." is 0.28 Italian, "Ciao, come stai?" 0.28 Portuguese) the
# scorer below does, which needs function words or diacritics and defaults to English.
LINGUA_MIN_CONFIDENCE = 0.5
# A clear lead decides too: "Er lief gestern 5 km in 25 min." is 0.49 German, 0.26 English.
LINGUA_MIN_LEAD = (0.4, 0.2)
_LATIN_LANGUAGES = frozenset({"English", "German", "French", "Spanish", "Italian", "Portuguese"})


LATIN_LANGUAGES = _LATIN_LANGUAGES


def _detect_latin_statistically(sentence: str) -> tuple[str, bool]:
    ranked = detector.confidences(sentence)
    if ranked and ranked[0][0] in _LATIN_LANGUAGES:
        top = ranked[0][1]
        lead = top - (ranked[1][1] if len(ranked) > 1 else 0.0)
        if top >= LINGUA_MIN_CONFIDENCE or (top >= LINGUA_MIN_LEAD[0] and lead >= LINGUA_MIN_LEAD[1]):
            return ranked[0][0], True
    language, sure = _score_latin(sentence)
    # An English word or two ("in", "a") is no proof when lingua leans to another language.
    return language, sure and (language != "English" or not ranked or ranked[0][0] == "English")


def language_spans(text: str) -> list[tuple[str, str]]:
    """Mixed text cut into (piece, language) runs, in order; the pieces joined give back ``text``.

    Script runs first (a Han/kana/Hangul run is never cut by the detector); lingua then splits Latin
    runs that mix languages ("Ich komme morgen, but I will be late."). Used for per-span decisions
    inside one sentence; a segment sent to the model keeps one language.
    """
    pieces: list[tuple[str, str]] = []
    for run, script in _script_runs(text):
        if script == "latin" and len(run) <= detector.MAX_DETECT_CHARS:
            found = detector.spans(run)
            if len(found) > 1:
                cuts = [0] + [start for start, _, _ in found[1:]] + [len(run)]
                pieces.extend((run[a:b], lang) for a, b, (_, _, lang) in zip(cuts[:-1], cuts[1:], found, strict=True))
                continue
        language = detect_language(run) if script != "none" else "Auto"
        pieces.append((run, language))
    return _merge_same(pieces)


def _script_of(ch: str) -> str:
    counts = _count_scripts(ch)
    if counts["kana"] or counts["han"] or counts["hangul"]:
        return "cjk"
    if counts["cyrillic"]:
        return "cyrillic"
    return "latin" if counts["latin"] else "none"


def _script_runs(text: str) -> list[tuple[str, str]]:
    """Runs of one script; characters without a script (digits, spaces, marks) join the run before."""
    runs: list[list[str]] = []
    for ch in text:
        script = _script_of(ch)
        if runs and (script == "none" or script == runs[-1][1] or runs[-1][1] == "none"):
            runs[-1][0] += ch
            if runs[-1][1] == "none":
                runs[-1][1] = script
        else:
            runs.append([ch, script])
    return [(run, script) for run, script in runs]


def _merge_same(pieces: list[tuple[str, str]]) -> list[tuple[str, str]]:
    merged: list[tuple[str, str]] = []
    for piece, lang in pieces:
        if merged and (merged[-1][1] == lang or lang == "Auto"):
            merged[-1] = (merged[-1][0] + piece, merged[-1][1])
        else:
            merged.append((piece, lang))
    return merged


# Frequent function words, chosen to overlap little with English and with each other. A word counts
# once per sentence however often it occurs ("La La Land is great" stays English).
_STOPWORDS = {
    "English": """the and is are was were of to in that it with for this you have has be not but what
        which will would can could should they we he she from by at on an or my your there their been do
        does did how why when where who if just about so all me our it's i'm don't can't i've""",
    "German": """der das und ist nicht ein eine einen einem einer ich du sie wir ihr es mit von zu auf für
        den dem des auch sich sind war wie aber oder wenn noch nur bei nach aus kann haben hat wird werden
        mein dein sehr gut ja nein heute schon mehr wer warum hier dort diese dieser dass über im zum zur
        gibt geht bin bist""",
    "French": """le la les et est une des du de que qui pas ne je tu il elle nous vous ils elles avec pour
        dans sur ce cette ces mais ou où très bien oui non suis sont être avoir fait au aux sa ses mon mes
        leur aussi comme tout rien c'est j'ai qu'il n'est""",
    "Spanish": """el la los las y es está están un una unos unas de del que en con por para como pero muy
        también yo tú él ella nosotros ellos su sus mi sí qué cómo dónde cuando porque hay ser estar tengo
        tiene lo le se al más este esta esto bien bueno buenos días todo nada""",
    "Italian": """il lo la gli le e è un una uno di del della dei delle che non per con su sono sei siamo
        molto anche ma come perché questo questa io tu lui lei noi voi loro mi ti ci si ho ha hanno nel
        nella al alla bene sì cosa tutto niente""",
    "Portuguese": """o os a as e é um uma de do da dos das que não com para por em no na nos nas eu você
        ele ela nós eles muito também mas como sim isso isto este esta seu sua meu minha tem são está
        estou bom boa dia tudo nada ao pelo pela""",
}
_STOPWORDS_SETS = {lang: frozenset(words.split()) for lang, words in _STOPWORDS.items()}
# One-word utterances a voice chat often gets; worth two points so they decide on their own.
_STRONG_WORDS = {
    "German": {"danke", "bitte", "hallo", "tschüss", "guten", "morgen", "abend", "entschuldigung"},
    "French": {"bonjour", "merci", "bonsoir", "salut", "beaucoup", "pourquoi", "aujourd'hui"},
    "Spanish": {"hola", "gracias", "adiós", "buenas", "señor", "perdón"},
    "Italian": {"ciao", "grazie", "buongiorno", "buonasera", "prego", "arrivederci"},
    "Portuguese": {"obrigado", "obrigada", "olá", "tchau", "então", "você"},
}
# Per-character evidence: letters that belong (mostly) to one or two of the languages.
_DIACRITICS: dict[str, dict[str, float]] = {
    "ß": {"German": 3},
    "ä": {"German": 2},
    "ö": {"German": 2},
    "ü": {"German": 2},
    "ñ": {"Spanish": 3},
    "¿": {"Spanish": 3},
    "¡": {"Spanish": 3},
    "ã": {"Portuguese": 3},
    "õ": {"Portuguese": 3},
    "ç": {"French": 1, "Portuguese": 1},
    "é": {"French": 1, "Spanish": 0.5, "Portuguese": 0.5, "Italian": 0.5},
    "è": {"French": 1, "Italian": 1},
    "ê": {"French": 1, "Portuguese": 1},
    "â": {"French": 1, "Portuguese": 1},
    "ô": {"French": 1, "Portuguese": 1},
    "à": {"French": 1, "Italian": 1, "Portuguese": 0.5},
    "î": {"French": 2},
    "ï": {"French": 2},
    "û": {"French": 2},
    "ë": {"French": 2},
    "œ": {"French": 2},
    "ì": {"Italian": 2},
    "ò": {"Italian": 2},
    "ù": {"Italian": 1, "French": 1},
    "á": {"Spanish": 1, "Portuguese": 1},
    "í": {"Spanish": 1, "Portuguese": 1},
    "ó": {"Spanish": 1, "Portuguese": 1},
    "ú": {"Spanish": 1, "Portuguese": 1},
}
_WORD = re.compile(r"[^\W\d_]+(?:['’][^\W\d_]+)*")
_ORDER = ("German", "French", "Spanish", "Italian", "Portuguese")  # tie-break among equal scores


def detect_latin(sentence: str) -> str:
    """English, German, French, Spanish, Italian or Portuguese for Latin-script text (the scorer alone)."""
    return _score_latin(sentence)[0]


def _score_latin(sentence: str) -> tuple[str, bool]:
    lowered = sentence.lower()
    words = {w.replace("’", "'") for w in _WORD.findall(lowered)}
    scores = {lang: float(len(words & stop)) for lang, stop in _STOPWORDS_SETS.items()}
    for lang, strong in _STRONG_WORDS.items():
        scores[lang] += 2 * len(words & strong)
    for ch in lowered:
        for lang, weight in _DIACRITICS.get(ch, {}).items():
            scores[lang] += weight
    english = scores.pop("English")
    best = max(_ORDER, key=lambda lang: scores[lang])
    # Unsure means English: that is the default voice and the normalizer we have.
    if scores[best] >= 2 and scores[best] > english:
        return best, True
    return "English", english >= 1
