"""vocab_tokens: the token list and types llama.cpp's converter writes, on the cases the synthetic tokenizer
lacks (ids the tokenizer skips, added tokens that are not special, ids past the model's vocabulary)."""

import contextlib
import json
from pathlib import Path

from gguf import TokenType

from mxfp4.convert.formats.gguf.vocab import byte_level_bpe, vocab_tokens


def test_gaps_added_tokens_and_out_of_range_ids(tmp_path):
    vocab = {"a": 0, "b": 1, "far": 9, "negative": -1}  # id 2 missing; 9 is past vocab_size
    added = [
        {"id": 3, "content": "<|start|>", "special": True},
        {"id": 4, "content": "<|looks|>", "special": False},  # named like a control token: control
        {"id": 5, "content": "user word", "special": False},
        {"id": 1, "content": "B", "special": False},  # an added token replaces the vocabulary's at its id
        {"id": 7, "content": "<|past|>", "special": True},
    ]
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(byte_level_bpe(vocab, [], added)))
    tokens, types = vocab_tokens(path, 7)
    assert tokens == ["a", "B", "[PAD2]", "<|start|>", "<|looks|>", "user word", "[PAD6]"]
    assert types == [
        TokenType.NORMAL,
        TokenType.USER_DEFINED,
        TokenType.UNUSED,
        TokenType.CONTROL,
        TokenType.CONTROL,
        TokenType.USER_DEFINED,
        TokenType.UNUSED,
    ]


def test_in_order_vocab_takes_the_fast_path_with_the_same_result(tmp_path):
    vocab = {f"t{i}": i for i in range(6)}
    added = [{"id": 6, "content": "<|end|>", "special": True}]
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(byte_level_bpe(vocab, [], added)))
    assert vocab_tokens(path, 9) == (
        [f"t{i}" for i in range(6)] + ["<|end|>", "[PAD7]", "[PAD8]"],
        [TokenType.NORMAL] * 6 + [TokenType.CONTROL, TokenType.UNUSED, TokenType.UNUSED],
    )
    vocab["t5"] = True  # not an int id: skipped, as on the slow path
    path.write_text(json.dumps(byte_level_bpe(vocab, [], added)))
    assert vocab_tokens(path, 7)[0] == [f"t{i}" for i in range(5)] + ["[PAD5]", "<|end|>"]


def test_tokenizer_json_is_parsed_once_and_the_keys_are_those_of_a_second_parse(tmp_path, monkeypatch):
    from mxfp4.convert.formats.gguf import vocab as gguf_vocab
    from mxfp4.convert.formats.gguf.keys import Metadata

    tiny = Path(__file__).resolve().parents[2] / "examples" / "tiny-gpt-oss"
    size = (tiny / "tokenizer.json").stat().st_size
    parses = []
    real_load, real_loads = json.load, json.loads

    def load(handle, *args, **kwargs):
        parses.append(Path(handle.name).name)
        return real_load(handle, *args, **kwargs)

    def loads(text, *args, **kwargs):
        parses.append("tokenizer.json" if len(text) == size else "other")
        return real_loads(text, *args, **kwargs)

    def keys(answer_from_our_parse: bool) -> dict:
        metadata = Metadata()
        if not answer_from_our_parse:
            monkeypatch.setattr(gguf_vocab, "_tokenizer_json_answered", lambda path, data: contextlib.nullcontext())
        gguf_vocab.add_tokenizer(metadata, tiny, 201088)
        return dict(metadata.values)

    monkeypatch.setattr(json, "load", load)
    monkeypatch.setattr(json, "loads", loads)
    once = keys(answer_from_our_parse=True)
    assert parses.count("tokenizer.json") == 1, parses
    parses.clear()
    twice = keys(answer_from_our_parse=False)
    assert parses.count("tokenizer.json") == 2, parses
    assert once == twice and "tokenizer.ggml.merges" in once
