"""The public API's annotations hold for a user's program: mypy (basic settings) checks
public_api_user.py, whose assert_type lines pin what the API returns (numpy in, numpy out; torch in,
torch out), and the program runs."""

import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent
ROOT = HERE.parents[1]
USER_SCRIPT = HERE / "public_api_user.py"


def run_mypy(path: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "mypy", "--follow-imports=silent", "--ignore-missing-imports", str(path)]
    return subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=600)


def test_mypy_accepts_the_user_program():
    pytest.importorskip("mypy")
    result = run_mypy(USER_SCRIPT)
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_sees_a_wrong_return_type(tmp_path):
    """The check can fail: claiming that a numpy-backed tensor dequantizes to a torch tensor is an error."""
    pytest.importorskip("mypy")
    text = USER_SCRIPT.read_text()
    assert "assert_type(packed.dequantize(), np.ndarray)" in text
    wrong = tmp_path / "wrong_user.py"
    wrong.write_text(
        text.replace("assert_type(packed.dequantize(), np.ndarray)", "assert_type(packed.dequantize(), torch.Tensor)")
    )
    result = run_mypy(wrong)
    assert result.returncode == 1 and "assert-type" in result.stdout, result.stdout


def test_the_user_program_runs():
    subprocess.run([sys.executable, str(USER_SCRIPT)], check=True, cwd=HERE, timeout=300)


def test_py_typed_ships_with_the_package():
    assert (ROOT / "mxfp4" / "py.typed").is_file()
    import tomllib

    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert "py.typed" in package_data["mxfp4"]
    assert "gpt_oss/templates/*.jinja" in package_data["mxfp4"]  # the harmony chat template ships too
