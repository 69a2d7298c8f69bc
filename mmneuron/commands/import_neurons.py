"""``mmneuron import-neurons``: neuron sets in LAPE's format as a neurons file for one site of a model."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from . import CommandError

log = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "import-neurons",
        help="neuron sets of a LAPE-format file (torch.save'd sets x layers x indices) as a neurons file",
        description="Reads a list over sets (domains, languages) of lists over layers of index tensors, checks "
        "it against the shape of one site of the model (built from its config, no weights read) and writes a "
        "neurons file of method 'external' whose domains are the set names: ablate it with runs SITE/from_NAME.",
    )
    parser.add_argument("file", type=Path, metavar="FILE", help="the LAPE-format file (.pt)")
    parser.add_argument("--model", required=True, help="model folder or Hugging Face id whose site the sets map to")
    parser.add_argument("--name", help="model name recorded in the neurons file (default: --model)")
    parser.add_argument("--site", required=True, help="the model's site the layers index (lm for a text model's)")
    parser.add_argument("--names", nargs="+", required=True, metavar="NAME", help="one name per set, in file order")
    parser.add_argument(
        "--label", help="the sets' name: answers and scores call their method external_LABEL (default: the file's stem)"
    )
    parser.add_argument(
        "--trust-remote-code", action=argparse.BooleanOptionalAction, default=False, help="(default: off)"
    )
    parser.add_argument("--out", required=True, type=Path, help="neurons file (JSON) to write")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mmneuron.external import load_lape
    from mmneuron.models.loading import model_sites

    sites = {site.name: site for site in model_sites(args.model, args.trust_remote_code)}
    if args.site not in sites:
        raise CommandError(f"--site {args.site}: the model {args.model} has the sites {', '.join(sites)}")
    site = sites[args.site]
    model = args.name or str(args.model)
    label = args.label or args.file.stem
    selection = load_lape(args.file, args.names, site.name, site.layers, site.width, model, label, site.inert_layers)
    selection.save(args.out)
    sizes = ", ".join(f"{name} {len(pairs)}" for name, pairs in selection.sites[site.name].by_domain.items())
    log.info("imported %s into site %s of %s (neurons per set: %s): %s", args.file, site.name, model, sizes, args.out)
    return 0
