"""The voice library over HTTP: upload, list, stream, restart, delete; design; legacy ref_audio; LRU models."""

from __future__ import annotations

import base64
import errno
import io
import json
import shutil
import threading
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf

from qwen_stream.speech import voice_store as voice_library
from qwen_stream.config import ServerSettings
from qwen_stream.settings import BYTES_PER_FRAME, FrameBudget

from tests.live_server import LiveServer

MAX_FRAMES = 40


def audio_file(samples: np.ndarray, rate: int, fmt: str = "WAV") -> bytes:
    out = io.BytesIO()
    sf.write(out, samples, rate, format=fmt)
    return out.getvalue()


def three_family_settings(dirs, voices_dir, **overrides) -> ServerSettings:
    custom, base, design = dirs
    models = f"custom_voice={custom},base={base},voice_design={design}"
    return ServerSettings(models=models, device="cpu", max_frames=MAX_FRAMES, voices_dir=str(voices_dir),
                          max_upload_mb=2, **overrides)


@pytest.fixture(scope="module")
def dirs(custom_voice_dir, base_dir, voice_design_dir):
    return custom_voice_dir, base_dir, voice_design_dir


@pytest.fixture(scope="module")
def voices_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("voices")


@pytest.fixture(scope="module")
def server(dirs, voices_dir):
    live = LiveServer(three_family_settings(dirs, voices_dir)).start()
    yield live
    live.stop()


@pytest.fixture
def client(server):
    with httpx.Client(base_url=server.url, timeout=300) as c:
        yield c
    assert server.wait_idle()


def stored(voices_dir: Path) -> list[str]:
    return sorted(p.name for p in voices_dir.iterdir())


def upload(client, data: bytes, name="Mine", filename="ref.wav", **fields):
    return client.post("/v1/voices", files={"file": (filename, data, "application/octet-stream")},
                       data={"name": name, **fields})


def speak(client, voice, text="Cloned words.", **extra):
    return client.post("/tts/stream", json={"text": text, "voice": voice, **extra})


def test_builtin_speakers_are_listed(client):
    voices = client.get("/v1/voices").json()["voices"]
    builtins = [v for v in voices if v["kind"] == "builtin"]
    assert [v["name"] for v in builtins] == ["Vivian", "Serena", "Uncle_Fu", "Dylan", "Eric", "Ryan", "Aiden",
                                             "Ono_Anna", "Sohee"]
    assert all(v["family"] == "custom_voice" for v in builtins)


def test_upload_list_stream_restart_delete(server, client, dirs, voices_dir, reference_audio):
    samples, rate = reference_audio
    created = upload(client, audio_file(samples, rate, "FLAC"), name="Narrator", filename="ref.flac",
                     transcript="The reference words.", language="English")
    assert created.status_code == 201, created.text
    voice = created.json()
    assert voice["kind"] == "cloned" and voice["family"] == "base" and voice["mode"] == "icl"
    assert voice["name"] == "Narrator" and voice["created"] and voice["language"] == "English"
    assert voice["id"] in [v["id"] for v in client.get("/v1/voices").json()["voices"]]

    reference = client.get(f"/v1/voices/{voice['id']}/audio")
    assert reference.status_code == 200 and reference.headers["content-type"] == "audio/wav"
    back, back_rate = sf.read(io.BytesIO(reference.content))
    assert back_rate == 24000 and abs(len(back) / back_rate - len(samples) / rate) < 0.01

    spoken = speak(client, voice["id"])
    assert spoken.status_code == 200 and len(spoken.content) > 0 and len(spoken.content) % BYTES_PER_FRAME == 0

    # A new server process over the same directory still has it, and can speak with it.
    again = LiveServer(three_family_settings(dirs, voices_dir)).start()
    try:
        with httpx.Client(base_url=again.url, timeout=300) as c2:
            assert voice["id"] in [v["id"] for v in c2.get("/v1/voices").json()["voices"]]
            assert speak(c2, voice["id"]).status_code == 200
    finally:
        again.stop()

    deleted = client.delete(f"/v1/voices/{voice['id']}")
    assert deleted.status_code == 200 and deleted.json() == {"id": voice["id"], "deleted": True}
    assert voice["id"] not in [v["id"] for v in client.get("/v1/voices").json()["voices"]]
    assert client.get(f"/v1/voices/{voice['id']}").status_code == 404
    assert client.get(f"/v1/voices/{voice['id']}/audio").status_code == 404
    assert speak(client, voice["id"]).json()["error"]["code"] == "unknown_voice"
    assert voice["id"] not in stored(voices_dir)


