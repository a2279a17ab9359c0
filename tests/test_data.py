"""dba.data: file reading, answer-only chat labels, text packing, errors, collate and batch plans (CPU, fast)."""
from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path

import pytest
import torch

from dba.data import (
    BUNDLED_DOMAINS,
    BUNDLED_NAMES,
    Example,
    MCItem,
    batch_plan,
    bundled_path,
    collate,
    load_corpus,
    load_mc,
    read_rows,
    render_prompt,
    row_kind,
)
from dba.errors import DataError
from dba.models import DEFAULT_MODEL_NAME, cache_dir


@pytest.fixture(scope="module")
def tok():
    folder = cache_dir() / "models" / DEFAULT_MODEL_NAME
    if not (folder / "tokenizer.json").exists():
        pytest.skip(f"default tokenizer not converted yet ({folder}); run dba.load_model('default') once")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder)


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def labelled_runs(ex: Example) -> list[tuple[int, int]]:
    """[start, end) runs of positions whose label is not -100."""
    runs, start = [], None
    for i, lab in enumerate(ex.labels + [-100]):
        if lab != -100 and start is None:
            start = i
        elif lab == -100 and start is not None:
            runs.append((start, i))
            start = None
    return runs


def decode(tok, ids) -> str:
    return tok.decode(ids, skip_special_tokens=False)


# --------------------------------------------------------------------------------------------------------------------
# Chat-template masking


def test_instruction_labels_only_answer_and_end_of_turn(tok, tmp_path):
    f = write_jsonl(tmp_path / "qa.jsonl", [{"instruction": "What is 2+2?", "output": "It is 4."}])
    corpus = load_corpus(f, tok, max_length=256)
    assert corpus.kind == "instruction" and len(corpus) == 1 and corpus.n_rows == 1
    ex = corpus.examples[0]
    assert len(ex.labels) == len(ex.input_ids)

    runs = labelled_runs(ex)
    assert len(runs) == 1
    a, b = runs[0]
    assert decode(tok, ex.input_ids[a:b]) == "It is 4." + tok.eos_token  # eos is <|im_end|>, the end of turn
    assert ex.labels[a:b] == ex.input_ids[a:b]
    assert all(lab == -100 for lab in ex.labels[:a])
    assert b == len(ex.labels)  # nothing after the end-of-turn token

    # The masked prefix is exactly the inference prompt (system + user turn + generation prompt), tokenised whole.
    prompt_ids = tok(render_prompt(tok, "What is 2+2?"), add_special_tokens=False)["input_ids"]
    assert ex.input_ids[:a] == list(prompt_ids)
    # Piecewise tokenisation agrees with tokenising the whole rendered conversation.
    full = tok.apply_chat_template([{"role": "user", "content": "What is 2+2?"},
                                    {"role": "assistant", "content": "It is 4."}], tokenize=False)
    assert ex.input_ids == list(tok(full.rstrip("\n"), add_special_tokens=False)["input_ids"])


def test_instruction_input_goes_after_a_blank_line(tok, tmp_path):
    row = {"instruction": "Summarise the text.", "input": "Rates rose by 1%.", "output": "Rates went up."}
    ex = load_corpus(write_jsonl(tmp_path / "x.jsonl", [row]), tok).examples[0]
    (a, b), = labelled_runs(ex)
    prompt = decode(tok, ex.input_ids[:a])
    assert "<|im_start|>user\nSummarise the text.\n\nRates rose by 1%.<|im_end|>" in prompt
    assert prompt.endswith("<|im_start|>assistant\n")
    assert decode(tok, ex.input_ids[a:b]) == "Rates went up.<|im_end|>"


def test_prompt_response_layout(tok, tmp_path):
    ex = load_corpus(write_jsonl(tmp_path / "pr.jsonl", [{"prompt": "Hi?", "response": "Hello!"}]), tok).examples[0]
    (a, b), = labelled_runs(ex)
    assert decode(tok, ex.input_ids[a:b]) == "Hello!<|im_end|>"


