"""Published facts about Qwen3-TTS, written once: model families, speakers, languages, hub ids, frame sizes.

They come from the model cards and released configs, not from this server's choices, so every module that
needs one imports it from here (model loading, the registry, the tiny checkpoint builder, settings, the
routes the WebUI reads). Cheap to import on purpose: no torch, nothing loaded.
"""

from __future__ import annotations

from typing import Literal, get_args

# Languages: the text front end (normalization/) owns the list and this module re-exports it. That package
# is the lower layer (qwen_stream depends on it, never the reverse) and must stay free of torch and of this
# package's import-time hooks, so the arrow points from here to there. Display case, "Auto" first.
from normalization.language import LANGUAGES

# -- model families ------------------------------------------------------------------------------------

Family = Literal["base", "custom_voice", "voice_design"]
FAMILIES: tuple[Family, ...] = get_args(Family)
# Which family a server speaks with by default when it serves several (--demo builds them in this order):
# named speakers need no setup, Base needs a reference voice, VoiceDesign a description.
FAMILIES_BY_DEFAULT: tuple[Family, ...] = ("custom_voice", "base", "voice_design")

# -- hub ids ---------------------------------------------------------------------------------------------

HUB_ORG = "Qwen"
# The family's and the size's spelling in the released repository names, e.g. Qwen3-TTS-12Hz-1.7B-CustomVoice.
HUB_FAMILY_NAMES: dict[Family, str] = {"base": "Base", "custom_voice": "CustomVoice", "voice_design": "VoiceDesign"}
HUB_SIZES = {"0.6b": "0.6B", "1.7b": "1.7B"}  # as --models writes them -> as the hub does
# VoiceDesign is published at 1.7B only.
PUBLISHED_SIZES: dict[Family, tuple[str, ...]] = {
    "base": ("0.6b", "1.7b"),
    "custom_voice": ("0.6b", "1.7b"),
    "voice_design": ("1.7b",),
}


def hub_id(family: Family, size: str) -> str:
    """The hub repository of a released checkpoint: hub_id("custom_voice", "1.7b") ->
    "Qwen/Qwen3-TTS-12Hz-1.7B-CustomVoice". `size` is "0.6b" or "1.7b" (any case)."""
    return f"{HUB_ORG}/Qwen3-TTS-12Hz-{HUB_SIZES[size.lower()]}-{HUB_FAMILY_NAMES[family]}"


def family_of_hub_name(name: str) -> Family:
    """ "CustomVoice" (the last part of a hub id) -> "custom_voice"."""
    return {hub: family for family, hub in HUB_FAMILY_NAMES.items()}[name]


# -- speakers --------------------------------------------------------------------------------------------

# The CustomVoice speakers in the model card's order, with its one-line character for each (the OpenAI voice
# table picks from these). Checkpoints key them in lower case; these are the names users write.
SPEAKER_TRAITS: dict[str, str] = {
    "Vivian": "bright young woman",
    "Serena": "warm, gentle woman",
    "Uncle_Fu": "low, mellow older man",
    "Dylan": "youthful man",
    "Eric": "lively man",
    "Ryan": "dynamic man",
    "Aiden": "sunny young man",
    "Ono_Anna": "playful woman",
    "Sohee": "warm woman",
}
SPEAKERS: tuple[str, ...] = tuple(SPEAKER_TRAITS)
_SPEAKER_BY_LOWER = {name.lower(): name for name in SPEAKERS}


def speaker_display_name(key: str) -> str:
    """A checkpoint's speaker key in the case users write it ("uncle_fu" -> "Uncle_Fu"); an unknown key
    (a fine-tuned checkpoint's own speaker) is returned as it is."""
    return _SPEAKER_BY_LOWER.get(key.lower(), key)


# -- languages -------------------------------------------------------------------------------------------

# The ten languages the codec has ids for; "Auto" is not one of them (the model or the front end picks).
SPOKEN_LANGUAGES: tuple[str, ...] = tuple(name for name in LANGUAGES if name != "Auto")

# -- audio frames ----------------------------------------------------------------------------------------

SAMPLE_RATE = 24_000
SAMPLES_PER_FRAME = 1920  # 12.5 frames per second at 24 kHz
BYTES_PER_FRAME = SAMPLES_PER_FRAME * 2  # PCM16 mono
FRAME_SECONDS = SAMPLES_PER_FRAME / SAMPLE_RATE  # 80 ms

__all__ = [
    "BYTES_PER_FRAME",
    "FAMILIES",
    "FAMILIES_BY_DEFAULT",
    "FRAME_SECONDS",
    "Family",
    "HUB_FAMILY_NAMES",
    "HUB_ORG",
    "HUB_SIZES",
    "LANGUAGES",
    "PUBLISHED_SIZES",
    "SAMPLES_PER_FRAME",
    "SAMPLE_RATE",
    "SPEAKERS",
    "SPEAKER_TRAITS",
    "SPOKEN_LANGUAGES",
    "family_of_hub_name",
    "hub_id",
    "speaker_display_name",
]
