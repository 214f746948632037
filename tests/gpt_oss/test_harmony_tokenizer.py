"""gpt-oss's real tokenizer (o200k_harmony), built offline from the bpe-openai wheel's o200k_base ranks, against
tiktoken's own o200k_harmony and openai-harmony; and through GGUF (ours and llama.cpp's converter, which must
recognise it unaided), llama.cpp's runtime, and back to HF and MLX, compared by how they tokenize."""

import functools
import gzip
import hashlib
import json
import os
import subprocess
import sys
import unicodedata
from pathlib import Path

import numpy as np
import pytest
from gguf import GGUFReader

from mxfp4.convert import convert
from mxfp4.errors import CheckpointError
from mxfp4.gpt_oss import harmony_tokenizer
from mxfp4.testing.checkpoints import make_harmony_checkpoint

REPO = Path(__file__).resolve().parents[2]
LLAMA_CPP = Path(os.environ.get("MXFP4_LLAMA_CPP_DIR", REPO / ".cache" / "llama.cpp"))
O200K_URL = "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken"  # tiktoken's cache key


def corpus() -> str:
    """Over 100k characters of mixed text: this project's code, Python's own prose, numbers, many scripts and
    emoji with combining marks, runs of every kind of whitespace, contractions in every case."""
    from pydoc_data.topics import topics

    code = "".join(p.read_text() for p in sorted((REPO / "mxfp4" / "convert").rglob("*.py")))[:60_000]
    prose = "\n\n".join(topics[k] for k in sorted(topics))[:40_000]
    rng = np.random.default_rng(0)
    numbers = " ".join(f"{x:.{int(rng.integers(0, 9))}f}" for x in rng.normal(0, 1e4, 1500))
    numbers += " " + "".join(str(int(d)) for d in rng.integers(0, 10, 400)) + " 1,234,567.89 -0.5e-10 0x1F 2026-12-02"
    scripts = (
        "नमस्ते दुनिया ที่นี่ภาษาไทย עִבְרִית مرحبا بالعالم 日本語のテキスト 中文文本 한국어 텍스트 Ελληνικά Кириллица "
        "ǅemal Ǉubljana ﬁnance e\u0301te\u0301 🎉🏖️👩‍👩‍👧 🇫🇷 ∑∫√∞ ≠ ≤ «quotes» “curly” — – … \u200b\u00a0nbsp"
    )
    accents = "".join(unicodedata.normalize(form, scripts) for form in ("NFC", "NFD", "NFKC"))
    spaces = "a  b   c\t\td \n\n\ne\r\n\r\nf \u3000g" + " " * 17 + "h\n \n \n" + "\t \t" * 9 + "end   \n"
    cases = "don't DON'T Don'T I'LL we're THEY'VE it's IT'S you'd O'Neil rock'n'roll 'quoted' ''"
    return "\n".join([code, prose, numbers, accents * 12, spaces * 20, cases * 20])


@pytest.fixture(scope="module")
def ranks_folder(tmp_path_factory) -> Path:
    """o200k_base.tiktoken unzipped from the bpe-openai wheel, where tiktoken's cache and openai-harmony look."""
    folder = tmp_path_factory.mktemp("tiktoken")
    raw = gzip.decompress(harmony_tokenizer.o200k_base_file().read_bytes())
    (folder / "o200k_base.tiktoken").write_bytes(raw)
    (folder / hashlib.sha1(O200K_URL.encode()).hexdigest()).write_bytes(raw)
    return folder


@pytest.fixture(scope="module")
def tiktoken_harmony(ranks_folder, monkeypatch_module):
    """tiktoken's own o200k_harmony (its pattern, its special tokens), read from its cache: nothing downloaded."""
    tiktoken = pytest.importorskip("tiktoken")
    monkeypatch_module.setenv("TIKTOKEN_CACHE_DIR", str(ranks_folder))
    return tiktoken.get_encoding("o200k_harmony")


@pytest.fixture(scope="module")
def monkeypatch_module():
    patch = pytest.MonkeyPatch()
    yield patch
    patch.undo()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    # small layers: the vocabulary (201,088 rows of embeddings and unembeddings) is what these tests are about
    shape = dict(num_hidden_layers=2, hidden_size=32, intermediate_size=32, head_dim=16)
    return make_harmony_checkpoint(tmp_path_factory.mktemp("harmony"), **shape)


@functools.lru_cache(maxsize=None)
def _tokenizer(path: str):
    from tokenizers import Tokenizer

    return Tokenizer.from_file(path)  # a 10 MB file: parsed once per folder


def hf_ids(folder: Path, text: str) -> list[int]:
    return _tokenizer(str(folder / "tokenizer.json")).encode(text).ids


TEXT = corpus()


def test_the_corpus_is_large_and_mixed():
    assert len(TEXT) >= 100_000
    assert {unicodedata.category(c)[0] for c in TEXT} >= {"L", "M", "N", "P", "S", "Z", "C"}


