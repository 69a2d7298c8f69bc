"""The GPU check: one script, about five minutes on one H200, one results file.

    python -m benchmarks.gpu_check                 # on a GPU machine: writes benchmarks/gpu/gpu_check_DATE.json
    python -m benchmarks.gpu_check --smoke         # anywhere: the same steps on the demo model, seconds

1. **Agreement with the CPU path**, on a small slice: the paper's two architectures with their
   published 7B geometry (random weights) cut to two language-model layers, float32 on the GPU and
   on the CPU, the same samples: the activation counts (the share of counts that differ, which only
   activations within rounding of zero can flip), the logit lens' mean entropy per layer, and the
   answers under a deactivation (greedy, so they must match unless two logits tie within rounding).
2. **Full depth in bfloat16** at realistic batch sizes: both 7B-geometry models, whole, extraction
   (samples/s, peak memory), deactivation generation and the lens, each timed once after a warm-up.
3. **The benchmarks** (`benchmarks.recording`, `authors_extraction`, `generation`, `lens`) on the
   GPU with bfloat16, each as its own process under a time limit; their tables go into the file.

Everything measured goes into one JSON file, with the GPU, the driver's CUDA version, torch and the
date; commit it. A step that fails or runs out of time is recorded as such and the rest go on.
"""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
import time
import traceback
from pathlib import Path

import torch

from benchmarks import common

OUT = Path(__file__).with_name("gpu")


def _models(smoke: bool, text_layers: int | None, device: str, dtype: str):
    """(label, model, processor) of the architectures checked; the demo model in smoke mode."""
    if smoke:
        return [("demo", *common.load("demo", device, dtype))]
    depth = f":{text_layers}" if text_layers else ""
    return [(f"{base}{depth or ':full'}", *common.load(f"{base}{depth}", device, dtype)) for base in common.PUBLISHED]


def _release() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _run_all(model, processor, samples, batch_size: int, max_new_tokens: int):
    """Counts, the lens' mean entropy per layer (all positions) and the answers under `lm`."""
    from mmneuron.ablation.run import Settings, run_ablation
    from mmneuron.conditions import Condition
    from mmneuron.extract import extract_counts
    from mmneuron.lens import run_lens

    counts = extract_counts(model, processor, samples, batch_size=batch_size, progress=False)
    lens = run_lens(model, processor, samples, batch_size=batch_size, progress=False)
    entropy = lens.accumulator.scope_stats(samples[0].domain)["all"].entropy_mean()
    settings = Settings(prompt="{question}", chat=False, batch_size=batch_size, max_new_tokens=max_new_tokens)
    records, _ = run_ablation(
        model,
        processor,
        samples,
        common.lm_selection(model, samples[0].domain),
        [Condition("lm")],
        settings,
        "check",
        progress=False,
    )
    return counts, torch.from_numpy(entropy), [r["prediction"] for r in records]


def agreement(smoke: bool, device: str, samples_n: int) -> list[dict]:
    """Step 1: the GPU path against the CPU path, float32, two LM layers."""
    rows = []
    for (label, gpu_model, processor), (_, cpu_model, _) in zip(
        _models(smoke, 2, device, "float32"), _models(smoke, 2, "cpu", "float32")
    ):
        cpu_model.load_state_dict(gpu_model.state_dict())  # the same random weights on both
        samples = common.samples(gpu_model, samples_n)
        gpu = _run_all(gpu_model, processor, samples, batch_size=samples_n, max_new_tokens=8)
        cpu = _run_all(cpu_model, processor, samples, batch_size=1, max_new_tokens=8)
        differing, total = 0, 0
        for key, active in gpu[0].active.items():
            other = cpu[0].active[key]
            differing += int((active.cpu() - other).abs().sum())
            total += int(other.sum())
        tokens_equal = all(torch.equal(t.cpu(), cpu[0].tokens[key]) for key, t in gpu[0].tokens.items())
        rows.append(
            {
                "model": label,
                "samples": samples_n,
                "tokens equal": tokens_equal,
                "counts differing": differing,
                "counts total": total,
                "share differing": differing / max(total, 1),
                "lens entropy max abs diff": float((gpu[1] - cpu[1]).abs().max()),
                "answers equal": sum(a == b for a, b in zip(gpu[2], cpu[2])),
                "answers": len(cpu[2]),
            }
        )
        del gpu_model, cpu_model
        _release()
    return rows


