"""Atomic file writing: a cancelled or crashed run never leaves a half-written file that looks complete."""
from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

DISK_FULL_ERRNOS = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))


def is_disk_full(exc: BaseException) -> bool:
    """True for "no space left on device" and "disk quota exceeded" (anywhere in the exception's cause chain)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS:
            return True
        # safetensors and some libraries re-raise I/O errors as RuntimeError with the OS message inside
        if not isinstance(exc, OSError) and "No space left on device" in str(exc):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _fsync_dir(path: Path) -> None:
    """Make a rename in ``path`` durable (best effort: not every platform / file system allows it)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    """Flush every file under ``root`` to disk before the folder is renamed into place."""
    for dirpath, _, files in os.walk(root):
        for name in files:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to a temp file beside ``path``, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def overwrite_text(path: str | Path, text: str) -> Path:
    """Rewrite ``path`` in place (truncate + write). Not atomic: only a last resort when the disk is too full for
    :func:`atomic_write_text`'s temp file (a file rewritten no longer than it was reuses its own space)."""
    path = Path(path)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    return path


def atomic_write_json(path: str | Path, obj) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, default=str) + "\n")


def atomic_dir(final: str | Path, build: Callable[[Path], None], replace: bool = True) -> Path:
    """Build a folder in a temp sibling and rename it into place (replacing an older one when ``replace``).

    The older folder is removed only after the new one is complete and in place: if ``build`` fails (a full disk,
    a crash) the older folder is untouched. Between the two renames of a replacement the older folder briefly
    lives at ``.<name>.old-<pid>``; :func:`recover_dir` puts it back if the process died right there.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        build(tmp)
        _fsync_tree(tmp)
        if final.exists() and replace:
            old = final.with_name(f".{final.name}.old-{os.getpid()}")
            if old.exists():
                shutil.rmtree(old)
            os.replace(final, old)
            os.replace(tmp, final)
            _fsync_dir(final.parent)
            shutil.rmtree(old, ignore_errors=True)
        else:
            try:
                os.replace(tmp, final)
            except OSError:  # another process won the race: keep theirs
                if not final.exists():
                    raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def recover_dir(final: str | Path) -> bool:
    """Undo a replacement by :func:`atomic_dir` that a killed process left half done: when ``final`` is missing but
    a complete older copy waits at ``.<name>.old-<pid>``, rename it back. Leftover temp folders are removed.
    Call it only when no other process is writing beside ``final``. Returns whether ``final`` exists."""
    final = Path(final)
    olds = sorted(final.parent.glob(f".{final.name}.old-*"), key=lambda p: p.stat().st_mtime, reverse=True)
    if not final.exists() and olds:
        os.replace(olds.pop(0), final)
    for p in olds + list(final.parent.glob(f".{final.name}.tmp-*")):
        shutil.rmtree(p, ignore_errors=True)
    return final.exists()


def read_jsonl(path: str | Path) -> list[dict]:
    path = Path(path)
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line:
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:  # a line cut by a crash mid-write: ignore the torn tail
                break
    return out
