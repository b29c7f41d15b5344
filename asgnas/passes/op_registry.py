"""The operator registry: per ONNX op type, everything asgnas knows of it, in one entry (``OPS[op]``).

``describe_op("Conv")`` (and ``asgnas-opt --explain-op Conv``) answers "what does asgnas do with op X?":
- ``channels`` (``Channels``): how the pruning analysis relates the op's channel axes, what a removed channel
  holds after it (its zero rule), how construction rewrites it, or why the analysis refuses it;
- ``erasing`` (``OpInfo``): what the erasing analysis needs (maps 0 to 0?, which inputs scale or shift, channel
  role after a Concat);
- ``macs``: how the ``cost`` pass counts its multiply-accumulates;
- ``executes``: whether ``train`` can run it (the bridge's executor has a builder for it);
- ``why_not``: for an op that carries channel groups, why one of the above is missing.

Design: this module is data and sits *below* the modules that implement the rules. It names each rule
(``"conv"``, ``"channel_stem"``), and each table module turns the names into its table, as a view of ``OPS``:
``pruning/rules.py: CHANNEL_RULES`` (``analyze_<name>`` functions of ``rules_*.py``, its ``ZERO_RULES``
catalogue over ``zeros.py``, ``rewrite_<name>`` functions), ``erasing/ops.py: OP_TABLE`` (``zp`` predicates by name),
``cost.py: MAC_RULES`` (``MAC_COUNTERS``). So every table module imports this one and never the reverse (no
import circle through the ``pruning``/``erasing`` packages), and a misspelt rule name fails at import. The
executor (``asgnas/bridge``, a higher layer) keeps its own ``BUILDERS``; ``tests/passes/test_op_tables.py`` checks
that ``executes`` says exactly which ops have one, and that every op with prune groups is executable, costed and
zero-checked, or says here why not.

Ops missing from ``OPS`` (and ops outside the default domain) are unknown: pruning pins every axis they touch,
erasing makes them a boundary, ``cost`` counts one operation per output element, ``train`` refuses them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Channels:
    """The pruning analysis' rule for an op (``pruning/rules.py`` builds ``OpRule``s from it)."""

    analyze: str  # ``analyze_<analyze>`` in ``pruning/rules_*.py``: the relations between the op's axes
    zero: str | None  # a key of ``rules.ZERO_RULES``: a removed channel's value after the op; None: not known
    rewrite: str | None = None  # ``rewrite_<rewrite>`` in ``pruning/rewrites.py``: construction's update of the node
    #: output axis i lines up with input axis i (numpy broadcasting from the right): the zero rule runs once per
    #: live output axis
    aligned: bool = True
    #: why the analysis pins every output axis (no removable channel group runs through the op); None: it carries
    refused: str | None = None

    @property
    def carries_channels(self) -> bool:
        return self.refused is None


