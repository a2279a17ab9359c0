"""Training corpora and evaluation sets: reading files, chat-template tokenisation with answer-only loss, batching.

What it reads (:func:`read_rows`, :func:`load_corpus`):

- ``.jsonl``, ``.json`` (a list of objects or ``{"data": [...]}``), ``.csv``, ``.parquet`` and ``.txt`` files, or a
  folder of them (recursive, in sorted path order). A ``.txt`` file is ONE text row holding the whole file: packing
  joins documents with the end-of-sequence token, and a book or article split at every blank line would get a
  spurious end-of-sequence between its paragraphs;
- an in-memory data set: a ``datasets.Dataset`` (or ``DatasetDict``: its ``train`` split), a pandas ``DataFrame``, a
  list of dicts, or any object with ``to_list()`` or that iterates over dicts (``datasets`` itself is not needed);
- a Hugging Face Hub data set id ``org/name`` (``org/name:split`` for another split than ``train``), when online:
  its ``.parquet``/``.jsonl``/``.json``/``.csv`` files of that split are downloaded with ``huggingface_hub`` and read
  as above. Offline (``HF_HUB_OFFLINE=1`` or no network) only a copy already in the Hub cache is used; otherwise one
  clear error. A local path of the same spelling always wins.

Row layouts (:func:`row_kind`; extra columns are ignored):

- ``{"text": ...}`` — plain text, for continued pre-training;
- ``{"instruction": ..., "output": ...}`` with an optional ``"input"`` (context) — Alpaca;
  ``{"prompt": ..., "response": ...}``; ``{"prompt": ..., "completion": ...}`` with two strings — TRL's standard
  prompt-completion;
- ``{"messages": [{"role": ..., "content": ...}, ...]}`` — a chat, possibly multi-turn (TRL's conversational
  language modelling);
- ``{"conversations": [{"from": "human", "value": ...}, {"from": "gpt", "value": ...}, ...]}`` — ShareGPT
  (``human``/``user`` → user, ``gpt``/``assistant``/``model``/``chatgpt`` → assistant, ``system`` → system; other
  speakers keep their name as the role); ``role``/``content`` message objects are accepted there too;
- ``{"prompt": [messages], "completion": [messages]}`` — TRL's conversational prompt-completion: the loss is taken
  on the completion's assistant turns only (assistant turns inside the prompt are context, as in TRL).

How rows become training examples (:func:`load_corpus`):

- instruction and chat rows go through the tokenizer's chat template; the loss is taken ONLY on the assistant's
  answers, each followed by its end-of-turn token (so the model learns to stop). System and user turns and the
  generation prompt get label -100. Tokenizers without a chat template use a plain format instead::

      ### Question:
      <instruction>

      <input>
      ### Answer:
      <output><eos>

- text rows are tokenised, joined with the end-of-sequence token and packed into chunks of ``max_length`` tokens
  (labels = input_ids), so long documents span several chunks and nothing is truncated;
- an instruction/chat example longer than ``max_length`` tokens is cut to its first ``max_length`` tokens, with one
  warning per corpus saying how many were cut.

Evaluation sets (:func:`load_mc`) are multiple-choice JSON Lines: ``{"question", "choices", "answer"}`` per line.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import DataError

SUPPORTED_EXTENSIONS = (".jsonl", ".json", ".csv", ".parquet", ".txt")
BUNDLED_DOMAINS = ("finance", "medicine", "law", "news_qa")
BUNDLED_NAMES = ("general",) + BUNDLED_DOMAINS
ACCEPTED_LAYOUTS = ("text | instruction(+input)/output (Alpaca) | prompt/response | prompt/completion (TRL, strings "
                    "or message lists) | messages | conversations (ShareGPT from/value)")
IGNORE_INDEX = -100
"""Label value that the loss skips (PyTorch's cross-entropy default ``ignore_index``)."""

# Stems that name a split rather than a data set: a corpus read from ``finance/train.jsonl`` is called "finance".
_SPLIT_STEMS = {"train", "eval", "test", "valid", "validation", "dev", "data"}


@dataclass
class Example:
    """One tokenised training sequence."""

    input_ids: list[int]
    labels: list[int]
    """Same length as ``input_ids``; -100 where no loss is taken (prompt tokens)."""


@dataclass
class Corpus:
    """A tokenised training corpus and where it came from."""

    name: str
    """Short name for logs and reports: the file stem, or its folder's name when the stem is a split like "train"."""
    examples: list[Example]
    content_hash: str
    """First 16 hex digits of the sha256 of the raw file bytes (files of a folder in sorted path order): a run
    records it so that a resumed or repeated run can tell whether the data changed."""
    n_rows: int
    """Rows read from the files."""
    n_truncated: int
    """Instruction/chat examples cut to ``max_length`` tokens."""
    kind: str
    """"instruction" (instruction, prompt/response and chat rows), "text", or "mixed"."""

    def __len__(self) -> int:
        return len(self.examples)

    def tokens(self) -> int:
        """Total tokens over all examples (before padding)."""
        return sum(len(e.input_ids) for e in self.examples)


@dataclass
class MCItem:
    """One multiple-choice evaluation question."""

    question: str
    choices: list[str]
    answer: int
    """0-based index of the correct choice."""
    id: str | None = None
    category: str | None = None


# --------------------------------------------------------------------------------------------------------------------
# Reading files


def _decode(data: bytes, path: Path) -> str:
    """UTF-8 text of a file (a leading BOM is dropped), or a DataError that points at the first bad byte."""
    bom = 3 if data.startswith(b"\xef\xbb\xbf") else 0
    try:
        return data[bom:].decode("utf-8")
    except UnicodeDecodeError as e:
        offset = e.start + bom
        line = data[:offset].count(b"\n") + 1
        raise DataError(
            f"{path} is not valid UTF-8: byte 0x{data[offset]:02x} at byte offset {offset} (line {line}). "
            "Re-save the file as UTF-8."
        ) from None


def _bad_json(path: Path, line: int, err: json.JSONDecodeError) -> DataError:
    return DataError(f"{path}: invalid JSON on line {line}: {err.msg} (column {err.colno}).")


def _read_jsonl(text: str, path: Path) -> list[dict]:
    rows = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise _bad_json(path, lineno, e) from None
        if not isinstance(obj, dict):
            raise DataError(f"{path}: line {lineno} is a JSON {type(obj).__name__}, not an object ({{...}}).")
        rows.append(obj)
    return rows


def _read_json(text: str, path: Path) -> list[dict]:
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        hint = ""
        if e.msg == "Extra data":  # one object per line: a JSON Lines file with the wrong extension
            hint = " It looks like JSON Lines (one object per line): rename it to .jsonl."
        raise DataError(f"{path}: invalid JSON on line {e.lineno}: {e.msg} (column {e.colno}).{hint}") from None
    if isinstance(obj, dict) and isinstance(obj.get("data"), list):
        obj = obj["data"]
    if not isinstance(obj, list):
        raise DataError(f"{path}: expected a JSON list of objects or {{\"data\": [...]}}, "
                        f"found a JSON {type(obj).__name__}.")
    for i, row in enumerate(obj):
        if not isinstance(row, dict):
            raise DataError(f"{path}: item {i} of the list is a JSON {type(row).__name__}, not an object ({{...}}).")
    return obj


def _read_csv(text: str, path: Path) -> list[dict]:
    # The csv module rather than pandas: every cell stays a string (pandas turns empty cells into NaN floats and
    # numeric-looking answers into numbers).
    try:
        return [dict(r) for r in csv.DictReader(io.StringIO(text, newline=""))]
    except csv.Error as e:
        raise DataError(f"{path}: cannot parse CSV: {e}") from None


def _read_parquet(data: bytes, path: Path) -> list[dict]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.read_table(pa.BufferReader(data)).to_pylist()
    except (pa.ArrowException, OSError) as e:
        raise DataError(f"{path}: cannot read Parquet: {e}") from None


def _read_file(path: Path) -> tuple[list[dict], bytes]:
    """Rows of one file and its raw bytes (for the content hash)."""
    ext = path.suffix.lower()
    if ext not in SUPPORTED_EXTENSIONS:
        raise DataError(f"{path}: unsupported file type {ext or '(no extension)'!r}; "
                        f"supported: {', '.join(SUPPORTED_EXTENSIONS)} or a folder of such files.")
    data = path.read_bytes()
    if not data.strip():
        raise DataError(f"{path} is empty.")
    if ext == ".parquet":
        rows = _read_parquet(data, path)
    else:
        text = _decode(data, path)
        if ext == ".jsonl":
            rows = _read_jsonl(text, path)
        elif ext == ".json":
            rows = _read_json(text, path)
        elif ext == ".csv":
            rows = _read_csv(text, path)
        else:  # .txt: the whole file is one document (see the module docstring)
            rows = [{"text": text}] if text.strip() else []
    if not rows:
        raise DataError(f"{path} holds no rows.")
    return rows, data


def _files(path: Path) -> list[Path]:
    """The files to read for ``path``: itself, or a folder's supported files in sorted order."""
    if not path.exists():
        raise DataError(f"Data path not found: {path}. (Bundled sets: dba.data.bundled_path(name) with name in "
                        f"{', '.join(BUNDLED_NAMES)}.)")
    if path.is_file():
        return [path]
    found = sorted((p for p in path.rglob("*") if p.is_file()), key=lambda p: p.relative_to(path).as_posix())
    # Skip hidden files (.DS_Store, editor swap files) and say which other files were skipped, so a README next to
    # the data is fine but a misnamed data file is noticed.
    found = [p for p in found if not any(part.startswith(".") for part in p.relative_to(path).parts)]
    keep = [p for p in found if p.suffix.lower() in SUPPORTED_EXTENSIONS]
    skipped = [p.relative_to(path).as_posix() for p in found if p not in keep]
    if not keep:
        raise DataError(f"Folder {path} holds no data files; supported: {', '.join(SUPPORTED_EXTENSIONS)}.")
    if skipped:
        warnings.warn(f"{path}: skipped {len(skipped)} file(s) of unsupported type: {', '.join(skipped[:5])}"
                      + (" ..." if len(skipped) > 5 else ""), UserWarning, stacklevel=4)
    return keep


def _read(path: str | Path) -> tuple[list[dict], str]:
    """Rows and content hash of a file or folder."""
    path = Path(path).expanduser()
    h = hashlib.sha256()
    rows: list[dict] = []
    for f in _files(path):
        r, data = _read_file(f)
        rows.extend(r)
        h.update(data)
    return rows, h.hexdigest()[:16]


def read_rows(path) -> list[dict]:
    """Rows (dicts) of a ``.jsonl``/``.json``/``.csv``/``.parquet``/``.txt`` file or a folder of them — or of any
    other source :func:`load_corpus` takes (an in-memory data set, a Hub data set id).

    A folder is read recursively in sorted path order; hidden files are skipped and other unsupported files are
    skipped with a warning. A ``.txt`` file gives one row ``{"text": <whole file>}``. Raises :class:`DataError` for a
    missing path, an empty file or one without rows, non-UTF-8 text, invalid JSON and unsupported file types.
    """
    return read_source(path)[0]


@dataclass
class Source:
    """Where a corpus's rows came from."""

    where: str
    """How error messages name it: the path, the Hub id, or the object's type."""
    name: str
    """Default corpus name (see :attr:`Corpus.name`)."""
    content_hash: str
    """First 16 hex digits of a sha256 over the raw bytes (files) or the rows' canonical JSON (objects)."""


def _rows_hash(rows: list[dict]) -> str:
    blob = json.dumps(rows, sort_keys=True, ensure_ascii=False, default=str).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()[:16]


def _object_rows(obj, split: str) -> list[dict]:
    """Rows of an in-memory data set (see the module docstring)."""
    kind = type(obj).__name__
    if isinstance(obj, dict) and obj and all(not isinstance(v, (str, bytes, int, float)) for v in obj.values()):
        if split not in obj and any(k in obj for k in _ROW_KEYS):
            raise DataError(f"This {kind} looks like ONE row ({', '.join(map(str, obj))}); pass a list of rows.")
        if split not in obj:  # a DatasetDict or {"train": [...], ...}
            raise DataError(f"The {kind} holds the splits {', '.join(map(str, obj))}, not {split!r}; pass one split "
                            "(e.g. dataset['train']).")
        obj = obj[split]
        kind = type(obj).__name__
    if hasattr(obj, "to_list") and callable(obj.to_list):  # datasets.Dataset
        rows = obj.to_list()
    elif hasattr(obj, "to_dict") and hasattr(obj, "columns"):  # pandas.DataFrame: missing cells (NaN) -> None
        rows = obj.astype(object).where(obj.notna(), None).to_dict("records")
    elif isinstance(obj, (str, bytes, dict)):
        raise DataError(f"Cannot read training rows from a {kind}: pass a file or folder path, a Hub data set id, a "
                        "datasets.Dataset, a DataFrame or a list of dicts.")
    else:
        try:
            rows = list(obj)
        except TypeError:
            raise DataError(f"Cannot read training rows from a {kind}: it has no to_list() and is not iterable. "
                            "Pass a file or folder path, a datasets.Dataset, a DataFrame or a list of dicts.") from None
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise DataError(f"item {i} of the {kind} is a {type(row).__name__}, not a row with named fields.")
    if not rows:
        raise DataError(f"The {kind} holds no rows.")
    return rows


_ROW_KEYS = ("text", "instruction", "prompt", "messages", "conversations")
_SPLIT_NAMES = ("train", "validation", "valid", "test", "eval", "dev")
_METADATA_FILES = ("dataset_info.json", "dataset_infos.json", "dataset_dict.json", "state.json")


def _split_pattern(split: str) -> re.Pattern:
    return re.compile(rf"(^|[/_.\-]){re.escape(split)}([/_.\-]|$)", re.IGNORECASE)


def _split_files(files: list[str], split: str, repo: str) -> list[str]:
    """The data files of one split of a Hub data set repository (paths relative to the repo)."""
    data = [f for f in files
            if Path(f).suffix.lower() in SUPPORTED_EXTENSIONS and Path(f).suffix.lower() != ".txt"
            and not any(part.startswith(".") for part in Path(f).parts) and Path(f).name not in _METADATA_FILES]
    chosen = [f for f in data if _split_pattern(split).search(f)]
    if not chosen and split == "train" and not any(_split_pattern(s).search(f) for s in _SPLIT_NAMES for f in data):
        chosen = data  # files that name no split at all: the whole repository is the train split
    if not chosen:
        shown = ", ".join(data[:8]) + (" ..." if len(data) > 8 else "") if data else "none"
        raise DataError(f"The Hub data set {repo!r} has no data files for the split {split!r} (data files: {shown}); "
                        f"name another split as {repo}:<split>.")
    return sorted(chosen)


def _hub_cache_dir() -> str | None:
    # read at call time (huggingface_hub reads its environment once, at import)
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return str(Path(os.environ["HF_HOME"]) / "hub")
    return None


def _hub_rows(spec: str, split: str) -> tuple[list[dict], str]:
    """Rows and content hash of a Hub data set id (``org/name`` or ``org/name:split``)."""
    from .hub import offline_reason

    repo, _, named_split = spec.partition(":")
    split = named_split or split
    cache = _hub_cache_dir()
    reason = offline_reason()
    if reason:
        from huggingface_hub import snapshot_download

        try:
            folder = Path(snapshot_download(repo, repo_type="dataset", local_files_only=True, cache_dir=cache))
        except Exception:  # not in the cache: huggingface_hub raises one of several error types
            raise DataError(f"{spec!r} is not a local file or folder, and as a Hugging Face Hub data set id it "
                            f"cannot be downloaded: {reason}. Pass a local file or folder (or a datasets.Dataset), "
                            "or go online.") from None
        rel = [p.relative_to(folder).as_posix() for p in sorted(folder.rglob("*")) if p.is_file()]
        paths = [folder / f for f in _split_files(rel, split, repo)]
    else:
        from huggingface_hub import HfApi, hf_hub_download

        try:
            files = HfApi().list_repo_files(repo, repo_type="dataset")
            paths = [Path(hf_hub_download(repo, f, repo_type="dataset", cache_dir=cache))
                     for f in _split_files(files, split, repo)]
        except DataError:
            raise
        except Exception as e:
            first = str(e).splitlines()[0] if str(e) else ""
            raise DataError(f"Could not download the Hub data set {repo!r} ({type(e).__name__}: {first}). Check the "
                            "id, or pass a local file.") from None
    h = hashlib.sha256()
    rows: list[dict] = []
    for f in paths:
        r, data = _read_file(f)
        rows.extend(r)
        h.update(data)
    return rows, h.hexdigest()[:16]


def read_source(source, split: str = "train") -> tuple[list[dict], Source]:
    """Rows of a training corpus from any accepted source (see the module docstring), and where they came from."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source).expanduser()
        text = os.fspath(source)
        if not path.exists() and path.suffix.lower() not in SUPPORTED_EXTENSIONS:
            from .hub import looks_like_hub_id

            if looks_like_hub_id(text):
                rows, digest = _hub_rows(text, split)
                return rows, Source(where=text, name=text.split(":", 1)[0].split("/")[-1], content_hash=digest)
        rows, digest = _read(path)
        return rows, Source(where=str(path), name=_corpus_name(path), content_hash=digest)
    rows = _object_rows(source, split)
    info = getattr(source, "info", None)
    name = getattr(info, "dataset_name", None) or getattr(source, "name", None)
    return rows, Source(where=f"the {type(source).__name__}", name=name if isinstance(name, str) and name else "data",
                        content_hash=_rows_hash(rows))


# --------------------------------------------------------------------------------------------------------------------
# Row layouts


def row_kind(row: dict) -> str:
    """``"text"``, ``"instruction"`` (one question, one answer: instruction/output, prompt/response, or
    prompt/completion strings) or ``"chat"`` (message lists: messages, ShareGPT conversations, conversational
    prompt/completion).

    Extra columns (ids, categories, ...) are ignored; a row that matches no layout raises :class:`DataError`.
    """
    if not isinstance(row, dict):
        raise DataError(f"A row must be an object with named fields, got a {type(row).__name__}.")
    if "messages" in row or "conversations" in row:
        return "chat"
    if "instruction" in row and "output" in row:
        return "instruction"
    if "prompt" in row and "response" in row:
        return "instruction"
    if "prompt" in row and "completion" in row:
        return "chat" if _is_message_list(row["prompt"]) or _is_message_list(row["completion"]) else "instruction"
    if "text" in row:
        return "text"
    found = ", ".join(map(str, row)) or "(none)"
    raise DataError(f"Unrecognised row layout: columns found: {found}; accepted layouts: {ACCEPTED_LAYOUTS}.")


def _field(row: dict, key: str, *, required: bool = True) -> str:
    """A text field of a row; numbers are accepted as text, missing/None optional fields give ''."""
    v = row.get(key)
    if v is None:
        if required:
            raise DataError(f"field {key!r} is empty (null).")
        return ""
    if isinstance(v, bool) or not isinstance(v, (str, int, float)):
        raise DataError(f"field {key!r} must be text, got {type(v).__name__}.")
    return v if isinstance(v, str) else str(v)


def _user_text(instruction: str, context: str) -> str:
    # The context follows the instruction after a blank line, as in Alpaca-style data.
    return f"{instruction}\n\n{context}" if context.strip() else instruction


_SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                   "model": "assistant", "chatgpt": "assistant", "bard": "assistant", "bing": "assistant",
                   "system": "system"}
"""ShareGPT speaker names (``from``) and the chat role each becomes; other names are kept as they are."""


def _is_message_list(v) -> bool:
    if isinstance(v, str) and v.lstrip().startswith("[{"):  # a list stored as JSON text (CSV)
        try:
            v = json.loads(v)
        except json.JSONDecodeError:
            return False
    return isinstance(v, list) and bool(v) and all(isinstance(m, dict) for m in v)


def _message_list(row: dict, key: str) -> list[dict]:
    """A list of ``{"role", "content"}`` (or ShareGPT ``{"from", "value"}``) messages from a row's field."""
    msgs = row[key]
    if isinstance(msgs, str):  # CSV/Parquet often store the list as a JSON string
        try:
            msgs = json.loads(msgs)
        except json.JSONDecodeError:
            raise DataError(f"field {key!r} is text that is not a JSON list of messages.") from None
    if not isinstance(msgs, list) or not msgs:
        raise DataError(f"field {key!r} must be a non-empty list of {{\"role\", \"content\"}} objects.")
    out = []
    for j, m in enumerate(msgs):
        if isinstance(m, dict) and isinstance(m.get("from"), str) and "value" in m:  # ShareGPT
            role = _SHAREGPT_ROLES.get(m["from"].strip().lower(), m["from"])
            out.append({"role": role, "content": _field(m, "value")})
            continue
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or "content" not in m:
            raise DataError(f"message {j} of {key!r} must be an object with a 'role' and a 'content' "
                            "(or ShareGPT's 'from' and 'value').")
        out.append({"role": m["role"], "content": _field(m, "content")})
    return out


def row_messages(row: dict) -> list[dict]:
    """The chat messages of an instruction, prompt/response, prompt/completion or chat row (``[]`` for a text row).

    Each message is ``{"role", "content"}``; an assistant message that is context, not a target (inside a
    conversational prompt), also carries ``"train": False`` and gets no loss.
    """
    kind = row_kind(row)
    if kind == "text":
        return []
    if kind == "instruction":
        if "instruction" in row and "output" in row:
            user = _user_text(_field(row, "instruction"), _field(row, "input", required=False))
            answer = _field(row, "output")
        elif "response" in row:
            user, answer = _field(row, "prompt"), _field(row, "response")
        else:
            user, answer = _field(row, "prompt"), _field(row, "completion")
        return [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]
    if "messages" in row or "conversations" in row:
        out = _message_list(row, "messages" if "messages" in row else "conversations")
        if not any(m["role"] == "assistant" for m in out):
            raise DataError("the chat has no 'assistant' message, so there is nothing to learn from it.")
        return out
    # conversational prompt/completion (TRL): the loss is on the completion only
    prompt = (_message_list(row, "prompt") if _is_message_list(row["prompt"])
              else [{"role": "user", "content": _field(row, "prompt")}])
    completion = (_message_list(row, "completion") if _is_message_list(row["completion"])
                  else [{"role": "assistant", "content": _field(row, "completion")}])
    if not any(m["role"] == "assistant" for m in completion):
        raise DataError("the completion has no 'assistant' message, so there is nothing to learn from it.")
    return [{**m, "train": False} if m["role"] == "assistant" else m for m in prompt] + completion


# --------------------------------------------------------------------------------------------------------------------
# Chat rendering and answer-only labels


def has_chat_template(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def _render_plain(tokenizer, messages: list[dict], add_generation_prompt: bool) -> str:
    """The fallback format for tokenizers without a chat template (see the module docstring)."""
    eos = tokenizer.eos_token or ""
    parts = []
    for m in messages:
        if m["role"] == "system":
            parts.append(f"### System:\n{m['content']}\n\n")
        elif m["role"] == "assistant":
            parts.append(f"### Answer:\n{m['content']}{eos}\n")
        else:
            parts.append(f"### Question:\n{m['content']}\n")
    if add_generation_prompt:
        parts.append("### Answer:\n")
    return "".join(parts)


def render_chat(tokenizer, messages: list[dict], add_generation_prompt: bool = False) -> str:
    """Text of ``messages`` in the tokenizer's chat template (or the plain fallback format)."""
    if not has_chat_template(tokenizer):
        return _render_plain(tokenizer, messages, add_generation_prompt)
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)


def render_prompt(tokenizer, instruction: str, input: str | None = None) -> str:
    """The prompt text for a question exactly as training formats it, ending with the generation prompt.

    Tokenise it with ``add_special_tokens=False`` (the template already holds the special tokens it needs).
    """
    msgs = [{"role": "user", "content": _user_text(instruction, input or "")}]
    return render_chat(tokenizer, msgs, add_generation_prompt=True)


def _special_token_pattern(tokenizer) -> re.Pattern | None:
    specials = set(getattr(tokenizer, "all_special_tokens", []) or [])
    for tok in (getattr(tokenizer, "added_tokens_decoder", None) or {}).values():
        if getattr(tok, "special", False):
            specials.add(str(tok))
    specials = sorted((s for s in specials if s), key=len, reverse=True)  # longest first: no prefix shadowing
    if not specials:
        return None
    return re.compile(r"\s*(?:" + "|".join(map(re.escape, specials)) + ")")


def _encode(tokenizer, text: str) -> list[int]:
    if not text:
        return []
    # The rendered template already holds BOS/role tokens; add_special_tokens would add a second BOS.
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def chat_example(tokenizer, messages: list[dict]) -> Example:
    """Token ids and answer-only labels for a chat (untruncated).

    The conversation is rendered once (through its last assistant turn). For each assistant turn, the prompt that
    precedes it is rendered with the generation prompt; where that prompt stops agreeing with the full text is where
    the answer's turn begins, and the answer text is found from there. The text is then tokenised piece by piece —
    masked context, answer, end-of-turn token, masked context, ... — so every label boundary falls exactly between
    two tokens. Labelled: each answer and the special token that ends it (leading whitespace included), nothing else.
    """
    trained = [i for i, m in enumerate(messages) if m["role"] == "assistant" and m.get("train", True)]
    if not trained:
        raise DataError("the chat has no 'assistant' message to learn from.")
    targets = set(trained)
    messages = [{"role": m["role"], "content": m["content"]} for m in messages[: trained[-1] + 1]]
    full = render_chat(tokenizer, messages)
    eot = _special_token_pattern(tokenizer)

    spans: list[tuple[int, int]] = []  # labelled character spans of `full`
    pos = 0
    for k, m in enumerate(messages):
        if k not in targets:
            continue
        prompt = render_chat(tokenizer, messages[:k], add_generation_prompt=True)
        # Search from the end of the common prefix (not of the prompt): some templates rewrite earlier turns.
        start = max(pos, len(os.path.commonprefix([prompt, full])))
        content = m["content"]
        at = full.find(content, start) if content else start
        if at < 0 and content.strip():
            content = content.strip()  # templates that strip() the message
            at = full.find(content, start)
        if at < 0:
            raise DataError("the chat template does not reproduce an assistant message verbatim, so its answer "
                            "tokens cannot be located; use a tokenizer whose template keeps message text as is.")
        end = at + len(content)
        match = eot.match(full, end) if eot else None
        if match:
            end = match.end()
        spans.append((at, end))
        pos = end

    input_ids: list[int] = []
    labels: list[int] = []
    cursor = 0
    for at, end in spans:
        ctx = _encode(tokenizer, full[cursor:at])
        ans = _encode(tokenizer, full[at:end])
        input_ids += ctx + ans
        labels += [IGNORE_INDEX] * len(ctx) + ans
        cursor = end
    return Example(input_ids=input_ids, labels=labels)


def pack_text(tokenizer, texts: list[str], max_length: int) -> list[Example]:
    """Tokenise documents, join them with EOS and cut the stream into chunks of ``max_length`` (labels = ids).

    The last chunk is kept when shorter (it is padded in :func:`collate`) unless it is a single token, which
    gives no next-token prediction.
    """
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    stream: list[int] = []
    for t in texts:
        if t.strip():
            stream += _encode(tokenizer, t) + eos
    chunks = [stream[i: i + max_length] for i in range(0, len(stream), max_length)]
    return [Example(input_ids=c, labels=list(c)) for c in chunks if len(c) >= 2]


def _corpus_name(path: Path) -> str:
    path = path.expanduser().resolve()
    if path.is_dir():
        return path.name
    if path.stem.lower() in _SPLIT_STEMS and path.parent.name:
        return path.parent.name
    return path.stem


def load_corpus(path, tokenizer, max_length: int = 256, *, name: str | None = None, split: str = "train") -> Corpus:
    """Read ``path`` and tokenise it into training examples (see the module docstring).

    ``path``: a file or folder, a Hub data set id (``org/name[:split]``, online), or an in-memory data set
    (``datasets.Dataset``, ``DataFrame``, list of dicts, ...); ``split`` picks a split of a Hub id or ``DatasetDict``.
    """
    if max_length < 2:
        raise DataError(f"max_length must be at least 2 tokens, got {max_length}.")
    rows, src = read_source(path, split)
    content_hash = src.content_hash
    path = src.where

    examples: list[Example] = []
    texts: list[str] = []
    kinds = set()
    n_truncated = n_dropped = 0
    empty_rows: list[int] = []     # instruction and output both blank: skipped
    empty_answers: list[int] = []  # output blank: trains the model to answer with nothing (kept, with a warning)
    for i, row in enumerate(rows):
        try:
            kind = row_kind(row)
            if kind == "text":
                texts.append(_field(row, "text"))
                kinds.add("text")
                continue
            msgs = row_messages(row)
            ex = chat_example(tokenizer, msgs)
        except DataError as e:
            raise DataError(f"{path}: row {i + 1}: {e}") from None
        kinds.add("instruction")
        if not any(m["content"].strip() for m in msgs):
            empty_rows.append(i + 1)
            continue
        if not any(m["content"].strip() for m in msgs if m["role"] == "assistant"):
            empty_answers.append(i + 1)
        if len(ex.input_ids) > max_length:
            n_truncated += 1
            ex = Example(ex.input_ids[:max_length], ex.labels[:max_length])
            # A prompt that fills the whole window leaves no answer token: the example would add nothing but
            # padding to its batch (and a NaN loss if a batch held only such examples).
            if all(lab == IGNORE_INDEX for lab in ex.labels):
                n_dropped += 1
                continue
        examples.append(ex)
    examples += pack_text(tokenizer, texts, max_length)

    if n_truncated:
        msg = (f"{n_truncated} of {len(rows)} rows of {path} were longer than max_length={max_length} tokens and "
               f"were truncated")
        if n_dropped:
            msg += f"; {n_dropped} of them kept no answer token and were dropped"
        warnings.warn(msg + ". Raise max_length or shorten them.", UserWarning, stacklevel=2)
    def _rows(nums: list[int]) -> str:
        return ", ".join(map(str, nums[:8])) + (", ..." if len(nums) > 8 else "")

    if empty_rows and len(empty_rows) < len(rows):
        warnings.warn(f"{len(empty_rows)} of {len(rows)} rows of {path} have an empty instruction and an empty output "
                      f"and were skipped (rows {_rows(empty_rows)}).", UserWarning, stacklevel=2)
    if empty_answers:
        warnings.warn(f"{len(empty_answers)} of {len(rows)} rows of {path} have an empty output: they teach the model "
                      f"to answer with nothing (rows {_rows(empty_answers)}). Fill or remove them.", UserWarning,
                      stacklevel=2)
    if not examples:
        if empty_rows and len(empty_rows) == len(rows):
            raise DataError(f"{path}: every row has an empty instruction and an empty output; nothing to train on.")
        raise DataError(f"{path}: no training examples could be made from {len(rows)} rows.")
    kind = "mixed" if len(kinds) > 1 else kinds.pop()
    return Corpus(name=name or src.name, examples=examples, content_hash=content_hash,
                  n_rows=len(rows), n_truncated=n_truncated, kind=kind)


# --------------------------------------------------------------------------------------------------------------------
# Multiple-choice evaluation sets


def load_mc(path: str | Path) -> list[MCItem]:
    """Read a multiple-choice JSON Lines file: ``{"question": str, "choices": [str, ...], "answer": int}`` per line,
    optionally with ``"id"`` and ``"category"``. ``answer`` is the 0-based index of the correct choice."""
    path = Path(path).expanduser()
    if not path.exists():
        raise DataError(f"Evaluation file not found: {path}.")
    if path.is_dir():
        raise DataError(f"{path} is a folder; pass a multiple-choice .jsonl file.")
    data = path.read_bytes()
    if not data.strip():
        raise DataError(f"{path} is empty.")
    text = _decode(data, path)
    items: list[MCItem] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}: line {lineno}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise _bad_json(path, lineno, e) from None
        if not isinstance(obj, dict):
            raise DataError(f"{where} is a JSON {type(obj).__name__}, not an object.")
        missing = [k for k in ("question", "choices", "answer") if k not in obj]
        if missing:
            raise DataError(f"{where}: missing key(s) {', '.join(missing)}; each line needs "
                            '{"question": str, "choices": [str, ...], "answer": int}.')
        q, choices, answer = obj["question"], obj["choices"], obj["answer"]
        if not isinstance(q, str) or not q.strip():
            raise DataError(f"{where}: 'question' must be non-empty text.")
        if not isinstance(choices, list) or not all(isinstance(c, str) for c in choices):
            raise DataError(f"{where}: 'choices' must be a list of strings.")
        if len(choices) < 2:
            raise DataError(f"{where}: needs at least 2 choices, found {len(choices)}.")
        if isinstance(answer, bool) or not isinstance(answer, int):
            raise DataError(f"{where}: 'answer' must be an integer index into 'choices', got {answer!r}.")
        if not 0 <= answer < len(choices):
            raise DataError(f"{where}: answer index {answer} is out of range for {len(choices)} choices "
                            f"(valid: 0..{len(choices) - 1}).")
        ident, cat = obj.get("id"), obj.get("category")
        seen: dict[str, int] = {}
        for j, c in enumerate(choices):
            first = seen.setdefault(c.strip(), j)
            if first != j:  # equal choices score equally: the tie would go to the first, right or wrong
                item = f" (id {ident})" if ident is not None else ""
                raise DataError(f"{where}{item}: choices {first} and {j} are the same ({c.strip()!r}); each choice "
                                "must differ, or ties decide the score.")
        items.append(MCItem(question=q, choices=list(choices), answer=answer,
                            id=None if ident is None else str(ident), category=None if cat is None else str(cat)))
    if not items:
        raise DataError(f"{path} holds no questions.")
    return items