def _timed_steps(label: str, model, processor, samples_n: int, batch_size: int) -> list[dict]:
    """Extraction, generation under a deactivation and the lens of one model: once after a warm-up."""
    from mmneuron.ablation.run import Settings, run_ablation
    from mmneuron.conditions import Condition
    from mmneuron.extract import extract_counts
    from mmneuron.lens import run_lens

    samples = common.samples(model, samples_n)
    settings = Settings(prompt="{question}", chat=False, batch_size=batch_size, max_new_tokens=16)
    selection = common.lm_selection(model, samples[0].domain)
    steps = {
        "extraction": lambda: extract_counts(model, processor, samples, batch_size=batch_size, progress=False),
        "generation (lm deactivated)": lambda: run_ablation(
            model, processor, samples, selection, [Condition("lm")], settings, "check", progress=False
        ),
        "logit lens": lambda: run_lens(model, processor, samples, batch_size=batch_size, progress=False),
    }
    rows = []
    for step, run in steps.items():
        run()  # warm-up (kernels, allocator)
        base = common.reset_peak(model.device)
        seconds = common.timed(model.device, run)
        peak = common.peak_bytes(model.device)
        rows.append(
            {
                "model": label,
                "step": step,
                "samples": samples_n,
                "batch size": batch_size,
                "s": seconds,
                "samples/s": samples_n / seconds,
                "peak GiB": peak / 2**30,
                "above model GiB": (peak - base) / 2**30,
            }
        )
    return rows


def full_depth(smoke: bool, device: str, samples_n: int, batch_size: int) -> list[dict]:
    """Step 2: the whole models in bfloat16 at realistic batch sizes."""
    rows = []
    for label, model, processor in _models(smoke, None, device, "bfloat16"):
        rows += _timed_steps(label, model, processor, samples_n, batch_size)
        del model
        _release()
    return rows


def benchmarks(commands: list[list[str]], limit: int) -> list[dict]:
    """Step 3: each benchmark in its own process; its printed table, or why there is none."""
    results = []
    for command in commands:
        start = time.perf_counter()
        try:
            done = subprocess.run(
                [sys.executable, "-m", *command], capture_output=True, text=True, timeout=limit, check=False
            )
            printed, status = done.stdout, f"exit {done.returncode}"
            if done.returncode:
                printed += done.stderr[-2000:]
        except subprocess.TimeoutExpired:
            printed, status = "", f"killed after {limit} s"
        results.append(
            {
                "command": "python -m " + " ".join(command),
                "status": status,
                "s": time.perf_counter() - start,
                "printed": printed,
            }
        )
        print(f"{results[-1]['command']}: {status}\n{printed}", flush=True)
    return results


def benchmark_commands(smoke: bool, device: str) -> list[list[str]]:
    common_args = ["--device", device, "--results", str(OUT / "results.jsonl")]
    if smoke:
        return [
            ["benchmarks.recording", "--model", "demo", "--repeats", "1", *common_args],
            ["benchmarks.authors_extraction", "--model", "demo", "--repeats", "1", "--samples", "4", *common_args],
            ["benchmarks.generation", "--model", "demo", "--repeats", "1", "--samples", "4", *common_args],
            ["benchmarks.lens", "--model", "demo", "--repeats", "1", *common_args],
        ]
    return [
        ["benchmarks.recording", "--model", "llava7b", "--repeats", "5", "--batch-size", "8", *common_args],
        ["benchmarks.authors_extraction", "--model", "llava7b", "--repeats", "2", "--samples", "16", *common_args],
        ["benchmarks.generation", "--model", "llava7b", "--repeats", "2", "--samples", "16", *common_args],
        ["benchmarks.lens", "--model", "llava7b", "--depths", "8,32", "--repeats", "2", *common_args],
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="the demo model instead of the 7B geometry, anywhere")
    parser.add_argument("--out", type=Path, help="results file (default: benchmarks/gpu/gpu_check_DATE.json)")
    parser.add_argument("--samples", type=int, default=64, help="samples of the full-depth step (default %(default)s)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--benchmark-limit", type=int, default=90, help="seconds per benchmark process")
    args = parser.parse_args()
    if not torch.cuda.is_available() and not args.smoke:
        sys.exit("benchmarks.gpu_check: no CUDA GPU here; run it on a GPU machine, or with --smoke to try the steps")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    date = datetime.datetime.now(datetime.UTC)
    result = {
        "date": date.isoformat(timespec="seconds"),
        "smoke": args.smoke,
        "machine": common.machine(torch.device(device)),
        "cuda": torch.version.cuda,
    }
    steps = {
        "agreement": lambda: agreement(args.smoke, device, 2 if not args.smoke else 3),
        "full_depth": lambda: full_depth(args.smoke, device, args.samples if not args.smoke else 8, args.batch_size),
        "benchmarks": lambda: benchmarks(benchmark_commands(args.smoke, device), args.benchmark_limit),
    }
    for name, step in steps.items():
        start = time.perf_counter()
        try:
            result[name] = step()
        except Exception as error:  # record it and go on: the other steps still say something
            result[name] = {"error": f"{type(error).__name__}: {error}", "traceback": traceback.format_exc()[-3000:]}
        result[f"{name}_s"] = time.perf_counter() - start
        print(
            f"{name}: {result[f'{name}_s']:.0f} s\n{json.dumps(result[name], indent=1, default=str)[:4000]}", flush=True
        )
    out = args.out or OUT / f"gpu_check_{date:%Y%m%d}{'_smoke' if args.smoke else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1, default=str) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
