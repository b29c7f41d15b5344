"""``zero-groups``: set a valid subset of removable groups to exactly zero (testing, and users' sanity checks).

    zero-groups{fraction=0.5,seed=0,kind=prune|erase|both,round-to=1|N|auto}   random subset, valid under the oracle
    zero-groups{ids=FILE.json}                                the listed group ids ([...] or {"ids": [...]})

Reads: ``model.analyses["search_space"]`` (required: computed when missing). Writes: the zeroed initializers;
a checkpoint ``group-sparse`` of the result, which becomes ``verify``'s default reference (a slim model is proven
against the model it was built from). Report key ``zero-groups``: the ids zeroed per kind.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from asgnas.errors import AsgnasError
from asgnas.ir import Model
from asgnas.passes.analysis_manager import ALL_ANALYSES, AnalysisManager
from asgnas.passes.base import Option, Pass, PassContext, register_pass
from asgnas.passes.groups import Group, SearchSpace, round_kept_channels, zero_groups
from asgnas.passes.latency import parse_round_to, resolve_round_to
from asgnas.passes.search_space import SEARCH_SPACE_KEY

CHECKPOINT = "group-sparse"


def choose_random(model: Model, space: SearchSpace, fraction: float, seed: int, kind: str) -> list[Group]:
    """Shuffle the removable groups of ``kind`` and keep each one the oracle accepts, up to ``fraction`` of them."""
    from asgnas.passes.hierarchy import build_oracle

    kinds = {"prune", "erase"} if kind == "both" else {kind}
    candidates = [g for g in space.removable() if g.kind in kinds]
    target = round(fraction * len(candidates))
    random.Random(seed).shuffle(candidates)
    oracle = build_oracle(model, space.groups)
    oracle.reset()
    chosen: list[Group] = []
    for group in candidates:
        if len(chosen) == target:
            break
        if oracle.try_remove(group.id):
            chosen.append(group)
    return chosen


def choose_listed(model: Model, space: SearchSpace, path: str) -> list[Group]:
    from asgnas.passes.hierarchy import build_oracle

    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise AsgnasError(f"cannot read group ids from {path}: {err}") from None
    ids = data.get("ids") if isinstance(data, dict) else data
    if not isinstance(ids, list) or not all(isinstance(i, int) for i in ids):
        raise AsgnasError(f"{path}: expected a list of integer group ids or {{\"ids\": [...]}}")
    by_id = space.by_id()
    unknown = [i for i in ids if i not in by_id]
    if unknown:
        raise AsgnasError(f"{path}: unknown group ids {unknown[:10]}")
    fixed = [i for i in ids if not by_id[i].removable]
    if fixed:
        raise AsgnasError(f"{path}: group {fixed[0]} is not removable: {by_id[fixed[0]].reason}")
    oracle = build_oracle(model, space.groups)
    reason = oracle.why_invalid(ids)
    if reason:
        raise AsgnasError(f"{path}: removing these groups leaves an invalid network: {reason}")
    return [by_id[i] for i in ids]


@register_pass
class ZeroGroupsPass(Pass):
    name = "zero-groups"
    summary = "zero a valid random (or listed) subset of removable groups; the result becomes verify's reference"
    options = (
        Option("fraction", float, 0.5, "fraction of the removable groups of `kind` to zero"),
        Option("seed", int, 0, "random seed"),
        Option("kind", str, "both", "which groups", choices=("prune", "erase", "both")),
        Option("ids", str, "", "JSON file with the group ids to zero (overrides fraction/seed/kind)"),
        Option("round-to", parse_round_to, 1, "keep a multiple of this many channels in every channel space (auto: "
               "the multiple the latency model measured fastest, per space)", minimum=1),
    )
    requires = (SEARCH_SPACE_KEY,)
    preserves = ALL_ANALYSES  # zeroing values keeps the structure the analyses describe

    def run(self, model: Model, ctx: PassContext) -> dict[str, Any]:
        if not 0.0 <= self.config["fraction"] <= 1.0:
            raise AsgnasError(f"option 'fraction' must lie in [0, 1], got {self.config['fraction']}")
        space = AnalysisManager(model).get(SEARCH_SPACE_KEY)
        if self.config["ids"]:
            chosen = choose_listed(model, space, self.config["ids"])
        else:
            chosen = choose_random(model, space, self.config["fraction"], self.config["seed"], self.config["kind"])
            multiple = resolve_round_to(model, self.config["round-to"], space)
            chosen = round_kept_channels(space.groups, chosen, multiple)
        zero_groups(model, chosen)
        ctx.checkpoint(CHECKPOINT, model, as_reference=True)
        return {
            "zeroed": sorted(g.id for g in chosen),
            "num_prune": sum(g.kind == "prune" for g in chosen),
            "num_erase": sum(g.kind == "erase" for g in chosen),
        }
