"""The reproduction report of a run: every figure and table under ``results/``, a reading of each
generated from its numbers, the paper's claims as verdicts (:mod:`mmneuron.report.claims`), and
the run's configuration, samples, skips and package versions."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pandas as pd
import yaml

from mmneuron.counts import Counts, current_versions
from mmneuron.errors import MmneuronError

from . import claims
from .document import Code, Figure, Paragraph, Section, Table, write

PACKAGES = ("mmneuron", "torch", "transformers", "safetensors", "numpy", "pandas", "snakemake", "dvc")
TITLE = "mmneuron reproduction report"


class ReportError(MmneuronError):
    """A results folder the report cannot read; the message names the file."""


def config_digest(config: dict) -> str:
    """sha256 of the resolved configuration (keys sorted), so two runs' configs compare at a glance."""
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()


# The columns the report reads from each table (by file name); a table without them is refused, naming it.
COLUMNS = {
    "neuron_stats.csv": ("site", "statistic", "domain", "count_a", "count_b", "jaccard"),
    "stages.csv": ("domain", "scope", "layers", "alignment_last", "processing_last", "token_selection_first", "note"),
    "lens.csv": ("domain", "scope", "layer", "entropy_mean", "top_prob_mean"),
    "scores.csv": ("condition", "control", "source_domain", "domain", "subset", "metric", "n", "delta"),
    "scores_random.csv": ("condition", "source_domain", "domain", "subset", "metric", "seeds", "delta_min"),
    "perturbation.csv": ("condition", "control", "domain", "scope", "layer", "cosine_mean", "rel_l2_mean"),
}


def _csv(path: Path) -> pd.DataFrame | None:
    if not path.is_file():
        return None
    try:
        table = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise ReportError(f"{path}: not a readable table ({type(error).__name__})") from None
    missing = [column for column in COLUMNS.get(path.name, ()) if column not in table.columns]
    if missing:
        raise ReportError(f"{path}: missing column(s) {missing}")
    return table


