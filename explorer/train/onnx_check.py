"""ONNX out of the explorer, checked: torch.onnx's dynamo exporter (batch axis dynamic), then onnxruntime beside
PyTorch on the shipped example images. A design that cannot be exported says which stage's token mixer (and which
operator) stops it: each mixer is exported alone to find it."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from explorer.train.checkpoints import atomic_write

if TYPE_CHECKING:  # torch and onnxruntime are imported where an export runs
    import torch
    import torch.nn as nn

ONNX_RTOL, ONNX_ATOL = 1e-4, 1e-5  # float32 logits; measured differences are ~1e-6 on every mixer
ONNX_MAX_IMAGES = 8  # shipped examples run through both runtimes
EXPORT_BATCH = 2  # the example batch torch.onnx traces with; the check runs another size (batch is dynamic)


# ---- ONNX --------------------------------------------------------------------------------------------------
@dataclass
class OnnxCheck:
    """The ONNX file and how its outputs compared with PyTorch's (onnxruntime, CPU, float32)."""

    ok: bool
    path: str | None = None
    opset: int | None = None
    inputs: str = ''  # what both runtimes ran on
    batch: int = 0  # images in the comparison; the export traced EXPORT_BATCH, the batch axis is dynamic
    max_abs_diff: float | None = None  # max |onnxruntime - torch| over all outputs, in logit units
    rtol: float = ONNX_RTOL
    atol: float = ONNX_ATOL
    error: str | None = None


def onnx_inputs(data_cfg: dict) -> tuple[torch.Tensor, str]:
    """(N, C, H, W) float32 inputs for the comparison and what they are: the shipped examples made for the
    model's channel count (Fashion-MNIST images for grayscale, photos for RGB), preprocessed as the model expects;
    seeded random normal inputs where none fits (other channel counts)."""
    import torch

    from explorer.explain.images import examples_for, load_image
    from explorer.explain.predict import preprocess

    c, h, w = data_cfg['input_size']
    paths = examples_for(c)[:ONNX_MAX_IMAGES] if c in (1, 3) else []
    if not paths:
        gen = torch.Generator().manual_seed(0)
        return torch.randn(EXPORT_BATCH + 1, c, h, w, generator=gen), f'{EXPORT_BATCH + 1} seeded random inputs'
    x = torch.cat([preprocess(load_image(p), data_cfg) for p in paths])
    return x, f'{len(paths)} shipped example images ({", ".join(p.name for p in paths)})'


def export_onnx(
    model: nn.Module, path: Path, data_cfg: dict, rtol: float = ONNX_RTOL, atol: float = ONNX_ATOL
) -> OnnxCheck:
    """Write `model` (eval mode) to `path` with torch.onnx (dynamo exporter; batch axis dynamic), then run the
    file with onnxruntime and compare with PyTorch. Never raises for an export failure: the check says which
    stage's mixer (and op) could not be exported."""
    import numpy as np
    import onnxruntime as ort
    import torch

    x, what = onnx_inputs(data_cfg)
    with torch.no_grad():
        expected = model(x).numpy()
    try:
        program = _to_onnx(model, x[:EXPORT_BATCH].clone())
    except Exception as e:  # torch.export and the ONNX translator raise many types; all mean "cannot export"
        return OnnxCheck(False, inputs=what, error=_explain_failure(model, x, e))
    atomic_write(path, lambda tmp: program.save(str(tmp), external_data=False))
    opset = next((o.version for o in program.model_proto.opset_import if o.domain == ''), None)
    check = OnnxCheck(False, str(path), opset, what, len(x), rtol=rtol, atol=atol)
    try:
        session = ort.InferenceSession(str(path), providers=['CPUExecutionProvider'])
        got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    except Exception as e:  # onnxruntime's own error types (a kernel it lacks, a shape it refuses)
        check.error = f'onnxruntime {ort.__version__} could not run the exported file: {_first_line(e)}'
        return check
    check.max_abs_diff = float(np.abs(got - expected).max())
    check.ok = bool(np.allclose(got, expected, rtol=rtol, atol=atol))
    if not check.ok:
        check.error = f'onnxruntime and PyTorch differ by up to {check.max_abs_diff:.3g} (rtol {rtol}, atol {atol})'
    return check


def _to_onnx(module: nn.Module, x: torch.Tensor):
    import torch

    batch = torch.export.Dim('batch', min=1)  # the file takes any batch size; traced with EXPORT_BATCH
    return torch.onnx.export(
        module,
        (x,),
        dynamo=True,
        verbose=False,
        input_names=['input'],
        output_names=['output'],
        dynamic_shapes=({0: batch},),
    )


def _explain_failure(model: nn.Module, x: torch.Tensor, error: Exception) -> str:
    """Why the export failed, naming the culprit: each stage's token mixer is exported alone on the input it
    sees; the first that fails is named with its reason, else the failure is outside the token mixers."""
    import torch

    seen: dict[int, torch.Tensor] = {}

    def remember(i: int):  # a pre-hook that returns None leaves the input as it is
        return lambda module, args: seen.__setitem__(i, args[0])

    hooks = [stage.blocks[0].token_mixer.register_forward_pre_hook(remember(i)) for i, stage in enumerate(model.stages)]
    try:
        with torch.no_grad():
            model(x[:EXPORT_BATCH])
    finally:
        for h in hooks:
            h.remove()
    for i, stage in enumerate(model.stages):
        mixer = stage.blocks[0].token_mixer
        try:
            _to_onnx(mixer, seen[i])
        except Exception as e:  # as in export_onnx
            name = getattr(mixer, 'mixer_name', type(mixer).__name__)
            return f'stage {i} token mixer {name!r} ({type(mixer).__name__}) cannot be exported to ONNX: {_reason(e)}'
    return f'the model cannot be exported to ONNX (every token mixer exports alone): {_reason(error)}'


def _reason(error: Exception) -> str:
    """The root cause of an exporter error in one line, naming the operator when there is one."""
    root = error
    while root.__cause__ is not None:
        root = root.__cause__
    op = re.search(r"op='([\w.]+)', overload='(\w+)'", str(root))
    if op:
        return f'no ONNX translation for operator {op[1]}.{op[2]} ({_first_line(root)})'
    return f'{type(root).__name__}: {_first_line(root)}'


def _first_line(e: Exception, limit: int = 300) -> str:
    text = next((ln.strip() for ln in str(e).splitlines() if ln.strip()), type(e).__name__)
    return text if len(text) <= limit else text[:limit] + '...'
