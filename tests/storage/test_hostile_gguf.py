"""Hostile GGUF files, built byte by byte: each gets one clean CheckpointError naming the file (and the
tensor or key), quickly and without large allocations, before the gguf package's reader sees it."""

import json
import struct
import subprocess
import sys
import time

import pytest

from mxfp4.convert import open_source
from mxfp4.errors import CheckpointError
from mxfp4.storage.gguf_check import validate_gguf

U32, STRING, ARRAY = 4, 8, 9


def s(text: str) -> bytes:
    raw = text.encode()
    return struct.pack("<Q", len(raw)) + raw


def kv(key: str, kind: int, payload: bytes) -> bytes:
    return s(key) + struct.pack("<I", kind) + payload


def tensor_info(name: str, dims, ggml_type=0, offset=0) -> bytes:
    return (
        s(name)
        + struct.pack("<I", len(dims))
        + b"".join(struct.pack("<Q", d) for d in dims)
        + struct.pack("<II", ggml_type, 0)[:4]
        + struct.pack("<Q", offset)
    )


def gguf(kvs=(), tensors=(), data=b"", version=3, n_kv=None, n_tensors=None, magic=b"GGUF") -> bytes:
    head = magic + struct.pack(
        "<IQQ", version, len(tensors) if n_tensors is None else n_tensors, len(kvs) if n_kv is None else n_kv
    )
    body = head + b"".join(kvs) + b"".join(tensors)
    return body + b"\0" * (-len(body) % 32) + data


ARCH = kv("general.architecture", STRING, s("gpt-oss"))
GOOD_TENSOR = tensor_info("token_embd.weight", [8, 4])  # F32, 128 bytes

CASES = [
    ("bad magic", gguf(magic=b"GGML"), r"not a GGUF file \(bad magic"),
    ("version 1", gguf(version=1), "GGUF version 1 is not supported"),
    ("version 99", gguf(version=99), "GGUF version 99 is not supported"),
    ("too short", b"GGUF\x03\0\0\0", "too short for a GGUF file"),
    ("absurd counts", gguf([ARCH], n_kv=2**62, n_tensors=2**62), "cannot fit in"),
    (
        "header cut off",
        b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + s("k") + struct.pack("<I", U32) + b"\x01",
        "ends inside the header",
    ),
    (
        "string of 2**60 bytes",
        gguf([s("k") + struct.pack("<I", STRING) + struct.pack("<Q", 2**60)]),
        "a string claims 1152921504606846976 bytes",
    ),
    (
        "array of 2**61 items",
        gguf([s("k") + struct.pack("<IIQ", ARRAY, STRING, 2**61)]),
        "an array claims 2305843009213693952 items",
    ),
    ("unknown value type", gguf([s("k") + struct.pack("<I", 77) + b"\0" * 8]), "unknown value type 77"),
    ("duplicate key", gguf([ARCH, ARCH]), "key 'general.architecture' appears twice"),
    (
        "bad alignment",
        gguf([ARCH, kv("general.alignment", U32, struct.pack("<I", 24))]),
        "general.alignment must be a power of two",
    ),
    ("key not UTF-8", gguf([struct.pack("<Q", 2) + b"\xff\xfe" + struct.pack("<I", U32) + b"\0\0\0\0"]), "not UTF-8"),
    ("nine dimensions", gguf([ARCH], [tensor_info("t", [1] * 9)]), "tensor 't' has 9 dimensions"),
    ("zero dimensions", gguf([ARCH], [tensor_info("t", [])]), "tensor 't' has 0 dimensions"),
    ("unknown tensor type", gguf([ARCH], [tensor_info("t", [4], ggml_type=200)]), "tensor 't' has unknown type 200"),
    (
        "dimension product overflows 64 bits",
        gguf([ARCH], [tensor_info("t", [2**40, 2**40, 2**40])]),
        r"tensor 't' \(\d+ bytes at offset 0\) runs past the end",
    ),
    (
        "block size",
        gguf([ARCH], [tensor_info("t", [30, 2], ggml_type=39)]),
        "first dimension 30 is not a multiple of MXFP4's block of 32",
    ),
    (
        "misaligned offset",
        gguf([ARCH], [tensor_info("t", [8], offset=4)], b"\0" * 64),
        "data offset 4 is not aligned to 32",
    ),
    (
        "data past the end",
        gguf([ARCH], [GOOD_TENSOR], b"\0" * 100),
        r"tensor 'token_embd.weight' \(128 bytes at offset 0\) runs past the end",
    ),
    (
        "overlapping tensors",
        gguf([ARCH], [GOOD_TENSOR, tensor_info("output.weight", [8, 4], offset=64)], b"\0" * 256),
        "overlap",
    ),
    (
        "duplicate tensor",
        gguf([ARCH], [GOOD_TENSOR, GOOD_TENSOR], b"\0" * 256),
        "tensor 'token_embd.weight' appears twice",
    ),
]