@dataclass(frozen=True)
class OpInfo:
    """What the erasing analysis needs to know of an op (spec 2.2), read through ``erasing/ops.py: op_info``.

    - ``joint``: how the op combines several *data* inputs. ``"sum"``: every operand may be erased (Add, Sum);
      ``"sub"``: only operand 1 (Sub: x - 0 == x); ``"concat"``: any operand, with consumer column removal (the
      Concat's channel path is checked separately, see ``erasing/channels.py``). An op with >= 2 data inputs and
      no ``joint`` is a *boundary* (Mul, MatMul of two activations, Where, ...): a singleton segment whose
      producers are not removable.
    - ``zp``: zero-preserving, f(0) == 0 for the data input, whatever its constant inputs; a string names the
      predicate (``erasing/ops.py: ZP_PREDICATES``) for ops where that depends on attributes or constant inputs.
      For ops with additive constant operands (``add_slots``) that also needs those operands absent or zero,
      checked by the caller.
    - ``mul_slots`` / ``add_slots``: non-data operands that scale / shift the output (Conv weight / bias, BN scale
      / bias, the constant of an ``Add(x, c)``). All-zero ``mul`` and ``add`` operands make the output zero for
      any input (``kill``); zero ``add`` operands alone make a zero input give a zero output.
    - ``param_slots``: further trainable operands (PRelu slope). Trainable variables are float initializers in
      ``mul_slots + add_slots + param_slots``; ``stat_slots`` are non-trainable float state removed with the op
      (BN running statistics).
    - ``absorbing``: data slots where a zero operand forces a zero output (Mul, MatMul); used when a boundary op
      is starved by the death of one operand.
    - ``shape_only``: the output depends on the input's shape, not its values (Shape, Size): such readers are
      side-chain (non-data) nodes.
    - ``channel``: role on the channel path after a Concat joint (spec 2.4 Z3 / spec 4 pass 2):
      ``"transparent"`` (acts per channel and maps zero to zero; needs nothing), ``"reduce"`` (reduces other
      axes), ``"affine"`` (per-channel constants that must be sliced, additive ones join the structure as
      auxiliary slices), ``"flatten"`` (channel -> block of columns), ``"stem"`` (contracts the channels: its
      input columns go), ``"concat"`` (nested Concat: offset), ``""`` (cannot carry a removed channel range: the
      Concat is not an erase-joint).
    """

    joint: str = ""
    zp: bool | str = False
    mul_slots: tuple[int, ...] = ()
    add_slots: tuple[int, ...] = ()
    param_slots: tuple[int, ...] = ()
    stat_slots: tuple[int, ...] = ()
    absorbing: tuple[int, ...] = ()
    shape_only: bool = False
    channel: str = ""


@dataclass(frozen=True)
class OpSpec:
    """One op type: see the module docstring."""

    channels: Channels | None  # None: unknown to the pruning analysis (pins every axis it touches)
    erasing: OpInfo | None  # None: unknown to erasing (a boundary)
    macs: str | None  # a key of ``cost.MAC_COUNTERS``; None: the default, one per output element
    executes: bool = True
    #: why an op that carries channel groups lacks one of "zero", "erasing", "macs", "executes"
    why_not: dict[str, str] = field(default_factory=dict)

    @property
    def carries_channels(self) -> bool:
        return self.channels is not None and self.channels.carries_channels


OPS: dict[str, OpSpec] = {}


def _declare(ops: str, channels: Channels | None, erasing: OpInfo | None, macs: str | None, executes: bool = True,
             why_not: dict[str, str] | None = None) -> None:
    """Ops that asgnas treats alike in every table."""
    for op in ops.split():
        if op in OPS:
            raise ValueError(f"op {op} declared twice")
        OPS[op] = OpSpec(channels, erasing, macs, executes, dict(why_not or {}))


TRANSPARENT = OpInfo(zp=True, channel="transparent")  # per element or per channel, 0 -> 0
PRESERVES_ZERO = OpInfo(zp=True)  # 0 -> 0, no channel role after a Concat
CHANGES_ZERO = OpInfo()  # f(0) != 0 (or not known to be 0)
AFFINE_STEM = OpInfo(zp=True, mul_slots=(1,), add_slots=(2,), absorbing=(0, 1), channel="stem")
FLATTEN = OpInfo(zp=True, channel="flatten")
REDUCE = OpInfo(zp=True, channel="reduce")
SHAPE_ONLY = OpInfo(shape_only=True)

#: the analysis' refusals (``Channels.refused``)
FIXED_SIZE = "makes a tensor of fixed size: it can never shrink"
BY_POSITION = ("fills a tensor of its input's shape by position or at random: removing a channel of either side "
               "is no slice of the other")
RANDOM = "its values are random, so a trained model could never be checked equal to onnxruntime's"

# --- element-wise: ops, channels (analyze, zero[, rewrite]), erasing, MACs ----------------------------------------
_declare("Relu LeakyRelu Elu Celu Selu ThresholdedRelu HardSwish Tanh Softsign Mish Gelu Erf Sqrt Neg Abs Sign Sin "
         "Floor Ceil Round", Channels("unary", "unary"), TRANSPARENT, "output_elements")
_declare("Sigmoid HardSigmoid Softplus Exp Log Reciprocal Cos", Channels("unary", "unary"), CHANGES_ZERO,
         "output_elements")