def test_multi_turn_chat_labels_every_assistant_turn(tok, tmp_path):
    msgs = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Capital of France?"},
        {"role": "assistant", "content": "Paris."},
        {"role": "user", "content": "And of Italy?"},
        {"role": "assistant", "content": "Rome."},
    ]
    corpus = load_corpus(write_jsonl(tmp_path / "chat.jsonl", [{"messages": msgs}]), tok)
    assert corpus.kind == "instruction"
    ex = corpus.examples[0]
    runs = labelled_runs(ex)
    assert [decode(tok, ex.input_ids[a:b]) for a, b in runs] == ["Paris.<|im_end|>", "Rome.<|im_end|>"]
    between = decode(tok, ex.input_ids[runs[0][1]:runs[1][0]])
    assert between == "\n<|im_start|>user\nAnd of Italy?<|im_end|>\n<|im_start|>assistant\n"
    assert decode(tok, ex.input_ids[:runs[0][0]]).startswith("<|im_start|>system\nYou are terse.<|im_end|>")


def test_no_chat_template_falls_back_to_plain_format(tok, tmp_path):
    plain = copy.deepcopy(tok)
    plain.chat_template = None
    ex = load_corpus(write_jsonl(tmp_path / "q.jsonl", [{"instruction": "Q1", "input": "ctx", "output": "A1"}]),
                     plain).examples[0]
    (a, b), = labelled_runs(ex)
    assert decode(plain, ex.input_ids[:a]) == "### Question:\nQ1\n\nctx\n### Answer:\n"
    assert decode(plain, ex.input_ids[a:b]) == "A1" + plain.eos_token


# --------------------------------------------------------------------------------------------------------------------
# Plain text packing


def test_text_rows_are_packed_with_eos(tok, tmp_path):
    docs = ["The quick brown fox jumps over the lazy dog. " * 3, "Another document about markets and rates."]
    corpus = load_corpus(write_jsonl(tmp_path / "t.jsonl", [{"text": d} for d in docs]), tok, max_length=16)
    assert corpus.kind == "text" and corpus.n_truncated == 0
    stream = []
    for d in docs:
        stream += list(tok(d, add_special_tokens=False)["input_ids"]) + [tok.eos_token_id]
    assert [i for e in corpus.examples for i in e.input_ids] == stream
    assert all(len(e.input_ids) == 16 for e in corpus.examples[:-1])
    assert 2 <= len(corpus.examples[-1].input_ids) <= 16
    assert all(e.labels == e.input_ids for e in corpus.examples)
    assert corpus.tokens() == len(stream)


def test_mixed_corpus(tok, tmp_path):
    rows = [{"text": "Some plain text."}, {"instruction": "Q", "output": "A"}]
    corpus = load_corpus(write_jsonl(tmp_path / "m.jsonl", rows), tok)
    assert corpus.kind == "mixed" and len(corpus) == 2


# --------------------------------------------------------------------------------------------------------------------
# Bad input


