"""gpt-oss's config (mxfp4.gpt_oss.config), presets and tensor table (mxfp4.gpt_oss.tensors) on their own: the
released sizes, both config forms, validation by name, and one row per tensor with every format's names."""

import pytest

from mxfp4.errors import ConfigError
from mxfp4.gpt_oss.config import GptOssConfig
from mxfp4.gpt_oss.presets import preset_config
from mxfp4.gpt_oss.tensors import (
    canonical_tensors,
    dense_expert_shape,
    dense_shape,
    gguf_names,
    mxfp4_shape,
    original_name,
)
from mxfp4.testing.synthetic import hf_config


@pytest.mark.parametrize(
    "name, layers, experts, params", [("gpt-oss-20b", 24, 32, 20.9e9), ("gpt-oss-120b", 36, 128, 116.8e9)]
)
def test_presets_are_the_released_models(name, layers, experts, params):
    config = preset_config(name)
    assert (config.num_hidden_layers, config.num_local_experts, config.hidden_size) == (layers, experts, 2880)
    assert config.layer_types[:2] == ("sliding_attention", "full_attention")  # sliding first, alternating
    total = 0
    for tensor in canonical_tensors(config):
        shape = mxfp4_shape(config, tensor.short) if tensor.expert else None
        count = 1
        for d in shape or _dense(config, tensor):
            count *= d
        total += count
    assert abs(total - params) / params < 0.005  # the published parameter counts, to their 3 digits


def _dense(config, tensor):
    return dense_shape(config, tensor.short)


def test_hf_and_original_forms_describe_the_same_model():
    config = preset_config("gpt-oss-20b", num_hidden_layers=2)
    again = GptOssConfig.from_original_dict(config.original_dict(), "original/config.json")
    for key in ("num_hidden_layers", "num_local_experts", "hidden_size", "head_dim", "sliding_window", "rope_theta"):
        assert getattr(again, key) == getattr(config, key)
    assert GptOssConfig.from_hf_dict(config.hf_dict(mxfp4=True)).hf_dict(mxfp4=True) == config.hf_dict(mxfp4=True)
    assert "quantization_config" not in config.hf_dict(mxfp4=False)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"num_local_experts": 0}, "num_local_experts"),
        ({"hidden_size": 100}, "hidden_size"),
        ({"num_experts_per_tok": 64}, "num_experts_per_tok"),
    ],
)
def test_impossible_configs_are_named(change, message):
    raw = hf_config(num_hidden_layers=2, **change)
    with pytest.raises(ConfigError, match=message):
        GptOssConfig.from_hf_dict(raw, "my/config.json")


def test_one_row_per_tensor_names_it_in_every_format():
    config = GptOssConfig.from_hf_dict(hf_config(num_hidden_layers=2, intermediate_size=64))
    tensors = canonical_tensors(config)
    names = [t.name for t in tensors]
    # embeddings, norm, lm_head; per layer: 2 norms, q/k/v/o weights and biases, sinks, router weight and bias, and
    # the experts' gate_up and down with their biases
    assert len(names) == len(set(names)) == 3 + 2 * 17
    by_name = {t.name: t for t in tensors}
    gate_up = by_name["model.layers.1.mlp.experts.gate_up_proj"]
    assert gguf_names(gate_up) == ("blk.1.ffn_gate_exps.weight", "blk.1.ffn_up_exps.weight")  # split for llama.cpp
    assert original_name(gate_up) == "block.1.mlp.mlp1_weight"
    assert mxfp4_shape(config, gate_up.short) == (4, 128, 64)  # [E, out, in]: gate and up interleaved on rows
    assert dense_expert_shape(config, gate_up.short) == (4, 64, 128)  # transformers' [E, in, out]
    assert gguf_names(by_name["model.embed_tokens.weight"]) == ("token_embd.weight",)
