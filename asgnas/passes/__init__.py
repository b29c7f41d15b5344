"""Registered passes. Importing this package registers every built-in pass (none imports torch or onnxruntime
at module level, so listing passes stays fast)."""

from asgnas.passes import cost, dce, shape_infer, verify  # noqa: F401  (registration side effect)
from asgnas.passes import construct_subnet, draw_groups, search_space, untie_aliases, zero_groups  # noqa: F401
from asgnas.passes import erasing, hierarchy, erase_subnet  # noqa: F401
from asgnas.passes import pruning, prune_subnet  # noqa: F401
from asgnas.passes import gates, latency  # noqa: F401
from asgnas.passes.base import PASS_REGISTRY, Option, Pass, PassContext, register_pass
from asgnas.passes.manager import PassManager, parse_pipeline
from asgnas.passes.verify import VerifyFailed

__all__ = [
    "PASS_REGISTRY",
    "Option",
    "Pass",
    "PassContext",
    "PassManager",
    "VerifyFailed",
    "parse_pipeline",
    "register_pass",
]
