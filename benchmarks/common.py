"""What every benchmark shares: the models it runs on, samples, alternating timed repeats, peak
memory, the machine, and the table printed and appended to the results file.

Each benchmark is one command (``python -m benchmarks.NAME``) that compares variants side by side in
one run: the variants run the same prepared inputs, alternating repeat by repeat, so that a machine
that slows down or speeds up affects them alike; the table gives the median, the spread (min-max)
and the ratio to the first variant. Nothing here is part of the test suite.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import datetime
import gc
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

RESULTS = Path(__file__).with_name("results.jsonl")
# The paper's two 7B geometries (published widths, random weights), by their --model prefix.
PUBLISHED = {"llava7b": "llava-hf/llava-v1.6-vicuna-7b-hf", "instructblip7b": "Salesforce/instructblip-vicuna-7b"}


def add_arguments(parser: argparse.ArgumentParser, model: str = "demo", repeats: int = 5) -> None:
    parser.add_argument(
        "--model",
        default=model,
        help="demo (the demo architecture, untrained), llava7b:N or instructblip7b:N (the 7B geometry, random "
        "weights, the language model cut to N layers; without :N the full depth), tiny:ARCH, or a model folder "
        "(default %(default)s)",
    )
    parser.add_argument("--repeats", type=int, default=repeats, help="timed repeats per variant (default %(default)s)")
    parser.add_argument("--device", default="auto", help="auto (a GPU when there is one), cpu, cuda")
    parser.add_argument("--dtype", default="auto", help="auto: bfloat16 on a GPU, float32 on the CPU")
    parser.add_argument("--threads", type=int, help="CPU threads of torch (default: torch's choice)")
    parser.add_argument("--results", type=Path, default=RESULTS, help="JSONL file the results are appended to")


def setup(args: argparse.Namespace) -> None:
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)


def load(name: str, device: str = "auto", dtype: str = "auto", text_layers: int | None = None):
    """The model and processor ``name`` names (see :func:`add_arguments`), on ``device`` in ``dtype``;
    ``text_layers`` sets the language model's depth of the demo and of a 7B geometry without ``:N``."""
    from mmneuron.data import synthetic
    from mmneuron.models.demo import DemoSize, build_demo_model, build_demo_processor
    from mmneuron.models.loading import load_model, resolve_device, resolve_dtype
    from mmneuron.models.published import build_model, build_processor
    from mmneuron.models.tiny import build_tiny

    target = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, target)
    if name == "demo":
        processor = build_demo_processor(synthetic.vocabulary())
        size = DemoSize() if text_layers is None else DemoSize(text_layers=text_layers)
        model = build_demo_model(processor, size=size)
    elif name.partition(":")[0] in PUBLISHED:
        base, _, layers = name.partition(":")
        depth = int(layers) if layers else text_layers
        model = build_model(PUBLISHED[base], text_layers=depth, device=str(target), dtype=torch_dtype)
        return model.eval(), build_processor(PUBLISHED[base])
    elif name.startswith("tiny:"):
        model, processor = build_tiny(name.removeprefix("tiny:"))
    else:
        return load_model(name, device=device, dtype=dtype)
    return model.to(target, torch_dtype).eval(), processor


def samples(model, n: int, domain: str = "com", split: str = "stats"):
    """``n`` synthetic samples: 64 px images for the demo and tiny models; 336 px photos (two anyres
    tiles and the base image, ~1,200 image tokens) for a model with the 7B geometry."""
    from mmneuron.data import synthetic

    vision = getattr(model.config, "vision_config", None)
    image_size = 336 if getattr(vision, "image_size", 0) >= 336 else 64
    return synthetic.generate(domain, split, n, image_size=image_size)


def lm_selection(model, domain: str, rate: float = 0.01, seed: int = 0):
    """A neuron file's content with one set for ``domain``: a random ``rate`` of the ``lm`` site's
    neurons in each of its layers (what the deactivation benchmarks switch off)."""
    import numpy as np

    from mmneuron.models.sites import resolve_sites
    from mmneuron.selection import Selection, SiteSelection

    site = next(site for site in resolve_sites(model) if site.name == "lm")
    rng = np.random.default_rng(seed)
    per_layer = max(1, round(rate * site.width))
    pairs = [
        (layer, int(neuron))
        for layer in range(site.layers)
        for neuron in sorted(rng.choice(site.width, per_layer, replace=False))
    ]
    lm = SiteSelection(site.layers, site.width, "all", list(site.inert_layers), len(pairs), {domain: pairs})
    parameters = {"rate": rate, "seed": seed}
    return Selection("benchmark", [domain], {domain: 0}, parameters, {"lm": lm}, method="random")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(device: torch.device, step: Callable[[], object]) -> float:
    synchronize(device)
    start = time.perf_counter()
    step()
    synchronize(device)
    return time.perf_counter() - start


