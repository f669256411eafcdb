"""/v1/voices: list, clone from an upload, design from a description, fetch the reference, rename, delete."""

from __future__ import annotations

import asyncio
import codecs
import unicodedata
from typing import Literal

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import FileResponse, JSONResponse
from fastapi.routing import APIRoute
from pydantic import Field

try:
    from python_multipart.multipart import MultipartParser, parse_options_header
except ModuleNotFoundError:  # python-multipart < 0.0.13 names its module `multipart`
    from multipart.multipart import MultipartParser, parse_options_header  # type: ignore[no-redef]

from ..speech.errors import InvalidRequest, NotFound
from .protocol import _Strict
from .state import voices


class _TextFieldsChecked:
    """Feeds a multipart body through a second parser, beside Starlette's, to note the text fields whose
    bytes are not UTF-8. Starlette decodes such a field as Latin-1 instead, so the endpoint alone cannot
    tell a name sent as the invalid byte 0xFF from a real "ÿ". Memory stays constant: fields are decoded
    incrementally, never kept."""

    def __init__(self, boundary: bytes):
        self.not_utf8: set[str] = set()
        self._header, self._value, self._disposition = b"", b"", b""
        self._field: str | None = None
        self._decoder = codecs.getincrementaldecoder("utf-8")()
        self._parser = MultipartParser(
            boundary,
            {
                "on_part_begin": self._begin,
                "on_header_field": self._header_field,
                "on_header_value": self._header_value,
                "on_header_end": self._header_end,
                "on_headers_finished": self._headers_finished,
                "on_part_data": self._data,
                "on_part_end": self._end,
            },
        )
        self._failed = False

    def feed(self, chunk: bytes) -> None:
        if chunk and not self._failed:
            try:
                self._parser.write(chunk)
            except Exception:  # a malformed body: Starlette's own parser reports it
                self._failed = True

    def _begin(self) -> None:
        self._disposition, self._field = b"", None

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._header += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _header_end(self) -> None:
        if self._header.lower() == b"content-disposition":
            self._disposition = self._value
        self._header, self._value = b"", b""

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self._disposition)
        if b"filename" not in options:  # a file's bytes are audio, not text
            self._field = options.get(b"name", b"").decode("latin-1")
            self._decoder.reset()

    def _data(self, data: bytes, start: int, end: int) -> None:
        self._decode(data[start:end], final=False)

    def _end(self) -> None:
        self._decode(b"", final=True)

    def _decode(self, data: bytes, final: bool) -> None:
        if self._field is None or self._field in self.not_utf8:
            return
        try:
            self._decoder.decode(data, final)
        except UnicodeDecodeError:
            self.not_utf8.add(self._field)


class _ChecksFormText(APIRoute):
    """Routes that note, in request.state.not_utf8, the multipart text fields that are not UTF-8."""

    def get_route_handler(self):
        handle = super().get_route_handler()

        async def noting(request: Request):
            _, params = parse_options_header(request.headers.get("content-type", ""))
            boundary = params.get(b"boundary")
            charset = params.get(b"charset", b"utf-8").lower().replace(b"_", b"-")
            if not boundary or charset not in (b"utf-8", b"utf8"):  # another declared charset: Starlette uses it
                return await handle(request)
            fields = _TextFieldsChecked(boundary)
            request.state.not_utf8 = fields.not_utf8
            receive = request.receive

            async def tee():
                message = await receive()
                if message["type"] == "http.request":
                    fields.feed(message.get("body", b""))
                return message

            return await handle(Request(request.scope, tee))

        return noting


router = APIRouter(tags=["voices"], route_class=_ChecksFormText)


def voice_name(name: str) -> str:
    """The name to store, stripped; refuses one with nothing visible in it, or with control characters or
    lone surrogates (which could not even be written back as UTF-8 JSON)."""
    name = name.strip()
    if any(unicodedata.category(c) in ("Cc", "Cs") or c == "\ufffd" for c in name):
        raise InvalidRequest("invalid_name", "name must be text without control characters or invalid UTF-8")
    if not any(c.isprintable() and not c.isspace() for c in name):
        raise InvalidRequest("invalid_name", "name must contain something visible, not only spaces")
    return name


def _refuse_non_utf8(request: Request) -> None:
    bad = sorted(getattr(request.state, "not_utf8", ()))
    if bad:
        raise InvalidRequest(
            "invalid_name" if "name" in bad else "invalid_request", f"form field {bad[0]!r} is not valid UTF-8"
        )


class DesignRequest(_Strict):
    name: str = Field(min_length=1, max_length=100)
    description: str = Field(min_length=1, max_length=2000, description="what the voice sounds like")
    sample_text: str = Field(min_length=1, max_length=500, description="what the designed voice says (1-30 s)")
    language: str = Field("Auto", max_length=32)


class RenameRequest(_Strict):
    name: str = Field(min_length=1, max_length=100)


@router.get("/v1/voices")
async def list_voices(request: Request):
    return {"voices": [v.public() for v in voices(request).list()]}


@router.post("/v1/voices", status_code=201)
async def upload_voice(
    request: Request,
    file: UploadFile = File(description="reference audio: wav, mp3, flac or ogg, 1-30 s"),
    name: str = Form(min_length=1, max_length=100),
    transcript: str | None = Form(None, max_length=2000),
    mode: Literal["icl", "xvector"] | None = Form(None),
    language: str | None = Form(None, max_length=32),
):
    _refuse_non_utf8(request)
    name = voice_name(name)
    service = voices(request)
    data = await file.read(service.max_upload_bytes + 1)
    if not data:
        raise InvalidRequest("invalid_audio", "the uploaded file is empty")
    record = await service.add(data, name, transcript, mode, language)
    return JSONResponse(record.public(), status_code=201)


@router.post("/v1/voices/design", status_code=201)
async def design_voice(body: DesignRequest, request: Request):
    record = await voices(request).design(voice_name(body.name), body.description, body.sample_text, body.language)
    return JSONResponse(record.public(), status_code=201)


@router.get("/v1/voices/{voice_id}")
async def get_voice(voice_id: str, request: Request):
    return voices(request).get(voice_id).public()


@router.get("/v1/voices/{voice_id}/audio")
async def voice_audio(voice_id: str, request: Request):
    service = voices(request)
    record = service.get(voice_id)
    path = await asyncio.to_thread(service.library.audio_path, record.id)  # a stat: off the event loop
    if path is None:
        raise NotFound(f"voice {voice_id!r} has no reference audio (built-in voices have none)")
    return FileResponse(path, media_type="audio/wav", filename=f"{record.id}.wav")


@router.patch("/v1/voices/{voice_id}")
async def rename_voice(voice_id: str, body: RenameRequest, request: Request):
    """Renames a cloned or designed voice; its id, and so every reference to it, stays."""
    return (await voices(request).rename(voice_id, voice_name(body.name))).public()


@router.delete("/v1/voices/{voice_id}")
async def delete_voice(voice_id: str, request: Request):
    await voices(request).delete(voice_id)
    return {"id": voice_id, "deleted": True}