def test_xvector_mode_without_transcript(client, reference_audio):
    samples, rate = reference_audio
    created = upload(client, audio_file(samples, rate, "OGG"), name="Quiet", filename="ref.ogg")
    assert created.status_code == 201, created.text
    assert created.json()["mode"] == "xvector" and created.json()["ref_text"] is None
    assert speak(client, created.json()["id"]).status_code == 200
    assert client.delete(f"/v1/voices/{created.json()['id']}").status_code == 200


def _tone(seconds: float, rate: int = 16000, amplitude: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


@pytest.mark.parametrize("data, fields, status, code", [
    (b"this is not audio at all" * 10, {}, 400, "invalid_audio"),
    (audio_file(_tone(31), 16000), {}, 400, "invalid_audio"),  # too long
    (audio_file(_tone(0.4), 16000), {}, 400, "invalid_audio"),  # too short
    (audio_file(np.zeros(16000 * 3, np.float32), 16000), {}, 400, "invalid_audio"),  # silence
    pytest.param(b"\0" * (3 * 2**20), {}, 413, "too_large", id="over-the-upload-limit"),
    (audio_file(_tone(3), 16000), {"mode": "sing"}, 400, "invalid_request"),
    (audio_file(_tone(3), 16000), {"mode": "icl"}, 400, "invalid_request"),  # icl without transcript
    (b"", {}, 400, "invalid_audio"),
])
def test_bad_uploads_store_nothing(client, voices_dir, data, fields, status, code):
    before = stored(voices_dir)
    response = upload(client, data, **fields)
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code
    assert stored(voices_dir) == before


def test_upload_without_name_or_file_is_refused(client, voices_dir):
    before = stored(voices_dir)
    no_file = client.post("/v1/voices", data={"name": "x"})
    no_name = client.post("/v1/voices", files={"file": ("a.wav", audio_file(_tone(3), 16000))})
    assert no_file.status_code == no_name.status_code == 400
    assert stored(voices_dir) == before


def test_builtin_voices_cannot_be_deleted(client):
    response = client.delete("/v1/voices/Vivian")
    assert response.status_code == 400
    assert client.delete("/v1/voices/voice_000000000000").status_code == 404


def _damaged_copy(good: Path, library: Path, voice_id: str, damage) -> str:
    folder = library / voice_id
    shutil.copytree(good, folder)
    meta = json.loads((folder / "meta.json").read_text())
    (folder / "meta.json").write_text(json.dumps({**meta, "id": voice_id}))
    damage(folder)
    return voice_id


def _edit_meta(folder: Path, **changes) -> None:
    meta = json.loads((folder / "meta.json").read_text())
    (folder / "meta.json").write_text(json.dumps({**meta, **changes}))


def test_damaged_voices_are_left_out_and_reported(client, dirs, voices_dir, tmp_path, reference_audio):
    import torch

    samples, rate = reference_audio
    good = upload(client, audio_file(samples, rate), name="Good").json()["id"]
    library = tmp_path / "voices"
    library.mkdir()
    shutil.copytree(voices_dir / good, library / good)
    client.delete(f"/v1/voices/{good}")

    def copy(voice_id, damage):
        return _damaged_copy(library / good, library, voice_id, damage)

    dated = copy("voice_0000000000d1", lambda f: _edit_meta(f, created="yesterday"))
    truncated = copy("voice_0000000000d2", lambda f: (f / "meta.json").write_bytes(b'{"id": "voice_0'))
    impostor = copy("voice_0000000000d3", lambda f: _edit_meta(f, id=good, name="Impostor"))
    no_prompt = copy("voice_0000000000d4", lambda f: (f / "prompt.pt").unlink())
    # A torch file, so it passes the checks at start; it holds no clone prompt, which shows when used.
    bad_prompt = copy("voice_0000000000d5", lambda f: torch.save({"weights": torch.zeros(2)}, f / "prompt.pt"))

    live = LiveServer(three_family_settings(dirs, library)).start()
    try:
        with httpx.Client(base_url=live.url, timeout=300) as c:
            def stored_listed():
                response = c.get("/v1/voices")
                assert response.status_code == 200, response.text
                return sorted(v["id"] for v in response.json()["voices"] if v["kind"] != "builtin")

            def broken():
                return {b["id"]: b["reason"] for b in c.get("/health").json()["broken"]}

            assert stored_listed() == sorted([good, bad_prompt])
            assert set(broken()) == {dated, truncated, impostor, no_prompt}
            assert "created" in broken()[dated] and "prompt.pt is missing" in broken()[no_prompt]
            assert c.get(f"/v1/voices/{good}").json()["name"] == "Good"  # not the impostor

            for attempt in range(2):  # the first use finds the damage; later ones are told the same
                refused = speak(c, bad_prompt)
                assert refused.status_code == 400, refused.text
                assert refused.json()["error"]["code"] == "broken_voice"
                assert "prompt.pt" in refused.json()["error"]["message"]
            assert bad_prompt in broken() and stored_listed() == [good]
            assert speak(c, dated).json()["error"]["code"] == "broken_voice"
            assert speak(c, good).status_code == 200

            assert c.get(f"/v1/voices/{dated}").status_code == 404
            assert c.delete(f"/v1/voices/{dated}").status_code == 200  # how an operator clears one
            assert dated not in broken() and not (library / dated).exists()
    finally:
        live.stop()


def test_health_reports_no_damage_on_a_sound_library(client):
    assert client.get("/health").json()["broken"] == []


def test_a_full_disk_gives_507_and_stores_nothing(client, voices_dir, monkeypatch):
    # A full disk injected into the server's write (tests/speech/test_voice_store.py fills a real tmpfs).
    def disk_full(path, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(voice_library, "_write_synced", disk_full)
    before = stored(voices_dir)
    uploaded = upload(client, audio_file(_tone(3), 16000), name="Too much")
    designed = client.post("/v1/voices/design", json={"name": "Too much", "description": "Calm.",
                                                      "sample_text": "Hello there.", "language": "English"})
    for response in (uploaded, designed):
        assert response.status_code == 507, response.text
        assert response.json()["error"]["code"] == "insufficient_storage"
    assert stored(voices_dir) == before


@pytest.mark.parametrize("name", ["   ", "\t\n ", "\u200b\u3000", "a\x00b", "two\nlines",
                                  b"\xff\xfe", b"ok\xed\xa0\x80"])
def test_blank_or_invalid_upload_names_are_refused(client, voices_dir, name):
    before = stored(voices_dir)
    response = upload(client, audio_file(_tone(3), 16000), name=name)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "invalid_name"
    assert stored(voices_dir) == before


def test_a_name_must_arrive_as_utf8(client, voices_dir):
    # Starlette reads a field that is not UTF-8 as Latin-1: the same "Zoë" would pass, were it not checked.
    before = stored(voices_dir)
    latin1 = upload(client, audio_file(_tone(3), 16000), name="Zo\u00eb".encode("latin-1"))
    assert latin1.status_code == 400 and latin1.json()["error"]["code"] == "invalid_name", latin1.text
    assert stored(voices_dir) == before
    created = upload(client, audio_file(_tone(3), 16000), name="Zo\u00eb \u58f0".encode())
    assert created.status_code == 201, created.text
    assert created.json()["name"] == "Zo\u00eb \u58f0"
    assert client.delete(f"/v1/voices/{created.json()['id']}").status_code == 200


def test_blank_or_invalid_design_names_are_refused(client, voices_dir):
    before = stored(voices_dir)
    # Blank, blank in another script, a control character, a lone surrogate escaped, one encoded in UTF-8.
    for name in [b'"   "', b'"\\u3000"', b'"bell\\u0007"', b'"\\ud800"', b'"\xed\xa0\x80"']:
        body = b'{"name": ' + name + b', "description": "Calm.", "sample_text": "Hello.", "language": "English"}'
        response = client.post("/v1/voices/design", content=body, headers={"content-type": "application/json"})
        assert response.status_code == 400, (name, response.text)
    assert stored(voices_dir) == before


def test_legacy_ref_audio_is_base64_only(server, client, tmp_path, reference_audio):
    samples, rate = reference_audio
    real_file = tmp_path / "ref.wav"
    real_file.write_bytes(audio_file(samples, rate))
    for location in [str(real_file), f"file://{real_file}", "http://127.0.0.1:9/ref.wav", "~/ref.wav"]:
        refused = client.post("/tts/stream", json={"text": "Hi.", "ref_audio": location})
        # A readable audio file sits at that path: had the server opened it, the request would succeed.
        assert refused.status_code == 400 and refused.json()["error"]["code"] == "invalid_ref_audio", location

    encoded = base64.b64encode(real_file.read_bytes()).decode()
    first = client.post("/tts/stream", json={"text": "Hi.", "ref_audio": encoded})
    assert first.status_code == 200 and len(first.content) % BYTES_PER_FRAME == 0 and first.content
    cached = dict(server.backend.voices._legacy_prompts)
    second = client.post("/tts/stream", json={"text": "Hi.", "ref_audio": "data:audio/wav;base64," + encoded})
    assert second.status_code == 200
    assert server.backend.voices._legacy_prompts == cached and len(cached) == 1  # same content: same prompt, reused
    garbage = client.post("/tts/stream", json={"text": "Hi.", "ref_audio": base64.b64encode(b"noise" * 99).decode()})
    assert garbage.status_code == 400


def test_instructions_only_where_the_model_follows_them(client, reference_audio):
    samples, rate = reference_audio
    clone = upload(client, audio_file(samples, rate), name="Plain").json()
    refused = speak(client, clone["id"], instruct="whisper")
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "instruct_unsupported"
    # The tiny CustomVoice checkpoint is not a 0.6B one, so it takes instructions like the 1.7B.
    assert speak(client, "Ryan", text="Hello.", instruct="Speak slowly.").status_code == 200
    assert client.delete(f"/v1/voices/{clone['id']}").status_code == 200


def test_design_then_clone_then_stream(client):
    designed = client.post("/v1/voices/design", json={"name": "Deep", "description": "A deep, calm narrator.",
                                                      "sample_text": "Welcome to the show.", "language": "English"})
    assert designed.status_code == 201, designed.text
    voice = designed.json()
    assert voice["kind"] == "designed" and voice["family"] == "base" and voice["mode"] == "icl"
    assert voice["description"] == "A deep, calm narrator." and voice["ref_text"]
    assert client.get(f"/v1/voices/{voice['id']}/audio").status_code == 200
    spoken = speak(client, voice["id"])
    assert spoken.status_code == 200 and spoken.content
    assert client.delete(f"/v1/voices/{voice['id']}").status_code == 200


def test_concurrent_uploads_keep_the_library_consistent(server, client, voices_dir, reference_audio):
    samples, rate = reference_audio
    data = audio_file(samples, rate)
    results, seen_partial = [], []
    stop = threading.Event()

    def watch():
        with httpx.Client(base_url=server.url, timeout=60) as c:
            while not stop.is_set():
                for v in c.get("/v1/voices").json()["voices"]:
                    if v["kind"] != "builtin":
                        folder = voices_dir / v["id"]
                        if not all((folder / f).is_file() for f in ("meta.json", "prompt.pt", "reference.wav")):
                            seen_partial.append(v["id"])

    def send(i):
        with httpx.Client(base_url=server.url, timeout=300) as c:
            results.append(upload(c, data, name=f"Parallel {i}"))

    watcher = threading.Thread(target=watch)
    watcher.start()
    senders = [threading.Thread(target=send, args=(i,)) for i in range(6)]
    for t in senders:
        t.start()
    for t in senders:
        t.join()
    stop.set()
    watcher.join()
    assert [r.status_code for r in results] == [201] * 6
    assert not seen_partial
    ids = {r.json()["id"] for r in results}
    listed = {v["id"] for v in client.get("/v1/voices").json()["voices"]}
    assert ids <= listed and len(ids) == 6
    for voice_id in ids:
        assert client.delete(f"/v1/voices/{voice_id}").status_code == 200
    assert not [name for name in stored(voices_dir) if name.startswith(".")]


def test_least_recently_used_model_unloads(dirs, tmp_path, reference_audio):
    live = LiveServer(three_family_settings(dirs, tmp_path, max_loaded_models=2)).start()
    registry = live.backend.engine.registry
    samples, rate = reference_audio
    try:
        with httpx.Client(base_url=live.url, timeout=300) as c:
            def loaded():
                return {m["family"] for m in c.get("/health").json()["models"] if m["loaded"]}

            assert loaded() == {"custom_voice"}  # the default voice's model loads at start
            clone = upload(c, audio_file(samples, rate), name="LRU").json()  # needs the Base model
            assert loaded() == {"custom_voice", "base"}
            designed = c.post("/v1/voices/design", json={"name": "D", "description": "Bright.",
                                                         "sample_text": "Hello there.", "language": "English"})
            assert designed.status_code == 201
            # VoiceDesign loaded; custom_voice was the least recently used, so it went.
            assert "voice_design" in loaded() and "custom_voice" not in loaded() and len(loaded()) == 2
            assert registry.unloads >= 1
            assert c.post("/tts/stream", json={"text": "Back again.", "voice": "Serena"}).status_code == 200
            assert "custom_voice" in loaded() and len(loaded()) == 2
            assert c.post("/tts/stream", json={"text": "Clone.", "voice": clone["id"]}).status_code == 200
    finally:
        live.stop()


def test_a_request_slow_to_prepare_still_plays_before_a_later_one(server, client, reference_audio):
    from tests.api.test_server import Stream

    samples, rate = reference_audio
    fresh_audio = base64.b64encode(audio_file(samples * 0.9, rate)).decode()  # never seen: prompt to build
    hog = Stream(server.url, {"text": "A long sentence keeps the engine thread busy for a while.",
                              "client_id": "hog"}).start()
    assert hog.first_chunk.wait(60)
    # A's clone prompt waits behind the hog's job on the engine thread; B needs nothing but normalization.
    first = threading.Thread(target=lambda: results.__setitem__("a", speak_timed(server, {
        "text": "First.", "ref_audio": fresh_audio, "client_id": "ordered-clone"})))
    results: dict = {}
    first.start()
    for _ in range(500):  # A's prompt is waiting on the engine thread, behind the hog's job
        if server.backend.engine.backlog > 0:
            break
        threading.Event().wait(0.005)
    assert server.backend.engine.backlog > 0 and not hog.ended_at, "the hog ended too soon to test"
    second = speak_timed(server, {"text": "Second.", "voice": "Ryan", "client_id": "ordered-clone"})
    first.join(120)
    hog.join()
    a_first_byte, a_end = results["a"]
    b_first_byte, _ = second
    assert a_first_byte is not None and b_first_byte is not None
    assert a_end <= b_first_byte + 0.05  # B started only after A ended


def speak_timed(server, body: dict) -> tuple[float | None, float]:
    import time

    first = None
    with httpx.Client(base_url=server.url, timeout=300) as c, c.stream("POST", "/tts/stream", json=body) as r:
        assert r.status_code == 200, r.read()
        for _ in r.iter_raw():
            if first is None:
                first = time.perf_counter()
    return first, time.perf_counter()


def test_rename_keeps_the_id_and_survives_a_restart(server, client, dirs, voices_dir, reference_audio):
    samples, rate = reference_audio
    voice = upload(client, audio_file(samples, rate), name="Before").json()
    renamed = client.patch(f"/v1/voices/{voice['id']}", json={"name": "  After  "})
    assert renamed.status_code == 200, renamed.text
    assert renamed.json() == {**voice, "name": "After"}  # only the name changed: the id, audio and prompt stay
    assert [v["name"] for v in client.get("/v1/voices").json()["voices"] if v["id"] == voice["id"]] == ["After"]
    assert speak(client, voice["id"]).status_code == 200
    assert client.get(f"/v1/voices/{voice['id']}/audio").status_code == 200
    assert not [p for p in (voices_dir / voice["id"]).iterdir() if p.name.startswith(".")]  # no staging left

    # Refusals: a built-in voice, an unknown one, a blank or missing name, an unknown field.
    assert client.patch("/v1/voices/Ryan", json={"name": "X"}).json()["error"]["code"] == "invalid_request"
    assert client.patch("/v1/voices/voice_000000000000", json={"name": "X"}).status_code == 404
    assert client.patch(f"/v1/voices/{voice['id']}", json={"name": "   "}).json()["error"]["code"] == "invalid_name"
    for body in ({}, {"name": "X", "kind": "builtin"}, {"name": "x" * 101}):
        assert client.patch(f"/v1/voices/{voice['id']}", json=body).status_code == 400
    assert client.get(f"/v1/voices/{voice['id']}").json()["name"] == "After"

    again = LiveServer(three_family_settings(dirs, voices_dir)).start()
    try:
        with httpx.Client(base_url=again.url, timeout=300) as c2:
            assert c2.get(f"/v1/voices/{voice['id']}").json()["name"] == "After"
    finally:
        again.stop()
    assert client.delete(f"/v1/voices/{voice['id']}").status_code == 200


def test_the_reserved_voice_design_speaks_a_description_on_any_server_with_voicedesign(server, client):
    text = "A preview of the voice."
    spoken = client.post("/tts/stream", json={"text": text, "voice": "design", "instruct": "A calm, low narrator."})
    assert spoken.status_code == 200
    assert len(spoken.content) == FrameBudget(max_frames=MAX_FRAMES).for_text(text) * BYTES_PER_FRAME
    refused = client.post("/tts/stream", json={"text": text, "voice": "design"})
    assert refused.status_code == 400 and "instruct" in refused.json()["error"]["message"]
