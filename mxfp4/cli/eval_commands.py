"""`mxfp4 eval ...`: perplexity, parity between checkpoints, quality gates, scale rules, error reports."""

from __future__ import annotations

import sys

import click

from ..choices import MODEL_BACKENDS
from .group import main
from .options import expert_layout_option, reading_options
from .ranks import TORCHRUN_EVAL_COMMANDS, refuse_outside, torchrun_job
from .signals import clean_errors
from .tables import format_table


@main.group(name="eval")
@click.pass_context
def eval_group(context: click.Context) -> None:
    """Perplexity, parity between checkpoints (KL, top-1, delta perplexity) and quality gates."""
    refuse_outside(context.invoked_subcommand, TORCHRUN_EVAL_COMMANDS)


# Exit codes of every eval command (and verify): 0 pass, 1 a failed check (a regression), 2 a usage or input error.
clean_eval_errors = clean_errors(input_error_exit=2)


def _tokens(checkpoint, tokens, text):
    from ..eval.gate import evaluation_tokens

    if (tokens is None) == (text is None):
        raise click.UsageError("give exactly one of --tokens FILE (.npy or whitespace-separated ids) and --text FILE")
    return evaluation_tokens(checkpoint, tokens, text)


_input_options = [
    click.option(
        "--tokens",
        type=click.Path(exists=True, dir_okay=False),
        help="Token ids: .npy or whitespace-separated integers.",
    ),
    click.option(
        "--text",
        type=click.Path(exists=True, dir_okay=False),
        help="Text, tokenized with the checkpoint's tokenizer.json.",
    ),
    click.option("--context", type=int, default=256, show_default=True, help="Window length (tokens)."),
    click.option("--stride", type=int, help="Window step (default: the context; smaller gives more history)."),
]
_json_option = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")


def _with_input_options(command):
    """--tokens / --text, --context, --stride: what a model is evaluated on."""
    for option in reversed(_input_options):
        command = option(command)
    return command


def _with_token_options(command):
    return _with_input_options(_json_option(command))


def _with_model_options(command):
    """--device and --backend: where the models run (a GPU makes a real model's evaluation practical)."""
    command = click.option(
        "--backend",
        type=click.Choice(MODEL_BACKENDS),
        default="torch",
        show_default=True,
        help="Model compute path: torch (the reference), native (CPU C products), native-int8 (native with "
        "int8 activations in the MoE: approximate), auto, or triton (a GPU, or the CPU under "
        "TRITON_INTERPRET=1).",
    )(command)
    return click.option("--device", default="cpu", show_default=True, help="torch device for the models, e.g. cuda.")(
        command
    )


@eval_group.command(name="ppl")
@click.argument("checkpoint")
@_with_token_options
@_with_model_options
@reading_options
@clean_eval_errors
@torchrun_job
def eval_ppl(checkpoint, tokens, text, context, stride, as_json, device, backend, strict, expert_layout) -> None:
    """Perplexity of CHECKPOINT on the given tokens (sliding windows; see mxfp4.eval.parity)."""
    import json

    from ..eval.parity import perplexity
    from ..eval.tokens import check_ids
    from ..model import load
    from ..model.kernels.select import describe

    ids = _tokens(checkpoint, tokens, text)
    model = load(checkpoint, device=device, backend=backend, strict=strict, expert_layout=expert_layout)
    check_ids(ids, model.config.vocab_size, checkpoint)
    value = perplexity(model, ids, context=context, stride=stride)
    kernels = describe(model.backend)  # which kernels ran, so a figure can be read
    click.echo(
        json.dumps({"perplexity": value, "tokens": int(ids.size), "kernels": kernels})
        if as_json
        else f"perplexity {value:.4f} over {ids.size - 1} scored tokens ({kernels})"
    )