def alternate(variants: dict[str, Callable[[], object]], repeats: int, device: torch.device, warmup: int = 1):
    """Per variant, the seconds of each of ``repeats`` runs, the variants alternating within a repeat
    (after ``warmup`` untimed runs of each)."""
    for _ in range(warmup):
        for step in variants.values():
            step()
    times = {name: [] for name in variants}
    for _ in range(repeats):
        for name, step in variants.items():
            times[name].append(timed(device, step))
    return times


def exact_cpu_peaks(threshold: int = 128 * 1024) -> None:
    """glibc: every allocation of ``threshold`` bytes or more its own mapping, unmapped when freed (by
    default the threshold grows up to 32 MiB and freed tensors below it stay resident in the heap),
    so that the resident set follows the tensors alive. For benchmarks of CPU memory; it makes
    allocations dearer, so not for those of time alone."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").mallopt(-3, threshold)  # M_MMAP_THRESHOLD


def reset_peak(device: torch.device) -> int:
    """Start a peak-memory measurement; returns the bytes in use now (the baseline). Memory freed
    earlier is given back first (GPU: torch's cache; CPU: the heap's free pages), so that an earlier
    run's leftovers cannot hide this one's peak."""
    gc.collect()
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        return torch.cuda.memory_allocated(device)
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    # Linux: writing 5 to clear_refs resets the process's peak resident set size (VmHWM) to the current one
    Path("/proc/self/clear_refs").write_text("5")
    return _status_bytes("VmRSS")


def peak_bytes(device: torch.device) -> int:
    """The peak bytes in use since :func:`reset_peak` (GPU: allocated by torch; CPU: resident set)."""
    if device.type == "cuda":
        synchronize(device)
        return torch.cuda.max_memory_allocated(device)
    return _status_bytes("VmHWM")


def _status_bytes(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {key}")


def machine(device: torch.device) -> dict:
    """The machine a result was measured on."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "device": str(device),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def summary(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def timing_rows(
    times: dict[str, list[float]], reference: str, samples: int | None = None, labels=None, slowdown: bool = False
) -> list[dict]:
    """A table row per variant: median and spread of its seconds, samples/s when ``samples`` are
    given, and its speed-up over the ``reference`` variant (or, with ``slowdown``, its time as a
    multiple of the reference's)."""
    base = statistics.median(times[reference])
    rows = []
    for name, values in times.items():
        stats = summary(values)
        row = {"variant": (labels or {}).get(name, name), "median s": stats["median"]}
        row.update({"min s": stats["min"], "max s": stats["max"]})
        if samples:
            row["samples/s"] = samples / stats["median"]
        if slowdown:
            row["ratio"] = stats["median"] / base
        else:
            row["speed-up"] = base / stats["median"]
        rows.append(row)
    return rows


def report(benchmark: str, setting: dict, rows: list[dict], device: torch.device, path: Path = RESULTS) -> None:
    """Print ``rows`` (dicts with the same keys) as a Markdown table after a line naming the setting,
    and append the whole result, with the machine and the date, to ``path`` as one JSON line."""
    where = machine(device)
    print(f"{benchmark}: " + ", ".join(f"{key} {value}" for key, value in {**setting, **where}.items()))
    columns = list(rows[0])
    cells = [[_cell(row[column]) for column in columns] for row in rows]
    widths = [max(len(column), *(len(line[i]) for line in cells)) for i, column in enumerate(columns)]
    print("| " + " | ".join(column.ljust(w) for column, w in zip(columns, widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for line in cells:
        print("| " + " | ".join(cell.rjust(w) for cell, w in zip(line, widths)) + " |")
    record = {
        "benchmark": benchmark,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "setting": setting,
        "machine": where,
        "rows": rows,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        handle.write(json.dumps(record) + "\n")


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e4 else f"{value:.0f}"
    return str(value)
