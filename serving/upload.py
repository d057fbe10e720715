"""An uploaded file kept in memory, as the type of a BentoML API parameter.

BentoML treats a parameter typed as a `pathlib.PurePath` subclass as a multipart file field. For
`Path` itself its validator writes the upload to a temporary file on disk, which the service then
read back, and BentoML deleted after the response: a disk round trip of the whole image per request
on the event loop (about 4-5 ms for a 2.3 MB 2048x1024 PNG on 2 cores, with the multipart parse
already holding the bytes in memory: serving.http.keep_uploads_in_memory). `Upload` is such a
subclass with its own pydantic validator, which keeps the bytes the parser already holds. It never
touches the file system: its path is only the client's file name (base name only).
"""

from __future__ import annotations

import posixpath
from pathlib import PurePosixPath
from typing import Any

from pydantic_core import core_schema
from starlette.datastructures import UploadFile


class Upload(PurePosixPath):
    """The file name a client gave (a path object, for BentoML) and the uploaded bytes (`data`)."""

    data: bytes

    @classmethod
    def of(cls, name: str | None, data: bytes) -> Upload:
        upload = cls(posixpath.basename(name or "") or "upload")
        upload.data = data
        return upload

    @classmethod
    def validate(cls, value: Any) -> Upload:
        """An Upload from what BentoML's multipart parsing hands over (a starlette UploadFile,
        whose in-memory file is read whole: the body limit was checked before it was parsed)."""
        if isinstance(value, Upload):
            return value
        if isinstance(value, UploadFile):
            value.file.seek(0)
            return cls.of(value.filename, value.file.read())
        if isinstance(value, (bytes, bytearray)):
            return cls.of(None, bytes(value))
        raise ValueError("upload the image as a multipart file part")

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: Any) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(cls.validate)

    @classmethod
    def __get_pydantic_json_schema__(cls, schema: Any, handler: Any) -> dict[str, Any]:
        return {"type": "file", "format": "binary"}  # what BentoML's own file fields say