@pytest.mark.parametrize("label, content, message", CASES, ids=[c[0] for c in CASES])
def test_hostile_gguf_rejected_quickly_by_name(tmp_path, label, content, message):
    path = tmp_path / "hostile.gguf"
    path.write_bytes(content)
    start = time.perf_counter()
    with pytest.raises(CheckpointError, match=message) as error:
        open_source(path)
    assert "hostile.gguf" in str(error.value)
    assert time.perf_counter() - start < 5  # a bound against hangs, not a speed claim


# Run in a fresh process whose peak RSS is reset once its imports are done (Linux: /proc/self/clear_refs), so the
# high-water mark is what opening the files did, not what imports or earlier tests raised it to: every hostile file
# is opened there in turn, and the peak must not rise by more than the limit over them all.
RSS_CHILD = """
import json, sys
from mxfp4.convert import open_source
from mxfp4.errors import CheckpointError

def status(key):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key + ":"))

paths, extra = sys.argv[1:-1], int(sys.argv[-1])
with open("/proc/self/clear_refs", "w") as f:  # resets the peak (VmHWM) to the present RSS: imports no longer count
    f.write("5")
before = status("VmRSS")
for path in paths:
    try:
        open_source(path)
    except CheckpointError:
        pass
if extra:  # the check's own check: an allocation of this many MiB must show
    block = bytearray(extra << 20)
    block[::4096] = b"x" * len(block[::4096])
    del block
print(json.dumps({"rise_kib": status("VmHWM") - before}))
"""
RSS_LIMIT_KIB = 64 * 1024


def peak_rss_rise_kib(paths, extra_mib: int = 0) -> int:
    command = [sys.executable, "-c", RSS_CHILD, *map(str, paths), str(extra_mib)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])["rise_kib"]


def test_hostile_ggufs_allocate_nothing_large(tmp_path):
    paths = []
    for index, (_, content, _) in enumerate(CASES):
        paths.append(tmp_path / f"hostile-{index}.gguf")
        paths[-1].write_bytes(content)
    assert peak_rss_rise_kib(paths) < RSS_LIMIT_KIB


def test_the_rss_check_sees_a_large_allocation(tmp_path):
    path = tmp_path / "hostile.gguf"
    path.write_bytes(CASES[0][1])
    assert peak_rss_rise_kib([path], extra_mib=96) >= RSS_LIMIT_KIB


def test_valid_but_not_gpt_oss(tmp_path):
    path = tmp_path / "llama.gguf"
    path.write_bytes(gguf([kv("general.architecture", STRING, s("llama"))]))
    validate_gguf(path)
    with pytest.raises(CheckpointError, match="architecture is 'llama'; mxfp4 converts gpt-oss"):
        open_source(path)


def test_gpt_oss_metadata_missing_keys(tmp_path):
    path = tmp_path / "empty.gguf"
    path.write_bytes(gguf([ARCH]))
    with pytest.raises(CheckpointError, match="GGUF metadata key 'gpt-oss.block_count' is missing"):
        open_source(path)