def _json(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ReportError(f"{path}: not JSON ({error})") from None


def _figures(folder: Path, root: Path, caption: str) -> list[Figure]:
    if not folder.is_dir():
        return []
    return [Figure(str(path.relative_to(root)), f"{caption}: {path.stem}") for path in sorted(folder.glob("*.png"))]


def _verdict_line(verdict: claims.Verdict) -> str:
    return f"**{verdict.verdict}** - {verdict.reason}."


def _claims_section(parent: Section, verdicts: list[claims.Verdict]) -> None:
    section = parent.section("Claims of the paper")
    section.add(Table(pd.DataFrame([{"claim": v.claim, "verdict": v.verdict, "why": v.reason} for v in verdicts])))
    for verdict in verdicts:
        sub = section.section(verdict.claim)
        sub.add(Paragraph(_verdict_line(verdict)))
        if not verdict.evidence.empty:
            sub.add(Table(verdict.evidence, "evidence"))


def _neurons_section(parent: Section, model_dir: Path, root: Path, neurons: dict | None) -> None:
    section = parent.section("Neuron selection")
    if not neurons:
        section.add(Paragraph("No neuron sets in this run."))
        return
    rows = [
        {"site": site, "domain": domain, "neurons": len(pairs)}
        for site, entry in sorted(neurons["sites"].items())
        for domain, pairs in sorted(entry["by_domain"].items())
    ]
    table = pd.DataFrame(rows)
    per_site = table.groupby("site")["neurons"].sum()
    largest = table.loc[table["neurons"].idxmax()]
    section.add(
        Paragraph(
            f"`{neurons['method']}` with {json.dumps(neurons.get('parameters', {}), sort_keys=True)} over "
            f"{sum(neurons.get('samples', {}).values())} statistics samples chose "
            + ", ".join(f"{count} in `{site}`" for site, count in per_site.items())
            + f" (counted once per domain); the largest set is {largest['domain']}'s in `{largest['site']}` "
            f"({largest['neurons']} neurons)."
        ),
        Table(
            table.pivot(index="site", columns="domain", values="neurons").reset_index(), "neurons per site and domain"
        ),
    )
    stats = _csv(model_dir / "neuron_stats.csv")
    if stats is not None and "stability" in set(stats["statistic"]):
        stability = stats[stats["statistic"] == "stability"][["site", "domain", "count_a", "count_b", "jaccard"]]
        mean = stability["jaccard"].mean()
        section.add(
            Paragraph(f"Selections from the two disjoint halves of the samples agree with mean Jaccard {mean:.2f}."),
            Table(stability, "split-half stability"),
        )
    section.add(*_figures(model_dir / "figures" / "neurons", root, "neurons"))


def _lens_section(parent: Section, model_dir: Path, root: Path, lens: pd.DataFrame | None) -> None:
    section = parent.section("Logit lens")
    if lens is None:
        section.add(Paragraph("No logit lens in this run."))
        return
    curve = lens.groupby(["scope", "layer"])["entropy_mean"].mean().unstack("scope")
    readings = [
        f"{scope} positions: mean entropy {curve[scope].iloc[0]:.2f} at layer 0, lowest {curve[scope].min():.2f} "
        f"at layer {int(curve[scope].idxmin())}, {curve[scope].iloc[-1]:.2f} at the last layer"
        for scope in curve.columns
    ]
    section.add(Paragraph("Averaged over domains, " + "; ".join(readings) + "."))
    stages = _csv(model_dir / "lens" / "stages.csv")
    if stages is not None:
        section.add(Table(stages.drop(columns=["model"], errors="ignore"), "the three-stage rule per domain and scope"))
    section.add(*_figures(model_dir / "lens" / "figures", root, "logit lens"))


def _ablation_section(parent: Section, model_dir: Path, root: Path, scores, random) -> None:
    section = parent.section("Deactivation")
    if scores is None:
        section.add(Paragraph("No deactivation scores in this run."))
        return
    beside = claims.random_comparison(scores, random)
    answers = scores[scores["metric"] != claims.LOGLIK]
    if not beside.empty:
        worst = beside.loc[beside["delta"].idxmin()]
        outside = 0
        if "random_min" in beside:
            outside = int(((beside["delta"] < beside["random_min"]) | (beside["delta"] > beside["random_max"])).sum())
        section.add(
            Paragraph(
                f"Over {answers['n'].max()} evaluation questions per domain, the largest drop under a domain's own "
                f"neurons is {worst['delta']:+.3f} {worst['metric']} ({worst['condition']} on {worst['domain']}); "
                f"{outside} of {len(beside)} own-set effects fall outside their random controls' range."
            ),
            Table(beside, "own-domain deactivation beside the random controls (delta against `none`)"),
        )
    if "method" in scores and scores["method"].nunique() > 1:
        methods = scores[(scores["condition"] != "none") & (scores["control"] == "domain")]
        methods = methods[methods["source_domain"] == methods["domain"]]
        methods = methods[methods["subset"] == "all"]
        table = methods[["method", "condition", "domain", "metric", "delta", "delta_low", "delta_high"]]
        section.add(Table(table.reset_index(drop=True), "the selector bake-off: every method's own-domain effects"))
    section.add(*_figures(model_dir / "ablation" / "figures", root, "deactivation"))


def _perturbation_section(parent: Section, model_dir: Path, root: Path, perturbation) -> None:
    section = parent.section("Hidden-state perturbation")
    if perturbation is None:
        section.add(Paragraph("No perturbation in this run."))
        return
    rows = perturbation[perturbation["scope"] == "all"]
    table = rows.groupby(["condition", "control"], as_index=False).agg(
        max_rel_l2=("rel_l2_mean", "max"), min_cosine=("cosine_mean", "min")
    )
    strongest = table.loc[table["max_rel_l2"].idxmax()]
    section.add(
        Paragraph(
            f"The strongest perturbation is `{strongest['condition']}` ({strongest['control']} neurons): "
            f"relative L2 up to {strongest['max_rel_l2']:.3f}, cosine down to {strongest['min_cosine']:.3f} "
            "against the clean run."
        ),
        Table(table, "largest perturbation over layers and domains, all positions"),
        *_figures(model_dir / "perturbation" / "figures", root, "perturbation"),
    )


def _methods_section(parent: Section, model_dir: Path, root: Path) -> None:
    folder = model_dir / "neurons"
    overlaps = _csv(folder / "method_overlaps.csv")
    curve = _csv(folder / "sample_curve.csv")
    if overlaps is None and curve is None:
        return
    section = parent.section("Selectors compared")
    if overlaps is not None:
        section.add(Paragraph("Jaccard overlap of the neuron sets the methods chose from the same statistics."))
        section.add(Table(overlaps.drop(columns=["model"], errors="ignore"), "overlaps between methods"))
    if curve is not None:
        section.add(Table(curve.drop(columns=["model"], errors="ignore"), "selection on growing sample counts"))
    # the comparison's own figures, then each method's figures of its sets (neurons/{method}_figures/)
    for path in sorted(folder.glob("*.png")) + sorted(folder.glob("*/*.png")):
        section.add(Figure(str(path.relative_to(root)), f"selectors: {path.relative_to(folder).with_suffix('')}"))


def _samples(model_dir: Path, domains: list[str]) -> tuple[pd.DataFrame, list[dict]]:
    rows, skipped = [], []
    for domain in domains:
        path = model_dir / "counts" / f"{domain}.safetensors"
        if path.is_file():
            counts = Counts.load(path)
            rows.append({"domain": domain, "statistics_samples": counts.samples, "skipped": len(counts.skipped)})
            skipped += [{"stage": "statistics", "domain": domain, **entry} for entry in counts.skipped]
    for stage, path in (
        ("lens", model_dir / "lens" / "examples.json"),
        ("perturbation", model_dir / "perturbation" / "summary.json"),
    ):
        summary = _json(path) or {}
        skipped += [{"stage": stage, **entry} for entry in summary.get("skipped", [])]
    return pd.DataFrame(rows), skipped


def model_section(results: Path, model: str, domains: list[str]) -> Section:
    model_dir = results / model
    neurons = _json(model_dir / "neurons.json")
    lens = _csv(model_dir / "lens" / "lens.csv")
    stages = _csv(model_dir / "lens" / "stages.csv")
    scores = _csv(model_dir / "ablation" / "scores.csv")
    random = _csv(model_dir / "ablation" / "scores_random.csv")
    perturbation = _csv(model_dir / "perturbation" / "perturbation.csv")
    section = Section(f"Model {model}")
    verdicts = [
        claims.neuron_share(neurons),
        claims.layer_distribution(neurons),
        claims.small_accuracy_change(scores, perturbation),
        claims.three_stages(stages),
        claims.image_top_probability(lens),
    ]
    _claims_section(section, verdicts)
    _neurons_section(section, model_dir, results, neurons)
    _methods_section(section, model_dir, results)
    _lens_section(section, model_dir, results, lens)
    _ablation_section(section, model_dir, results, scores, random)
    _perturbation_section(section, model_dir, results, perturbation)
    samples, skipped = _samples(model_dir, domains)
    sub = section.section("Samples and skips")
    if scores is not None:
        evaluated = scores[(scores["condition"] == "none") & (scores["metric"] != claims.LOGLIK)]
        evaluated = evaluated[evaluated["subset"] == "all"].drop_duplicates("domain")
        samples = samples.merge(evaluated[["domain", "n"]].rename(columns={"n": "evaluation_questions"}), how="outer")
    sub.add(Table(samples, "samples per domain"))
    sub.add(Paragraph(f"{len(skipped)} sample(s) skipped (missing or corrupt images)."))
    if skipped:
        sub.add(Table(pd.DataFrame(skipped), "skipped samples"))
    return section


def build(results: Path, models: list[str], config: dict, markdown: Path, page: Path) -> None:
    """Write the report of ``models`` under ``results`` to ``markdown`` and ``page`` (HTML) in ``results``."""
    if not results.is_dir():
        raise ReportError(f"results folder not found: {results}")
    for path in (markdown, page):
        if path.resolve().parent != results.resolve():
            raise ReportError(f"{path}: the report must sit in {results} (its figures are linked relative to it)")
    domains = list(config.get("domains", []))
    run = Section("Run")
    run.add(
        Paragraph(
            f"Models: {', '.join(f'`{m}`' for m in models)}; domains: {', '.join(domains)}; seed {config.get('seed')}. "
            f"Config digest (sha256 of the resolved configuration): `{config_digest(config)}`."
        ),
        Table(
            pd.DataFrame(sorted(current_versions(PACKAGES).items()), columns=["package", "version"]), "package versions"
        ),
    )
    sections = [run, *(model_section(results, model, domains) for model in models)]
    configuration = Section("Configuration")
    configuration.add(Code(yaml.safe_dump(config, sort_keys=False), "the resolved configuration (YAML)"))
    sections.append(configuration)
    write(TITLE, sections, markdown, page)