@eval_group.command(name="compare")
@click.argument("reference")
@click.argument("candidate")
@_with_token_options
@_with_model_options
@reading_options
@clean_eval_errors
@torchrun_job
def eval_compare(
    reference, candidate, tokens, text, context, stride, as_json, device, backend, strict, expert_layout
) -> None:
    """CANDIDATE against REFERENCE on the same tokens: perplexities, delta, KL (mean, p99), top-1 agreement."""
    import json

    from ..convert.registry import layout_needed
    from ..eval.parity import compare
    from ..eval.tokens import check_ids
    from ..model import load

    ids = _tokens(reference, tokens, text)
    a = load(
        reference, device=device, backend=backend, strict=strict, expert_layout=layout_needed(reference, expert_layout)
    )
    b = load(
        candidate, device=device, backend=backend, strict=strict, expert_layout=layout_needed(candidate, expert_layout)
    )
    check_ids(ids, a.config.vocab_size, reference)
    result = compare(a, b, ids, context=context, stride=stride)
    if as_json:
        click.echo(json.dumps(result.to_json(), indent=2))
        return
    rows = [
        ["perplexity (reference)", f"{result.ppl_a:.4f}"],
        ["perplexity (candidate)", f"{result.ppl_b:.4f}"],
        ["delta perplexity", f"{result.delta_ppl:+.4f}"],
        ["KL mean", f"{result.kl_mean:.6f}"],
        ["KL 99th percentile", f"{result.kl_p99:.6f}"],
        ["top-1 agreement", f"{100 * result.top1_agreement:.2f}%"],
        ["tokens scored", str(result.tokens)],
    ]
    click.echo(format_table(["measure", "value"], rows))


@eval_group.command(name="gate")
@click.argument("checkpoint")
@click.option("--baseline", required=True, type=click.Path(dir_okay=False), help="quality.json: tokens, thresholds.")
@_json_option
@_with_model_options
@reading_options
@clean_eval_errors
@torchrun_job
def eval_gate(checkpoint, baseline, as_json, device, backend, strict, expert_layout) -> None:
    """Check CHECKPOINT against the thresholds in --baseline (for CI): exit 0 when every check passes, 1 on a
    regression, 2 on a usage or input error (a missing or malformed baseline, a broken checkpoint)."""
    import json

    from ..eval.gate import gate, gate_json

    values, checks = gate(
        checkpoint, baseline, device=device, backend=backend, strict=strict, expert_layout=expert_layout
    )
    failed = [c for c in checks if not c.passed]
    if as_json:
        click.echo(json.dumps(gate_json(values, checks), indent=2))
        sys.exit(1 if failed else 0)
    rows = [
        [
            c.measure,
            f"{c.value:.6g}",
            f"{'<=' if c.direction == 'max' else '>='} {c.limit:.6g}",
            "pass" if c.passed else "FAIL",
        ]
        for c in checks
    ]
    click.echo(format_table(["measure", "value", "threshold", "result"], rows))
    click.echo(f"\n{len(checks) - len(failed)} of {len(checks)} checks passed")
    if failed:
        sys.exit(1)


@eval_group.command(name="baseline")
@click.argument("checkpoint")
@_with_input_options
@click.option(
    "--reference",
    help="A checkpoint to compare against, in any format or a hub id (adds KL, top-1 and delta thresholds).",
)
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Where to write quality.json.")
@click.option("--margin", type=float, default=0.1, show_default=True, help="Relative slack allowed on each measure.")
@click.option("--force", is_flag=True, help="Replace OUT if it exists.")
@_json_option
@_with_model_options
@reading_options
@clean_eval_errors
@torchrun_job
def eval_baseline(
    checkpoint,
    tokens,
    text,
    context,
    stride,
    reference,
    out,
    margin,
    force,
    as_json,
    device,
    backend,
    strict,
    expert_layout,
) -> None:
    """Measure CHECKPOINT once and write a baseline (quality.json) for `mxfp4 eval gate`."""
    import json

    from ..eval.gate import make_baseline

    if (tokens is None) == (text is None):
        raise click.UsageError("give exactly one of --tokens FILE (.npy or whitespace-separated ids) and --text FILE")
    data = make_baseline(
        checkpoint,
        tokens,
        out,
        text=text,
        reference=reference,
        context=context,
        stride=stride,
        margin=margin,
        force=force,
        device=device,
        backend=backend,
        strict=strict,
        expert_layout=expert_layout,
    )
    if as_json:
        click.echo(json.dumps({"output": str(out), **data}, indent=2))
        return
    click.echo(f"wrote {out}: " + ", ".join(f"{k} {v:.6g}" for k, v in data["thresholds"].items()))