_declare("Shrink", Channels("unary", "unary"), OpInfo(zp="shrink", channel="transparent"), "output_elements")
_declare("Identity Cast", Channels("unary", "first"), TRANSPARENT, "none")
_declare("Dropout", Channels("unary", "dropout"), TRANSPARENT, "none")
_declare("Not", Channels("unary", "not"), CHANGES_ZERO, "output_elements")
_declare("Add", Channels("elementwise", "add"), OpInfo(joint="sum", zp=True, add_slots=(0, 1), channel="affine"),
         "output_elements")
_declare("Sum", Channels("elementwise", "add"), OpInfo(joint="sum", zp=True, add_slots=tuple(range(16))),
         "output_elements")
_declare("Sub", Channels("elementwise", "sub"), OpInfo(joint="sub", zp=True, add_slots=(0, 1), channel="affine"),
         "output_elements")
_declare("Mul", Channels("elementwise", "mul"),
         OpInfo(zp=True, mul_slots=(0, 1), absorbing=(0, 1), channel="affine"), "output_elements")
_declare("Div", Channels("elementwise", "div"), OpInfo(zp="div", absorbing=(0,), channel="affine"), "output_elements")
_declare("Pow", Channels("elementwise", "pow"), OpInfo(zp="pow"), "output_elements")
_declare("PRelu", Channels("elementwise", "prelu"), OpInfo(zp=True, param_slots=(1,), channel="affine"),
         "output_elements")
_declare("Clip", Channels("elementwise", "clip"), OpInfo(zp="clip", channel="transparent"), "output_elements")
for _op, _zero in (("Max", "max"), ("Min", "min"), ("Mean", "mean"), ("Where", "where"), ("Equal", "equal"),
                   ("Less", "less"), ("Greater", "greater"), ("LessOrEqual", "less_or_equal"),
                   ("GreaterOrEqual", "greater_or_equal"), ("And", "and"), ("Or", "or"), ("Xor", "xor"),
                   ("IsNaN", "finite"), ("IsInf", "finite")):
    _declare(_op, Channels("elementwise", _zero), CHANGES_ZERO, "output_elements")
_declare("Mod", Channels("elementwise", None), CHANGES_ZERO, "output_elements",
         why_not={"zero": "Mod(x, 0) for a removed divisor channel is undefined in ONNX"})

# --- normalizations ----------------------------------------------------------------------------------------------
# BN(0) = bias - mean * scale / sqrt(var + eps): not zero-preserving even with a zero bias, zero once scale and bias
# are zero (``kill``); IN/LN/GN(0) = bias
_declare("BatchNormalization", Channels("batchnorm", "norm"),
         OpInfo(mul_slots=(1,), add_slots=(2,), stat_slots=(3, 4), channel="affine"), "output_elements")
_declare("InstanceNormalization", Channels("instancenorm", "norm"),
         OpInfo(zp=True, mul_slots=(1,), add_slots=(2,), channel="affine"), "output_elements")
_declare("GroupNormalization", Channels("groupnorm", "norm", rewrite="groupnorm"),
         OpInfo(zp=True, mul_slots=(1,), add_slots=(2,)), "output_elements")
_declare("LayerNormalization", Channels("layernorm", None, aligned=False),
         OpInfo(zp=True, mul_slots=(1,), add_slots=(2,)), "output_elements",
         why_not={"zero": "normalizes over the channel axis too: a removed channel's output depends on the rest"})
_declare("RMSNormalization", Channels("rmsnorm", "rmsnorm", aligned=False),
         OpInfo(zp=True, mul_slots=(1,)), "output_elements")  # x / rms(x) * scale: 0 -> 0, no bias
_declare("Softmax LogSoftmax Hardmax", Channels("softmax", "softmax"), CHANGES_ZERO, "output_elements")

# --- stems (trainable, contract the channel axis) and spatial ops ----------------------------------------------
_declare("Conv", Channels("conv", "channel_stem", rewrite="conv"), AFFINE_STEM, "conv")
_declare("ConvTranspose", Channels("conv_transpose", "channel_stem"), AFFINE_STEM, "conv_transpose")
_declare("Gemm", Channels("gemm", "gemm"),
         OpInfo(zp=True, mul_slots=(0, 1), add_slots=(2,), absorbing=(0, 1), channel="stem"), "gemm")
