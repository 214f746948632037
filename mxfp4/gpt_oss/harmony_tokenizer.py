"""gpt-oss's tokenizer (o200k_harmony) as a Hugging Face tokenizer.json, built from OpenAI's o200k_base ranks.

o200k_harmony is o200k_base's byte-level BPE (199,998 ranked byte strings), its pre-tokenizer regex, and the
harmony special tokens at ids 199,998 .. 201,087 (vocabulary 201,088). The ranks come from an
``o200k_base.tiktoken`` file (one "base64(bytes) rank" line per token, checked against its published sha256);
the `bpe-openai` wheel on PyPI ships one (``bpe_openai/data/o200k_base.tiktoken.gz``), found by
``o200k_base_file()``. Nothing is downloaded.

The tokenizer.json takes the form Hugging Face checkpoints of gpt-oss carry: a BPE whose merges rank each pair
(a, b) by the rank of a + b (so merging the lowest-ranked pair first is tiktoken's rule), ``ignore_merges`` (a
pre-token that is itself a token is taken whole, as tiktoken does), the o200k regex as a Split pre-tokenizer
followed by a byte-level mapping without its own regex, byte-level decoding and post-processing.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import importlib.util
import json
from functools import lru_cache
from pathlib import Path

from ..errors import CheckpointError

O200K_BASE_SHA256 = "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d"
O200K_BASE_TOKENS = 199_998
VOCAB_SIZE = 201_088

# tiktoken's o200k pattern: letters split by case classes (marks continue a word), contractions as suffixes,
# digits in runs of up to three, punctuation runs with their trailing newlines or slashes, whitespace.
O200K_PATTERN = "|".join(
    [
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""\p{N}{1,3}""",
        r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
        r"""\s*[\r\n]+""",
        r"""\s+(?!\S)""",
        r"""\s+""",
    ]
)

_NAMED_SPECIAL = {
    199_998: "<|startoftext|>",
    199_999: "<|endoftext|>",
    200_002: "<|return|>",
    200_003: "<|constrain|>",
    200_005: "<|channel|>",
    200_006: "<|start|>",
    200_007: "<|end|>",
    200_008: "<|message|>",
    200_012: "<|call|>",
    200_018: "<|endofprompt|>",  # o200k_base's own; every other id above the ranks is reserved
}
SPECIAL_TOKENS = {i: _NAMED_SPECIAL.get(i, f"<|reserved_{i}|>") for i in range(O200K_BASE_TOKENS, VOCAB_SIZE)}
BOS, EOS, PAD = "<|startoftext|>", "<|return|>", "<|endoftext|>"  # as gpt-oss's tokenizer_config.json names them


@lru_cache(maxsize=1)
def byte_to_unicode() -> tuple[str, ...]:
    """The byte-level alphabet: printable Latin-1 bytes stand for themselves, the other 68 bytes take the code
    points from 256 up, in byte order (the mapping every byte-level BPE tokenizer.json is written in)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            table[byte] = chr(byte)
        else:
            table[byte] = chr(256 + extra)
            extra += 1
    return tuple(table[b] for b in range(256))


def byte_level(token: bytes) -> str:
    alphabet = byte_to_unicode()
    return "".join(alphabet[b] for b in token)


def o200k_base_file() -> Path:
    """The o200k_base.tiktoken.gz that the bpe-openai wheel ships."""
    spec = importlib.util.find_spec("bpe_openai")
    if spec is None or not spec.submodule_search_locations:
        raise CheckpointError(
            "o200k_base ranks not found: install the bpe-openai wheel (pip install bpe-openai), which ships "
            "o200k_base.tiktoken.gz, or pass the path of an o200k_base.tiktoken file"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "o200k_base.tiktoken.gz"
    if not path.is_file():
        raise CheckpointError(f"{path}: the bpe-openai package has no o200k_base ranks there")
    return path


def read_ranks(path: Path) -> dict[bytes, int]:
    """o200k_base's ranks from a .tiktoken file (or its .gz), refused unless its sha256 is the published one."""
    raw = Path(path).read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    digest = hashlib.sha256(raw).hexdigest()
    if digest != O200K_BASE_SHA256:
        raise CheckpointError(f"{path}: sha256 {digest[:12]}..., not o200k_base's {O200K_BASE_SHA256[:12]}...")
    ranks = {}
    for line in raw.splitlines():
        token, rank = line.split()
        ranks[base64.b64decode(token)] = int(rank)
    if sorted(ranks.values()) != list(range(O200K_BASE_TOKENS)):
        raise CheckpointError(f"{path}: ranks are not 0 .. {O200K_BASE_TOKENS - 1} once each")
    return ranks


def merges_of(ranks: dict[bytes, int]) -> list[tuple[bytes, bytes]]:
    """Every pair (a, b) of tokens whose concatenation is a token, ordered by that token's rank (then by the
    ranks of a and b): BPE merging the earliest pair first then merges exactly as tiktoken's lowest rank first."""
    merges = []
    for token, rank in ranks.items():
        splits = [(token[:i], token[i:]) for i in range(1, len(token))]
        pairs = [(ranks[a], ranks[b], a, b) for a, b in splits if a in ranks and b in ranks]
        merges += [(rank, ra, rb, a, b) for ra, rb, a, b in pairs]
    merges.sort(key=lambda m: m[:3])
    return [(a, b) for *_, a, b in merges]


def tokenizer_json(ranks: dict[bytes, int]) -> str:
    """o200k_harmony's tokenizer.json text from o200k_base's ranks."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors

    vocab = {byte_level(token): rank for token, rank in ranks.items()}
    merges = [(byte_level(a), byte_level(b)) for a, b in merges_of(ranks)]
    tokenizer = Tokenizer(models.BPE(vocab, merges, fuse_unk=False, ignore_merges=True))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(O200K_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    # added in id order, so each lands on its id: the vocabulary ends at O200K_BASE_TOKENS - 1
    tokenizer.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in SPECIAL_TOKENS.values()])
    return tokenizer.to_str()


def tokenizer_config(chat_template: str | None = None) -> dict:
    """gpt-oss's tokenizer_config.json: the fast tokenizer class and its bos / eos / pad tokens."""
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": BOS,
        "eos_token": EOS,
        "pad_token": PAD,
        "clean_up_tokenization_spaces": False,
        "model_max_length": 131072,
        "model_input_names": ["input_ids", "attention_mask"],
    }
    if chat_template is not None:
        config["chat_template"] = chat_template
    return config


def write_tokenizer(directory: Path, ranks_file: Path | None = None) -> None:
    """tokenizer.json and tokenizer_config.json of o200k_harmony into ``directory`` (ranks from
    ``ranks_file``, or the bpe-openai wheel's)."""
    text = tokenizer_json(read_ranks(ranks_file or o200k_base_file()))
    directory = Path(directory)
    (directory / "tokenizer.json").write_text(text, encoding="utf-8")
    (directory / "tokenizer_config.json").write_text(json.dumps(tokenizer_config(), indent=2) + "\n")
