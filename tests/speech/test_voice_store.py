"""The on-disk voice library, without a model or a server: validation at load, quarantine of damaged voices,
the in-memory index, atomic writes on a full disk."""

from __future__ import annotations

import contextlib
import errno
import io
import json
import logging
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from qwen_stream.speech import voice_store as voice_library
from qwen_stream.speech.voice_store import BrokenVoice, InsufficientStorage, VoiceLibrary, VoiceRecord
from qwen_stream.cloning import wav_bytes

BUILTINS = [VoiceRecord(id="Vivian", name="Vivian", kind="builtin", family="custom_voice")]


def clone_prompt(icl: bool = True):
    from qwen_tts import VoiceClonePromptItem

    return VoiceClonePromptItem(ref_code=torch.arange(24).reshape(12, 2) if icl else None,
                                ref_spk_embedding=torch.linspace(0, 1, 16), x_vector_only_mode=not icl,
                                icl_mode=icl, ref_text="Some words." if icl else None)


def add(library: VoiceLibrary, name: str = "Mine", seconds: float = 0.1) -> VoiceRecord:
    return library.add(name=name, kind="cloned", family="base", prompt=clone_prompt(),
                       reference_wav=wav_bytes(np.zeros(int(24000 * seconds), np.float32)), language="English")


def stored_ids(library: VoiceLibrary) -> list[str]:
    return [v.id for v in library.list() if v.kind != "builtin"]


def edit_meta(folder: Path, **changes) -> None:
    meta = json.loads((folder / "meta.json").read_text())
    (folder / "meta.json").write_text(json.dumps({**meta, **changes}))


def torch_file(obj) -> bytes:
    out = io.BytesIO()
    torch.save(obj, out)
    return out.getvalue()


# Each case damages one stored voice: (what it does to the voice's folder, words the reason must contain).
DAMAGE = {
    "created_is_a_string": (lambda f, other: edit_meta(f, created="yesterday"), "created"),
    "meta_truncated": (lambda f, other: (f / "meta.json").write_bytes((f / "meta.json").read_bytes()[:25]),
                       "not valid JSON"),
    "meta_missing": (lambda f, other: (f / "meta.json").unlink(), "meta.json is missing"),
    "meta_not_an_object": (lambda f, other: (f / "meta.json").write_text("[1, 2]"), "not a JSON object"),
    "meta_not_utf8": (lambda f, other: (f / "meta.json").write_bytes(b'{"id": "\xff"}'), "not UTF-8"),
    "id_names_another_voice": (lambda f, other: edit_meta(f, id=other.id, name="Impostor"), "directory"),
    "unknown_field": (lambda f, other: edit_meta(f, colour="blue"), "unknown fields: colour"),
    "missing_field": (lambda f, other: (f / "meta.json").write_text(json.dumps(
        {k: v for k, v in json.loads((f / "meta.json").read_text()).items() if k != "mode"})), "lacks fields: mode"),
    "name_is_a_number": (lambda f, other: edit_meta(f, name=7), "name must be a string"),
    "name_blank": (lambda f, other: edit_meta(f, name="   "), "name is blank"),
    # json.loads turns this escape into a lone surrogate, which no UTF-8 response can carry.
    "name_lone_surrogate": (lambda f, other: (f / "meta.json").write_text(
        (f / "meta.json").read_text().replace('"Mine"', '"\\ud800"')), "name must be a string"),
    "created_is_true": (lambda f, other: edit_meta(f, created=True), "created"),
    "kind_builtin": (lambda f, other: edit_meta(f, kind="builtin"), "kind"),
    "mode_unknown": (lambda f, other: edit_meta(f, mode="sing"), "mode"),
    "language_is_a_list": (lambda f, other: edit_meta(f, language=["en"]), "language"),
    "prompt_missing": (lambda f, other: (f / "prompt.pt").unlink(), "prompt.pt is missing"),
    "prompt_garbage": (lambda f, other: (f / "prompt.pt").write_bytes(b"not a tensor file at all"), "prompt.pt"),
    "prompt_empty": (lambda f, other: (f / "prompt.pt").write_bytes(b""), "prompt.pt is empty"),
    "prompt_a_directory": (lambda f, other: ((f / "prompt.pt").unlink(), (f / "prompt.pt").mkdir()),
                           "prompt.pt is not a file"),
    "reference_missing": (lambda f, other: (f / "reference.wav").unlink(), "reference.wav is missing"),
}