_declare("MatMul", Channels("matmul", "matmul"), OpInfo(zp=True, mul_slots=(0, 1), absorbing=(0, 1), channel="stem"),
         "matmul")
_declare("MaxPool", Channels("pool", "first"), TRANSPARENT, "pool")
_declare("AveragePool", Channels("pool", "avgpool"), TRANSPARENT, "pool")
_declare("LpPool", Channels("pool", "lppool"), TRANSPARENT, "pool")
_declare("GlobalMaxPool GlobalAveragePool", Channels("pool", "first"), TRANSPARENT, "input_elements")
_declare("GlobalLpPool", Channels("pool", "lppool"), TRANSPARENT, "input_elements")
_declare("Resize", Channels("resize", "resize", rewrite="resize"), OpInfo(zp="resize", channel="transparent"),
         "output_elements")
_declare("Upsample", Channels("resize", "resize", rewrite="resize"), TRANSPARENT, "output_elements")

# --- reductions ------------------------------------------------------------------------------------------------
_declare("ReduceSum ReduceMax ReduceMin ReduceL1 ReduceL2 ReduceSumSquare", Channels("reduce", "reduce", aligned=False),
         REDUCE, "input_elements")
_declare("ReduceMean", Channels("reduce", "reduce", rewrite="reduce_mean", aligned=False), REDUCE, "input_elements")
_declare("ReduceProd", Channels("reduce", "reduce", aligned=False), PRESERVES_ZERO, "input_elements")
_declare("ReduceLogSum ReduceLogSumExp", Channels("reduce", "reduce", aligned=False), CHANGES_ZERO, "input_elements")
_declare("ArgMax ArgMin", Channels("argreduce", None, aligned=False), CHANGES_ZERO, "input_elements",
         why_not={"zero": "an index: which position wins depends on the kept channels' values"})

# --- data movement ---------------------------------------------------------------------------------------------
_declare("Pad", Channels("pad", "pad"), OpInfo(zp="pad", channel="transparent"), "none")
_declare("Concat", Channels("concat", "concat"), OpInfo(joint="concat", channel="concat"), "none")
_declare("Split", Channels("split", "first", rewrite="split", aligned=False), PRESERVES_ZERO, "none")
_declare("Slice", Channels("slice", "first", rewrite="slice"), TRANSPARENT, "none")
_declare("Gather", Channels("gather", "gather", rewrite="gather", aligned=False), PRESERVES_ZERO, "none")
_declare("Transpose", Channels("transpose", "transpose"), PRESERVES_ZERO, "none")
_declare("Reshape", Channels("reshape", "first", rewrite="reshape", aligned=False), FLATTEN, "none")
_declare("Flatten", Channels("reshape", "first", aligned=False), FLATTEN, "none")
_declare("Squeeze Unsqueeze", Channels("reshape", "first", aligned=False), PRESERVES_ZERO, "none")
_declare("Expand", Channels("expand", "expand", rewrite="expand"), PRESERVES_ZERO, "none")
_declare("Tile", Channels("tile", "first"), PRESERVES_ZERO, "none")

# --- constants and generators ----------------------------------------------------------------------------------
_declare("Constant", Channels("none", None, aligned=False), None, "none",
         why_not={"zero": "no input: its channels are sliced like an initializer's, there is no f(removed input)",
                  "erasing": "erasing's dataflow folds Constant outputs like initializers"})
_declare("Shape Size", Channels("fresh", None, aligned=False, refused=FIXED_SIZE), SHAPE_ONLY, "none")
_declare("ConstantOfShape Range", Channels("fresh", None, aligned=False, refused=FIXED_SIZE), CHANGES_ZERO, "none")
_declare("RandomNormal RandomUniform", Channels("fresh", None, aligned=False, refused=FIXED_SIZE), None, "none",
         executes=False, why_not={"executes": RANDOM})
_declare("EyeLike", Channels("shaped_like", None, aligned=False, refused=BY_POSITION), SHAPE_ONLY, "none")
_declare("RandomNormalLike RandomUniformLike", Channels("shaped_like", None, aligned=False, refused=BY_POSITION),
         SHAPE_ONLY, "none", executes=False, why_not={"executes": RANDOM})

