"""The voice library: built-in speakers plus cloned and designed voices stored on disk.

Each stored voice is a directory `<root>/<id>/` holding `meta.json`, `prompt.pt` (the clone prompt's
tensors) and `reference.wav` (24 kHz mono). A voice is written into a hidden temporary directory and
renamed into place, and deleted by renaming it away first, so a listing never sees half a voice."""

from __future__ import annotations

import json
import logging
import re
import shutil
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

log = logging.getLogger(__name__)

_ID = re.compile(r"^voice_[0-9a-f]{12}$")
_PROMPT_CACHE = 64


@dataclass(frozen=True)
class VoiceRecord:
    id: str
    name: str
    kind: str  # builtin | cloned | designed
    family: str  # the model family that speaks it
    language: str | None = None
    created: float | None = None
    mode: str | None = None  # icl | xvector (stored voices)
    ref_text: str | None = None
    description: str | None = None  # designed voices: the description they were designed from

    def public(self) -> dict:
        data = asdict(self)
        data["has_audio"] = self.kind != "builtin"
        return data


def builtin_voices(speakers) -> list[VoiceRecord]:
    """CustomVoice speakers in the model card's order (checkpoints store them in a dict of their own order)."""
    from .model import BUILTIN_SPEAKERS

    rank = {name: i for i, name in enumerate(BUILTIN_SPEAKERS)}
    ordered = sorted(speakers, key=lambda name: (rank.get(name, len(rank)), name))
    return [VoiceRecord(id=name, name=name, kind="builtin", family="custom_voice") for name in ordered]


class VoiceLibrary:
    def __init__(self, root: Path, builtins: list[VoiceRecord]):
        self.root = Path(root).expanduser()
        self.root.mkdir(parents=True, exist_ok=True)
        self._builtins = {v.id.lower(): v for v in builtins}
        self._lock = threading.Lock()
        self._prompts: OrderedDict[str, object] = OrderedDict()
        self._cleanup_leftovers()

    # -- reading --------------------------------------------------------------------------------------
    def list(self) -> list[VoiceRecord]:
        stored = []
        for path in sorted(self.root.iterdir()):
            record = self._read(path)
            if record is not None:
                stored.append(record)
        stored.sort(key=lambda r: r.created or 0)
        return list(self._builtins.values()) + stored

    def get(self, voice_id: str) -> VoiceRecord | None:
        builtin = self._builtins.get(voice_id.lower())
        if builtin is not None:
            return builtin
        if not _ID.match(voice_id):
            return None
        return self._read(self.root / voice_id)

    def audio_path(self, voice_id: str) -> Path | None:
        if not _ID.match(voice_id):
            return None
        path = self.root / voice_id / "reference.wav"
        return path if path.is_file() else None

    def prompt(self, voice_id: str):
        """The stored clone prompt as a qwen-tts VoiceClonePromptItem (cached)."""
        from qwen_tts import VoiceClonePromptItem

        with self._lock:
            if voice_id in self._prompts:
                self._prompts.move_to_end(voice_id)
                return self._prompts[voice_id]
        data = torch.load(self.root / voice_id / "prompt.pt", map_location="cpu", weights_only=True)
        item = VoiceClonePromptItem(**data)
        with self._lock:
            self._prompts[voice_id] = item
            while len(self._prompts) > _PROMPT_CACHE:
                self._prompts.popitem(last=False)
        return item

    # -- writing --------------------------------------------------------------------------------------
    def add(self, *, name: str, kind: str, family: str, prompt, reference_wav: bytes, language: str | None = None,
            ref_text: str | None = None, description: str | None = None) -> VoiceRecord:
        voice_id = "voice_" + uuid.uuid4().hex[:12]
        record = VoiceRecord(id=voice_id, name=name, kind=kind, family=family, language=language,
                             created=time.time(), mode="icl" if prompt.icl_mode else "xvector",
                             ref_text=ref_text, description=description)
        staging = self.root / f".tmp-{uuid.uuid4().hex}"
        staging.mkdir()
        try:
            torch.save(
                {"ref_code": None if prompt.ref_code is None else prompt.ref_code.detach().cpu(),
                 "ref_spk_embedding": prompt.ref_spk_embedding.detach().cpu(),
                 "x_vector_only_mode": bool(prompt.x_vector_only_mode), "icl_mode": bool(prompt.icl_mode),
                 "ref_text": prompt.ref_text},
                staging / "prompt.pt",
            )
            (staging / "reference.wav").write_bytes(reference_wav)
            (staging / "meta.json").write_text(json.dumps(asdict(record), ensure_ascii=False), encoding="utf-8")
            staging.rename(self.root / voice_id)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return record

    def delete(self, voice_id: str) -> bool:
        if not _ID.match(voice_id):
            return False
        target = self.root / voice_id
        trash = self.root / f".deleted-{uuid.uuid4().hex}"
        try:
            target.rename(trash)
        except FileNotFoundError:
            return False
        with self._lock:
            self._prompts.pop(voice_id, None)
        shutil.rmtree(trash, ignore_errors=True)
        return True

    # -- internals ------------------------------------------------------------------------------------
    def _read(self, path: Path) -> VoiceRecord | None:
        if not _ID.match(path.name):
            return None
        try:
            data = json.loads((path / "meta.json").read_text(encoding="utf-8"))
            return VoiceRecord(**data)
        except (OSError, ValueError, TypeError):
            return None  # removed meanwhile, or not one of ours

    def _cleanup_leftovers(self) -> None:
        """Staging and trash directories left by a crash are never voices: remove them."""
        for path in self.root.iterdir():
            if path.name.startswith((".tmp-", ".deleted-")):
                shutil.rmtree(path, ignore_errors=True)
                log.info("removed leftover %s", path)