@eval_group.command(name="rules")
@click.argument("dense")
@_with_token_options
@_with_model_options
@expert_layout_option
@clean_eval_errors
def eval_rules(dense, tokens, text, context, stride, as_json, device, backend, expert_layout) -> None:
    """Compare the scale rules on DENSE (bf16 experts): weight SQNR, delta perplexity, KL, top-1."""
    import json

    from ..eval.rule_comparison import compare_rules

    ids = _tokens(dense, tokens, text)
    base, results = compare_rules(
        dense, ids, context=context, stride=stride, device=device, backend=backend, expert_layout=expert_layout
    )
    if as_json:
        click.echo(json.dumps({"dense_perplexity": base, "rules": [r.to_json() for r in results]}, indent=2))
        return
    click.echo(f"dense model perplexity {base:.4f}\n")
    rows = [
        [
            r.scale_rule,
            f"{r.weight_sqnr_db:.3f}",
            f"{r.parity.ppl_b:.4f}",
            f"{r.parity.delta_ppl:+.4f}",
            f"{r.parity.kl_mean:.5f}",
            f"{r.parity.kl_p99:.5f}",
            f"{100 * r.parity.top1_agreement:.2f}%",
        ]
        for r in results
    ]
    click.echo(
        format_table(["scale rule", "weight SQNR dB", "perplexity", "delta ppl", "KL mean", "KL p99", "top-1"], rows)
    )


@eval_group.command(name="template")
@click.argument("checkpoint")
@click.option(
    "--conversations",
    type=click.Path(exists=True, dir_okay=False),
    help="Your own conversations: JSON, OpenAI chat-completions messages (+ tools, reasoning_effort). Default: the "
    "built-in suite.",
)
@_json_option
@clean_eval_errors
def eval_template(checkpoint, conversations, as_json) -> None:
    """Render conversations with CHECKPOINT's chat template as its format's runtime does (transformers for HF and
    MLX, llama.cpp's handling for GGUF) and with openai-harmony, the format gpt-oss was trained on; compare the
    token ids. Exit 0 when every conversation renders the same, 1 when any diverges, 2 on an error."""
    import json

    from ..eval.conversations import builtin_suite, read_conversations
    from ..eval.templates import check_templates

    suite = read_conversations(conversations) if conversations else builtin_suite()
    report = check_templates(checkpoint, suite)
    if as_json:
        click.echo(json.dumps(report.to_json(), indent=2))
    else:
        click.echo(f"{checkpoint}: {report.runtime}, against openai-harmony\n")
        rows = []
        for c in report.checks:
            where = "" if c.equal else f"token {c.index}: {''.join(c.runtime)!r} vs harmony {''.join(c.harmony)!r}"
            rows.append([c.name, "same" if c.equal else "DIVERGES", where])
        click.echo(format_table(["conversation (kind)", "tokens", "first difference"], rows))
        divergent = sum(not c.equal for c in report.checks)
        click.echo(f"\n{len(report.checks) - divergent} of {len(report.checks)} conversations render as harmony does")
    sys.exit(0 if report.equal else 1)


@eval_group.command(name="report")
@click.argument("dense")
@click.argument("quantized")
@click.option("--plot", type=click.Path(dir_okay=False), help="Write a PNG of SQNR and clipped share per layer.")
@click.option("--json", "as_json", is_flag=True)
@expert_layout_option
@clean_eval_errors
def eval_report(dense, quantized, plot, as_json, expert_layout) -> None:
    """Per-tensor error of QUANTIZED (MXFP4 experts) against DENSE: SQNR, max |error|, clipped share."""
    import json

    from ..eval.errors_report import aggregate_sqnr, expert_errors
    from ..eval.errors_report import plot as draw

    rows = expert_errors(dense, quantized, expert_layout=expert_layout)
    if plot:
        draw(rows, plot)
    if as_json:
        click.echo(
            json.dumps({"weight_sqnr_db": aggregate_sqnr(rows), "tensors": [r.to_json() for r in rows]}, indent=2)
        )
        return
    click.echo(
        format_table(
            ["tensor", "SQNR dB", "max |err|", "clipped"],
            [[r.name, f"{r.sqnr_db:.2f}", f"{r.max_abs_error:.3g}", f"{100 * r.clipped_share:.3f}%"] for r in rows],
        )
    )
    click.echo(f"\nall experts: SQNR {aggregate_sqnr(rows):.3f} dB" + (f"; plot written to {plot}" if plot else ""))
