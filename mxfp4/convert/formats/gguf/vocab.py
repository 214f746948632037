"""The tokenizer as GGUF metadata, read from tokenizer.json the way llama.cpp's converter lays it out
(model 'gpt2', pre-tokenizer 'gpt-4o' for gpt-oss's o200k), without loading transformers; and back."""

from __future__ import annotations

import json
import re
from contextlib import contextmanager
from pathlib import Path
from string import ascii_letters, digits

from gguf import GGUFValueType, Keys

from ....errors import CheckpointError
from ....gpt_oss.harmony_tokenizer import O200K_PATTERN
from .fields import read_field
from .keys import Metadata

LOOKS_SPECIAL = re.compile(r"^<\|.*\|>$")


GPT2_PRE_TOKENIZER = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
O200K_PRE_TOKENIZER = {
    "type": "Sequence",
    "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": O200K_PATTERN}, "behavior": "Isolated", "invert": False},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False},
    ],
}
BYTE_LEVEL_POST = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True}

# llama.cpp's names for the pre-tokenizers (tokenizer.ggml.pre) whose tokenizer.json form is known here, with what a
# rebuilt tokenizer.json needs to tokenize as llama.cpp does: pre-tokenizer, post-processor, ignore_merges. o200k
# ('gpt-4o', gpt-oss's) takes a pre-token that is itself a token whole, as tiktoken does.
PRE_TOKENIZERS = {
    "gpt-4o": (O200K_PRE_TOKENIZER, BYTE_LEVEL_POST, True),
    "gpt-2": (GPT2_PRE_TOKENIZER, None, False),
}


def pre_tokenizer_name(data: dict, tokenizer_json: Path) -> str:
    """llama.cpp's name for the pre-tokenizer of a parsed tokenizer.json: 'gpt-4o' for o200k's regex split before a
    byte-level mapping, 'gpt-2' for GPT-2's byte-level regex. Judged by what splits text, not by how the JSON is
    spelled (another tokenizers version may add fields). Anything else is refused: llama.cpp would split the text
    its own way."""
    pre = data.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else [pre]
    kinds = [step.get("type") for step in steps]
    byte_level = steps[-1] if kinds and kinds[-1] == "ByteLevel" else None
    if byte_level is not None and not byte_level.get("add_prefix_space", False):
        if kinds == ["Split", "ByteLevel"] and byte_level.get("use_regex") is False:
            split = steps[0]
            if (
                split.get("pattern") == {"Regex": O200K_PATTERN}
                and split.get("behavior") == "Isolated"
                and not split.get("invert", False)
            ):
                return "gpt-4o"
        if kinds == ["ByteLevel"] and byte_level.get("use_regex", True):
            return "gpt-2"
    raise CheckpointError(
        f"{tokenizer_json}: its pre-tokenizer is neither o200k's split (gpt-oss) nor GPT-2's byte-level regex, the "
        f"two a GGUF can name here; llama.cpp would split text differently from it"
    )


def byte_level_bpe(vocab: dict[str, int], merges: list, added: list[dict], pre: str = "gpt-2") -> dict:
    """A tokenizer.json for a byte-level BPE vocabulary (GPT-2 / o200k style), as the tokenizers library writes it,
    with the pre-tokenizer llama.cpp names ``pre`` (a key of PRE_TOKENIZERS)."""
    pre_tokenizer, post_processor, ignore_merges = PRE_TOKENIZERS[pre]
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": pre_tokenizer,
        "post_processor": post_processor,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": ignore_merges,
            "vocab": vocab,
            "merges": merges,
        },
    }


