"""vocab_tokens: the token list and types llama.cpp's converter writes, on the cases the synthetic tokenizer
lacks (ids the tokenizer skips, added tokens that are not special, ids past the model's vocabulary)."""

import json

from gguf import TokenType

from mxfp4.convert.gguf_vocab import byte_level_bpe, vocab_tokens


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