def test_built_tokenizer_tokenizes_as_tiktoken_o200k_harmony(checkpoint, tiktoken_harmony):
    assert hf_ids(checkpoint, TEXT) == tiktoken_harmony.encode_ordinary(TEXT)
    for line in TEXT.splitlines()[::50]:  # short texts too: ignore_merges decides whole pre-tokens
        assert hf_ids(checkpoint, line) == tiktoken_harmony.encode_ordinary(line)


def test_special_tokens_sit_at_harmonys_ids(checkpoint, tiktoken_harmony):
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(checkpoint / "tokenizer.json"))
    assert tokenizer.get_vocab_size() == 201_088
    message = "<|start|>user<|message|>What is 2+2?<|end|><|start|>assistant<|channel|>final<|message|>4<|return|>"
    assert tokenizer.encode(message).ids == tiktoken_harmony.encode(message, allowed_special="all")
    for token, i in tiktoken_harmony._special_tokens.items():
        if token != "<|reserved_200018|>":  # 200018 is named twice there; gpt-oss's tokenizer calls it endofprompt
            assert tokenizer.token_to_id(token) == i, token


def test_built_tokenizer_tokenizes_as_openai_harmony(checkpoint, ranks_folder, monkeypatch):
    harmony = pytest.importorskip("openai_harmony")
    monkeypatch.setenv("TIKTOKEN_ENCODINGS_BASE", str(ranks_folder))
    encoding = harmony.load_harmony_encoding(harmony.HarmonyEncodingName.HARMONY_GPT_OSS)
    sample = TEXT[:30_000] + TEXT[-20_000:]
    assert hf_ids(checkpoint, sample) == encoding.encode(sample, allowed_special=set())


def test_ranks_that_are_not_o200k_base_are_refused(tmp_path):
    raw = gzip.decompress(harmony_tokenizer.o200k_base_file().read_bytes())
    (tmp_path / "changed.tiktoken").write_bytes(raw.replace(b" 0\n", b" 1\n", 1))
    with pytest.raises(CheckpointError, match="changed.tiktoken: sha256"):
        harmony_tokenizer.read_ranks(tmp_path / "changed.tiktoken")


def test_transformers_loads_it_with_gpt_oss_special_tokens(checkpoint):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id) == (199_998, 200_002, 199_999)
    assert tokenizer("hello world")["input_ids"] == hf_ids(checkpoint, "hello world")  # no BOS is added