# --------------------------------------------------------------------------------------------------------------------
# Batching


def collate(examples: list[Example], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad to the longest example: ``input_ids``, ``attention_mask`` and ``labels`` (-100 on padding).

    Padding is marked by position, not by value: ``pad_id`` is often the EOS id, which real labels also hold.
    """
    if not examples:
        raise ValueError("collate() needs at least one example")
    width = max(len(e.input_ids) for e in examples)
    n = len(examples)
    input_ids = torch.full((n, width), pad_id, dtype=torch.long)
    attention = torch.zeros((n, width), dtype=torch.long)
    labels = torch.full((n, width), IGNORE_INDEX, dtype=torch.long)
    for i, e in enumerate(examples):
        k = len(e.input_ids)
        input_ids[i, :k] = torch.tensor(e.input_ids, dtype=torch.long)
        attention[i, :k] = 1
        labels[i, :k] = torch.tensor(e.labels, dtype=torch.long)
    return {"input_ids": input_ids, "attention_mask": attention, "labels": labels}


def _epoch_seed(seed: int, epoch: int) -> int:
    # One 63-bit seed per (seed, epoch) pair, from a hash so that nearby pairs give unrelated orders.
    digest = hashlib.sha256(f"dba-batch-plan:{seed}:{epoch}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def batch_plan(n_examples: int, batch_size: int, steps: int, seed: int) -> list[list[int]]:
    """Example indices of each of ``steps`` batches, the same for the same arguments (a resumed run relies on it).

    Each epoch is a fresh permutation from a ``torch.Generator`` seeded by (seed, epoch); the epochs are laid end
    to end and cut into batches, so a batch may straddle two epochs and every batch is full. The plan for fewer
    steps is a prefix of the plan for more.
    """
    if n_examples < 1:
        raise DataError("The corpus has no examples to train on.")
    if batch_size < 1:
        raise DataError(f"batch_size must be at least 1, got {batch_size}.")
    if steps < 0:
        raise DataError(f"steps must be 0 or more, got {steps}.")
    need = steps * batch_size
    stream: list[int] = []
    epoch = 0
    while len(stream) < need:
        g = torch.Generator().manual_seed(_epoch_seed(seed, epoch))
        stream += torch.randperm(n_examples, generator=g).tolist()
        epoch += 1
    return [stream[i * batch_size: (i + 1) * batch_size] for i in range(steps)]


# --------------------------------------------------------------------------------------------------------------------
# Bundled samples


def data_samples_dir() -> Path:
    return Path(__file__).resolve().parents[1] / "data_samples"


def resolve_corpus(name_or_path: str, split: str = "train") -> Path:
    """A corpus argument as users type it: an existing file or folder wins; otherwise it names a bundled set
    (``"general"``, ``"finance"`` ...) and ``split`` picks its ``train`` or ``eval`` file. A training corpus spelled
    ``org/name`` is passed on as a Hub data set id (:func:`load_corpus` downloads it, or says why it cannot)."""
    p = Path(name_or_path).expanduser()
    if p.exists():
        return p
    from .hub import looks_like_hub_id

    if split == "train" and looks_like_hub_id(name_or_path):
        return p
    return bundled_path(name_or_path, split)


def bundled_path(name: str, split: str = "train") -> Path:
    """A bundled sample file: ``"general"`` or one of :data:`BUNDLED_DOMAINS`; split ``"train"`` (instruction
    JSON Lines) or ``"eval"`` (multiple-choice JSON Lines)."""
    key = name.strip().lower().replace("-", "_")
    if key not in BUNDLED_NAMES:
        if any(sep in name for sep in ("/", "\\", os.sep)) or name.startswith((".", "~")) or Path(name).suffix:
            raise DataError(f"File or folder not found: {Path(name).expanduser()}.")
        raise DataError(f"Unknown bundled data set {name!r}; bundled: {', '.join(BUNDLED_NAMES)} (and no file or "
                        "folder of that name was found).")
    if split not in ("train", "eval"):
        raise DataError(f"Unknown split {split!r}; use 'train' or 'eval'.")
    root = data_samples_dir()
    path = root / key / f"{split}.jsonl" if key == "general" else root / "domains" / key / f"{split}.jsonl"
    if not path.exists():
        raise DataError(f"The bundled file {path} is missing; reinstall DBA Studio from its repository "
                        "(the data_samples folder ships with the source, not with the wheel).")
    return path
