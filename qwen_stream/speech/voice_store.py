"""The voice library: built-in speakers plus cloned and designed voices stored on disk.

Each stored voice is a directory `<root>/<id>/` holding `meta.json`, `prompt.pt` (the clone prompt's
tensors) and `reference.wav` (24 kHz mono). A voice is written into a hidden temporary directory and
renamed into place, and deleted by renaming it away first, so the directory never holds half a voice.

The library is indexed in memory: the directory is scanned once, at start, and the index follows this
process's own adds and deletes. Listing and lookups never touch the disk (they run on the event loop).
The index is this process's alone: voices another process writes into or removes from the same directory
are seen at the next start. Every stored voice is validated when the index is built; a damaged one is left
out of it, logged once, and reported by `broken()` (see /health) until it is fixed and the server restarted,
or deleted. The files of a damaged voice are never touched, only read."""

from __future__ import annotations

import builtins
import errno
import io
import json
import logging
import math
import os
import re
import shutil
import stat
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import torch

from ..catalog import SPEAKERS
from ..generation import valid_unicode

log = logging.getLogger(__name__)

_ID = re.compile(r"^voice_[0-9a-f]{12}$")
_PROMPT_CACHE = 64
_DISK_FULL = {errno.ENOSPC} | ({errno.EDQUOT} if hasattr(errno, "EDQUOT") else set())
# The first bytes each stored file must start with: torch.save writes a zip archive, wav_bytes a RIFF file.
# Checked at start so that garbage is caught there, not by the first request that uses the voice.
_MAGIC = {"prompt.pt": b"PK\x03\x04", "reference.wav": b"RIFF"}


class InsufficientStorage(RuntimeError):
    """The disk (or quota) under the voices directory is full: the voice was not stored, nothing was left."""


class BrokenVoice(RuntimeError):
    """A stored voice whose files turned out damaged when it was used; it is now left out of the library."""

    def __init__(self, voice_id: str, reason: str):
        super().__init__(
            f"voice {voice_id!r} is damaged on this server ({reason}); "
            f"an operator can fix or delete it (GET /health lists damaged voices)"
        )
        self.voice_id, self.reason = voice_id, reason