@pytest.fixture(scope="module")
def llama_cpp_gguf(checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "reference.gguf"
    run = subprocess.run(
        [sys.executable, REPO / "tests" / "tools" / "run_llama_cpp_converter.py", LLAMA_CPP, checkpoint]
        + ["--outfile", out, "--no-answer"],  # llama.cpp must recognise the pre-tokenizer by its own hash
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def our_gguf(checkpoint, tmp_path_factory):
    return convert(checkpoint, tmp_path_factory.mktemp("ours") / "model.gguf", to="gguf").output


@functools.lru_cache(maxsize=None)
def _reader(path: Path) -> GGUFReader:
    return GGUFReader(path)  # parsing 650,000 token and merge strings takes seconds: once per file


def _metadata(path: Path) -> dict:
    return {
        f.name: (tuple(f.types), f.contents())
        for f in _reader(path).fields.values()
        if not f.name.startswith("GGUF.") and f.name not in {"general.name", "general.size_label"}
    }


def test_our_gguf_equals_llama_cpps_in_every_key_and_tensor(our_gguf, llama_cpp_gguf):
    ours, theirs = _metadata(our_gguf), _metadata(llama_cpp_gguf)
    assert ours["tokenizer.ggml.pre"][1] == theirs["tokenizer.ggml.pre"][1] == "gpt-4o"
    assert theirs["tokenizer.ggml.add_bos_token"][1] is False and theirs["tokenizer.ggml.add_eos_token"][1] is False
    assert set(ours) == set(theirs)
    assert {k for k in ours if ours[k] != theirs[k]} == set()

    def tensors(path):
        return {t.name: (t.tensor_type.name, np.asarray(t.data).tobytes()) for t in _reader(path).tensors}

    assert tensors(our_gguf) == tensors(llama_cpp_gguf)


def test_llama_cpp_tokenizes_our_gguf_as_tiktoken(our_gguf, llama_cpp_gguf, tiktoken_harmony):
    """llama.cpp's 'gpt-4o' pre-tokenizer approximates o200k's letter classes without combining marks (\\p{M}), so
    a Devanagari, Thai or Hebrew word with marks splits differently there, in its own converter's GGUF as in ours:
    text without marks is tokenized exactly as tiktoken does, the rest exactly as llama.cpp's own GGUF is."""
    llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python is installed by .ci/run")
    ours, theirs = (
        llama_cpp.Llama(model_path=str(p), vocab_only=True, verbose=False) for p in (our_gguf, llama_cpp_gguf)
    )

    def tokenize(model, text):
        return model.tokenize(text.encode("utf-8"), add_bos=False, special=False)

    lines = TEXT.splitlines(keepends=True)
    has_marks = [any(unicodedata.category(c).startswith("M") for c in line) for line in lines]
    plain = "".join(line for line, marks in zip(lines, has_marks) if not marks)
    marked = "".join(line for line, marks in zip(lines, has_marks) if marks)
    assert len(plain) > 0.8 * len(TEXT)
    for start in range(0, len(plain), 40_000):
        part = plain[start : start + 40_000]
        assert tokenize(ours, part) == tiktoken_harmony.encode_ordinary(part)
    assert tokenize(ours, marked) == tokenize(theirs, marked)
    assert tokenize(ours, marked) != tiktoken_harmony.encode_ordinary(marked)  # llama.cpp's approximation


@pytest.mark.parametrize("which", ["ours", "llama.cpp"])
def test_gguf_back_to_hf_tokenizes_as_the_source(which, our_gguf, llama_cpp_gguf, checkpoint, tmp_path):
    gguf = our_gguf if which == "ours" else llama_cpp_gguf
    convert(gguf, tmp_path / "hf", to="mxfp4")
    source, back = (json.loads((d / "tokenizer.json").read_text()) for d in (checkpoint, tmp_path / "hf"))
    for part in ("pre_tokenizer", "post_processor"):
        assert back[part] == source[part], part
    assert back["model"]["ignore_merges"] is True
    assert hf_ids(tmp_path / "hf", TEXT) == hf_ids(checkpoint, TEXT)
    # and again to GGUF: the same keys as the first time (add_bos / add_eos false survive the round trip)
    convert(tmp_path / "hf", tmp_path / "again.gguf", to="gguf")
    assert _values(tmp_path / "again.gguf") == _values(our_gguf)


def _values(path: Path) -> dict:
    """Every key's value and its Python types as our bounds-checked header walk reads them, for comparing two
    files this project wrote: gguf's reader takes 10-40 s over 650,000 strings, so it reads each file once, in the
    comparison with llama.cpp's file, which also holds the GGUF value types (this walk does not keep them)."""
    from mxfp4.storage.gguf_check import validate_gguf

    def typed(value):
        items = value if isinstance(value, list) else [value]
        return type(value).__name__, sorted({type(item).__name__ for item in items}), value

    fields = validate_gguf(path).fields
    return {k: typed(v) for k, v in fields.items() if k not in {"general.name", "general.size_label"}}


def test_gguf_to_mlx_tokenizes_as_the_source(our_gguf, checkpoint, tmp_path):
    convert(our_gguf, tmp_path / "mlx", to="mlx")
    assert hf_ids(tmp_path / "mlx", TEXT[:50_000]) == hf_ids(checkpoint, TEXT[:50_000])


def test_pre_tokenizers_are_named_by_what_splits_text_and_others_refused(tmp_path):
    import copy

    from mxfp4.convert.formats.gguf.vocab import (
        GPT2_PRE_TOKENIZER,
        O200K_PRE_TOKENIZER,
        pre_tokenizer_name,
        tokenizer_files,
    )

    where = tmp_path / "tokenizer.json"
    assert pre_tokenizer_name({"pre_tokenizer": O200K_PRE_TOKENIZER}, where) == "gpt-4o"
    respelled = copy.deepcopy(O200K_PRE_TOKENIZER)
    respelled["pretokenizers"][1].pop("trim_offsets")  # offsets only: the same split
    assert pre_tokenizer_name({"pre_tokenizer": respelled}, where) == "gpt-4o"
    assert pre_tokenizer_name({"pre_tokenizer": GPT2_PRE_TOKENIZER}, where) == "gpt-2"
    other_regex = copy.deepcopy(O200K_PRE_TOKENIZER)
    other_regex["pretokenizers"][0]["pattern"]["Regex"] = r"\s+"
    prefixed = {**GPT2_PRE_TOKENIZER, "add_prefix_space": True}
    for refused in (other_regex, prefixed, {"type": "Whitespace"}, None):
        with pytest.raises(CheckpointError, match="tokenizer.json: its pre-tokenizer is neither"):
            pre_tokenizer_name({"pre_tokenizer": refused}, where)
    fields = {"tokenizer.ggml.tokens": ["a", "b"], "tokenizer.ggml.pre": "llama-bpe"}
    with pytest.raises(CheckpointError, match="x.gguf: tokenizer.ggml.pre is 'llama-bpe'"):
        tokenizer_files(fields, tmp_path / "x.gguf")
    with pytest.raises(CheckpointError, match="x.gguf: names no tokenizer.ggml.pre"):
        tokenizer_files({"tokenizer.ggml.tokens": ["a", "b"]}, tmp_path / "x.gguf")
    assert "tokenizer.json" in tokenizer_files({"tokenizer.ggml.tokens": ["a", "b"]}, tmp_path / "x.gguf", "gpt-4o")


def test_ollama_to_mlx_tokenizes_as_the_source(checkpoint, tmp_path):
    from mxfp4.testing.ollama_forms import write_ollama_gguf

    blob = write_ollama_gguf(checkpoint, tmp_path / "sha256-blob", form=1)  # Ollama names no pre-tokenizer
    convert(blob, tmp_path / "mlx", to="mlx")
    assert hf_ids(tmp_path / "mlx", TEXT[:50_000]) == hf_ids(checkpoint, TEXT[:50_000])
