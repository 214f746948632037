"""The public surface: the modules users import by name, every error class exported, MXFP4Tensor's value
semantics (identity ==, device moves, row indexing), and one home for every choice the CLI offers."""

import importlib
import inspect
import subprocess
import sys

import numpy as np
import pytest
import torch

import mxfp4
import mxfp4.errors
from mxfp4 import choices


def test_layout_and_rules_are_modules():
    result = subprocess.run([sys.executable, "-c", "import mxfp4.layout, mxfp4.rules"], capture_output=True)
    assert result.returncode == 0, result.stderr
    for name in ("mxfp4.layout", "mxfp4.rules", "mxfp4.choices"):
        assert inspect.ismodule(importlib.import_module(name))
    assert mxfp4.layout.hf_to_gguf is importlib.import_module("mxfp4.codec.layout").hf_to_gguf
    assert set(mxfp4.rules.SCALE_RULES) == {"floor", "round_up", "even", "mse", "mlx"}


def test_every_error_class_is_exported():
    classes = [c for _, c in inspect.getmembers(mxfp4.errors, inspect.isclass) if issubclass(c, mxfp4.MXFP4Error)]
    assert len(classes) >= 10
    assert all(c.__name__ in mxfp4.__all__ and getattr(mxfp4, c.__name__) is c for c in classes)


def test_choices_import_no_torch():
    code = "import sys, mxfp4.choices, mxfp4.rules; assert 'torch' not in sys.modules, 'torch imported'"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_one_default_per_operation_in_the_library_and_the_cli():
    from mxfp4.calibrate.run import convert_calibrated, merge_lora_calibrated
    from mxfp4.cli.convert_commands import convert as convert_command
    from mxfp4.cli.finetune_commands import merge_lora as merge_command
    from mxfp4.convert import convert
    from mxfp4.finetune import merge_lora

    def default(function, name="scale_rule"):
        return inspect.signature(function).parameters[name].default

    def cli_default(command):
        return next(p for p in command.params if p.name == "scale_rule").default

    assert default(mxfp4.quantize) == choices.QUANTIZE_SCALE_RULE == "floor"
    assert default(convert) == cli_default(convert_command) == choices.CONVERT_SCALE_RULE
    assert default(merge_lora) == cli_default(merge_command) == choices.MERGE_SCALE_RULE
    assert default(convert_calibrated) == default(merge_lora_calibrated) == choices.CALIBRATE_SCALE_RULE
    # `mxfp4 convert` and `merge-lora` take --calibrate under the same --scale-rule default
    assert choices.CALIBRATE_SCALE_RULE == choices.CONVERT_SCALE_RULE == choices.MERGE_SCALE_RULE


def test_mxfp4_tensor_equality_is_identity_and_rows_index():
    x = np.random.default_rng(0).standard_normal((3, 4, 64)).astype(np.float32)
    q = mxfp4.quantize(x)
    assert q == q and q != mxfp4.quantize(x)  # == is identity: equal bytes are compared through blocks/scales
    row = q[1, 2:4]
    assert row.shape == (2, 64)
    assert np.array_equal(row.blocks, q.blocks[1, 2:4]) and np.array_equal(row.dequantize(), q.dequantize()[1, 2:4])
    with pytest.raises(mxfp4.ShapeError, match="leading axes only"):
        q[0, 0, :32]
    with pytest.raises(mxfp4.ShapeError, match="leading axes only"):
        q[..., 0]
    moved = q.to("cpu")
    assert isinstance(moved.blocks, torch.Tensor) and torch.equal(moved.dequantize(), torch.from_numpy(q.dequantize()))
    back = moved.numpy()
    assert isinstance(back.blocks, np.ndarray) and np.array_equal(back.scales, q.scales)


def test_the_readme_pack_your_own_tensor_quick_start_runs():
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("## Quick start: pack your own tensor", 1)[1]
    (code,) = re.findall(r"```python\n(.*?)```", section.split("\n## ", 1)[0], re.S)
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    assert scope["q"].blocks.shape == (2880, 90, 16) and scope["gguf_bytes"].shape == (2880, 90, 17)
    assert scope["back"].shape == (2880, 2880)
