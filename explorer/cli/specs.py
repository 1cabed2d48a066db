"""What a SPEC argument can be, in every command: a preset name, a JSON spec file, a MetaFormer Explorer trained
checkpoint (.safetensors with its spec in the header) or a trained model's name (`explorer train` output, the
shipped Fashion-MNIST models)."""

from __future__ import annotations

from explorer.core.errors import UserError
from explorer.core.spec import ArchSpec


def resolve_spec(arg: str) -> tuple[ArchSpec, str | None]:
    """(spec, the checkpoint it came from or None)."""
    from explorer.core.catalog import load_spec, preset_names
    from explorer.train.checkpoints import trained_path

    if arg not in preset_names() and not arg.endswith(('.json', '.safetensors')):
        arg = trained_path(arg) or arg
    if not arg.endswith('.safetensors'):
        return load_spec(arg), None
    from explorer.explain.weights import checkpoint_spec

    spec = checkpoint_spec(arg)
    if spec is None:
        raise UserError(
            f'{arg!r} holds no spec in its metadata; give a preset or JSON spec as SPEC and the file as --weights'
        )
    return spec, arg
