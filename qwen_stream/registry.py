"""The models a server may speak with: one per family, loaded on first use, least recently used unloaded.

Loading and unloading happen only on the engine thread (it owns the device); other threads read the
static facts (`ModelInfo`, from config.json or from the published model cards) to validate requests
before anything loads."""

from __future__ import annotations

import gc
import json
import logging
import re
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from .catalog import (
    FAMILIES,
    HUB_FAMILY_NAMES,
    HUB_SIZES,
    LANGUAGES,
    PUBLISHED_SIZES,
    SPEAKERS,
    Family,
    family_of_hub_name,
    hub_id,
    speaker_display_name,
)
from .model import LoadedModel, ModelLoadError, check_model_source, load_model
from .settings import ModelSettings

log = logging.getLogger(__name__)

# A hub id's languages, spelled as checkpoints key them (config.json's codec_language_id: lower case).
_HUB_LANGUAGES = tuple(name.lower() for name in LANGUAGES)
# The tail of a released hub id, "1.7B-CustomVoice": its size and family.
_HUB_ID = re.compile(
    "({})-({})$".format("|".join(map(re.escape, HUB_SIZES.values())), "|".join(HUB_FAMILY_NAMES.values()))
)


@dataclass(frozen=True)
class ModelInfo:
    """What a checkpoint can do, known without loading its weights."""

    family: Family
    size: str  # "0b6", "1b7" (the library's markers) or another label (e.g. "tiny")
    speakers: tuple[str, ...]
    languages: tuple[str, ...]

    @property
    def accepts_instruct(self) -> bool:
        if self.family == "voice_design":
            return True
        return self.family == "custom_voice" and self.size != "0b6"


@dataclass(frozen=True)
class ModelSpec:
    family: Family
    source: str  # local directory or hub id
    info: ModelInfo


def info_from_source(source: str, family_hint: Family | None = None) -> ModelInfo:
    """Reads config.json of a local checkpoint; for a hub id, the published facts of its model card."""
    path = Path(source).expanduser()
    if path.is_dir():
        check_model_source(source)
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
        family = config.get("tts_model_type")
        if family not in FAMILIES:
            raise ModelLoadError(f"{source}: unknown Qwen3-TTS model type {family!r}")
        talker = config.get("talker_config", {})
        speakers = tuple(speaker_display_name(k) for k in talker.get("spk_id", {}))
        languages = ("auto",) + tuple(k for k in talker.get("codec_language_id", {}) if "dialect" not in k)
        return ModelInfo(family, str(config.get("tts_model_size")), speakers, languages)
    match = _HUB_ID.search(source)
    if family_hint is not None:
        family = family_hint
    elif match:
        family = family_of_hub_name(match.group(2))
    else:
        raise ModelLoadError(f"cannot tell the model family of {source!r}; use a Qwen3-TTS-12Hz hub id or a local dir")
    size = "0b6" if match and match.group(1) == "0.6B" else "1b7"
    speakers = SPEAKERS if family == "custom_voice" else ()
    return ModelInfo(family, size, speakers, _HUB_LANGUAGES)


def parse_models(text: str) -> dict[Family, str]:
    """`--models`: comma-separated `family:size` (hub ids) or `family=PATH` entries -> {family: source}."""
    sources: dict[Family, str] = {}
    for item in (part.strip() for part in text.split(",") if part.strip()):
        if "=" in item:
            family, source = (x.strip() for x in item.split("=", 1))
        elif ":" in item:
            family, size = (x.strip().lower() for x in item.split(":", 1))
            if size not in HUB_SIZES:
                raise ValueError(f"--models: size {size!r} in {item!r}; use {' or '.join(HUB_SIZES)}")
            if family in FAMILIES and size not in PUBLISHED_SIZES[family]:
                published = ", ".join(HUB_SIZES[s] for s in PUBLISHED_SIZES[family])
                raise ValueError(f"--models: {HUB_FAMILY_NAMES[family]} is published at {published} only")
            # An unknown family is refused just below, with the same message as for family=PATH.
            source = hub_id(family, size) if family in FAMILIES else item
        else:
            raise ValueError(f"--models: {item!r} is neither family:size nor family=PATH")
        if family not in FAMILIES:
            raise ValueError(f"--models: unknown family {family!r}; use base, custom_voice or voice_design")
        if family in sources:
            raise ValueError(f"--models: {family} given twice")
        sources[family] = source
    if not sources:
        raise ValueError("--models is empty")
    return sources


class ModelRegistry:
    def __init__(self, specs: list[ModelSpec], settings: ModelSettings, max_loaded: int = 1):
        if not specs:
            raise ValueError("no models to serve")
        self.specs: dict[str, ModelSpec] = {spec.family: spec for spec in specs}
        self.default_family: str = specs[0].family
        self._settings = settings
        self.max_loaded = max(1, max_loaded)
        self._loaded: OrderedDict[str, LoadedModel] = OrderedDict()
        self._lock = threading.Lock()  # guards the dict for readers on other threads
        self.loads = 0
        self.unloads = 0
        # Called on the engine thread with a model being unloaded, before its memory is collected: whoever
        # keeps something built for it (the continuous loop's runners) lets go, so the memory is free for
        # the model loaded next.
        self.on_unload: list[Callable[[LoadedModel], None]] = []

    @classmethod
    def single(cls, model: LoadedModel) -> ModelRegistry:
        """A registry around one already loaded model (tests, the CLI)."""
        info = ModelInfo(model.family, model.size, tuple(model.speakers), tuple(model.languages))
        registry = cls([ModelSpec(model.family, model.source, info)], ModelSettings(path=model.source))
        registry._loaded[model.family] = model
        return registry

    # -- any thread -----------------------------------------------------------------------------------
    def info(self, family: str | None = None) -> ModelInfo:
        return self.specs[family or self.default_family].info

    @property
    def families(self) -> tuple[str, ...]:
        return tuple(self.specs)

    def serves(self, family: str) -> bool:
        return family in self.specs

    def loaded(self) -> list[LoadedModel]:
        with self._lock:
            return list(self._loaded.values())

    def peek(self, family: str | None = None) -> LoadedModel | None:
        with self._lock:
            return self._loaded.get(family or self.default_family)

    # -- engine thread only ---------------------------------------------------------------------------
    def get(self, family: str | None = None) -> LoadedModel:
        """The loaded model of a family, loading it (and unloading the least recently used) if needed."""
        family = family or self.default_family
        spec = self.specs.get(family)
        if spec is None:
            raise ModelLoadError(f"no {family} model is configured")
        with self._lock:
            model = self._loaded.get(family)
            if model is not None:
                self._loaded.move_to_end(family)
                return model
        while len(self._loaded) >= self.max_loaded:
            with self._lock:
                evicted_family, evicted = self._loaded.popitem(last=False)
            self._unload(evicted_family, evicted)
        model = load_model(replace(self._settings, path=spec.source))
        self.loads += 1
        with self._lock:
            self._loaded[family] = model
        log.info("loaded %s model %s", family, spec.source)
        return model

    def _unload(self, family: str, model: LoadedModel) -> None:
        model.tap.remove()
        for listener in self.on_unload:
            listener(model)
        del model
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        self.unloads += 1
        log.info("unloaded %s model (least recently used)", family)
