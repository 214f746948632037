"""The ``mxfp4`` command: parse, call one library function, print. Errors become one clean line."""

from __future__ import annotations

import functools
import math
import os
import signal
import sys

import click

from .. import __version__
from ..errors import MXFP4Error
from ..codec.rules import ROUNDINGS, SCALE_RULES


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread so every cleanup (temporary outputs, locks) runs as for Ctrl-C."""


# A signal that lands while a module is being imported is held back until the import is over: raising
# inside an import that C++ started (torch's extension imports Python modules while it initialises)
# makes the C++ side abort the process (SIGABRT) instead of unwinding, and the cleanup never runs.
_RECHECK_SECONDS = 0.02
_held: list[type[BaseException]] = []


def _inside_import(frame) -> bool:
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            return True
        frame = frame.f_back
    return False


def _raise_when_safe(exception: type[BaseException], frame) -> None:
    if _inside_import(frame):
        if not _held:
            _held.append(exception)
        signal.setitimer(signal.ITIMER_REAL, _RECHECK_SECONDS)  # look again soon (SIGALRM below)
        return
    _held.clear()
    raise exception()


def _install_signal_handlers() -> None:
    signal.signal(signal.SIGINT, lambda signum, frame: _raise_when_safe(KeyboardInterrupt, frame))
    signal.signal(signal.SIGTERM, lambda signum, frame: _raise_when_safe(Terminated, frame))
    signal.signal(signal.SIGALRM, lambda signum, frame: _raise_when_safe(_held[0], frame) if _held else None)
    if hasattr(signal, "SIGXFSZ"):  # a file-size limit then fails the write (EFBIG) instead of killing us
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


def _ignore_late_signals() -> None:
    """The work is done and reported: a signal from now on (or one still held back) must not turn
    success into a failure."""
    signal.setitimer(signal.ITIMER_REAL, 0)
    _held.clear()
    for number in (signal.SIGINT, signal.SIGTERM, signal.SIGALRM):
        signal.signal(number, signal.SIG_IGN)


def _leave(what: str, code: int) -> None:
    """Exit at once with code after an interrupt, saying truthfully what was written. The atomic outputs
    have already removed their temporary files by now; skipping interpreter teardown keeps a
    half-finished import (say, of torch, when the signal came early) from turning the exit into a death
    by signal."""
    from ..storage.atomic import COMMITTED

    done = ", ".join(str(p) for p in COMMITTED)
    click.echo(f"{what} after {done} was completely written" if done else f"{what}: no output was written", err=True)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def clean_errors(command):
    """Library errors and OS errors -> one 'error: ...' line on stderr, exit 1; Ctrl-C -> 130; SIGTERM
    -> 143. No traceback, and (by the library's atomic outputs) nothing partial left behind."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        _install_signal_handlers()
        try:
            return command(*args, **kwargs)
        except MXFP4Error as error:
            _ignore_late_signals()  # before reporting, so nothing interrupts the report
            click.echo(f"error: {error}", err=True)
            sys.exit(1)
        except OSError as error:
            _ignore_late_signals()
            where = f" ({error.filename})" if error.filename else ""
            click.echo(f"error: {error.strerror or error}{where}; the output was not written", err=True)
            sys.exit(1)
        except Terminated:
            _leave("terminated", 143)
        except KeyboardInterrupt:
            _leave("interrupted", 130)
        finally:  # success, or an error that is what happened: a signal held back now would only hide it
            _ignore_late_signals()

    return wrapper


@click.group()
@click.version_option(__version__, prog_name="mxfp4")
def main() -> None:
    """Exact, fast MXFP4 for gpt-oss-style checkpoints."""


def _fmt_db(value: float) -> str:
    return "exact" if math.isinf(value) and value > 0 else f"{value:.2f}"


@main.command()
@click.argument("src", type=click.Path(exists=True, dir_okay=False))
@click.argument("dst", type=click.Path(dir_okay=False))
@click.option("--scale-rule", type=click.Choice(SCALE_RULES), default="floor", show_default=True, help="How each block's scale is chosen (see mxfp4.rules).")
@click.option("--rounding", type=click.Choice(ROUNDINGS), default="rne", show_default=True, help="Element rounding: rne (OCP) or ggml (llama.cpp).")
@click.option("--include", metavar="REGEX", help="Only quantize tensors whose name matches.")
@click.option("--exclude", metavar="REGEX", default=r"bias$", show_default=True, help="Never quantize tensors whose name matches ('' for none).")
@click.option("--force", is_flag=True, help="Overwrite DST if it exists.")
@click.option("--quiet", is_flag=True, help="No progress bar and no table.")
@clean_errors
def quantize(src, dst, scale_rule, rounding, include, exclude, force, quiet) -> None:
    """Pack the float tensors of safetensors file SRC into MXFP4 NAME_blocks/NAME_scales pairs in DST."""
    from ..convert.safetensors_files import quantize_file
    from ..codec.measure import format_table, human_bytes

    result = quantize_file(src, dst, scale_rule=scale_rule, rounding=rounding, include=include, exclude=exclude or None, force=force, progress=not quiet)
    if quiet:
        return
    rows = [[r.name, "x".join(map(str, r.shape)), _fmt_db(r.sqnr_db), f"{r.max_abs_error:.3g}", f"{100 * r.clipped_share:.3f}%"] for r in result.reports]
    click.echo(format_table(["tensor", "shape", "SQNR dB", "max |err|", "clipped"], rows))
    click.echo(
        f"\nwrote {result.output}: {len(result.reports)} tensors packed ({scale_rule}, {rounding}), "
        f"{len(result.copied)} copied; {human_bytes(result.bytes_in)} -> {human_bytes(result.bytes_out)}"
    )


@main.command()
@click.argument("src", type=click.Path(exists=True, dir_okay=False))
@click.argument("dst", type=click.Path(dir_okay=False))
@click.option("--dtype", type=click.Choice(["bfloat16", "float16", "float32"]), default="bfloat16", show_default=True)
@click.option("--force", is_flag=True, help="Overwrite DST if it exists.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@clean_errors
def dequantize(src, dst, dtype, force, quiet) -> None:
    """Decode every NAME_blocks/NAME_scales pair of SRC into a dense NAME tensor in DST."""
    from ..convert.safetensors_files import dequantize_file

    out = dequantize_file(src, dst, dtype=dtype, force=force, progress=not quiet)
    if not quiet:
        click.echo(f"wrote {out}")


@main.command()
@click.argument("path")
@clean_errors
def inspect(path) -> None:
    """Describe PATH: a checkpoint (HF directory, original/, .gguf, hub id) or one safetensors file."""
    from pathlib import Path

    from ..codec.measure import format_table, human_bytes

    if Path(path).is_file() and path.endswith(".safetensors"):
        from ..convert.safetensors_files import inspect_file

        rows = inspect_file(path)
        table = [[r.name, r.kind, "x".join(map(str, r.shape)), human_bytes(r.nbytes), f"{r.bits_per_param:.2f}"] for r in rows]
        click.echo(format_table(["tensor", "format", "shape", "bytes", "bits/param"], table))
        total_bytes, total_params = sum(r.nbytes for r in rows), sum(r.numel for r in rows)
        mx = [r for r in rows if r.kind == "MXFP4"]
        click.echo(
            f"\n{len(rows)} tensors, {total_params:,} parameters, {human_bytes(total_bytes)} "
            f"({8 * total_bytes / max(total_params, 1):.2f} bits/param); {len(mx)} MXFP4 tensors hold "
            f"{sum(r.numel for r in mx):,} parameters"
        )
        return
    from ..convert.summary import summarize

    source, rows = summarize(path)
    c = source.config
    click.echo(
        f"{source.path} ({source.kind}): gpt-oss, {c.num_hidden_layers} layers, {c.num_local_experts} experts "
        f"(top {c.num_experts_per_tok}), hidden {c.hidden_size}, expert width {c.intermediate_size}, "
        f"{c.num_attention_heads}/{c.num_key_value_heads} heads of {c.head_dim}, vocab {c.vocab_size}, "
        f"sliding window {c.sliding_window}\n"
    )
    table = [[r.tensor, r.form, str(r.count), "x".join(map(str, r.shape)), f"{r.params:,}", human_bytes(r.nbytes), f"{8 * r.nbytes / r.params:.2f}"] for r in rows]
    click.echo(format_table(["tensor", "format", "count", "shape", "parameters", "bytes", "bits/param"], table))
    params, nbytes = sum(r.params for r in rows), sum(r.nbytes for r in rows)
    click.echo(f"\n{params:,} parameters, {human_bytes(nbytes)} of weights ({8 * nbytes / params:.2f} bits/param)")


@main.command()
@click.argument("src")
@click.argument("dst", type=click.Path())
@click.option("--to", "target", type=click.Choice(["mxfp4", "bf16", "original", "gguf"]), required=True, help="Output format.")
@click.option("--scale-rule", type=click.Choice(SCALE_RULES), default="round_up", show_default=True, help="Only when dense experts become MXFP4.")
@click.option("--rounding", type=click.Choice(ROUNDINGS), default="rne", show_default=True)
@click.option("--dtype", type=click.Choice(["bfloat16", "float16", "float32"]), default="bfloat16", show_default=True, help="Dense experts' dtype (--to bf16).")
@click.option("--max-shard-size", metavar="SIZE", help="Split safetensors output into shards, e.g. 5GB.")
@click.option("--force", is_flag=True, help="Replace DST if it exists (only once the new output is complete).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@clean_errors
def convert(src, dst, target, scale_rule, rounding, dtype, max_shard_size, force, quiet) -> None:
    """Convert gpt-oss checkpoint SRC (HF directory, original/, .gguf or hub id) to DST."""
    import time

    from ..convert import convert as run
    from ..codec.measure import human_bytes

    start = time.perf_counter()
    result = run(src, dst, to=target, scale_rule=scale_rule, rounding=rounding, dtype=dtype, max_shard_size=max_shard_size, force=force, progress=not quiet)
    if not quiet:
        click.echo(
            f"wrote {result.output} ({result.source_kind} -> {result.target}): {human_bytes(result.bytes_in)} read, "
            f"{human_bytes(result.bytes_out)} written, {len(result.files)} file(s), {time.perf_counter() - start:.1f} s"
        )


@main.command()
@click.argument("a")
@click.argument("b")
@click.option("--all", "show_all", is_flag=True, help="List every tensor, not only mismatches.")
@clean_errors
def verify(a, b, show_all) -> None:
    """Compare checkpoints A and B tensor by tensor (any formats); exit 1 on any mismatch."""
    from ..convert.verify import verify as run
    from ..codec.measure import format_table

    result = run(a, b)
    shown = [t for t in result.tensors if show_all or t.verdict == "mismatch"]
    if shown:
        click.echo(format_table(["tensor", "A", "B", "verdict", "max |diff|"], [[t.name, t.form_a, t.form_b, t.verdict, f"{t.max_abs_diff:.3g}"] for t in shown]))
    counts = {v: sum(t.verdict == v for t in result.tensors) for v in ("exact", "equal values", "mismatch")}
    click.echo(f"{result.kind_a} vs {result.kind_b}: {counts['exact']} exact, {counts['equal values']} equal values, {counts['mismatch']} mismatched")
    if not result.ok:
        sys.exit(1)



@main.command()
@click.argument("model")
@click.option("--target", help="One target (default: a table of all). Names: see `mxfp4 fit --list`.")
@click.option("--context", type=int, default=4096, show_default=True, help="Tokens of context per sequence.")
@click.option("--batch", type=int, default=1, show_default=True, help="Sequences at once.")
@click.option("--weights", type=click.Choice(["mxfp4", "bf16"]), help="Size the model in this form instead of as stored.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--list", "list_targets", is_flag=True, help="List the targets and exit.")
@clean_errors
def fit(model, target, context, batch, weights, as_json, list_targets) -> None:
    """Does MODEL fit? MODEL: a checkpoint (any format, headers only), a config.json, a hub id, or the
    preset gpt-oss-20b / gpt-oss-120b."""
    import json

    from ..eval import TARGETS
    from ..eval import memory_fit as run
    from ..codec.measure import format_table, human_bytes

    if list_targets:
        click.echo(format_table(["target", "device", "memory"], [[t.name, t.description, human_bytes(t.memory_bytes)] for t in TARGETS.values()]))
        return
    names = [target] if target else list(TARGETS)
    reports = [run(model, name, context=context, batch=batch, weights=weights) for name in names]
    if as_json:
        click.echo(json.dumps(reports[0].to_json() if target else [r.to_json() for r in reports], indent=2))
        return
    r0 = reports[0]
    click.echo(f"{r0.model}: weights {human_bytes(r0.weights_bytes)}, KV cache {human_bytes(r0.kv_bytes)} "
               f"(context {context}, batch {batch}), activations ~{human_bytes(r0.activation_bytes)}\n")
    rows = [[r.target, "yes" if r.fits else "no", human_bytes(r.total_bytes), human_bytes(r.budget_bytes),
             ("" if r.headroom_bytes >= 0 else "-") + human_bytes(abs(r.headroom_bytes)), f"{r.max_context:,}" if r.max_context else "-",
             str(r.max_batch) if r.max_batch else "-"] for r in reports]
    click.echo(format_table(["target", "fits", "needs", "usable", "headroom", "max context", "max batch"], rows))



@main.group(name="eval")
def eval_group() -> None:
    """Perplexity, parity between checkpoints (KL, top-1, delta perplexity) and quality gates."""


def _tokens(checkpoint, tokens, text):
    from ..convert import open_source
    from ..eval.tokens import read_token_file, tokenize_text
    from ..storage.safetensors_io import CheckpointError

    if (tokens is None) == (text is None):
        raise CheckpointError("give exactly one of --tokens FILE (.npy or whitespace-separated ids) and --text FILE")
    return read_token_file(tokens) if tokens else tokenize_text(text, open_source(checkpoint).tokenizer_dir())


_token_options = [
    click.option("--tokens", type=click.Path(exists=True, dir_okay=False), help="Token ids: .npy or whitespace-separated integers."),
    click.option("--text", type=click.Path(exists=True, dir_okay=False), help="Text, tokenized with the checkpoint's tokenizer.json."),
    click.option("--context", type=int, default=256, show_default=True, help="Window length (tokens)."),
    click.option("--stride", type=int, help="Window step (default: the context; smaller gives more history)."),
    click.option("--json", "as_json", is_flag=True, help="Machine-readable output."),
]


def _with_token_options(command):
    for option in reversed(_token_options):
        command = option(command)
    return command


def _with_model_options(command):
    """--device and --backend: where the models run (a GPU makes a real model's evaluation practical)."""
    command = click.option("--backend", type=click.Choice(["torch", "triton"]), default="torch", show_default=True,
                           help="Model compute path (triton: a GPU, or the CPU under TRITON_INTERPRET=1).")(command)
    return click.option("--device", default="cpu", show_default=True, help="torch device for the models, e.g. cuda.")(command)


@eval_group.command(name="ppl")
@click.argument("checkpoint")
@_with_token_options
@_with_model_options
@clean_errors
def eval_ppl(checkpoint, tokens, text, context, stride, as_json, device, backend) -> None:
    """Perplexity of CHECKPOINT on the given tokens (sliding windows; see mxfp4.eval.parity)."""
    import json

    from ..eval.parity import perplexity
    from ..eval.tokens import check_ids
    from ..model import load

    ids = _tokens(checkpoint, tokens, text)
    model = load(checkpoint, device=device, backend=backend)
    check_ids(ids, model.config.vocab_size, checkpoint)
    value = perplexity(model, ids, context=context, stride=stride)
    click.echo(json.dumps({"perplexity": value, "tokens": int(ids.size)}) if as_json else f"perplexity {value:.4f} over {ids.size - 1} scored tokens")


@eval_group.command(name="compare")
@click.argument("reference")
@click.argument("candidate")
@_with_token_options
@_with_model_options
@clean_errors
def eval_compare(reference, candidate, tokens, text, context, stride, as_json, device, backend) -> None:
    """CANDIDATE against REFERENCE on the same tokens: perplexities, delta, KL (mean, p99), top-1 agreement."""
    import json

    from ..eval.parity import compare
    from ..eval.tokens import check_ids
    from ..model import load
    from ..codec.measure import format_table

    ids = _tokens(reference, tokens, text)
    a, b = load(reference, device=device, backend=backend), load(candidate, device=device, backend=backend)
    check_ids(ids, a.config.vocab_size, reference)
    result = compare(a, b, ids, context=context, stride=stride)
    if as_json:
        click.echo(json.dumps(result.to_json(), indent=2))
        return
    rows = [["perplexity (reference)", f"{result.ppl_a:.4f}"], ["perplexity (candidate)", f"{result.ppl_b:.4f}"],
            ["delta perplexity", f"{result.delta_ppl:+.4f}"], ["KL mean", f"{result.kl_mean:.6f}"], ["KL 99th percentile", f"{result.kl_p99:.6f}"],
            ["top-1 agreement", f"{100 * result.top1_agreement:.2f}%"], ["tokens scored", str(result.tokens)]]
    click.echo(format_table(["measure", "value"], rows))


@eval_group.command(name="gate")
@click.argument("checkpoint")
@click.option("--baseline", required=True, type=click.Path(exists=True, dir_okay=False), help="quality.json with tokens and thresholds.")
@_with_model_options
@clean_errors
def eval_gate(checkpoint, baseline, device, backend) -> None:
    """Exit 1 when CHECKPOINT regresses past the thresholds in --baseline (for CI)."""
    from ..eval.gate import gate
    from ..codec.measure import format_table

    _, checks = gate(checkpoint, baseline, device=device, backend=backend)
    rows = [[c.measure, f"{c.value:.6g}", f"{'<=' if c.direction == 'max' else '>='} {c.limit:.6g}", "pass" if c.passed else "FAIL"] for c in checks]
    click.echo(format_table(["measure", "value", "threshold", "result"], rows))
    failed = [c for c in checks if not c.passed]
    click.echo(f"\n{len(checks) - len(failed)} of {len(checks)} checks passed")
    if failed:
        sys.exit(1)


@eval_group.command(name="baseline")
@click.argument("checkpoint")
@click.option("--tokens", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--reference", help="A checkpoint to compare against (adds KL, top-1 and delta thresholds).")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Where to write quality.json.")
@click.option("--context", type=int, default=256, show_default=True)
@click.option("--margin", type=float, default=0.1, show_default=True, help="Relative slack allowed on each measure.")
@click.option("--force", is_flag=True, help="Replace OUT if it exists.")
@_with_model_options
@clean_errors
def eval_baseline(checkpoint, tokens, reference, out, context, margin, force, device, backend) -> None:
    """Measure CHECKPOINT once and write a baseline (quality.json) for `mxfp4 eval gate`."""
    from ..eval.gate import make_baseline

    data = make_baseline(checkpoint, tokens, out, reference=reference, context=context, margin=margin, force=force, device=device, backend=backend)
    click.echo(f"wrote {out}: " + ", ".join(f"{k} {v:.6g}" for k, v in data["thresholds"].items()))



@eval_group.command(name="rules")
@click.argument("dense")
@click.option("--tokens", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--context", type=int, default=256, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@_with_model_options
@clean_errors
def eval_rules(dense, tokens, context, as_json, device, backend) -> None:
    """Compare the scale rules on DENSE (bf16 experts): weight SQNR, delta perplexity, KL, top-1."""
    import json

    from ..eval.rule_comparison import compare_rules
    from ..eval.tokens import read_token_file
    from ..codec.measure import format_table

    base, results = compare_rules(dense, read_token_file(tokens), context=context, device=device, backend=backend)
    if as_json:
        click.echo(json.dumps({"dense_perplexity": base, "rules": [r.to_json() for r in results]}, indent=2))
        return
    click.echo(f"dense model perplexity {base:.4f}\n")
    rows = [[r.scale_rule, f"{r.weight_sqnr_db:.3f}", f"{r.parity.ppl_b:.4f}", f"{r.parity.delta_ppl:+.4f}", f"{r.parity.kl_mean:.5f}",
             f"{r.parity.kl_p99:.5f}", f"{100 * r.parity.top1_agreement:.2f}%"] for r in results]
    click.echo(format_table(["scale rule", "weight SQNR dB", "perplexity", "delta ppl", "KL mean", "KL p99", "top-1"], rows))


@eval_group.command(name="report")
@click.argument("dense")
@click.argument("quantized")
@click.option("--plot", type=click.Path(dir_okay=False), help="Write a PNG of SQNR and clipped share per layer.")
@click.option("--json", "as_json", is_flag=True)
@clean_errors
def eval_report(dense, quantized, plot, as_json) -> None:
    """Per-tensor error of QUANTIZED (MXFP4 experts) against DENSE: SQNR, max |error|, clipped share."""
    import json

    from ..eval.errors_report import aggregate_sqnr, expert_errors
    from ..eval.errors_report import plot as draw
    from ..codec.measure import format_table

    rows = expert_errors(dense, quantized)
    if plot:
        draw(rows, plot)
    if as_json:
        click.echo(json.dumps({"weight_sqnr_db": aggregate_sqnr(rows), "tensors": [r.to_json() for r in rows]}, indent=2))
        return
    click.echo(format_table(["tensor", "SQNR dB", "max |err|", "clipped"], [[r.name, f"{r.sqnr_db:.2f}", f"{r.max_abs_error:.3g}", f"{100 * r.clipped_share:.3f}%"] for r in rows]))
    click.echo(f"\nall experts: SQNR {aggregate_sqnr(rows):.3f} dB" + (f"; plot written to {plot}" if plot else ""))


if __name__ == "__main__":
    main()
