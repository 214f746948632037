"""mxfp4 fit: the published facts, exact weight bytes from headers, KV by layer type, --json."""

import json
import shutil

from click.testing import CliRunner

from mxfp4.cli import main
from mxfp4.convert import convert
from mxfp4.eval import fit
from mxfp4.fit.plan import kv_bytes, load_model_facts
from mxfp4.testing.checkpoints import make_checkpoint

GiB = 2**30


def test_published_facts():
    # gpt-oss-20b ~ 12.8 GiB of weights fits 16 GB; 120b ~ 60.8 GiB fits one 80 GB GPU; bf16 forms do not.
    small, large = fit("gpt-oss-20b", "rtx-4080-16gb"), fit("gpt-oss-120b", "h100-80gb")
    assert round(small.weights_bytes / GiB, 2) == 12.82 and small.fits
    assert round(large.weights_bytes / GiB, 2) == 60.77 and large.fits
    assert not fit("gpt-oss-20b", "rtx-4080-16gb", weights="bf16").fits
    assert not fit("gpt-oss-120b", "h100-80gb", weights="bf16").fits
    assert not fit("gpt-oss-120b", "rtx-4090-24gb").fits


def test_kv_cache_caps_sliding_layers_at_the_window():
    _, config, _ = load_model_facts("gpt-oss-20b")
    per_token_layer = 2 * 8 * 64 * 2  # 2,048 bytes
    assert kv_bytes(config, 100, 1) == per_token_layer * 100 * 24
    assert kv_bytes(config, 4096, 1) == per_token_layer * (12 * 4096 + 12 * 128)
    assert kv_bytes(config, 4096, 3) == 3 * kv_bytes(config, 4096, 1)


def test_max_context_and_batch_are_the_edges_of_fitting():
    r = fit("gpt-oss-20b", "rtx-4080-16gb", context=4096)
    assert fit("gpt-oss-20b", "rtx-4080-16gb", context=r.max_context).fits
    assert not fit("gpt-oss-20b", "rtx-4080-16gb", context=r.max_context + 1).fits
    assert fit("gpt-oss-20b", "rtx-4080-16gb", batch=r.max_batch).fits
    assert not fit("gpt-oss-20b", "rtx-4080-16gb", batch=r.max_batch + 1).fits


def test_weight_bytes_read_exactly_from_any_format(tmp_path):
    import struct

    hf = make_checkpoint(tmp_path)
    shard = hf / "model.safetensors"
    header = 8 + struct.unpack("<Q", shard.read_bytes()[:8])[0]
    mx = fit(str(hf), "h100-80gb").weights_bytes
    assert mx == shard.stat().st_size - header  # exactly the tensor bytes, read from the header
    convert(hf, tmp_path / "bf16", to="bf16")
    convert(hf, tmp_path / "m.gguf", to="gguf")
    expert_weights = 4 * 4 * (128 * 64 + 64 * 64)  # layers x experts x (gate_up + down)
    assert fit(str(tmp_path / "bf16"), "h100-80gb").weights_bytes == mx + expert_weights * 2 - expert_weights * 17 // 32
    assert fit(str(tmp_path / "bf16"), "h100-80gb", weights="mxfp4").weights_bytes == mx
    assert fit(str(hf / "config.json"), "h100-80gb").weights_bytes == mx


def test_a_directory_holding_only_config_json_is_planned_from_it(tmp_path):
    # What `huggingface-cli download org/model config.json` leaves: no weights to read, so size from the config.
    hf = make_checkpoint(tmp_path)
    only_config = tmp_path / "only-config"
    only_config.mkdir()
    shutil.copy(hf / "config.json", only_config / "config.json")
    planned = fit(str(only_config), "h100-80gb")
    assert planned.weights_bytes == fit(str(hf / "config.json"), "h100-80gb").weights_bytes > 0
    assert planned.model == str(only_config / "config.json")


def test_cli_json_keys_and_table():
    result = CliRunner().invoke(main, ["fit", "gpt-oss-120b", "--target", "h100-80gb", "--json"])
    data = json.loads(result.stdout)
    assert {"weights_bytes", "kv_bytes", "total_bytes", "fits", "max_context"} <= set(data) and data["fits"] is True
    table = CliRunner().invoke(main, ["fit", "gpt-oss-20b", "--context", "8192"])
    assert table.exit_code == 0
    line = next(l for l in table.output.splitlines() if l.startswith("rtx-4080-16gb"))
    assert " yes " in line


def test_unknown_target_is_a_clean_error():
    result = CliRunner().invoke(main, ["fit", "gpt-oss-20b", "--target", "tpu-v9"])
    assert result.exit_code == 1 and "unknown target 'tpu-v9'" in result.output
