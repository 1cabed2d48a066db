"""Which specs fit Fashion-MNIST (1 grayscale channel, 10 classes, 28x28 images) and how to make one fit.
Plain spec logic, no torch: the app asks it on every edit."""

from __future__ import annotations

from explorer.core.spec import ArchSpec
from explorer.train.data import CLASSES


def check_trainable(spec: ArchSpec) -> None:
    """Fashion-MNIST needs in_chans 1 and 10 classes; raise ValueError naming the field otherwise."""
    problems = []
    if spec.in_chans != 1:
        problems.append(f'in_chans is {spec.in_chans}; Fashion-MNIST images are grayscale: set in_chans to 1')
    if spec.num_classes != len(CLASSES):
        problems.append(f'num_classes is {spec.num_classes}; Fashion-MNIST has {len(CLASSES)} classes')
    if not 16 <= spec.img_size <= 64:
        problems.append(f'img_size is {spec.img_size}; Fashion-MNIST images are 28x28: use 28 or 32 (allowed 16 to 64)')
    if problems:
        raise ValueError('; '.join(problems))


def batch_norm_problem(spec: ArchSpec, batch_size: int) -> str | None:
    """Why a training batch of `batch_size` images cannot pass the spec's BatchNorms, or None. In training a
    BatchNorm needs more than one value per channel (torch raises otherwise): it sees batch x H x W values in a
    stage or before a downsampling, and batch values after the head's pooling (the only order a BatchNorm head
    takes)."""
    grids = spec.grid_sizes()
    seen = []  # (values per channel per image, where)
    if spec.norm == 'batchnorm':
        seen += [(h * w, f'S{i + 1} blocks') for i, (h, w) in enumerate(grids)]
    if spec.downsample_norm == 'batchnorm':
        seen.append((grids[0][0] * grids[0][1], 'the stem'))
        seen += [
            (grids[i - 1][0] * grids[i - 1][1], f'S{i + 1} downsampling')
            for i, st in enumerate(spec.stages)
            if i and st.downsample
        ]
    if spec.head_norm == 'batchnorm':
        seen.append((1, 'the head'))
    few = [(n, where) for n, where in seen if batch_size * n < 2]
    if not few:
        return None
    return (
        f'batch_size {batch_size}: the BatchNorm of {few[0][1]} would see one value per channel in training, '
        'which torch refuses; use a batch size of 2 or more'
    )


PUBLISHED_META = (
    'timm_name',
    'pretrained_tag',
    'top1',
    'params_m',
    'frozen_params_m',
    'gmacs',
    'resolution',
    'source',
    'differs_from_original',
)


