"""The GGUF metadata table (mxfp4.convert.formats.gguf.keys) and our header against the gguf package's own writer:
the same keys, values and types as GGUFWriter's add_* calls and SpecialVocab give, the same header bytes, and a
config that survives the table both ways."""

from pathlib import Path

import gguf
import numpy as np
import pytest
from gguf import GGUFValueType, Keys

from mxfp4.convert.formats.gguf.config import ARCH, DEFAULTS
from mxfp4.convert.formats.gguf.keys import CONFIG_KEYS, Metadata, add_config, read_config
from mxfp4.convert.formats.gguf.vocab import add_tokenizer
from mxfp4.errors import CheckpointError
from mxfp4.gpt_oss.config import GptOssConfig
from mxfp4.gpt_oss.presets import preset_config
from mxfp4.storage.gguf_header import pack_header

TINY = Path(__file__).resolve().parents[2] / "examples" / "tiny-gpt-oss"


def every_key_value(writer: gguf.GGUFWriter) -> dict:
    """What a GGUFWriter collected, as (value, type, item type) per key (for comparison only)."""
    return {k: (v.value, v.type, v.sub_type) for k, v in writer.kv_data[0].items()}


def test_the_table_uses_the_gguf_packages_keys():
    known = {
        value
        for group in (Keys.General, Keys.LLM, Keys.Attention, Keys.Rope)
        for name, value in vars(group).items()
        if isinstance(value, str) and not name.startswith("_")
    }
    assert all(row.key in known for row in CONFIG_KEYS)
    assert len({row.key for row in CONFIG_KEYS}) == len(CONFIG_KEYS)


def test_config_keys_are_what_gguf_writers_add_calls_write():
    config = preset_config("gpt-oss-20b")
    ours = Metadata()
    add_config(ours, config, ARCH)
    writer = gguf.GGUFWriter("unused.gguf", ARCH)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_rope_scaling_type(gguf.RopeScalingType.YARN)
    writer.add_rope_scaling_factor(32.0)
    writer.add_rope_scaling_orig_ctx_len(4096)
    writer.add_rope_scaling_yarn_beta_fast(32.0)
    writer.add_rope_scaling_yarn_beta_slow(1.0)
    writer.add_rope_freq_base(config.rope_theta)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_expert_count(config.num_local_experts)
    writer.add_expert_used_count(config.num_experts_per_tok)
    writer.add_key_length(config.head_dim)
    writer.add_value_length(config.head_dim)
    writer.add_file_type(38)
    writer.add_sliding_window(config.sliding_window)
    writer.add_expert_feed_forward_length(config.intermediate_size)
    writer.add_quantization_version(2)
    theirs = every_key_value(writer)
    theirs.pop(Keys.General.ARCHITECTURE)  # GGUFWriter adds it itself; our writer adds it before the table
    assert list(ours.values) == list(theirs) and ours.values == theirs


def test_a_config_survives_the_table_both_ways():
    config = preset_config("gpt-oss-120b")
    metadata = Metadata()
    add_config(metadata, config, ARCH)
    stored = {key: value for key, (value, _, _) in metadata.values.items()}
    float32 = {k: float(np.float32(v)) if isinstance(v, float) else v for k, v in stored.items()}  # as a file holds
    again, filled = read_config(float32.get, ARCH, config.vocab_size, DEFAULTS, pytest.fail)
    assert filled == [] and GptOssConfig.from_hf_dict(again).hf_dict(mxfp4=True) == config.hf_dict(mxfp4=True)
    with pytest.raises(CheckpointError, match="'gpt-oss.block_count' is missing"):

        def missing(key):
            raise CheckpointError(f"x.gguf: GGUF metadata key {key!r} is missing")

        read_config({k: v for k, v in float32.items() if "block_count" not in k}.get, ARCH, 10, DEFAULTS, missing)


def test_tokenizer_keys_are_what_special_vocab_and_gguf_writer_give():
    ours = Metadata()
    add_tokenizer(ours, TINY, 201088)
    writer = gguf.GGUFWriter("unused.gguf", ARCH)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")  # the tiny model's learned tokenizer splits as GPT-2 does
    tokens = ours.values[Keys.Tokenizer.LIST][0]
    writer.add_token_list(tokens)
    writer.add_token_types(ours.values[Keys.Tokenizer.TOKEN_TYPE][0])
    gguf.SpecialVocab(TINY, load_merges=True, n_vocab=len(tokens)).add_to_gguf(writer)
    theirs = every_key_value(writer)
    theirs.pop(Keys.General.ARCHITECTURE)
    assert list(ours.values) == list(theirs)
    for key, (value, value_type, _) in theirs.items():
        our_value, our_type, our_item_type = ours.values[key]
        assert our_type == value_type, key
        if value_type == GGUFValueType.ARRAY:  # GGUFWriter types an array's items from its first when it packs
            assert our_item_type == GGUFValueType.get_type(value[0]) and list(our_value) == list(value), key
        else:
            assert our_value == value, key


def test_our_header_bytes_are_gguf_writers(tmp_path):
    metadata = Metadata()
    metadata.add(Keys.General.ARCHITECTURE, ARCH, GGUFValueType.STRING)
    add_config(metadata, preset_config("gpt-oss-20b"), ARCH)
    add_tokenizer(metadata, TINY, 201088)
    tensors = [
        ("token_embd.weight", (4, 64), gguf.GGMLQuantizationType.BF16, 4 * 64 * 2),
        ("blk.0.ffn_down_exps.weight", (2, 8, 64), gguf.GGMLQuantizationType.MXFP4, 2 * 8 * 2 * 17),
    ]
    ours = pack_header(metadata.values, tensors, gguf.GGUF_DEFAULT_ALIGNMENT)
    path = tmp_path / "theirs.gguf"
    writer = gguf.GGUFWriter(path, ARCH)
    for key, (value, value_type, item_type) in metadata.values.items():
        if key != Keys.General.ARCHITECTURE:
            writer.add_key_value(key, value, value_type, sub_type=item_type)
    for name, shape, qtype, nbytes in tensors:
        byte_shape = shape[:-1] + (nbytes // int(np.prod(shape[:-1])),)
        writer.add_tensor_info(name, byte_shape, np.dtype(np.uint8), nbytes, raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    writer.close()
    theirs = path.read_bytes()  # up to the tensor infos: GGUFWriter pads to the alignment with the data
    assert ours[: len(theirs)] == theirs
    assert ours[len(theirs) :] == bytes(len(ours) - len(theirs)) and len(ours) % gguf.GGUF_DEFAULT_ALIGNMENT == 0