def read_tokenizer_json(tokenizer_json: Path) -> dict:
    """tokenizer.json parsed, refused with a CheckpointError unless it holds a BPE vocabulary."""
    try:
        data = json.loads(tokenizer_json.read_bytes())
        dict(data["model"]["vocab"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{tokenizer_json}: not a BPE tokenizer.json ({type(error).__name__}: {error})") from None
    return data


def vocab_tokens(tokenizer_json: Path, vocab_size: int, data: dict | None = None) -> tuple[list[str], list[int]]:
    """Tokens 0..vocab_size-1 and their GGUF types; ids the tokenizer lacks become '[PADn]' (unused).
    ``data``: tokenizer.json already parsed (read_tokenizer_json)."""
    from gguf import TokenType  # gguf is imported only by the commands that read or write GGUF (50 ms)

    data = read_tokenizer_json(tokenizer_json) if data is None else data
    vocab = dict(data["model"]["vocab"])
    added = {t["id"]: t for t in data.get("added_tokens", [])}
    # Filled by index rather than looked up id by id: 200k tokens, and this runs before any tensor is written.
    tokens: list = [None] * vocab_size
    types = [TokenType.NORMAL] * vocab_size
    ids = list(vocab.values())
    if len(ids) <= vocab_size and set(map(type, ids)) <= {int} and ids == list(range(len(ids))):
        tokens[: len(ids)] = vocab  # the usual layout, ids 0..n-1 in order: one slice, no step per token
    else:
        for token, i in vocab.items():
            if type(i) is int and 0 <= i < vocab_size:
                tokens[i] = token
    for i, t in added.items():
        if type(i) is int and 0 <= i < vocab_size:
            tokens[i] = token = t["content"]
            special = t.get("special") or LOOKS_SPECIAL.match(token)
            types[i] = TokenType.CONTROL if special else TokenType.USER_DEFINED
    for i in [i for i, token in enumerate(tokens) if token is None]:
        tokens[i] = f"[PAD{i}]"
        types[i] = TokenType.UNUSED
    return tokens, types


class _ParsedOnce:
    """Stands in for the json module inside gguf.vocab while SpecialVocab runs: tokenizer.json is answered
    from the parse add_tokenizer already made (the largest file, and this all happens before the first tensor
    is written); every other file and call goes to json as usual. Should gguf stop reading the file through
    json.load, it simply parses it again."""

    def __init__(self, path: Path, data: dict):
        self._path, self._data = path.resolve(), data

    def load(self, handle, *args, **kwargs):
        name = getattr(handle, "name", None)
        if isinstance(name, str) and not args and not kwargs and Path(name).resolve() == self._path:
            return self._data  # SpecialVocab only reads it; vocab_tokens is done with it
        return json.load(handle, *args, **kwargs)

    def __getattr__(self, name: str):
        return getattr(json, name)


@contextmanager
def _tokenizer_json_answered(path: Path, data: dict):
    import gguf.vocab

    if getattr(gguf.vocab, "json", None) is not json:  # not the module as we know it: leave it alone
        yield
        return
    gguf.vocab.json = _ParsedOnce(path, data)
    try:
        yield
    finally:
        gguf.vocab.json = json


# SpecialVocab's names for special tokens -> the keys llama.cpp reads them from (GGUFWriter's add_<name>_token_id
# and add_add_<name>_token); a name without a key here has none in GGUF and is left out, as GGUFWriter does.
SPECIAL_ID_KEYS = {
    "bos": Keys.Tokenizer.BOS_ID,
    "eos": Keys.Tokenizer.EOS_ID,
    "unk": Keys.Tokenizer.UNK_ID,
    "sep": Keys.Tokenizer.SEP_ID,
    "pad": Keys.Tokenizer.PAD_ID,
    "mask": Keys.Tokenizer.MASK_ID,
    "eot": Keys.Tokenizer.EOT_ID,
    "eom": Keys.Tokenizer.EOM_ID,
}
ADD_SPECIAL_KEYS = {"bos": Keys.Tokenizer.ADD_BOS, "eos": Keys.Tokenizer.ADD_EOS, "sep": Keys.Tokenizer.ADD_SEP}


def add_tokenizer(metadata: Metadata, directory: Path, vocab_size: int) -> None:
    """tokenizer.ggml.* keys: tokens, types, merges, special ids, chat template."""
    tokenizer_json = directory / "tokenizer.json"
    if not tokenizer_json.is_file():
        raise CheckpointError(f"{directory}: no tokenizer.json; llama.cpp needs the tokenizer inside the GGUF")
    import gguf

    data = read_tokenizer_json(tokenizer_json)
    tokens, types = vocab_tokens(tokenizer_json, vocab_size, data)
    metadata.add(Keys.Tokenizer.MODEL, "gpt2", GGUFValueType.STRING)
    metadata.add(Keys.Tokenizer.PRE, pre_tokenizer_name(data, tokenizer_json), GGUFValueType.STRING)
    metadata.add_array(Keys.Tokenizer.LIST, tokens, GGUFValueType.STRING)
    metadata.add_array(Keys.Tokenizer.TOKEN_TYPE, types, GGUFValueType.INT32)
    # Merges, bos/eos/pad ids and the chat template: the gguf package's SpecialVocab reads
    # tokenizer.json, tokenizer_config.json and config.json exactly as llama.cpp's converter does.
    with _tokenizer_json_answered(tokenizer_json, data):
        special = gguf.SpecialVocab(directory, load_merges=True, n_vocab=len(tokens))
    if special.merges:
        metadata.add_array(Keys.Tokenizer.MERGES, special.merges, GGUFValueType.STRING)
    for name, token_id in special.special_token_ids.items():
        if name in SPECIAL_ID_KEYS:
            metadata.add(SPECIAL_ID_KEYS[name], token_id, GGUFValueType.UINT32)
    for name, value in {**special.add_special_token, **byte_level_adds(data)}.items():
        if name in ADD_SPECIAL_KEYS:
            metadata.add(ADD_SPECIAL_KEYS[name], value, GGUFValueType.BOOL)
    if special.chat_template is not None:
        add_chat_templates(metadata, special.chat_template)


def byte_level_adds(data: dict) -> dict[str, bool]:
    """A byte-level post-processor adds no BOS and no EOS: llama.cpp's converter says so (add_bos_token and
    add_eos_token false, whatever tokenizer_config.json says), though the gguf package on PyPI does not yet."""
    post = data.get("post_processor") or {}
    processors = post.get("processors", [post]) if isinstance(post, dict) else []
    if any(isinstance(p, dict) and p.get("type") == "ByteLevel" for p in processors):
        return {"bos": False, "eos": False}
    return {}


def add_chat_templates(metadata: Metadata, template) -> None:
    """One template, or tokenizer_config's list of named ones: each named one under tokenizer.chat_template.NAME
    (the name's other characters made '_'), their names listed, and the one named 'default' as the template."""
    if isinstance(template, str):
        metadata.add(Keys.Tokenizer.CHAT_TEMPLATE, template, GGUFValueType.STRING)
        return
    default, names = None, []
    for choice in template:
        name = "".join(c if c in ascii_letters + digits else "_" for c in choice.get("name", ""))
        text = choice.get("template")
        if not name or text is None:
            continue
        if name == "default":
            default = text
        elif name not in names:
            names.append(name)
            metadata.add(Keys.Tokenizer.CHAT_TEMPLATE_N.format(name=name), text, GGUFValueType.STRING)
    if names:
        metadata.add_array(Keys.Tokenizer.CHAT_TEMPLATES, names, GGUFValueType.STRING)
    if default is not None:
        metadata.add(Keys.Tokenizer.CHAT_TEMPLATE, default, GGUFValueType.STRING)


def tokenizer_files(fields: dict, path: Path, default_pre: str | None = None) -> dict[str, str]:
    """tokenizer.json, tokenizer_config.json and generation_config.json rebuilt from a GGUF's vocabulary
    (``fields``: the header's key/value pairs of ``path``): the inverse of add_tokenizer. {} when it holds none.
    default_pre: the pre-tokenizer of a file that names none (Ollama's, whose runtime knows gpt-oss's)."""
    from gguf import TokenType

    r, p = fields, path
    tokens = read_field(r, "tokenizer.ggml.tokens", p, default=[], required=False)
    if not tokens:
        return {}
    types = read_field(r, "tokenizer.ggml.token_type", p, default=[TokenType.NORMAL] * len(tokens), required=False)
    merges = read_field(r, "tokenizer.ggml.merges", p, default=[], required=False)
    vocab, added = {}, []
    for i, (token, kind) in enumerate(zip(tokens, types)):
        if kind == TokenType.UNUSED:
            continue
        if kind in (TokenType.CONTROL, TokenType.USER_DEFINED):
            added.append(
                {
                    "id": i,
                    "content": token,
                    "single_word": False,
                    "lstrip": False,
                    "rstrip": False,
                    "normalized": False,
                    "special": kind == TokenType.CONTROL,
                }
            )
        else:
            vocab[token] = i
    pre = read_field(r, "tokenizer.ggml.pre", p, default=default_pre, required=False)
    if pre not in PRE_TOKENIZERS:
        named = "names no tokenizer.ggml.pre" if pre is None else f"tokenizer.ggml.pre is {pre!r}"
        raise CheckpointError(
            f"{p}: {named}; a tokenizer.json that splits text as llama.cpp does can be rebuilt for "
            f"{' and '.join(map(repr, PRE_TOKENIZERS))} only"
        )
    tokenizer = byte_level_bpe(vocab, list(merges), added, pre)
    special = {k: read_field(r, f"tokenizer.ggml.{k}_token_id", p, required=False) for k in ("bos", "eos", "padding")}
    # ids outside the vocabulary name no token (Ollama writes gpt-oss's 199998/199999 whatever the vocabulary)
    special = {k: v if v is not None and 0 <= int(v) < len(tokens) else None for k, v in special.items()}
    names = {"bos": "bos_token", "eos": "eos_token", "padding": "pad_token"}
    tokenizer_config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "clean_up_tokenization_spaces": False,
        **{names[k]: tokens[int(v)] for k, v in special.items() if v is not None},
    }
    template = read_field(r, "tokenizer.chat_template", p, required=False)
    if template:
        tokenizer_config["chat_template"] = template
    generation = {
        k + "_token_id": int(v)
        for k, v in (("bos", special["bos"]), ("eos", special["eos"]), ("pad", special["padding"]))
        if v is not None
    }
    return {
        name: json.dumps(content, indent=2, ensure_ascii=False) + "\n"
        for name, content in {
            "tokenizer.json": tokenizer,
            "tokenizer_config.json": tokenizer_config,
            "generation_config.json": generation,
        }.items()
    }