@pytest.mark.parametrize("case", list(DAMAGE))
def test_a_damaged_voice_is_quarantined_at_load(tmp_path, caplog, case):
    damage, reason_words = DAMAGE[case]
    library = VoiceLibrary(tmp_path, BUILTINS)
    good, bad = add(library, name="Good"), add(library)
    damage(tmp_path / bad.id, good)

    with caplog.at_level(logging.WARNING, logger="qwen_stream.speech.voice_store"):
        reloaded = VoiceLibrary(tmp_path, BUILTINS)
    assert stored_ids(reloaded) == [good.id]  # the good voice is listed once, the damaged one not at all
    assert reloaded.get(good.id) == good and reloaded.get(bad.id) is None
    [entry] = reloaded.broken()
    assert entry["id"] == bad.id and reason_words in entry["reason"], entry
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and bad.id in warnings[0].getMessage() and reason_words in warnings[0].getMessage()
    assert (tmp_path / bad.id).exists()  # quarantined, not removed: an operator may want to repair it


def test_stray_entries_are_reported_not_served(tmp_path):
    library = VoiceLibrary(tmp_path, BUILTINS)
    good = add(library)
    shutil.copytree(tmp_path / good.id, tmp_path / "my-voice")  # a good voice under a name that is no id
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / ".DS_Store").write_text("hidden files are none of ours")

    reloaded = VoiceLibrary(tmp_path, BUILTINS)
    assert stored_ids(reloaded) == [good.id]
    assert {e["id"]: e["reason"] for e in reloaded.broken()} == {
        "my-voice": "the directory name is not a voice id (voice_ and 12 hex digits)",
        "notes.txt": "not a directory"}


def test_the_listing_survives_a_voice_with_a_string_created(tmp_path):
    library = VoiceLibrary(tmp_path, BUILTINS)
    first, second = add(library, name="One"), add(library, name="Two")
    edit_meta(tmp_path / first.id, created="2024-01-01")  # sorting by it once failed the whole listing
    listing = VoiceLibrary(tmp_path, BUILTINS).list()
    assert [v.id for v in listing] == ["Vivian", second.id]


def test_a_voice_round_trips_through_a_reload(tmp_path):
    library = VoiceLibrary(tmp_path, BUILTINS)
    icl = add(library, name="Talker")
    xvector = library.add(name="Quiet", kind="designed", family="base", prompt=clone_prompt(icl=False),
                          reference_wav=wav_bytes(np.zeros(2400, np.float32)), description="calm")
    reloaded = VoiceLibrary(tmp_path, BUILTINS)
    assert reloaded.list() == library.list() == [BUILTINS[0], icl, xvector]
    assert reloaded.broken() == []
    prompt = reloaded.prompt(icl.id)
    assert torch.equal(prompt.ref_code, clone_prompt().ref_code) and prompt.icl_mode and prompt.ref_text
    assert reloaded.prompt(xvector.id).ref_code is None
    assert reloaded.audio_path(icl.id) == tmp_path / icl.id / "reference.wav"


# Files that pass the checks at load (right magic bytes) but fail when the voice is used.
BAD_PROMPTS = {
    "truncated": lambda good: good[:200],
    "not_a_prompt": lambda good: torch_file({"weights": torch.zeros(3)}),
    "no_embedding": lambda good: torch_file({"ref_code": None, "ref_spk_embedding": None, "x_vector_only_mode": True,
                                             "icl_mode": False, "ref_text": None}),
    "icl_without_codes": lambda good: torch_file({"ref_code": None, "ref_spk_embedding": torch.zeros(4),
                                                  "x_vector_only_mode": False, "icl_mode": True, "ref_text": "x"}),
}


@pytest.mark.parametrize("case", list(BAD_PROMPTS))
def test_a_prompt_that_fails_to_load_marks_the_voice_broken(tmp_path, caplog, case):
    library = VoiceLibrary(tmp_path, BUILTINS)
    voice = add(library)
    prompt_file = tmp_path / voice.id / "prompt.pt"
    prompt_file.write_bytes(BAD_PROMPTS[case](prompt_file.read_bytes()))
    library = VoiceLibrary(tmp_path, BUILTINS)
    assert library.get(voice.id) == voice  # it looked fine at load

    with caplog.at_level(logging.WARNING, logger="qwen_stream.speech.voice_store"), pytest.raises(BrokenVoice) as e:
        library.prompt(voice.id)
    assert voice.id in str(e.value) and "prompt.pt" in e.value.reason
    assert library.get(voice.id) is None and stored_ids(library) == []
    assert [b["id"] for b in library.broken()] == [voice.id]
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1


def test_files_removed_after_load_mark_the_voice_broken(tmp_path):
    library = VoiceLibrary(tmp_path, BUILTINS)
    first, second = add(library), add(library)
    (tmp_path / first.id / "prompt.pt").unlink()
    (tmp_path / second.id / "reference.wav").unlink()
    with pytest.raises(BrokenVoice, match="prompt.pt is missing"):
        library.prompt(first.id)
    assert library.audio_path(second.id) is None
    assert {b["id"]: b["reason"] for b in library.broken()} == {first.id: "prompt.pt is missing",
                                                                second.id: "reference.wav is missing"}


