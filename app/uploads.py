"""Uploaded files: size limit, sanitised names, a per-session folder, and a check of their contents.

Gradio first stores an upload in its own cache (and refuses files over ``max_file_size``); the Studio then copies it
into ``<session folder>/uploads/`` under a sanitised name and checks it with the engine's own readers, so a wrong
format or missing column shows the engine's :class:`dba.DataError` message in the page.
"""
from __future__ import annotations

import os
import re
import shutil
import unicodedata
from pathlib import Path

from dba.data import SUPPORTED_EXTENSIONS, read_rows, row_kind
from dba.errors import DataError

CORPUS_EXTENSIONS = SUPPORTED_EXTENSIONS
"""Training corpora: what :func:`dba.data.read_rows` reads."""
ANCHOR_EXTENSIONS = (".safetensors",)
"""Saved global gradients."""

_MAX_NAME = 80


class UploadError(DataError):
    """An upload refused before its contents are read (too large, wrong type, unreadable)."""


def sanitise_name(name: str | None, default: str = "upload") -> str:
    """A safe file name from a user-supplied one: the last path component only (``/`` and ``\\`` both count),
    ASCII letters, digits, ``.``, ``_`` and ``-`` only, no leading dot, at most 80 characters (the extension kept)."""
    base = re.split(r"[\\/]", str(name or ""))[-1]
    base = unicodedata.normalize("NFKD", base).encode("ascii", "ignore").decode("ascii")
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", base).strip("._-")
    base = re.sub(r"\.{2,}", ".", base)
    if not base:
        return default
    stem, dot, ext = base.rpartition(".")
    if not dot:
        stem, ext = base, ""
    ext = ext[:16]
    stem = stem[: _MAX_NAME - len(ext) - 1].strip("._-") or default
    return f"{stem}.{ext}" if ext else stem


def _same_bytes(a: Path, b: Path) -> bool:
    if a.stat().st_size != b.stat().st_size:
        return False
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x, y = fa.read(1 << 20), fb.read(1 << 20)
            if x != y:
                return False
            if not x:
                return True


def _display(name: str | None, path: Path) -> str:
    return sanitise_name(name) if name else path.name


def store_upload(src: str | os.PathLike, folder: str | os.PathLike, *, allowed: tuple[str, ...], max_bytes: int,
                 original_name: str | None = None) -> Path:
    """Copy an uploaded file into ``folder`` under a sanitised, unused name and return the new path.

    Raises :class:`UploadError` for a missing or empty file, a file over ``max_bytes``, or an extension not in
    ``allowed``.
    """
    src = Path(src)
    shown = _display(original_name or src.name, src)
    if not src.is_file():
        raise UploadError(f"The upload {shown} could not be read (it is not a file).")
    size = src.stat().st_size
    if size > max_bytes:
        raise UploadError(f"{shown} is {size / 2**20:.1f} MB; the largest upload accepted here is "
                          f"{max_bytes / 2**20:.0f} MB (DBA_STUDIO_UPLOAD_MB).")
    if size == 0:
        raise UploadError(f"{shown} is empty.")
    name = sanitise_name(original_name or src.name)
    ext = Path(name).suffix.lower()
    if ext not in allowed:
        raise UploadError(f"{shown}: unsupported file type {ext or '(no extension)'!r}; this field accepts "
                          f"{', '.join(allowed)}.")
    folder = Path(folder).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    dest = folder / name
    n = 1
    while dest.exists():
        if _same_bytes(dest, src):  # the same file uploaded again (checked on upload, then used by a run)
            return dest
        dest = folder / f"{Path(name).stem}-{n}{ext}"
        n += 1
    if dest.resolve().parent != folder:  # cannot happen after sanitising; kept as the last line of defence
        raise UploadError(f"Refusing the file name {original_name!r}.")
    shutil.copyfile(src, dest)
    return dest


def discard(src: str | os.PathLike) -> None:
    """Delete a refused upload from Gradio's upload folder (and its folder when that is left empty). Files elsewhere
    are never touched: only Gradio's own copy of what a user sent is removed."""
    from gradio.utils import get_upload_folder, is_in_or_equal

    try:
        path = Path(src).resolve()
        folder = Path(get_upload_folder()).resolve()
        if path == folder or not is_in_or_equal(path, folder) or not path.is_file():
            return
        path.unlink(missing_ok=True)
        if path.parent != folder and not any(path.parent.iterdir()):
            path.parent.rmdir()
    except OSError:
        pass


def _reword(e: DataError, path: Path, shown: str) -> DataError:
    """The engine's message with the server-side path replaced by the name the user knows."""
    return DataError(str(e).replace(str(path), shown))


def check_corpus(path: Path, shown: str | None = None) -> dict:
    """Read every row and check its layout (text / instruction / prompt-response / messages); returns a summary."""
    shown = shown or path.name
    try:
        rows = read_rows(path)
        kinds: dict[str, int] = {}
        for i, row in enumerate(rows):
            try:
                k = row_kind(row)
            except DataError as e:
                raise DataError(f"{path}: row {i + 1}: {e}") from None
            kinds[k] = kinds.get(k, 0) + 1
    except DataError as e:
        raise _reword(e, path, shown) from None
    return {"file": shown, "rows": len(rows), "layouts": kinds}


def accept_corpus(src, folder, max_bytes: int, original_name: str | None = None) -> tuple[Path, dict]:
    """Store and check a training corpus upload; the stored copy is removed again when it is refused."""
    dest = store_upload(src, folder, allowed=CORPUS_EXTENSIONS, max_bytes=max_bytes, original_name=original_name)
    try:
        return dest, check_corpus(dest, _display(original_name or Path(src).name, dest))
    except DataError:
        dest.unlink(missing_ok=True)
        raise


def accept_anchor(src, folder, max_bytes: int, original_name: str | None = None) -> Path:
    """Store a saved global gradient (its contents are checked when it is loaded against the model)."""
    return store_upload(src, folder, allowed=ANCHOR_EXTENSIONS, max_bytes=max_bytes, original_name=original_name)
