"""Per-op checks of the torch executor against onnxruntime on hand-built one-node (or few-node) graphs.

Covers the attribute corners the zoo never reaches: asymmetric/auto pads, ceil_mode, Resize coordinate modes,
Pad modes, negative Slice steps, opset-dependent axes (attribute vs input), and more.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from asgnas import AsgnasError
from asgnas.bridge import OnnxModule, supported_ops
from asgnas.ir import lift
from models import ort_run

F32 = TensorProto.FLOAT
RNG = np.random.default_rng(7)


def _rand(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def _i64(*values: int) -> np.ndarray:
    return np.asarray(values, dtype=np.int64)


def _model(op: str, inputs: dict[str, np.ndarray], consts: dict[str, np.ndarray | None], attrs: dict[str, Any],
           opset: int, n_out: int = 1, out_type: int = F32) -> onnx.ModelProto:
    """One ``op`` node; ``inputs`` are graph inputs, ``consts`` initializers (None = omitted optional input)."""
    names = list(inputs) + list(consts)
    node = helper.make_node(op, [n if (n in inputs or consts[n] is not None) else "" for n in names],
                            [f"y{i}" for i in range(n_out)], **attrs)
    graph = helper.make_graph(
        [node], "g",
        [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)
         for n, a in inputs.items()],
        [helper.make_tensor_value_info(f"y{i}", out_type, None) for i in range(n_out)],
        [numpy_helper.from_array(a, n) for n, a in consts.items() if a is not None],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                             ir_version=10 if opset <= 21 else 11)


def _check(proto: onnx.ModelProto, feeds: dict[str, np.ndarray], *, rtol: float = 1e-5) -> None:
    ref = ort_run(proto, feeds)
    module = OnnxModule(lift(proto)).eval()
    with torch.no_grad():
        out = module(**{k: torch.from_numpy(v) for k, v in feeds.items()})
    out = out if isinstance(out, tuple) else (out,)
    assert len(out) == len(ref)
    for got, want in zip(out, ref):
        got = got.numpy()
        assert got.shape == want.shape, (got.shape, want.shape)
        assert got.dtype == want.dtype, (got.dtype, want.dtype)
        if want.dtype.kind == "f":
            scale = max(float(np.max(np.abs(want))) if want.size else 0.0, 1.0)
            np.testing.assert_allclose(got, want, rtol=0, atol=rtol * scale)
        else:
            np.testing.assert_array_equal(got, want)


X4 = _rand(2, 4, 7, 9)

CASES: list[tuple[str, str, dict, dict, dict, int]] = [
    # id, op, inputs, consts, attrs, opset
    ("conv_asym_pads", "Conv", {"x": X4}, {"w": _rand(6, 2, 3, 3), "b": _rand(6)},
     {"group": 2, "pads": [0, 1, 2, 1], "strides": [2, 1]}, 17),
    ("conv_same_upper", "Conv", {"x": X4}, {"w": _rand(5, 4, 4, 3)}, {"auto_pad": "SAME_UPPER", "strides": [2, 2]}, 17),
    ("conv_same_lower", "Conv", {"x": X4}, {"w": _rand(5, 4, 3, 3)},
     {"auto_pad": "SAME_LOWER", "strides": [2, 3]}, 11),
    ("conv_valid", "Conv", {"x": X4}, {"w": _rand(5, 4, 2, 2)}, {"auto_pad": "VALID"}, 17),
    ("conv1d", "Conv", {"x": _rand(2, 3, 10)}, {"w": _rand(4, 3, 3)}, {"pads": [1, 1]}, 17),
    ("conv3d", "Conv", {"x": _rand(1, 2, 4, 5, 6)}, {"w": _rand(3, 2, 2, 3, 3), "b": _rand(3)},
     {"pads": [0, 1, 1, 1, 1, 0]}, 17),
    ("convT_sym", "ConvTranspose", {"x": X4}, {"w": _rand(4, 3, 3, 3), "b": _rand(3)},
     {"strides": [2, 2], "pads": [1, 1, 1, 1], "output_padding": [1, 0]}, 17),
    ("convT_asym_group", "ConvTranspose", {"x": X4}, {"w": _rand(4, 2, 3, 2), "b": _rand(4)},
     {"strides": [2, 3], "pads": [0, 1, 2, 0], "group": 2, "dilations": [1, 2]}, 17),
    ("convT_output_shape", "ConvTranspose", {"x": X4}, {"w": _rand(4, 3, 3, 3)},
     {"strides": [2, 2], "output_shape": [14, 19]}, 17),
    ("convT_same_upper", "ConvTranspose", {"x": X4}, {"w": _rand(4, 3, 4, 4)},
     {"strides": [2, 2], "auto_pad": "SAME_UPPER"}, 17),
    ("gemm_full", "Gemm", {"a": _rand(5, 3)}, {"b": _rand(4, 5), "c": _rand(1, 4)},
     {"alpha": 0.5, "beta": 2.0, "transA": 1, "transB": 1}, 17),
    ("gemm_linear", "Gemm", {"a": _rand(3, 5)}, {"b": _rand(4, 5), "c": _rand(4)}, {"transB": 1}, 17),
    ("gemm_noc", "Gemm", {"a": _rand(3, 5)}, {"b": _rand(5, 4)}, {"alpha": 2.0}, 11),
    ("matmul_batched", "MatMul", {"a": _rand(2, 3, 4, 5)}, {"b": _rand(5, 6)}, {}, 17),
    ("einsum", "Einsum", {"a": _rand(2, 3, 4)}, {"b": _rand(2, 4, 5)}, {"equation": "bij,bjk->bik"}, 17),
    ("maxpool_ceil", "MaxPool", {"x": X4}, {}, {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1}, 17),
    ("maxpool_asym", "MaxPool", {"x": X4}, {}, {"kernel_shape": [3, 2], "pads": [1, 0, 2, 1]}, 17),
    ("maxpool_dil", "MaxPool", {"x": X4}, {}, {"kernel_shape": [2, 2], "dilations": [2, 3], "pads": [1, 1, 1, 1]}, 17),
    ("maxpool_same_lower", "MaxPool", {"x": X4}, {},
     {"kernel_shape": [3, 2], "strides": [2, 2], "auto_pad": "SAME_LOWER"}, 17),
    ("avgpool_exclude_pad", "AveragePool", {"x": X4}, {}, {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}, 17),
    ("avgpool_include_pad", "AveragePool", {"x": X4}, {},
     {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "count_include_pad": 1, "strides": [2, 2]}, 17),
    ("avgpool_asym", "AveragePool", {"x": X4}, {}, {"kernel_shape": [2, 3], "pads": [0, 2, 1, 0]}, 17),
    ("avgpool_asym_incl", "AveragePool", {"x": X4}, {},
     {"kernel_shape": [2, 3], "pads": [0, 2, 1, 0], "count_include_pad": 1}, 17),
    ("avgpool_ceil", "AveragePool", {"x": X4}, {}, {"kernel_shape": [2, 2], "strides": [2, 2], "ceil_mode": 1}, 17),
    ("global_max", "GlobalMaxPool", {"x": X4}, {}, {}, 17),
    ("global_avg", "GlobalAveragePool", {"x": X4}, {}, {}, 17),
    ("bn_eval", "BatchNormalization", {"x": X4},
     {"s": _rand(4), "b": _rand(4), "m": _rand(4), "v": np.abs(_rand(4)) + 0.5}, {"epsilon": 1e-3}, 15),
    ("instnorm", "InstanceNormalization", {"x": X4}, {"s": _rand(4), "b": _rand(4)}, {"epsilon": 1e-4}, 17),
    ("layernorm_axis", "LayerNormalization", {"x": X4}, {"s": _rand(7, 9), "b": _rand(7, 9)}, {"axis": 2}, 17),
    ("layernorm_bcast", "LayerNormalization", {"x": X4}, {"s": _rand(9), "b": None}, {"axis": -2}, 17),
    ("groupnorm_18", "GroupNormalization", {"x": X4}, {"s": _rand(2), "b": _rand(2)}, {"num_groups": 2}, 18),
    ("groupnorm_21", "GroupNormalization", {"x": X4}, {"s": _rand(4), "b": _rand(4)}, {"num_groups": 2}, 21),
    ("lrn_5", "LRN", {"x": X4}, {}, {"size": 5, "alpha": 0.1, "beta": 0.6, "bias": 1.5}, 17),
    ("lrn_odd", "LRN", {"x": X4}, {}, {"size": 3}, 17),
    ("softmax_11", "Softmax", {"x": X4}, {}, {"axis": 2}, 11),
    ("softmax_13", "Softmax", {"x": X4}, {}, {"axis": 1}, 13),
    ("logsoftmax_11", "LogSoftmax", {"x": X4}, {}, {}, 11),
    ("logsoftmax_13", "LogSoftmax", {"x": X4}, {}, {}, 13),
    ("leaky", "LeakyRelu", {"x": X4}, {}, {"alpha": 0.3}, 17),
    ("elu", "Elu", {"x": X4}, {}, {"alpha": 0.7}, 17),
    ("selu", "Selu", {"x": X4}, {}, {}, 17),
    ("celu", "Celu", {"x": X4}, {}, {"alpha": 2.0}, 17),
    ("thresholded", "ThresholdedRelu", {"x": X4}, {}, {"alpha": 0.2}, 17),
    ("hardsigmoid", "HardSigmoid", {"x": X4}, {}, {"alpha": 0.3, "beta": 0.4}, 17),
    ("hardswish", "HardSwish", {"x": X4}, {}, {}, 17),
    ("prelu_chan", "PRelu", {"x": X4}, {"s": _rand(4, 1, 1)}, {}, 17),
    ("prelu_scalar", "PRelu", {"x": X4}, {"s": _rand(1)}, {}, 17),
    ("gelu_none", "Gelu", {"x": X4}, {}, {}, 20),
    ("gelu_tanh", "Gelu", {"x": X4}, {}, {"approximate": "tanh"}, 20),
    ("softplus", "Softplus", {"x": X4 * 10}, {}, {}, 17),
    ("clip_min", "Clip", {"x": X4}, {"lo": np.float32(-0.2), "hi": None}, {}, 13),
    ("clip_both", "Clip", {"x": X4}, {"lo": np.float32(-0.2), "hi": np.float32(0.3)}, {}, 11),
    ("clip_none", "Clip", {"x": X4}, {}, {}, 13),
    ("pow", "Pow", {"x": np.abs(X4) + 0.1}, {"e": np.float32(1.7)}, {}, 17),
    ("div", "Div", {"x": X4}, {"d": _rand(4, 1, 1) + 3}, {}, 17),
    ("sum3", "Sum", {"a": X4}, {"b": _rand(7, 9), "c": _rand(1)}, {}, 17),
    ("mean3", "Mean", {"a": X4}, {"b": _rand(7, 9), "c": _rand(1)}, {}, 17),
    ("max2", "Max", {"a": X4}, {"b": _rand(9)}, {}, 17),
    ("reducemean_attr", "ReduceMean", {"x": X4}, {}, {"axes": [1, -1], "keepdims": 0}, 13),
    ("reducemean_input", "ReduceMean", {"x": X4}, {"a": _i64(2, 3)}, {}, 18),
    ("reducesum_input", "ReduceSum", {"x": X4}, {"a": _i64(1)}, {"keepdims": 0}, 13),
    ("reducesum_all", "ReduceSum", {"x": X4}, {}, {}, 13),
    ("reducesum_noop", "ReduceSum", {"x": X4}, {}, {"noop_with_empty_axes": 1}, 13),
    ("reducemax_11", "ReduceMax", {"x": X4}, {}, {"axes": [0, 2]}, 11),
    ("reducel2", "ReduceL2", {"x": X4}, {}, {"axes": [3]}, 13),
    ("reducelse", "ReduceLogSumExp", {"x": X4}, {}, {"axes": [1]}, 13),
    ("reduceprod", "ReduceProd", {"x": X4}, {}, {"axes": [1, 2], "keepdims": 0}, 13),
    ("resize_nearest_scales", "Resize", {"x": X4}, {"roi": None, "s": np.asarray([1, 1, 2, 1.5], np.float32)},
     {"mode": "nearest"}, 13),
    ("resize_nearest_asym_floor", "Resize", {"x": X4},
     {"roi": None, "s": np.asarray([1, 1, 2, 3], np.float32)},
     {"mode": "nearest", "coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"}, 13),
    ("resize_nearest_ceil_down", "Resize", {"x": X4},
     {"roi": None, "s": None, "sz": _i64(2, 4, 4, 5)},
     {"mode": "nearest", "nearest_mode": "ceil", "coordinate_transformation_mode": "tf_half_pixel_for_nn"}, 13),
    ("resize_nearest_prefer_ceil", "Resize", {"x": X4},
     {"roi": None, "s": np.asarray([1, 1, 0.5, 2], np.float32)},
     {"mode": "nearest", "nearest_mode": "round_prefer_ceil", "coordinate_transformation_mode": "asymmetric"}, 13),
    ("resize_linear_half", "Resize", {"x": X4}, {"roi": None, "s": np.asarray([1, 1, 2, 2], np.float32)},
     {"mode": "linear"}, 13),
    ("resize_linear_align", "Resize", {"x": X4}, {"roi": None, "s": None, "sz": _i64(2, 4, 12, 5)},
     {"mode": "linear", "coordinate_transformation_mode": "align_corners"}, 13),
    ("resize_linear_pytorch", "Resize", {"x": X4}, {"roi": None, "s": None, "sz": _i64(2, 4, 1, 20)},
     {"mode": "linear", "coordinate_transformation_mode": "pytorch_half_pixel"}, 13),
    ("resize_linear_asym_down", "Resize", {"x": X4},
     {"roi": np.zeros(0, np.float32), "s": np.asarray([1, 1, 0.6, 0.7], np.float32)},
     {"mode": "linear", "coordinate_transformation_mode": "asymmetric"}, 11),
    ("resize_cubic", "Resize", {"x": X4}, {"roi": None, "s": np.asarray([1, 1, 2, 1.5], np.float32)},
     {"mode": "cubic"}, 13),
    ("resize_cubic_exclude", "Resize", {"x": X4}, {"roi": None, "s": np.asarray([1, 1, 1.7, 0.8], np.float32)},
     {"mode": "cubic", "exclude_outside": 1, "cubic_coeff_a": -0.5}, 13),
    ("resize_crop", "Resize", {"x": X4},
     {"roi": np.asarray([0, 0, 0.1, -0.2, 1, 1, 0.8, 1.1], np.float32), "s": None, "sz": _i64(2, 4, 5, 6)},
     {"mode": "linear", "coordinate_transformation_mode": "tf_crop_and_resize", "extrapolation_value": 2.0}, 13),
    ("resize_axes_18", "Resize", {"x": X4}, {"roi": None, "s": np.asarray([2, 0.5], np.float32)},
     {"mode": "linear", "axes": [3, 2]}, 18),
    ("resize_not_larger_18", "Resize", {"x": X4}, {"roi": None, "s": None, "sz": _i64(10, 10)},
     {"mode": "nearest", "axes": [2, 3], "keep_aspect_ratio_policy": "not_larger"}, 18),
    ("resize_half_symmetric_19", "Resize", {"x": X4}, {"roi": None, "s": np.asarray([1, 1, 1.5, 0.7], np.float32)},
     {"mode": "linear", "coordinate_transformation_mode": "half_pixel_symmetric"}, 19),
    ("pad_constant", "Pad", {"x": X4}, {"p": _i64(0, 1, 2, 0, 0, 0, 1, 3), "v": np.float32(0.5)}, {}, 13),
    ("pad_negative", "Pad", {"x": X4}, {"p": _i64(0, 0, -2, 1, 0, 0, 1, -3)}, {}, 13),
    ("pad_reflect", "Pad", {"x": X4}, {"p": _i64(0, 1, 2, 3, 0, 2, 1, 4)}, {"mode": "reflect"}, 13),
    ("pad_edge", "Pad", {"x": X4}, {"p": _i64(1, 0, 2, 3, 0, 2, 1, 4)}, {"mode": "edge"}, 13),
    ("pad_wrap", "Pad", {"x": X4}, {"p": _i64(0, 0, 2, 3, 0, 0, 1, 4)}, {"mode": "wrap"}, 19),
    ("pad_axes_18", "Pad", {"x": X4}, {"p": _i64(1, 2, 3, 0), "v": np.float32(-1), "a": _i64(-1, 1)}, {}, 18),
    ("reshape_zero_neg", "Reshape", {"x": X4}, {"s": _i64(0, -1, 9)}, {}, 13),
    ("flatten0", "Flatten", {"x": X4}, {}, {"axis": 0}, 13),
    ("flatten_neg", "Flatten", {"x": X4}, {}, {"axis": -1}, 13),
    ("transpose_default", "Transpose", {"x": X4}, {}, {}, 13),
    ("transpose_perm", "Transpose", {"x": X4}, {}, {"perm": [0, 2, 3, 1]}, 13),
    ("squeeze_attr_11", "Squeeze", {"x": _rand(1, 3, 1, 2)}, {}, {"axes": [0, -2]}, 11),
    ("squeeze_input_13", "Squeeze", {"x": _rand(1, 3, 1, 2)}, {"a": _i64(2)}, {}, 13),
    ("squeeze_all", "Squeeze", {"x": _rand(1, 3, 1, 2)}, {}, {}, 13),
    ("unsqueeze_attr_11", "Unsqueeze", {"x": _rand(3, 2)}, {}, {"axes": [0, -1]}, 11),
    ("unsqueeze_input_13", "Unsqueeze", {"x": _rand(3, 2)}, {"a": _i64(1, 3)}, {}, 13),
    ("concat_neg", "Concat", {"a": X4}, {"b": _rand(2, 4, 7, 2)}, {"axis": -1}, 13),
    ("slice_neg_step", "Slice", {"x": X4},
     {"st": _i64(-1, 6, 0), "en": _i64(-100, 1, 100), "ax": _i64(3, 2, 1), "sp": _i64(-2, -1, 3)}, {}, 13),
    ("slice_clamp", "Slice", {"x": X4}, {"st": _i64(-100, 2), "en": _i64(5, 2**62), "ax": _i64(-1, 2)}, {}, 13),
    ("gather_neg", "Gather", {"x": X4}, {"i": _i64(-1, 0, 2).reshape(3, 1)}, {"axis": 1}, 13),
    ("gather_scalar", "Gather", {"x": X4}, {"i": np.asarray(3, np.int64)}, {"axis": -1}, 13),
    ("gather_elements", "GatherElements", {"x": X4}, {"i": RNG.integers(-4, 4, (2, 4, 3, 9)).astype(np.int64)},
     {"axis": 1}, 13),
    ("expand", "Expand", {"x": _rand(3, 1)}, {"s": _i64(2, 1, 4)}, {}, 13),
    ("tile", "Tile", {"x": _rand(2, 3)}, {"r": _i64(2, 3)}, {}, 13),
    ("where", "Where", {"c": RNG.random((7, 9)) < 0.5}, {"a": X4, "b": _rand(9)}, {}, 13),
    ("trilu", "Trilu", {"x": X4}, {"k": np.asarray(1, np.int64)}, {"upper": 0}, 14),
    ("cumsum_rev_excl", "CumSum", {"x": X4}, {"a": np.asarray(2, np.int64)}, {"exclusive": 1, "reverse": 1}, 14),
    ("depth_to_space_dcr", "DepthToSpace", {"x": _rand(1, 8, 3, 2)}, {}, {"blocksize": 2}, 13),
    ("depth_to_space_crd", "DepthToSpace", {"x": _rand(1, 8, 3, 2)}, {}, {"blocksize": 2, "mode": "CRD"}, 13),
    ("space_to_depth", "SpaceToDepth", {"x": _rand(1, 2, 4, 6)}, {}, {"blocksize": 2}, 13),
    ("dropout_eval", "Dropout", {"x": X4}, {"r": np.float32(0.4)}, {}, 13),
    ("erf", "Erf", {"x": X4}, {}, {}, 13),
    ("mish", "Mish", {"x": X4}, {}, {}, 18),
    ("shrink", "Shrink", {"x": X4}, {}, {"bias": 0.3, "lambd": 0.6}, 13),
    ("hardmax", "Hardmax", {"x": np.round(X4)}, {}, {"axis": 1}, 13),
    ("hardmax_coerced_11", "Hardmax", {"x": X4}, {}, {"axis": 2}, 11),
    ("eye_like_k", "EyeLike", {"x": _rand(4, 6)}, {}, {"k": -1}, 13),
    ("lp_pool_p1_asym", "LpPool", {"x": X4}, {}, {"kernel_shape": [2, 3], "p": 1, "pads": [0, 1, 1, 0],
                                                  "strides": [2, 1]}, 18),
    ("lp_pool_p2_same", "LpPool", {"x": X4}, {}, {"kernel_shape": [3, 3], "auto_pad": "SAME_UPPER"}, 11),
    ("global_lp_pool", "GlobalLpPool", {"x": X4}, {}, {"p": 3}, 13),
    ("rms_norm", "RMSNormalization", {"x": X4}, {"s": _rand(7, 9)}, {"axis": 2, "epsilon": 1e-3}, 23),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_op_matches_onnxruntime(case: tuple) -> None:
    _, op, inputs, consts, attrs, opset = case
    _check(_model(op, inputs, consts, attrs, opset), inputs)


INT_CASES: list[tuple[str, str, dict, dict, dict, int, int, int]] = [
    # id, op, inputs, consts, attrs, opset, n_out, out type
    ("shape_slice", "Shape", {"x": X4}, {}, {"start": 1, "end": -1}, 15, 1, TensorProto.INT64),
    ("size", "Size", {"x": X4}, {}, {}, 13, 1, TensorProto.INT64),
    ("argmax_last", "ArgMax", {"x": np.round(X4)}, {}, {"axis": 1, "select_last_index": 1}, 13, 1, TensorProto.INT64),
    ("argmin", "ArgMin", {"x": X4}, {}, {"axis": -1, "keepdims": 0}, 13, 1, TensorProto.INT64),
    ("cast_int", "Cast", {"x": X4 * 5}, {}, {"to": TensorProto.INT32}, 13, 1, TensorProto.INT32),
    ("equal", "Equal", {"a": _i64(1, 2, 3)}, {"b": _i64(1, 0, 3)}, {}, 13, 1, TensorProto.BOOL),
    ("less", "Less", {"a": X4}, {"b": _rand(9)}, {}, 13, 1, TensorProto.BOOL),
    ("greater", "Greater", {"a": X4}, {"b": np.float32(0.1)}, {}, 13, 1, TensorProto.BOOL),
    ("div_int", "Div", {"a": _i64(7, -7, 9, -9)}, {"b": _i64(2, 2, -4, -4)}, {}, 13, 1, TensorProto.INT64),
    ("mod_int", "Mod", {"a": _i64(7, -7, 9, -9)}, {"b": _i64(3, 3, -4, 4)}, {}, 13, 1, TensorProto.INT64),
    ("range", "Range", {"s": np.asarray(2, np.int64)}, {"l": np.asarray(11, np.int64), "d": np.asarray(3, np.int64)},
     {}, 13, 1, TensorProto.INT64),
    ("const_of_shape", "ConstantOfShape", {"s": _i64(2, 3)}, {},
     {"value": numpy_helper.from_array(np.asarray([4], np.int32))}, 13, 1, TensorProto.INT32),
    ("is_inf", "IsInf", {"x": np.asarray([1.0, np.inf, -np.inf, np.nan, 0.0], np.float32)}, {}, {}, 13, 1,
     TensorProto.BOOL),
    ("is_inf_negative", "IsInf", {"x": np.asarray([1.0, np.inf, -np.inf, 0.0], np.float32)}, {},
     {"detect_positive": 0}, 13, 1, TensorProto.BOOL),
    ("eye_like_int", "EyeLike", {"x": _rand(3, 5)}, {}, {"dtype": TensorProto.INT32, "k": 2}, 13, 1,
     TensorProto.INT32),
]


@pytest.mark.parametrize("case", INT_CASES, ids=[c[0] for c in INT_CASES])
def test_typed_op_matches_onnxruntime(case: tuple) -> None:
    _, op, inputs, consts, attrs, opset, n_out, out_type = case
    _check(_model(op, inputs, consts, attrs, opset, n_out, out_type), inputs)


SPLITS = [
    ("split_attr_11", {"axis": 1, "split": [1, 3]}, {}, 11, 2),
    ("split_input_13", {"axis": 3}, {"s": _i64(2, 3, 4)}, 13, 3),
    ("split_equal", {"axis": 1}, {}, 13, 2),
    ("split_num_outputs_18", {"axis": 3, "num_outputs": 4}, {}, 18, 4),
]


@pytest.mark.parametrize("case", SPLITS, ids=[c[0] for c in SPLITS])
def test_split(case: tuple) -> None:
    _, attrs, consts, opset, n_out = case
    _check(_model("Split", {"x": X4}, consts, attrs, opset, n_out), {"x": X4})


def test_bn_training_mode_node_uses_batch_statistics() -> None:
    """A BN node exported with training_mode=1 normalizes with batch statistics even in eval (as onnxruntime)."""
    consts = {"s": _rand(4), "b": _rand(4), "m": _rand(4), "v": np.abs(_rand(4)) + 0.5}
    proto = _model("BatchNormalization", {"x": X4}, consts, {"training_mode": 1, "momentum": 0.8}, 15, n_out=3)
    _check(proto, {"x": X4}, rtol=1e-4)  # outputs 2, 3: the updated running statistics


def test_dynamic_shape_chain() -> None:
    """Shape -> Gather -> Unsqueeze -> Concat -> Reshape computed at run time (legacy exporter pattern)."""
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Gather", ["shape", "zero"], ["batch"], axis=0),
        helper.make_node("Unsqueeze", ["batch", "axes"], ["batch1"]),
        helper.make_node("Concat", ["batch1", "minus1"], ["target"], axis=0),
        helper.make_node("Reshape", ["x", "target"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", F32, ["n", 4, 7, 9])],
        [helper.make_tensor_value_info("y", F32, None)],
        [numpy_helper.from_array(np.asarray(0, np.int64), "zero"), numpy_helper.from_array(_i64(0), "axes"),
         numpy_helper.from_array(_i64(-1), "minus1")],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    _check(proto, {"x": X4})
    _check(proto, {"x": _rand(3, 4, 7, 9)})


def test_unknown_op_fails_at_construction() -> None:
    proto = _model("Relu", {"x": X4}, {}, {}, 17)
    proto.graph.node[0].op_type = "FancyOp"
    proto.graph.node[0].name = "fancy_node"
    with pytest.raises(AsgnasError) as info:
        OnnxModule(lift(proto))
    message = str(info.value)
    assert "fancy_node" in message and "FancyOp" in message
    assert info.value.node == "fancy_node" and info.value.op == "FancyOp"


def test_custom_domain_fails_at_construction() -> None:
    proto = _model("Relu", {"x": X4}, {}, {}, 17)
    proto.graph.node[0].domain = "com.example"
    proto.opset_import.append(helper.make_opsetid("com.example", 1))
    with pytest.raises(AsgnasError, match="com.example"):
        OnnxModule(lift(proto))


def test_unsupported_attribute_fails_at_construction() -> None:
    proto = _model("AveragePool", {"x": X4}, {}, {"kernel_shape": [2, 2], "dilations": [2, 2]}, 19)
    proto.graph.node[0].name = "pool_with_dilation"
    with pytest.raises(AsgnasError, match="pool_with_dilation"):
        OnnxModule(lift(proto))


def test_dead_unknown_op_is_ignored() -> None:
    """Only nodes the outputs depend on are compiled: a dead unsupported node is no error."""
    proto = _model("Relu", {"x": X4}, {}, {}, 17)
    proto.graph.node.append(helper.make_node("FancyOp", ["x"], ["dead"], name="dead"))
    with torch.no_grad():
        out = OnnxModule(lift(proto))(torch.from_numpy(X4))
    np.testing.assert_array_equal(out.numpy(), np.maximum(X4, 0))


def test_supported_ops_cover_the_brief() -> None:
    wanted = """Conv ConvTranspose Gemm MatMul Add Sub Mul Div Pow Sqrt Neg Abs Exp Log Erf Relu LeakyRelu PRelu
    Sigmoid HardSigmoid HardSwish Tanh Gelu Elu Softplus Clip Softmax LogSoftmax BatchNormalization
    InstanceNormalization LayerNormalization GroupNormalization MaxPool AveragePool GlobalAveragePool
    GlobalMaxPool Resize Upsample Pad Reshape Flatten Transpose Squeeze Unsqueeze Concat Split Slice Gather Shape
    Constant ConstantOfShape Expand Tile Cast Identity Dropout ReduceMean ReduceSum ReduceMax Where Equal Less
    Greater Range Einsum""".split()
    assert set(wanted) <= set(supported_ops())


@pytest.mark.parametrize("op, attrs", [("LpPool", {"kernel_shape": [2, 2], "p": 2}), ("GlobalLpPool", {"p": 2})])
def test_lp_pool_of_zeroed_channels_has_zero_gradient(op: str, attrs: dict) -> None:
    """Channels the optimizer zeroed must not turn the gradient into NaN through (sum |x|^p)^(1/p) at 0."""
    x = torch.zeros(1, 2, 4, 4, requires_grad=True)
    OnnxModule(lift(_model(op, {"x": X4[:1, :2, :4, :4]}, {}, attrs, 18)))(x).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), np.zeros((1, 2, 4, 4), np.float32))


def test_dropout_follows_the_module_mode() -> None:
    proto = _model("Dropout", {"x": X4}, {"r": np.float32(0.5)}, {}, 13)
    module = OnnxModule(lift(proto))
    x = torch.from_numpy(np.abs(X4) + 1)
    torch.manual_seed(0)
    train = module.train()(x)
    dropped = train == 0
    assert 0.3 < float(dropped.float().mean()) < 0.7
    torch.testing.assert_close(train[~dropped], 2 * x[~dropped])
    torch.testing.assert_close(module.eval()(x), x)


def test_bn_train_mode_updates_running_stats_like_torch() -> None:
    """ONNX momentum 0.9 == torch momentum 0.1; batch statistics in the forward."""
    stats = {"s": _rand(4), "b": _rand(4), "m": _rand(4), "v": np.abs(_rand(4)) + 0.5}
    module = OnnxModule(lift(_model("BatchNormalization", {"x": X4}, stats, {"momentum": 0.9}, 15))).train()
    bn = torch.nn.BatchNorm2d(4, momentum=0.1).train()
    with torch.no_grad():
        bn.weight.copy_(torch.from_numpy(stats["s"]))
        bn.bias.copy_(torch.from_numpy(stats["b"]))
        bn.running_mean.copy_(torch.from_numpy(stats["m"]))
        bn.running_var.copy_(torch.from_numpy(stats["v"]))
    x = torch.from_numpy(X4)
    torch.testing.assert_close(module(x), bn(x))
    assert set(module.param_for_initializer) == {"s", "b"}
    torch.testing.assert_close(module.stat_for_initializer["m"], bn.running_mean)
    torch.testing.assert_close(module.stat_for_initializer["v"], bn.running_var)


def test_bn_with_computed_statistics_is_not_updated_in_place() -> None:
    """Running statistics that are computed (not constants) are read, never written, in train mode."""
    nodes = [
        helper.make_node("Add", ["m0", "shift"], ["m"]),
        helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"]),
        helper.make_node("Mul", ["m", "two"], ["m2"]),
    ]
    inits = {"m0": _rand(4), "shift": _rand(4), "s": _rand(4), "b": _rand(4), "v": np.abs(_rand(4)) + 0.5,
             "two": np.float32(2.0)}
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", F32, X4.shape)],
                              [helper.make_tensor_value_info("y", F32, None),
                               helper.make_tensor_value_info("m2", F32, None)],
                              [numpy_helper.from_array(a, n) for n, a in inits.items()])
    module = OnnxModule(lift(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)], ir_version=10)))
    y, m2 = module.train()(torch.from_numpy(X4))
    torch.testing.assert_close(m2, torch.from_numpy(2 * (inits["m0"] + inits["shift"])))
    want = torch.nn.functional.batch_norm(torch.from_numpy(X4), None, None, torch.from_numpy(inits["s"]),
                                          torch.from_numpy(inits["b"]), True)
    torch.testing.assert_close(y, want)