# --- known to erasing and the executor only: the pruning analysis pins the axes they touch -----------------------
_declare("Tan Atan", None, TRANSPARENT, None)
_declare("Sinh Asin Asinh Atanh", None, TRANSPARENT, None, executes=False)
_declare("GatherElements DepthToSpace SpaceToDepth CumSum Trilu LRN", None, PRESERVES_ZERO, None)
_declare("GatherND Compress", None, PRESERVES_ZERO, None, executes=False)
_declare("NonZero Einsum", None, CHANGES_ZERO, None)
_declare("Cosh Acos Acosh OneHot TopK BitShift", None, CHANGES_ZERO, None, executes=False)
_declare("CastLike", None, None, None)


def describe_op(op: str) -> dict[str, Any]:
    """What asgnas does with ``op`` (default domain), JSON-able; an unknown op says so."""
    spec = OPS.get(op)
    if spec is None:
        return {"op": op, "known": False,
                "summary": "unknown: pruning pins every axis it touches, erasing makes it a boundary, cost counts "
                           "one operation per output element, train refuses it"}
    return {
        "op": op,
        "known": True,
        "channels": None if spec.channels is None else {**asdict(spec.channels),
                                                        "carries_channels": spec.channels.carries_channels},
        "erasing": None if spec.erasing is None else asdict(spec.erasing),
        "macs": spec.macs or "output_elements (default)",
        "executes": spec.executes,
        "why_not": dict(spec.why_not),
    }


def explain_op(op: str) -> str:
    """``describe_op`` as text, one aspect a line (``asgnas-opt --explain-op``)."""
    info = describe_op(op)
    if not info["known"]:
        return f"{op}: {info['summary']}"
    channels, erasing = info["channels"], info["erasing"]
    if channels is None:
        pruning = "unknown: every axis it touches is pinned"
    elif channels["refused"]:
        pruning = f"refused ({channels['refused']}), rule analyze_{channels['analyze']}"
    else:
        zero = channels["zero"] or f"unknown ({info['why_not'].get('zero', '')})"
        if zero == "unary":
            zero = f"unary (f(0) is zeros.py: UNARY[{op!r}])"
        rewrite = f", rewrite rewrite_{channels['rewrite']}" if channels["rewrite"] else ""
        pruning = f"rule analyze_{channels['analyze']}, zero {zero}{rewrite}, aligned={channels['aligned']}"
    if erasing is None:
        erase = info["why_not"].get("erasing") or "unknown: a boundary"
    else:
        erase = ", ".join(f"{k}={_depends(v) if k == 'zp' else v}" for k, v in erasing.items()
                          if v != getattr(OpInfo(), k)) or "zp=False"
    runs = "yes" if info["executes"] else f"no{_reason(info, 'executes')}"
    return "\n".join([op, f"  pruning:  {pruning}", f"  erasing:  {erase}", f"  MACs:     {info['macs']}",
                      f"  train:    {runs}"])


def _depends(zp: bool | str) -> str:
    return f"depends ({zp} in erasing/ops.py: ZP_PREDICATES)" if isinstance(zp, str) else str(zp)


def _zero_preservation(info: OpInfo) -> str:
    if info.shape_only:
        return "shape"
    return "zp if" if isinstance(info.zp, str) else "zp" if info.zp else "not zp"


def _reason(info: dict[str, Any], aspect: str) -> str:
    reason = info["why_not"].get(aspect)
    return f" ({reason})" if reason else ""


def list_ops() -> str:
    """One line per known op: which analyses handle it (``asgnas-opt --list-ops``)."""
    width = max(len(op) for op in OPS)
    lines = [f"{'op':<{width}}  pruning   erasing  MACs             train   (-: unknown there; --explain-op OP)"]
    for op in sorted(OPS):
        spec = OPS[op]
        pruning = "-" if spec.channels is None else "carries" if spec.carries_channels else "refused"
        erasing = "-" if spec.erasing is None else _zero_preservation(spec.erasing)
        lines.append(f"{op:<{width}}  {pruning:<8}  {erasing:<7}  {spec.macs or '(default)':<15}  "
                     f"{'yes' if spec.executes else 'no'}")
    return "\n".join(lines)
