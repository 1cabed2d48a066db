"""What a SPEC argument can be, in every command: a preset name, a JSON spec file, a MetaFormer Explorer trained
checkpoint (.safetensors with its spec in the header) or a trained model's name (`explorer train` output, the
shipped Fashion-MNIST models)."""

from __future__ import annotations

import sys

from explorer.core.errors import UserError
from explorer.core.spec import ArchSpec


def resolve_spec(arg: str) -> tuple[ArchSpec, str | None]:
    """(spec, the checkpoint it came from or None)."""
    from explorer.core.catalog import load_spec, preset_names
    from explorer.train.checkpoints import list_trained, trained_path

    if arg in preset_names():
        return load_spec(arg), None
    if not arg.endswith(('.json', '.safetensors')):
        path = trained_path(arg)
        if path is None:  # a file, or an unknown name: the message then suggests presets and trained models
            return _own_name(load_spec(arg, trained=[t['name'] for t in list_trained()]), arg), None
        arg = path
    if not arg.endswith('.safetensors'):
        return _own_name(load_spec(arg), arg), None
    from explorer.explain.weights import WeightsError, checkpoint_spec

    try:
        spec = checkpoint_spec(arg)
    except WeightsError as e:  # a typo in a checkpoint's path, a damaged file: the user's to fix, in one line
        raise UserError(str(e)) from None
    if spec is None:
        raise UserError(
            f'{arg!r} holds no spec in its metadata; give a preset or JSON spec as SPEC and the file as --weights'
        )
    return _own_name(spec, arg), arg


def _own_name(spec: ArchSpec, source: str) -> ArchSpec:
    """A file's spec under a preset's name but with another network (an edited copy of a preset file) is renamed
    NAME-edited, with a note on stderr: otherwise its counts, charts and trained runs would carry the preset's name
    (the app's composer refuses such a name for the same reason)."""
    from explorer.core.catalog import names_another_preset

    if not names_another_preset(spec.name, spec):
        return spec
    name = f'{spec.name}-edited'
    print(
        f'note: {source!r} names the preset {spec.name!r} but holds another network; it is called {name!r} here',
        file=sys.stderr,
    )
    return spec.replace(name=name)