def test_missing_path(tok, tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_corpus(tmp_path / "nope.jsonl", tok)
    with pytest.raises(DataError, match="not found"):
        load_mc(tmp_path / "nope.jsonl")


@pytest.mark.parametrize("ext", [".jsonl", ".json", ".csv", ".txt"])
def test_empty_file(tmp_path, ext):
    f = tmp_path / f"empty{ext}"
    f.write_text("\n  \n")
    with pytest.raises(DataError, match="is empty"):
        read_rows(f)


def test_no_rows(tmp_path):
    (tmp_path / "a.json").write_text("[]")
    with pytest.raises(DataError, match="holds no rows"):
        read_rows(tmp_path / "a.json")
    (tmp_path / "b.csv").write_text("instruction,output\n")
    with pytest.raises(DataError, match="holds no rows"):
        read_rows(tmp_path / "b.csv")


def test_non_utf8_names_file_and_byte_offset(tmp_path):
    f = tmp_path / "latin1.jsonl"
    f.write_bytes(b'{"text": "ok"}\n{"text": "caf\xe9"}\n')
    with pytest.raises(DataError, match=r"latin1\.jsonl is not valid UTF-8: byte 0xe9 at byte offset 28 \(line 2\)"):
        read_rows(f)
    with pytest.raises(DataError, match="byte offset 28"):
        load_mc(f)


def test_bad_json_reports_line(tmp_path):
    f = tmp_path / "bad.jsonl"
    f.write_text('{"text": "a"}\n\n{"text": "b",}\n')
    with pytest.raises(DataError, match=r"bad\.jsonl: invalid JSON on line 3"):
        read_rows(f)
    g = tmp_path / "bad.json"
    g.write_text('[\n {"text": "a"},\n {"text": }\n]')
    with pytest.raises(DataError, match="invalid JSON on line 3"):
        read_rows(g)
    h = tmp_path / "lines.json"  # JSON Lines saved as .json: say so
    h.write_text('{"text": "a"}\n{"text": "b"}\n')
    with pytest.raises(DataError, match="rename it to .jsonl"):
        read_rows(h)


def test_unsupported_extension(tmp_path):
    f = tmp_path / "data.xlsx"
    f.write_text("x")
    with pytest.raises(DataError, match=r"unsupported file type '\.xlsx'; supported: \.jsonl, \.json, \.csv"):
        read_rows(f)


def test_unknown_columns_name_found_and_accepted(tok, tmp_path):
    with pytest.raises(DataError, match="columns found: question, answer; accepted layouts: text | instruction"):
        row_kind({"question": "q", "answer": "a"})
    f = write_jsonl(tmp_path / "u.jsonl", [{"text": "fine"}, {"foo": 1, "bar": 2}])
    with pytest.raises(DataError, match=r"row 2: .*columns found: foo, bar; accepted layouts: .*messages"):
        load_corpus(f, tok)


def test_row_kind_layouts():
    assert row_kind({"text": "x"}) == "text"
    assert row_kind({"instruction": "q", "output": "a", "id": 3}) == "instruction"
    assert row_kind({"instruction": "q", "input": "c", "output": "a"}) == "instruction"
    assert row_kind({"prompt": "q", "response": "a"}) == "instruction"
    assert row_kind({"messages": []}) == "chat"
    with pytest.raises(DataError, match="columns found: instruction"):
        row_kind({"instruction": "q"})  # no output


def test_chat_without_assistant(tok, tmp_path):
    f = write_jsonl(tmp_path / "c.jsonl", [{"messages": [{"role": "user", "content": "hi"}]}])
    with pytest.raises(DataError, match="row 1: .*no 'assistant' message"):
        load_corpus(f, tok)


def test_overlong_rows_truncated_with_one_warning(tok, tmp_path):
    rows = [{"instruction": "Q", "output": "word " * 200}, {"instruction": "Q", "output": "short"},
            {"instruction": "Q", "output": "word " * 300}]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        corpus = load_corpus(write_jsonl(tmp_path / "long.jsonl", rows), tok, max_length=64)
    msgs = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    assert len(msgs) == 1 and "2 of 3 rows" in msgs[0] and "truncated" in msgs[0] and "max_length=64" in msgs[0]
    assert corpus.n_truncated == 2
    assert [len(e.input_ids) for e in corpus.examples] == [64, len(corpus.examples[1].input_ids), 64]
    assert all(len(e.labels) == len(e.input_ids) for e in corpus.examples)


def test_truncated_prompt_without_answer_is_dropped(tok, tmp_path):
    rows = [{"instruction": "very long question " * 100, "output": "A"}, {"instruction": "Q", "output": "A"}]
    with pytest.warns(UserWarning, match="1 of them kept no answer token and were dropped"):
        corpus = load_corpus(write_jsonl(tmp_path / "p.jsonl", rows), tok, max_length=48)
    assert len(corpus) == 1 and corpus.n_truncated == 1


# --------------------------------------------------------------------------------------------------------------------
# Multiple-choice files


def test_load_mc(tmp_path):
    f = write_jsonl(tmp_path / "eval.jsonl", [
        {"question": "2+2?", "choices": ["3", "4", "5"], "answer": 1, "id": 7, "category": "math"},
        {"question": "Sky?", "choices": ["blue", "green"], "answer": 0},
    ])
    items = load_mc(f)
    assert items == [MCItem("2+2?", ["3", "4", "5"], 1, "7", "math"), MCItem("Sky?", ["blue", "green"], 0)]


@pytest.mark.parametrize("line, phrase", [
    ({"question": "q", "choices": ["a", "b", "c"], "answer": 3},
     r"line 2: answer index 3 is out of range for 3 choices"),
    ({"question": "q", "choices": ["a", "b"], "answer": -1}, "answer index -1 is out of range for 2 choices"),
    ({"question": "q", "choices": ["a", "b"]}, "line 2: missing key.s. answer"),
    ({"question": "q", "choices": ["a"], "answer": 0}, "line 2: needs at least 2 choices, found 1"),
    ({"question": "q", "choices": ["a", "b"], "answer": "1"}, "line 2: 'answer' must be an integer"),
    ({"question": "q", "choices": ["a", "b"], "answer": True}, "'answer' must be an integer"),
])
def test_load_mc_errors(tmp_path, line, phrase):
    ok = {"question": "fine", "choices": ["x", "y"], "answer": 0}
    f = write_jsonl(tmp_path / "e.jsonl", [ok, line])
    with pytest.raises(DataError, match=phrase):
        load_mc(f)


def test_load_mc_bad_json_and_empty(tmp_path):
    f = tmp_path / "e.jsonl"
    f.write_text('{"question": "q", "choices": ["a", "b"], "answer": 0}\n{"question": \n')
    with pytest.raises(DataError, match="invalid JSON on line 2"):
        load_mc(f)
    f.write_text("")
    with pytest.raises(DataError, match="is empty"):
        load_mc(f)


# --------------------------------------------------------------------------------------------------------------------
# File types


ROWS = [{"instruction": "Q1", "output": "A1"}, {"instruction": "Q2", "input": "ctx", "output": "A2"}]


def test_each_file_type_loads(tok, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    write_jsonl(tmp_path / "a.jsonl", ROWS)
    (tmp_path / "b.json").write_text(json.dumps(ROWS))
    (tmp_path / "c.json").write_text(json.dumps({"data": ROWS}))
    (tmp_path / "d.csv").write_text("instruction,input,output\nQ1,,A1\nQ2,ctx,A2\n", encoding="utf-8")
    pq.write_table(pa.Table.from_pylist([{"input": None, **ROWS[0]}, ROWS[1]]), tmp_path / "e.parquet")
    for name in ("a.jsonl", "b.json", "c.json", "d.csv", "e.parquet"):
        rows = read_rows(tmp_path / name)
        assert [(r["instruction"], r["output"], r.get("input") or "") for r in rows] == \
            [("Q1", "A1", ""), ("Q2", "A2", "ctx")], name
        corpus = load_corpus(tmp_path / name, tok)
        assert len(corpus) == 2 and corpus.kind == "instruction", name
    # The same rows in any format give the same token ids (CSV's empty "input" and Parquet's null mean no context).
    ref = load_corpus(tmp_path / "a.jsonl", tok).examples
    for name in ("b.json", "c.json", "d.csv", "e.parquet"):
        assert load_corpus(tmp_path / name, tok).examples == ref, name

    (tmp_path / "f.txt").write_text("First paragraph.\n\nSecond paragraph.\n", encoding="utf-8")
    assert read_rows(tmp_path / "f.txt") == [{"text": "First paragraph.\n\nSecond paragraph.\n"}]
    corpus = load_corpus(tmp_path / "f.txt", tok, max_length=64)
    assert corpus.kind == "text" and corpus.n_rows == 1


def test_folder_is_read_recursively_in_sorted_order(tok, tmp_path):
    root = tmp_path / "finance"
    (root / "sub").mkdir(parents=True)
    write_jsonl(root / "b.jsonl", [{"text": "second"}])
    write_jsonl(root / "a.jsonl", [{"text": "first"}])
    (root / "sub" / "c.txt").write_text("third")
    (root / ".hidden.jsonl").write_text("not json")  # skipped silently
    (root / "README.md").write_text("notes")  # skipped with a warning
    with pytest.warns(UserWarning, match="skipped 1 file.*README.md"):
        rows = read_rows(root)
    assert rows == [{"text": "first"}, {"text": "second"}, {"text": "third"}]
    with pytest.warns(UserWarning):
        corpus = load_corpus(root, tok)
    assert corpus.name == "finance" and corpus.n_rows == 3 and corpus.kind == "text"


def test_content_hash_and_name(tok, tmp_path):
    d = tmp_path / "law"
    d.mkdir()
    f = write_jsonl(d / "train.jsonl", ROWS)
    c1 = load_corpus(f, tok)
    assert c1.name == "law"  # "train" names the split, not the data set
    assert len(c1.content_hash) == 16 and int(c1.content_hash, 16) >= 0
    assert load_corpus(f, tok, max_length=40, name="custom").content_hash == c1.content_hash
    assert load_corpus(f, tok, name="custom").name == "custom"
    write_jsonl(f, ROWS[:1])
    assert load_corpus(f, tok).content_hash != c1.content_hash
    assert load_corpus(d, tok).content_hash == load_corpus(f, tok).content_hash  # one-file folder = the file


# --------------------------------------------------------------------------------------------------------------------
# collate and batch_plan


def test_collate_right_pads():
    exs = [Example([5, 6, 7], [-100, 6, 7]), Example([9], [9])]
    b = collate(exs, pad_id=7)  # pad id equal to a real token: padding is marked by position, not value
    assert b["input_ids"].dtype == b["attention_mask"].dtype == b["labels"].dtype == torch.long
    assert b["input_ids"].tolist() == [[5, 6, 7], [9, 7, 7]]
    assert b["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert b["labels"].tolist() == [[-100, 6, 7], [9, -100, -100]]


def test_batch_plan_deterministic_and_covers_each_epoch():
    n, bs = 10, 4
    plan = batch_plan(n, bs, steps=15, seed=3)  # 60 indices = 6 epochs exactly
    assert plan == batch_plan(n, bs, steps=15, seed=3)
    assert len(plan) == 15 and all(len(b) == bs for b in plan)
    flat = [i for b in plan for i in b]
    epochs = [flat[k:k + n] for k in range(0, len(flat), n)]
    assert all(sorted(e) == list(range(n)) for e in epochs)
    assert len({tuple(e) for e in epochs}) > 1  # reshuffled each epoch
    assert plan[2] == flat[8:12]  # a batch straddles epochs 0 and 1 and is still full
    assert batch_plan(n, bs, steps=5, seed=3) == plan[:5]  # fewer steps = a prefix (resume)
    assert batch_plan(n, bs, steps=15, seed=4) != plan
    assert batch_plan(n, bs, steps=0, seed=3) == []
    assert all(len(b) == 25 for b in batch_plan(3, 25, steps=2, seed=0))  # batch larger than the corpus


def test_batch_plan_errors():
    with pytest.raises(DataError, match="no examples"):
        batch_plan(0, 4, 10, 0)
    with pytest.raises(DataError, match="batch_size"):
        batch_plan(5, 0, 10, 0)


# --------------------------------------------------------------------------------------------------------------------
# Bundled samples


def test_bundled_path():
    assert BUNDLED_DOMAINS == ("finance", "medicine", "law", "news_qa")
    with pytest.raises(DataError, match="Unknown bundled data set 'physics'; bundled: general, finance, medicine"):
        bundled_path("physics")
    with pytest.raises(DataError, match="Unknown split"):
        bundled_path("finance", "test")
    for name in BUNDLED_NAMES:  # the sample files are optional here: either the right path or a clear error
        for split in ("train", "eval"):
            try:
                p = bundled_path(name, split)
            except DataError as e:
                assert "is missing" in str(e)
                continue
            sub = Path("general") if name == "general" else Path("domains") / name
            assert p == Path(__file__).resolve().parents[1] / "data_samples" / sub / f"{split}.jsonl"


# --------------------------------------------------------------------------------------------------------------------
# Ecosystem formats: ShareGPT, TRL prompt/completion, in-memory data sets, Hub ids


CHAT = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Capital of France?"},
        {"role": "assistant", "content": "Paris."}, {"role": "user", "content": "And of Italy?"},
        {"role": "assistant", "content": "Rome."}]
SHAREGPT_FROM = {"system": "system", "user": "human", "assistant": "gpt"}


def sharegpt(msgs):
    return [{"from": SHAREGPT_FROM[m["role"]], "value": m["content"]} for m in msgs]


def examples_of(tok, tmp_path, rows, name):
    return load_corpus(write_jsonl(tmp_path / f"{name}.jsonl", rows), tok).examples


def test_sharegpt_conversations_equal_the_same_messages(tok, tmp_path):
    ref = examples_of(tok, tmp_path, [{"messages": CHAT}], "messages")
    assert row_kind({"conversations": sharegpt(CHAT)}) == "chat"
    assert examples_of(tok, tmp_path, [{"conversations": sharegpt(CHAT)}], "sharegpt") == ref
    # role/content objects under "conversations" and other ShareGPT speaker names are accepted too
    alt = [{"from": {"system": "system", "user": "user", "assistant": "chatgpt"}[m["role"]], "value": m["content"]}
           for m in CHAT]
    assert examples_of(tok, tmp_path, [{"conversations": alt}], "alt") == ref
    assert examples_of(tok, tmp_path, [{"conversations": CHAT}], "rc") == ref
    with pytest.raises(DataError, match="no 'assistant' message"):
        load_corpus(write_jsonl(tmp_path / "x.jsonl", [{"conversations": sharegpt(CHAT[:2])}]), tok)
    with pytest.raises(DataError, match="'from' and 'value'"):
        load_corpus(write_jsonl(tmp_path / "y.jsonl", [{"conversations": [{"speaker": "gpt", "text": "Hi"}]}]), tok)


def test_trl_prompt_completion_strings_equal_prompt_response(tok, tmp_path):
    row = {"prompt": "Hi?", "completion": "Hello!"}
    assert row_kind(row) == "instruction"
    assert examples_of(tok, tmp_path, [row], "pc") == \
        examples_of(tok, tmp_path, [{"prompt": "Hi?", "response": "Hello!"}], "pr")


def test_trl_conversational_prompt_completion_takes_loss_on_the_completion_only(tok, tmp_path):
    row = {"prompt": CHAT[:4], "completion": CHAT[4:]}
    assert row_kind(row) == "chat"
    ex, = examples_of(tok, tmp_path, [row], "conv")
    full, = examples_of(tok, tmp_path, [{"messages": CHAT}], "messages")
    assert ex.input_ids == full.input_ids  # the same text ...
    # ... but the prompt's assistant turn ("Paris.") is context: only the completion is labelled
    assert [decode(tok, ex.input_ids[a:b]) for a, b in labelled_runs(ex)] == ["Rome.<|im_end|>"]
    assert [decode(tok, full.input_ids[a:b]) for a, b in labelled_runs(full)] == ["Paris.<|im_end|>",
                                                                                   "Rome.<|im_end|>"]
    # a one-turn conversational row equals the plain-string one
    one = {"prompt": [{"role": "user", "content": "Hi?"}], "completion": [{"role": "assistant", "content": "Hello!"}]}
    assert examples_of(tok, tmp_path, [one], "one") == \
        examples_of(tok, tmp_path, [{"prompt": "Hi?", "completion": "Hello!"}], "pc")
    with pytest.raises(DataError, match="completion has no 'assistant'"):
        load_corpus(write_jsonl(tmp_path / "z.jsonl", [{"prompt": CHAT[:2], "completion": [CHAT[1]]}]), tok)


class FakeDataset:
    """What dba.data needs of a ``datasets.Dataset``: ``to_list()`` (and, optionally, ``info.dataset_name``)."""

    def __init__(self, rows, name=None):
        self.rows = rows
        self.info = type("Info", (), {"dataset_name": name})()

    def to_list(self):
        return list(self.rows)


def test_in_memory_data_sets(tok, tmp_path):
    import pandas as pd

    ref = load_corpus(write_jsonl(tmp_path / "a.jsonl", ROWS), tok)
    sources = {"list": ROWS, "to_list": FakeDataset(ROWS, "alpaca-mini"), "generator": (r for r in ROWS),
               "DataFrame": pd.DataFrame(ROWS), "DatasetDict": {"train": FakeDataset(ROWS), "test": []}}
    hashes = set()
    for what, src in sources.items():
        corpus = load_corpus(src, tok)
        assert corpus.examples == ref.examples, what
        assert corpus.n_rows == 2 and corpus.kind == "instruction", what
        if what != "DataFrame":  # (the DataFrame adds the missing "input" as None: other rows, same examples)
            hashes.add(corpus.content_hash)
    assert len(hashes) == 1  # the hash is of the rows, so equal rows give equal hashes
    assert load_corpus(FakeDataset(ROWS, "alpaca-mini"), tok).name == "alpaca-mini"
    assert read_rows(FakeDataset(ROWS)) == ROWS
    with pytest.raises(DataError, match="splits train, test, not 'validation'"):
        load_corpus({"train": ROWS, "test": ROWS}, tok, split="validation")
    with pytest.raises(DataError, match="looks like ONE row"):
        load_corpus({"messages": CHAT}, tok)
    with pytest.raises(DataError, match="item 1 of the list is a str"):
        load_corpus([ROWS[0], "oops"], tok)
    with pytest.raises(DataError, match="not iterable"):
        load_corpus(42, tok)
    with pytest.raises(DataError, match="holds no rows"):
        load_corpus([], tok)


def test_a_real_datasets_dataset(tok):
    datasets = pytest.importorskip("datasets")
    rows = [{"prompt": [{"role": "user", "content": "Hi?"}],
             "completion": [{"role": "assistant", "content": "Yo."}]}] * 3
    ds = datasets.Dataset.from_list(rows)
    corpus = load_corpus(ds, tok)
    assert corpus.n_rows == 3 and corpus.kind == "instruction"
    assert corpus.examples == load_corpus(rows, tok).examples
    dd = datasets.DatasetDict({"train": ds, "test": ds.select([0])})
    assert load_corpus(dd, tok, split="test").n_rows == 1


def _fake_hub_cache(root: Path, repo: str, files: dict[str, list[dict]]) -> None:
    """A Hub cache holding one snapshot of a data set repository (the layout huggingface_hub reads offline)."""
    commit = "0" * 40
    base = root / ("datasets--" + repo.replace("/", "--"))
    (base / "refs").mkdir(parents=True)
    (base / "refs" / "main").write_text(commit)
    for name, rows in files.items():
        f = base / "snapshots" / commit / name
        f.parent.mkdir(parents=True, exist_ok=True)
        write_jsonl(f, rows)


def test_hub_dataset_id_offline_uses_the_cache_or_says_why_not(tok, tmp_path, monkeypatch):
    from dba.data import resolve_corpus

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(DataError) as e:
        load_corpus("someone/not-cached", tok)
    msg = str(e.value)
    assert "'someone/not-cached' is not a local file or folder" in msg and "HF_HUB_OFFLINE=1" in msg
    assert "\n" not in msg
    _fake_hub_cache(tmp_path / "hub", "someone/qa", {
        "README.md": [], "data/train-00000-of-00001.jsonl": ROWS, "data/test-00000-of-00001.jsonl": ROWS[:1]})
    corpus = load_corpus("someone/qa", tok)
    assert corpus.n_rows == 2 and corpus.name == "qa"
    assert corpus.examples == load_corpus(ROWS, tok).examples
    assert load_corpus("someone/qa:test", tok).n_rows == 1
    with pytest.raises(DataError, match="no data files for the split 'validation'"):
        load_corpus("someone/qa:validation", tok)
    # the CLI/app path: a corpus argument spelled org/name is passed on as a Hub id, a missing file still fails
    assert str(resolve_corpus("someone/qa")) == "someone/qa"
    with pytest.raises(DataError, match="Data path not found"):
        load_corpus(resolve_corpus("folder/missing.jsonl"), tok)


FORMATS = {
    "alpaca": [{"instruction": "Add 2 and 3.", "input": "Be brief.", "output": "5."}],
    "prompt/response": [{"prompt": "Add 2 and 3.", "response": "5."}],
    "trl prompt/completion": [{"prompt": "Add 2 and 3.", "completion": "5."}],
    "trl conversational prompt/completion": [{"prompt": [{"role": "user", "content": "Add 2 and 3."}],
                                              "completion": [{"role": "assistant", "content": "5."}]}],
    "messages": [{"messages": CHAT}],
    "sharegpt": [{"conversations": sharegpt(CHAT)}],
    "text": [{"text": "Rates rose by a quarter point on Tuesday. " * 4}],
}


@pytest.fixture(scope="module")
def tiny():
    from dba import LoraSettings, load_model

    torch.manual_seed(0)
    return load_model("tiny", lora=LoraSettings(rank=2, alpha=4), device="cpu")


@pytest.mark.parametrize("source", ["file", "dataset"])
@pytest.mark.parametrize("fmt", list(FORMATS))
def test_each_format_trains_one_step_on_the_tiny_model(tiny, tmp_path, fmt, source):
    from dba.data import collate
    from dba.optim import DBAConfig, DBAOptimizer

    rows = FORMATS[fmt] * 2
    data = write_jsonl(tmp_path / "d.jsonl", rows) if source == "file" else FakeDataset(rows)
    corpus = load_corpus(data, tiny.tokenizer, max_length=96)
    batch = collate(corpus.examples[:2], tiny.tokenizer.pad_token_id)
    assert int((batch["labels"] != -100).sum()) > 0
    params = [p for p in tiny.model.parameters() if p.requires_grad]
    before = [p.detach().clone() for p in params]
    opt = DBAOptimizer(tiny.model, None, DBAConfig.direct(total_steps=1, lr=1e-2))
    loss = tiny.model(**batch).loss
    assert torch.isfinite(loss)
    loss.backward()
    opt.step()
    opt.zero_grad()
    assert opt.last_record["step"] == 0 and not opt.last_record["skipped"]
    assert any(not torch.equal(a, p) for a, p in zip(before, params)), "the step changed nothing"
    with torch.no_grad():
        for a, p in zip(before, params):  # undo, so every case starts from the same adapter
            p.copy_(a)


def test_cli_and_app_accept_a_sharegpt_file(tmp_path, capsys):
    from app.uploads import check_corpus
    from dba.cli import main as cli_main
    from dba.train import read_run

    rows = [{"conversations": [{"from": "human", "value": f"What is {a} plus 1?"},
                               {"from": "gpt", "value": f"{a + 1}."}]} for a in range(6)]
    f = write_jsonl(tmp_path / "sharegpt.jsonl", rows)
    assert check_corpus(f)["layouts"] == {"chat": 6}
    mc = write_jsonl(tmp_path / "mc.jsonl", [{"question": "1+1?", "choices": ["2", "3"], "answer": 0}])
    rc = cli_main(["train", "--method", "direct", "--model", "tiny", "--lora-rank", "2", "--domain", str(f),
                   "--domain-eval", str(mc), "--general-eval", str(mc), "--steps", "1", "--batch-size", "2",
                   "--max-length", "96", "--eval-items", "1", "-o", str(tmp_path / "run")])
    assert rc == 0, capsys.readouterr().err
    run = read_run(tmp_path / "run")
    assert run["status"]["status"] == "completed"
    assert [m["step"] for m in run["metrics"] if m["type"] == "step"] == [0]
