"""Resize and Upsample builders."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from asgnas.errors import AsgnasError

from .registry import BUILDERS, BuildContext, OpFn, positive_axis


# --------------------------------------------------------------------------------------------------
# resize


def _source_coords(ctm: str, out_size: int, in_size: int, scale: float, device: torch.device,
                   roi: tuple[float, float] | None) -> Tensor:
    """Input coordinate of every output index (ONNX Resize coordinate_transformation_mode), in float64."""
    x = torch.arange(out_size, dtype=torch.float64, device=device)
    if ctm == "half_pixel":
        return (x + 0.5) / scale - 0.5
    if ctm == "half_pixel_symmetric":
        adjustment = out_size / (scale * in_size)
        offset = in_size / 2 * (1 - adjustment)
        return offset + (x + 0.5) / scale - 0.5
    if ctm == "pytorch_half_pixel":
        return (x + 0.5) / scale - 0.5 if out_size > 1 else torch.zeros_like(x)
    if ctm == "align_corners":
        return x * ((in_size - 1) / (out_size - 1)) if out_size > 1 else torch.zeros_like(x)
    if ctm == "asymmetric":
        return x / scale
    if ctm == "tf_half_pixel_for_nn":
        return (x + 0.5) / scale
    if ctm == "tf_crop_and_resize":
        start, end = roi
        if out_size > 1:
            return start * (in_size - 1) + x * ((end - start) * (in_size - 1) / (out_size - 1))
        return torch.full_like(x, 0.5 * (start + end) * (in_size - 1))
    raise ValueError(ctm)


def _along(weights: Tensor, axis: int, rank: int, dtype: torch.dtype) -> Tensor:
    shape = [1] * rank
    shape[axis] = -1
    return weights.to(dtype).reshape(shape)


def _resize_axis(x: Tensor, axis: int, out_size: int, scale: float, cfg: dict,
                 roi: tuple[float, float] | None) -> Tensor:
    in_size = x.shape[axis]
    coords = _source_coords(cfg["ctm"], out_size, in_size, scale, x.device, roi)
    mode = cfg["mode"]
    outside = None
    if cfg["ctm"] == "tf_crop_and_resize":
        outside = (coords < 0) | (coords > in_size - 1)
    if mode == "nearest":
        nearest = cfg["nearest_mode"]
        fl = torch.floor(coords)
        if nearest == "floor":
            idx = fl
        elif nearest == "ceil":
            idx = torch.ceil(coords)
        elif nearest == "round_prefer_ceil":
            idx = torch.where(coords - fl == 0.5, fl + 1, torch.round(coords))
        else:  # round_prefer_floor
            idx = torch.where(coords - fl == 0.5, fl, torch.round(coords))
        y = x.index_select(axis, idx.clamp(0, in_size - 1).long())
    elif mode == "linear":
        if outside is None:
            coords = coords.clamp(0, in_size - 1)
        c = coords.clamp(0, in_size - 1)
        lo = torch.floor(c).long()
        hi = (lo + 1).clamp(max=in_size - 1)
        w_hi = _along(c - lo, axis, x.dim(), x.dtype)
        y = x.index_select(axis, lo) * (1 - w_hi) + x.index_select(axis, hi) * w_hi
    else:  # cubic (Keys kernel with coefficient a)
        a = cfg["cubic_a"]
        fl = torch.floor(coords)
        t = coords - fl
        taps = [((a * (t + 1) - 5 * a) * (t + 1) + 8 * a) * (t + 1) - 4 * a,
                ((a + 2) * t - (a + 3)) * t * t + 1,
                ((a + 2) * (1 - t) - (a + 3)) * (1 - t) * (1 - t) + 1,
                ((a * (2 - t) - 5 * a) * (2 - t) + 8 * a) * (2 - t) - 4 * a]
        positions = [fl.long() + k for k in (-1, 0, 1, 2)]
        if cfg["exclude_outside"]:
            taps = [w * ((p >= 0) & (p < in_size)) for w, p in zip(taps, positions)]
            total = sum(taps)
            taps = [w / total for w in taps]
        y = sum(x.index_select(axis, p.clamp(0, in_size - 1)) * _along(w, axis, x.dim(), x.dtype)
                for w, p in zip(taps, positions))
    if outside is not None and bool(outside.any()):
        y = torch.where(_along(outside, axis, x.dim(), torch.bool), torch.full_like(y, cfg["extrapolation"]), y)
    return y


def _resize_builder(ctx: BuildContext, *, upsample: bool) -> OpFn:
    mode = ctx.attr("mode", "nearest")
    if mode not in ("nearest", "linear", "cubic", "bilinear", "trilinear"):
        raise ctx.error(f"Resize mode {mode!r} is not supported")
    mode = "linear" if mode in ("bilinear", "trilinear") else mode
    legacy = upsample or ctx.opset < 11  # Upsample / Resize-10: asymmetric, nearest rounds down
    cfg = {
        "mode": mode,
        "ctm": "asymmetric" if legacy else ctx.attr("coordinate_transformation_mode", "half_pixel"),
        "nearest_mode": "floor" if legacy else ctx.attr("nearest_mode", "round_prefer_floor"),
        "cubic_a": float(ctx.attr("cubic_coeff_a", -0.75)),
        "exclude_outside": bool(ctx.attr("exclude_outside", 0)),
        "extrapolation": float(ctx.attr("extrapolation_value", 0.0)),
    }
    known = {"half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners", "asymmetric",
             "tf_half_pixel_for_nn", "tf_crop_and_resize"}
    if cfg["ctm"] not in known:
        raise ctx.error(f"coordinate_transformation_mode {cfg['ctm']!r} is not supported")
    policy = ctx.attr("keep_aspect_ratio_policy", "stretch")
    axes_attr = ctx.attr("axes")
    if legacy:
        scales_index, sizes_index, roi_index = 1, 99, 99
        attr_scales = ctx.attr("scales")
    else:
        scales_index, sizes_index, roi_index = 2, 3, 1
        attr_scales = None
    scales_const = ctx.const(scales_index) if attr_scales is None else np.asarray(attr_scales, np.float32)
    if int(ctx.attr("antialias", 0)):
        if scales_const is None or np.any(np.asarray(scales_const) < 1):
            raise ctx.error("Resize with antialias=1 when downsampling is not supported")

    def floats(xs: list, index: int) -> list[float] | None:
        if index == scales_index and scales_const is not None:
            arr = np.asarray(scales_const).reshape(-1)
        elif index >= len(xs) or xs[index] is None:
            return None
        else:
            arr = xs[index].detach().cpu().numpy().reshape(-1)
        return [float(v) for v in arr] if arr.size else None

    sizes_of = ctx.ints(sizes_index)

    def run(xs: list, tr: bool) -> Tensor:
        x = xs[0]
        rank = x.dim()
        axes = list(range(rank)) if axes_attr is None else [positive_axis(int(a), rank) for a in axes_attr]
        in_sizes = [x.shape[a] for a in axes]
        sizes = sizes_of(xs) if sizes_index < 99 else None
        sizes = sizes if sizes else None
        if sizes is not None:
            scales = [o / i for o, i in zip(sizes, in_sizes)]
            if policy != "stretch":
                pick = min if policy == "not_larger" else max
                s = pick(scales)
                scales = [s] * len(axes)
                sizes = [int(math.floor(s * i + 0.5)) for i in in_sizes]  # round half up, as onnxruntime
        else:
            scales = floats(xs, scales_index)
            if scales is None:
                raise AsgnasError("Resize needs scales or sizes")
            # output size = floor(in * scale), evaluated in float32 as onnxruntime does
            sizes = [int(np.float32(i) * np.float32(s)) for i, s in zip(in_sizes, scales)]
        roi = floats(xs, roi_index) if cfg["ctm"] == "tf_crop_and_resize" else None
        y = x
        for k, a in enumerate(axes):
            if sizes[k] == in_sizes[k] and scales[k] == 1.0 and cfg["ctm"] != "tf_crop_and_resize":
                continue  # identity along this axis
            axis_roi = (roi[k], roi[k + len(axes)]) if roi else None
            y = _resize_axis(y, a, sizes[k], scales[k], cfg, axis_roi)
        return y

    return run


BUILDERS["Resize"] = lambda ctx: _resize_builder(ctx, upsample=False)
BUILDERS["Upsample"] = lambda ctx: _resize_builder(ctx, upsample=True)