class _Damaged(Exception):
    """Internal: why a stored voice cannot be used."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


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
    rank = {name: i for i, name in enumerate(SPEAKERS)}
    ordered = sorted(speakers, key=lambda name: (rank.get(name, len(rank)), name))
    return [VoiceRecord(id=name, name=name, kind="builtin", family="custom_voice") for name in ordered]


class VoiceLibrary:
    def __init__(self, root: Path, builtins: list[VoiceRecord]):
        self.root = Path(root).expanduser()
        self.root.mkdir(parents=True, exist_ok=True)
        self._builtins = {v.id.lower(): v for v in builtins}
        # Writers (threads) serialize on the lock and swap in new maps; a published map is never changed in
        # place, so readers on the event loop take no lock and never wait on a writer's disk work.
        self._lock = threading.Lock()
        self._voices: dict[str, VoiceRecord] = {}
        self._broken: dict[str, str] = {}
        self._listing: tuple[VoiceRecord, ...] = ()
        self._prompts: OrderedDict[str, object] = OrderedDict()
        self._cleanup_leftovers()
        self._publish(*self._scan())

    # -- reading (in memory) --------------------------------------------------------------------------
    def list(self) -> list[VoiceRecord]:
        """Built-in speakers, then stored voices oldest first."""
        return list(self._listing)

    def get(self, voice_id: str) -> VoiceRecord | None:
        return self._builtins.get(voice_id.lower()) or self._voices.get(voice_id)

    def broken(self) -> builtins.list[dict]:  # `list` in this class is the method above
        """Damaged entries of the directory, left out of the library: [{"id": directory name, "reason"}]."""
        return [{"id": name, "reason": reason} for name, reason in sorted(self._broken.items())]

    def broken_reason(self, voice_id: str) -> str | None:
        return self._broken.get(voice_id)

    # -- reading (disk: call off the event loop) ------------------------------------------------------
    def audio_path(self, voice_id: str) -> Path | None:
        if voice_id not in self._voices:
            return None
        path = self.root / voice_id / "reference.wav"
        if not path.is_file():
            self._quarantine(voice_id, "reference.wav is missing")
            return None
        return path

    def prompt(self, voice_id: str):
        """The stored clone prompt as a qwen-tts VoiceClonePromptItem (cached). Raises BrokenVoice if its
        file is damaged, and leaves the voice out of the library from then on."""
        with self._lock:
            if voice_id in self._prompts:
                self._prompts.move_to_end(voice_id)
                return self._prompts[voice_id]
        try:
            item = _read_prompt(self.root / voice_id / "prompt.pt")
        except _Damaged as e:
            self._quarantine(voice_id, e.reason)
            raise BrokenVoice(voice_id, e.reason) from None
        with self._lock:
            self._prompts[voice_id] = item
            while len(self._prompts) > _PROMPT_CACHE:
                self._prompts.popitem(last=False)
        return item

    # -- writing --------------------------------------------------------------------------------------
    def add(
        self,
        *,
        name: str,
        kind: str,
        family: str,
        prompt,
        reference_wav: bytes,
        language: str | None = None,
        ref_text: str | None = None,
        description: str | None = None,
    ) -> VoiceRecord:
        """Stores a voice atomically. Raises InsufficientStorage when the disk or quota is full."""
        voice_id = "voice_" + uuid.uuid4().hex[:12]
        record = VoiceRecord(
            id=voice_id,
            name=name,
            kind=kind,
            family=family,
            language=language,
            created=time.time(),
            mode="icl" if prompt.icl_mode else "xvector",
            ref_text=ref_text,
            description=description,
        )
        files = {
            "prompt.pt": _prompt_bytes(prompt),
            "reference.wav": reference_wav,
            "meta.json": json.dumps(asdict(record), ensure_ascii=False).encode("utf-8"),
        }
        staging = self.root / f".tmp-{uuid.uuid4().hex}"
        try:
            staging.mkdir()
            for filename, data in files.items():
                _write_synced(staging / filename, data)
            with self._lock:
                staging.rename(self.root / voice_id)
                self._publish({**self._voices, voice_id: record}, self._broken)
        except BaseException as e:
            shutil.rmtree(staging, ignore_errors=True)
            if isinstance(e, OSError) and e.errno in _DISK_FULL:
                raise InsufficientStorage(f"no space left to store the voice ({e.strerror}); nothing was stored") from e
            raise
        return record

    def rename(self, voice_id: str, name: str) -> VoiceRecord | None:
        """Gives a stored voice a new name: meta.json is rewritten beside and renamed over the old one, so
        a crash leaves either name, never half a file. None if there is no such voice."""
        with self._lock:
            record = self._voices.get(voice_id)
            if record is None:
                return None
            renamed = replace(record, name=name)
            meta = self.root / voice_id / "meta.json"
            staging = meta.with_name(f".meta-{uuid.uuid4().hex}.json")
            try:
                _write_synced(staging, json.dumps(asdict(renamed), ensure_ascii=False).encode("utf-8"))
                os.replace(staging, meta)
            except BaseException as e:
                staging.unlink(missing_ok=True)
                if isinstance(e, OSError) and e.errno in _DISK_FULL:
                    raise InsufficientStorage(f"no space left to rename the voice ({e.strerror})") from e
                raise
            self._publish({**self._voices, voice_id: renamed}, self._broken)
        return renamed

    def delete(self, voice_id: str) -> bool:
        """Removes a stored voice, damaged ones included. False if there was none."""
        if not _ID.match(voice_id):
            return False
        trash = self.root / f".deleted-{uuid.uuid4().hex}"
        with self._lock:
            known = voice_id in self._voices or voice_id in self._broken
            try:
                (self.root / voice_id).rename(trash)
                renamed = True
            except FileNotFoundError:
                renamed = False
            self._prompts.pop(voice_id, None)
            if known:
                self._publish(_without(self._voices, voice_id), _without(self._broken, voice_id))
        if renamed:
            shutil.rmtree(trash, ignore_errors=True)
        return known or renamed

    # -- internals ------------------------------------------------------------------------------------
    def _publish(self, voices: dict[str, VoiceRecord], broken: dict[str, str]) -> None:
        """Installs new maps (callers hold the lock, or own the library, as during __init__)."""
        stored = sorted(voices.values(), key=lambda r: (r.created, r.id))
        self._voices, self._broken = voices, broken
        self._listing = (*self._builtins.values(), *stored)

    def _quarantine(self, voice_id: str, reason: str) -> None:
        """A voice found damaged after start leaves the index; unless it was deleted meanwhile."""
        with self._lock:
            if voice_id not in self._voices:
                return
            self._prompts.pop(voice_id, None)
            self._publish(_without(self._voices, voice_id), {**self._broken, voice_id: reason})
        log.warning("voice library: %s is damaged, left out of the library: %s", self.root / voice_id, reason)

    def _scan(self) -> tuple[dict[str, VoiceRecord], dict[str, str]]:
        voices, broken = {}, {}
        for path in sorted(self.root.iterdir()):
            if path.name.startswith("."):
                continue  # ours are staging and trash (removed at start); others are not voices
            try:
                voices[path.name] = _load_voice(path)
            except _Damaged as e:
                broken[path.name] = e.reason
                log.warning("voice library: %s is damaged, left out of the library: %s", path, e.reason)
        log.info("voice library %s: %d stored voices, %d damaged", self.root, len(voices), len(broken))
        return voices, broken

    def _cleanup_leftovers(self) -> None:
        """Staging and trash directories left by a crash are never voices: remove them."""
        for path in self.root.iterdir():
            if path.name.startswith((".tmp-", ".deleted-")):
                shutil.rmtree(path, ignore_errors=True)
                log.info("removed leftover %s", path)


def _without(mapping: dict, key: str) -> dict:
    return {k: v for k, v in mapping.items() if k != key}


# -- validating what is on disk -----------------------------------------------------------------------
_OPTIONAL_TEXT = ("language", "ref_text", "description")
_REQUIRED = ("id", "name", "kind", "family", "created", "mode")
_KNOWN = {f.name for f in fields(VoiceRecord)}
_CHOICES = {"kind": ("cloned", "designed"), "family": ("base",), "mode": ("icl", "xvector")}


def _load_voice(path: Path) -> VoiceRecord:
    """One stored voice, validated: raises _Damaged with the first problem found."""
    if not path.is_dir():
        raise _Damaged("not a directory")
    if not _ID.match(path.name):
        raise _Damaged("the directory name is not a voice id (voice_ and 12 hex digits)")
    record = _meta_record(_read_meta(path / "meta.json"), path.name)
    for filename, magic in _MAGIC.items():
        _check_file(path / filename, magic)
    return record


def _read_meta(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise _Damaged("meta.json is missing") from None
    except UnicodeDecodeError:
        raise _Damaged("meta.json is not UTF-8") from None
    except ValueError as e:  # truncated or not JSON at all
        raise _Damaged(f"meta.json is not valid JSON ({e})") from None
    except OSError as e:
        raise _Damaged(f"meta.json cannot be read ({e.strerror})") from None


def _meta_record(data, directory: str) -> VoiceRecord:
    if not isinstance(data, dict):
        raise _Damaged("meta.json is not a JSON object")
    if unknown := sorted(set(data) - _KNOWN):
        raise _Damaged(f"meta.json has unknown fields: {', '.join(map(str, unknown))}")
    if missing := [k for k in _REQUIRED if k not in data]:
        raise _Damaged(f"meta.json lacks fields: {', '.join(missing)}")
    for key in _REQUIRED:
        if key != "created" and not _is_text(data[key]):
            raise _Damaged(f"meta.json: {key} must be a string, got {_type(data[key])}")
    for key in _OPTIONAL_TEXT:
        if data.get(key) is not None and not _is_text(data[key]):
            raise _Damaged(f"meta.json: {key} must be a string or null, got {_type(data[key])}")
    created = data["created"]
    if isinstance(created, bool) or not isinstance(created, (int, float)) or not math.isfinite(created):
        raise _Damaged(f"meta.json: created must be a number (seconds since the epoch), got {_type(created)}")
    for key, allowed in _CHOICES.items():
        if data[key] not in allowed:
            raise _Damaged(f"meta.json: {key} is {data[key]!r}, not one of {', '.join(allowed)}")
    if not data["name"].strip():
        raise _Damaged("meta.json: name is blank")
    if data["id"] != directory:
        # Trusting it would serve, or shadow, another voice under this directory's files.
        raise _Damaged(f"meta.json: id {data['id']!r} is not the directory's name")
    return VoiceRecord(**{**data, "created": float(created)})


def _is_text(value) -> bool:
    """A string that can be sent back as UTF-8 JSON (a lone surrogate cannot: the listing would fail)."""
    return isinstance(value, str) and valid_unicode(value)


def _type(value) -> str:
    return "null" if value is None else type(value).__name__


def _check_file(path: Path, magic: bytes) -> None:
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            raise _Damaged(f"{path.name} is not a file")
        with path.open("rb") as f:
            head = f.read(len(magic))
    except FileNotFoundError:
        raise _Damaged(f"{path.name} is missing") from None
    except OSError as e:
        raise _Damaged(f"{path.name} cannot be read ({e.strerror})") from None
    if head != magic:
        raise _Damaged(f"{path.name} is empty" if not head else f"{path.name} is not in its format")


def _read_prompt(path: Path):
    from qwen_tts import VoiceClonePromptItem

    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise _Damaged("prompt.pt is missing") from None
    except OSError:
        raise  # an I/O error (EIO, EMFILE...) may pass; it says nothing about the file's content
    except Exception as e:  # torch.load fails in many ways on a damaged file: none is the request's fault
        raise _Damaged(f"prompt.pt cannot be loaded ({_first_line(e)})") from None
    problem = _prompt_problem(data)
    if problem:
        raise _Damaged(f"prompt.pt {problem}")
    return VoiceClonePromptItem(**data)


def _prompt_problem(data) -> str | None:
    keys = {"ref_code", "ref_spk_embedding", "x_vector_only_mode", "icl_mode", "ref_text"}
    if not isinstance(data, dict) or set(data) != keys:
        return "does not hold a clone prompt"
    if not isinstance(data["ref_spk_embedding"], torch.Tensor) or data["ref_spk_embedding"].ndim != 1:
        return "has no speaker embedding"
    if data["ref_code"] is not None and not isinstance(data["ref_code"], torch.Tensor):
        return "has a bad ref_code"
    if not isinstance(data["icl_mode"], bool) or not isinstance(data["x_vector_only_mode"], bool):
        return "has bad mode flags"
    if data["icl_mode"] and (data["ref_code"] is None or not isinstance(data["ref_text"], str)):
        return "is an ICL prompt without its codes and text"
    return None


def _first_line(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0][:160] if text else ''}"


def _prompt_bytes(prompt) -> bytes:
    # Serialized in memory, then written by Python: torch's own file writer reports a full disk as a bare
    # RuntimeError, where Python raises OSError(ENOSPC) that add() can tell apart.
    out = io.BytesIO()
    torch.save(
        {
            "ref_code": None if prompt.ref_code is None else prompt.ref_code.detach().cpu(),
            "ref_spk_embedding": prompt.ref_spk_embedding.detach().cpu(),
            "x_vector_only_mode": bool(prompt.x_vector_only_mode),
            "icl_mode": bool(prompt.icl_mode),
            "ref_text": prompt.ref_text,
        },
        out,
    )
    return out.getvalue()


def _write_synced(path: Path, data: bytes) -> None:
    # fsync: on file systems that allocate at write-back, a full disk shows only here, and must show before
    # the rename publishes the voice.
    with path.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