def test_the_index_follows_adds_and_deletes(tmp_path, monkeypatch):
    library = VoiceLibrary(tmp_path, BUILTINS)
    first = add(library, name="First")
    second = add(library, name="Second")
    with no_disk(monkeypatch):
        listed, found = stored_ids(library), library.get(second.id)
    assert listed == [first.id, second.id] and found == second

    assert library.delete(first.id)
    with no_disk(monkeypatch):
        listed, found = stored_ids(library), library.get(first.id)
    assert listed == [second.id] and found is None
    assert not (tmp_path / first.id).exists()
    assert not library.delete(first.id) and not library.delete("Vivian") and not library.delete("../x")
    assert sorted(p.name for p in tmp_path.iterdir()) == [second.id]  # no staging or trash left


def test_a_damaged_voice_can_be_deleted(tmp_path):
    library = VoiceLibrary(tmp_path, BUILTINS)
    voice = add(library)
    edit_meta(tmp_path / voice.id, created=None)
    library = VoiceLibrary(tmp_path, BUILTINS)
    assert [b["id"] for b in library.broken()] == [voice.id]
    assert library.delete(voice.id)
    assert library.broken() == [] and not (tmp_path / voice.id).exists()


@contextlib.contextmanager
def no_disk(monkeypatch):
    """Any file system access in the block fails. The patches are gone once it exits, before pytest reports."""
    def refuse(*args, **kwargs):
        raise AssertionError("the disk was read")

    with monkeypatch.context() as m:
        for name in ("iterdir", "open", "stat", "is_file", "is_dir", "exists", "read_text", "read_bytes"):
            m.setattr(Path, name, refuse)
        for name in ("stat", "listdir", "scandir", "open"):
            m.setattr(os, name, refuse)
        m.setattr("builtins.open", refuse)
        yield


def test_listing_and_lookups_never_touch_the_disk(tmp_path, monkeypatch):
    library = VoiceLibrary(tmp_path, BUILTINS)
    voices = [add(library, name=f"V{i}") for i in range(5)]
    edit_meta(tmp_path / voices[0].id, created="x")
    library = VoiceLibrary(tmp_path, BUILTINS)

    with no_disk(monkeypatch):
        listed = [v.id for v in library.list()]
        found = [library.get(voices[2].id), library.get("vivian"), library.get("voice_000000000000"),
                 library.get("nobody")]
        broken = library.broken()
        reasons = library.broken_reason(voices[0].id), library.broken_reason(voices[1].id)
    assert listed == ["Vivian"] + [v.id for v in voices[1:]]
    assert found == [voices[2], BUILTINS[0], None, None]
    assert [b["id"] for b in broken] == [voices[0].id]
    assert reasons[0] and reasons[1] is None


@pytest.fixture
def tiny_disk(tmp_path):
    """A 1 MiB tmpfs: a real full disk. Needs root (or CAP_SYS_ADMIN) and mount(8); skipped where absent."""
    mount_point = tmp_path / "tiny"
    mount_point.mkdir()
    if shutil.which("mount") is None or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount_point)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (not root?); test_a_full_quota_* injects the error instead")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=True)


def test_a_full_disk_stores_nothing_and_says_so(tiny_disk):
    library = VoiceLibrary(tiny_disk, BUILTINS)
    kept = add(library, name="Small")
    before = sorted(p.name for p in tiny_disk.iterdir())

    with pytest.raises(InsufficientStorage, match="nothing was stored") as e:
        add(library, name="Huge", seconds=30)  # 1.4 MB of audio on a 1 MiB disk
    assert isinstance(e.value.__cause__, OSError) and e.value.__cause__.errno == errno.ENOSPC
    assert sorted(p.name for p in tiny_disk.iterdir()) == before  # no half-written voice, no staging dir
    assert stored_ids(library) == [kept.id]
    assert stored_ids(VoiceLibrary(tiny_disk, BUILTINS)) == [kept.id]
    assert add(library, name="Fits").id in stored_ids(library)  # the failure freed what it had written


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT])
def test_a_full_quota_stores_nothing_and_says_so(tmp_path, monkeypatch, code):
    # A quota cannot be filled for real here, so the write fails as the kernel would fail it.
    library = VoiceLibrary(tmp_path, BUILTINS)
    writes = []

    def full(path, data):
        writes.append(path.name)
        if len(writes) == 2:
            raise OSError(code, os.strerror(code))
        path.write_bytes(data)

    monkeypatch.setattr(voice_library, "_write_synced", full)
    with pytest.raises(InsufficientStorage):
        add(library)
    assert list(tmp_path.iterdir()) == [] and library.list() == BUILTINS


def test_other_write_errors_are_not_called_a_full_disk(tmp_path, monkeypatch):
    library = VoiceLibrary(tmp_path, BUILTINS)

    def denied(path, data):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(voice_library, "_write_synced", denied)
    with pytest.raises(PermissionError):
        add(library)
    assert list(tmp_path.iterdir()) == []
