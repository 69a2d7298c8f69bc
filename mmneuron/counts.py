"""Activation counts: one safetensors file per model and domain (and shard), additive over shards.

Tensors (int64): ``"{site}/{scope}/active"`` (layers x width: token positions with activation > 0)
and ``"{site}/{scope}/tokens"`` (layers: token positions counted), scope in ``all``, ``image``,
``text``; and the activation moments (float64, layers x width): ``"{site}/{scope}/sum"`` (sum of
the activations over the counted positions), ``"{site}/{scope}/sum_sq"`` (sum of their squares)
and ``"{site}/{scope}/max"`` (their maximum; -inf where no position was counted). Files written
before the moments existed lack them and still load (for DAPE, which needs the counts only).
Metadata (all str): ``model``, ``domain``, ``samples`` (int), ``skipped`` (JSON list of
``{sample_id, reason}``), ``sites`` (JSON ``{site: {layers, width, inert_layers}}``), ``settings``
(JSON: extraction settings) and ``versions`` (JSON: package versions).
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import metadata as importlib_metadata
from pathlib import Path

import torch
from safetensors import safe_open

from mmneuron.defaults import SCOPES
from mmneuron.errors import MmneuronError

METADATA_KEYS = ("model", "domain", "samples", "skipped", "sites", "settings", "versions")
COUNT_TENSORS = ("active", "tokens")
MOMENT_TENSORS = ("sum", "sum_sq", "max")  # the attributes sums, squares, maxima
_PACKAGES = ("mmneuron", "transformers", "torch")


class CountsError(MmneuronError):
    """A counts file or object that cannot be used; the message names the file."""


@dataclass(frozen=True)
class SiteInfo:
    layers: int
    width: int
    inert_layers: tuple[int, ...] = ()

    def to_dict(self) -> dict:
        return {"layers": self.layers, "width": self.width, "inert_layers": list(self.inert_layers)}


def current_versions(packages: Sequence[str] = _PACKAGES) -> dict[str, str]:
    """Installed versions of ``packages`` (by default those that shape the counts), read without importing them."""
    versions = {}
    for package in packages:
        try:
            versions[package] = importlib_metadata.version(package)
        except importlib_metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


@dataclass
class Counts:
    """Activation counts of one model on one domain.

    ``active`` and ``tokens`` are keyed by ``(site, scope)``; ``sites`` gives each site's shape
    (a plain ``{"layers", "width", "inert_layers"}`` dict is accepted too). ``source`` names the
    file (or files) the counts came from, for error messages and the record of merged shards.
    ``sums``, ``squares`` and ``maxima`` (the activation moments, float64, keyed like ``active``)
    are all given or all None (counts of an older file).
    """

    model: str
    domain: str
    sites: dict[str, SiteInfo]
    active: dict[tuple[str, str], torch.Tensor]
    tokens: dict[tuple[str, str], torch.Tensor]
    samples: int
    skipped: list[dict] = field(default_factory=list)
    settings: dict = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=current_versions)
    source: str | None = None
    sums: dict[tuple[str, str], torch.Tensor] | None = None
    squares: dict[tuple[str, str], torch.Tensor] | None = None
    maxima: dict[tuple[str, str], torch.Tensor] | None = None

    def __post_init__(self) -> None:
        self.sites = {
            name: info if isinstance(info, SiteInfo) else _site_info(info, self._name, name)
            for name, info in self.sites.items()
        }
        self._validate()

    @property
    def _name(self) -> str:
        return self.source or f"counts of {self.model!r} on {self.domain!r}"

    @property
    def keys(self) -> list[tuple[str, str]]:
        """The ``(site, scope)`` pairs held, sorted."""
        return sorted(self.active)

    def _validate(self) -> None:
        name = self._name
        if set(self.active) != set(self.tokens):
            diff = sorted(set(self.active) ^ set(self.tokens))
            raise CountsError(f"{name}: 'active' and 'tokens' tensors differ for (site, scope) {diff}")
        held = {site for site, _ in self.active}
        if held != set(self.sites):
            raise CountsError(f"{name}: tensors for sites {sorted(held)} but 'sites' lists {sorted(self.sites)}")
        for site, scope in self.active:
            key = f"{site}/{scope}"
            if scope not in SCOPES:
                raise CountsError(f"{name}: unknown scope in '{key}'; expected one of {SCOPES}")
            info = self.sites[site]
            active, tokens = self.active[site, scope], self.tokens[site, scope]
            for kind, tensor, shape in (
                ("active", active, (info.layers, info.width)),
                ("tokens", tokens, (info.layers,)),
            ):
                if tuple(tensor.shape) != shape:
                    raise CountsError(
                        f"{name}: '{key}/{kind}' has shape {tuple(tensor.shape)}, but 'sites' says {shape}"
                    )
                if tensor.dtype.is_floating_point or tensor.dtype.is_complex or tensor.dtype == torch.bool:
                    raise CountsError(f"{name}: '{key}/{kind}' must hold integers, not {tensor.dtype}")
            if bool((active < 0).any()) or bool((active > tokens.unsqueeze(1)).any()):
                raise CountsError(f"{name}: '{key}/active' must lie between 0 and '{key}/tokens' per layer")
        if self.samples < 0:
            raise CountsError(f"{name}: negative sample count {self.samples}")
        moments = {"sum": self.sums, "sum_sq": self.squares, "max": self.maxima}
        given = [kind for kind, held in moments.items() if held is not None]
        if given and len(given) < len(moments):
            raise CountsError(f"{name}: activation moments {given} without {sorted(set(moments) - set(given))}")
        for kind, held in moments.items() if given else ():
            if set(held) != set(self.active):
                raise CountsError(f"{name}: '{kind}' tensors for {sorted(held)}, counts for {self.keys}")
            for (site, scope), tensor in held.items():
                info = self.sites[site]
                if tuple(tensor.shape) != (info.layers, info.width) or not tensor.dtype.is_floating_point:
                    raise CountsError(
                        f"{name}: '{site}/{scope}/{kind}' must be float of shape {(info.layers, info.width)}, "
                        f"got {tensor.dtype} {tuple(tensor.shape)}"
                    )
                held[site, scope] = tensor.double()

    @property
    def has_moments(self) -> bool:
        """Whether the activation moments were recorded (files of older versions hold counts only)."""
        return self.sums is not None

    def scope_for(self, site: str, scope: str) -> str:
        """``scope`` where ``site`` has it, else ``all`` (a vision site sees no text positions,
        InstructBLIP's instruction site no image positions)."""
        return scope if (site, scope) in self.active else "all"

    def _moment(self, site: str, scope: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        if not self.has_moments:
            raise CountsError(
                f"{self._name}: holds counts only, no activation moments (written by an older version; extract again)"
            )
        self.site_probabilities(site, scope)  # the same error for a missing site or scope
        return self.sums[site, scope], self.squares[site, scope], self.maxima[site, scope], self.tokens[site, scope]

    def site_means(self, site: str, scope: str = "all") -> torch.Tensor:
        """Mean activation per neuron over the counted positions (layers x width, float64; 0 where none)."""
        sums, _, _, tokens = self._moment(site, scope)
        return _per_token(sums, tokens)

    def site_variances(self, site: str, scope: str = "all") -> torch.Tensor:
        """Population variance of the activation per neuron (``E[x^2] - E[x]^2``, clamped at 0; 0 where none)."""
        sums, squares, _, tokens = self._moment(site, scope)
        return (_per_token(squares, tokens) - _per_token(sums, tokens).square()).clamp(min=0)

    def site_maxima(self, site: str, scope: str = "all") -> torch.Tensor:
        """Maximum activation per neuron over the counted positions (layers x width; -inf where none)."""
        return self._moment(site, scope)[2]

    def site_probabilities(self, site: str, scope: str = "all") -> torch.Tensor:
        """``active / tokens`` of one site and scope (layers x width, float64; 0 where no token was counted)."""
        if (site, scope) not in self.active:
            have = sorted(s for (name, s) in self.active if name == site)
            raise CountsError(f"{self._name}: site '{site}' has no '{scope}' counts (it has {have})")
        return _per_token(self.active[site, scope].double(), self.tokens[site, scope])

    def probabilities(self, scope: str = "all") -> dict[str, torch.Tensor]:
        """Per site, :meth:`site_probabilities` of ``scope``."""
        return {site: self.site_probabilities(site, scope) for site in sorted(self.sites)}

    def save(self, path: str | Path) -> Path:
        """Write the counts to ``path`` (safetensors); written to a temporary file, then renamed."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {}
        for site, scope in self.keys:
            tensors[f"{site}/{scope}/active"] = self.active[site, scope].detach().to("cpu", torch.int64).contiguous()
            tensors[f"{site}/{scope}/tokens"] = self.tokens[site, scope].detach().to("cpu", torch.int64).contiguous()
            for kind, held in zip(MOMENT_TENSORS, self._moments()):
                tensors[f"{site}/{scope}/{kind}"] = held[site, scope].detach().to("cpu", torch.float64).contiguous()
        meta = {
            "model": self.model,
            "domain": self.domain,
            "samples": str(int(self.samples)),
            "skipped": _dumps(self.skipped),
            "sites": _dumps({name: info.to_dict() for name, info in self.sites.items()}),
            "settings": _dumps(self.settings),
            "versions": _dumps(self.versions),
        }
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        _write_safetensors(tensors, meta, tmp)
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> Counts:
        """Read a counts file, checking its metadata, keys and shapes."""
        path = Path(path)
        if not path.is_file():
            raise CountsError(f"counts file not found: {path}")
        try:
            with safe_open(str(path), framework="pt") as handle:
                meta = handle.metadata() or {}
                tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118 (a safetensors handle, not a dict)
        except Exception as exc:  # safetensors raises its own (non-exported) error types
            raise CountsError(f"{path}: not a readable safetensors file ({exc})") from exc
        missing = [key for key in METADATA_KEYS if key not in meta]
        if missing:
            raise CountsError(f"{path}: metadata lacks {missing}; expected {list(METADATA_KEYS)}")
        parsed = {key: _loads(meta[key], path, key) for key in ("skipped", "sites", "settings", "versions")}
        try:
            samples = int(meta["samples"])
        except ValueError:
            raise CountsError(f"{path}: metadata 'samples' is not an integer: {meta['samples']!r}") from None
        held: dict[str, dict] = {kind: {} for kind in (*COUNT_TENSORS, *MOMENT_TENSORS)}
        for key, tensor in tensors.items():
            parts = key.rsplit("/", 2)
            if len(parts) != 3 or parts[2] not in held:
                raise CountsError(f"{path}: unexpected tensor '{key}'; expected '{{site}}/{{scope}}/{'|'.join(held)}'")
            held[parts[2]][parts[0], parts[1]] = tensor
        active, tokens = held["active"], held["tokens"]
        moments = [held[kind] or None for kind in MOMENT_TENSORS]
        if not active:
            raise CountsError(f"{path}: holds no counts tensors")
        sites = parsed["sites"]
        if not isinstance(sites, dict):
            raise CountsError(f"{path}: metadata 'sites' must be a JSON object")
        return cls(
            model=meta["model"],
            domain=meta["domain"],
            sites={name: _site_info(info, path, name) for name, info in sites.items()},
            active=active,
            tokens=tokens,
            samples=samples,
            skipped=parsed["skipped"],
            settings=parsed["settings"],
            versions=parsed["versions"],
            source=str(path),
            sums=moments[0],
            squares=moments[1],
            maxima=moments[2],
        )

    def _moments(self) -> tuple[dict, ...]:
        """``(sums, squares, maxima)``, or nothing for counts without moments."""
        return (self.sums, self.squares, self.maxima) if self.has_moments else ()


def merge(parts: Sequence[Counts]) -> Counts:
    """Sum counts of one model and domain (e.g. shards); refuse parts that do not fit together.

    The merged ``settings`` record each part's source, sample count and settings; versions that
    differ between parts are kept as ``"mixed: a, b"``.
    """
    if not parts:
        raise CountsError("nothing to merge: no counts given")
    first = parts[0]
    names = [part.source or f"part {i}" for i, part in enumerate(parts)]
    for name, part in zip(names[1:], parts[1:]):
        for what, mine, theirs in (
            ("model", part.model, first.model),
            ("domain", part.domain, first.domain),
            ("sites", part.sites, first.sites),
            ("(site, scope) tensors", part.keys, first.keys),
        ):
            if mine != theirs:
                raise CountsError(f"cannot merge {name} with {names[0]}: {what} differ ({mine} vs {theirs})")
    active = {key: sum(part.active[key].to(torch.int64) for part in parts) for key in first.keys}
    tokens = {key: sum(part.tokens[key].to(torch.int64) for part in parts) for key in first.keys}
    with_moments = [part.has_moments for part in parts]
    if any(with_moments) and not all(with_moments):
        lacking = [name for name, has in zip(names, with_moments) if not has]
        raise CountsError(f"cannot merge counts with and without activation moments: {lacking} hold counts only")
    moments = [None, None, None]
    if all(with_moments):
        moments = [
            {key: sum(part.sums[key] for part in parts) for key in first.keys},
            {key: sum(part.squares[key] for part in parts) for key in first.keys},
            {key: torch.stack([part.maxima[key] for part in parts]).amax(0) for key in first.keys},
        ]
    versions = {}
    for package in sorted({p for part in parts for p in part.versions}):
        seen = sorted({str(part.versions.get(package, "unknown")) for part in parts})
        versions[package] = seen[0] if len(seen) == 1 else "mixed: " + ", ".join(seen)
    return Counts(
        model=first.model,
        domain=first.domain,
        sites=dict(first.sites),
        active=active,
        tokens=tokens,
        samples=sum(part.samples for part in parts),
        skipped=[entry for part in parts for entry in part.skipped],
        settings={
            "merged": [
                {"source": name, "samples": part.samples, "settings": part.settings} for name, part in zip(names, parts)
            ]
        },
        versions=versions,
        source=", ".join(names),
        sums=moments[0],
        squares=moments[1],
        maxima=moments[2],
    )


def mean_activations(
    counts: Sequence[Counts], scope: str = "all", domains: Sequence[str] | None = None
) -> dict[str, torch.Tensor]:
    """Per site, the mean activation per neuron (layers x width, float64) over every counted
    position of the ``domains`` given (default: all of ``counts``), pooled: the domains' sums over
    their token counts, so a domain weighs by its positions. The scope is ``scope`` where a site
    has it, else ``all`` (:meth:`Counts.scope_for`); 0 where no position was counted."""
    chosen = [c for c in counts if domains is None or c.domain in domains]
    missing = sorted(set(domains or ()) - {c.domain for c in chosen})
    if missing or not chosen:
        raise CountsError(f"no counts for domain(s) {missing or list(domains or [])}")
    first = chosen[0]
    means = {}
    for site in sorted(first.sites):
        used = first.scope_for(site, scope)
        for part in chosen:
            part._moment(site, used)  # names the file without moments, site or scope
        tokens = sum(part.tokens[site, used] for part in chosen)
        means[site] = _per_token(sum(part.sums[site, used] for part in chosen), tokens)
    return means


def load_many(paths: Sequence[str | Path]) -> dict[str, Counts]:
    """Load counts files and merge those of the same domain; returns ``{domain: counts}``."""
    by_domain: dict[str, list[Counts]] = {}
    for path in paths:
        counts = Counts.load(path)
        by_domain.setdefault(counts.domain, []).append(counts)
    return {domain: parts[0] if len(parts) == 1 else merge(parts) for domain, parts in sorted(by_domain.items())}


def _per_token(values: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """``values`` (layers x width) over each layer's token count, float64; 0 where no token was counted."""
    tokens = tokens.double().unsqueeze(1)
    return torch.where(tokens > 0, values / tokens.clamp(min=1), torch.zeros_like(values, dtype=torch.float64))


def _write_safetensors(tensors: dict[str, torch.Tensor], meta: dict[str, str], path: Path) -> None:
    # safetensors' own writer orders the metadata at random (a hash map); this writes the same
    # format with sorted keys, so equal counts give byte-identical files.
    header: dict = {"__metadata__": meta}
    blobs, offset = [], 0
    for name in sorted(tensors):
        floating = tensors[name].dtype.is_floating_point
        data = tensors[name].numpy().astype("<f8" if floating else "<i8").tobytes()
        header[name] = {
            "dtype": "F64" if floating else "I64",
            "shape": list(tensors[name].shape),
            "data_offsets": [offset, offset + len(data)],
        }
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the format pads the header to 8-byte alignment
    with open(path, "wb") as handle:
        handle.write(struct.pack("<Q", len(text)))
        handle.write(text)
        for data in blobs:
            handle.write(data)


def _site_info(info: object, source: object, site: str) -> SiteInfo:
    try:
        return SiteInfo(
            layers=int(info["layers"]),
            width=int(info["width"]),
            inert_layers=tuple(int(layer) for layer in info.get("inert_layers", ())),
        )
    except (TypeError, KeyError, ValueError, AttributeError):
        raise CountsError(
            f"{source}: site '{site}' needs {{'layers': int, 'width': int, 'inert_layers': [int]}}, got {info!r}"
        ) from None


def _dumps(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _loads(text: str, path: Path, key: str) -> object:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise CountsError(f"{path}: metadata '{key}' is not valid JSON ({exc})") from None