def adapt_for_fmnist(spec: ArchSpec | dict, img_size: int = 32) -> tuple[ArchSpec, list[str]]:
    """The same design made trainable on Fashion-MNIST: in_chans 1, num_classes 10, img_size 32 (or 28) and a
    small stem. Staged designs get a 3x3 stem of stride 2 (16x16 tokens at 32x32), or 1 when their downsampling
    leaves no room; isotropic ones (one token grid) a 4x4/4 patchify stem (8x8 tokens, like ViT's 16x16/16 at
    224). Stages, widths, depths and mixers stay as they are.

    Returns (spec, notes): notes say what changed, in words. Raises ValueError when no stem stride fits."""
    spec = spec if isinstance(spec, ArchSpec) else ArchSpec.from_dict(spec)
    if img_size not in (28, 32):
        raise ValueError(f'img_size {img_size} is not offered for Fashion-MNIST; choose 28 or 32')
    n_down = sum(1 for st in spec.stages[1:] if st.downsample)
    ds = spec.downsample.stride**n_down
    options = [(4, 4, 0), (2, 2, 0), (1, 1, 0)] if n_down == 0 else [(3, 2, 1), (3, 1, 1)]
    fit = next((o for o in options if img_size % (o[1] * ds) == 0), None)
    if fit is None:
        raise ValueError(
            f'stages: {n_down} downsampling stages (stride {spec.downsample.stride} each) do not '
            f'divide a {img_size}x{img_size} input; remove a stage or set downsample false on one'
        )
    stem = dict(zip(('kernel_size', 'stride', 'padding'), fit))
    stride = fit[1]
    d = spec.to_dict()
    meta = {k: v for k, v in d.get('meta', {}).items() if k not in PUBLISHED_META}
    meta['notes'] = (
        f'adapted from {spec.name} for Fashion-MNIST: 1 input channel, 10 classes, '
        f'{img_size}x{img_size} input, {fit[0]}x{fit[0]}/{stride} stem'
    )
    name = spec.name if spec.name.endswith('_fmnist') else f'{spec.name}_fmnist'
    d.update(name=name[:100], in_chans=1, num_classes=10, img_size=img_size, stem=stem, meta=meta)
    new = ArchSpec.from_dict(d)
    notes = []
    for key, old, value in (
        ('in_chans', spec.in_chans, 1),
        ('num_classes', spec.num_classes, 10),
        ('img_size', spec.img_size, img_size),
    ):
        if old != value:
            notes.append(f'{key} {old} -> {value}')
    old_stem = spec.stem
    if (old_stem.kernel_size, old_stem.stride, old_stem.padding) != fit:
        notes.append(
            f'stem {old_stem.kernel_size}x{old_stem.kernel_size}/{old_stem.stride} -> {fit[0]}x{fit[0]}/{stride}'
        )
    grids = ' -> '.join(f'{h}x{w}' for h, w in new.grid_sizes())
    if not notes and spec.stem.stride == stride:  # already trainable as it is: keep it untouched
        return spec, [f'already set up for Fashion-MNIST; token grids {grids}']
    notes.append(f'token grids {grids}')
    return new, notes


def scale_command(spec: ArchSpec, spec_file: str, gpus: int = 8, epochs: int = 300) -> str:
    """The shell commands that train `spec` (saved as `spec_file`) with torchrun on `gpus` GPUs per machine: on
    an image folder in ImageNet's layout for an RGB design, on Fashion-MNIST for a grayscale one. Plain text
    (shown in a code box, never as HTML); the file name is quoted for the shell."""
    import shlex

    f = shlex.quote(spec_file)
    out = shlex.quote(spec_file.rsplit('.', 1)[0] + '.safetensors')
    run = f'torchrun --nproc_per_node {gpus} -m explorer train {f}'
    if spec.in_chans == 3:
        batch = 128
        data = (
            f'  --dataset imagefolder --data-dir /data/imagenet --workers 8 \\\n'
            f'  --epochs {epochs} --batch-size {batch} --lr {4e-3 * gpus * batch / 4096:.2g} --amp bf16 '
            f'--aa rand-m9-mstd0.5-inc1 --erase 0.25 \\\n'
        )
        note = (
            "# /data/imagenet holds train/ and val/, one folder per class (ImageNet's layout); the learning rate is\n"
            "# the MetaFormer recipe's 4e-3 at global batch 4096, scaled linearly"
        )
    else:
        batch = 64
        data = f'  --dataset fashion-mnist --epochs 30 --batch-size {batch} \\\n'
        note = '# a grayscale design trains on Fashion-MNIST; set in_chans 3 to train on an image folder'
    return (
        f'# on every machine: install the explorer (README, Install) with a CUDA build of torch\n{note}\n'
        f'# one machine, {gpus} GPUs (--batch-size is per GPU: global batch {gpus} x {batch} = {gpus * batch}):\n'
        f'{run} \\\n{data}  --out {out}\n'
        f'# N machines: the same on each, with a rendezvous on the first (HOST:29500):\n'
        f'torchrun --nnodes N --nproc_per_node {gpus} --rdzv-backend c10d --rdzv-endpoint HOST:29500 \\\n'
        f'  -m explorer train {f} ...\n'
        f'# interrupted (Ctrl-C, a lost node)? the same command with --resume continues where it stopped\n'
        f'# then out as a timm model (timm.create_model) and ONNX:\n'
        f'explorer export {out} --to exported/ --onnx'
    )
