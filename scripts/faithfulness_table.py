"""Print the README's faithfulness table: every attribution method on a shipped Fashion-MNIST model over its 20
example images, deletion and insertion AUC beside 8 random pixel orders (means over images), how many images beat
chance, and each method's seconds. The same `explain` call as `explorer attribute ... --json`.

    python scripts/faithfulness_table.py [MODEL]          (default: fmnist_hybrid_large)
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

METHODS = (
    ('ig', 'Integrated Gradients'),
    ('gradshap', 'GradientShap'),
    ('occlusion', 'Occlusion'),
    ('gradcam', 'GradCAM (last stage)'),
    ('saliency', 'Saliency'),
)


def main(model: str) -> None:
    from explorer.cli.predict import load
    from explorer.explain.images import examples_for, load_image
    from explorer.explain.session import explain

    m = load(model, None)
    images = [load_image(p) for p in examples_for(m.spec.in_chans)]
    print(f'{model}, {len(images)} example images, baseline black, 8 random orders per image')
    print(
        '| method | deletion AUC | random orders | beats chance | insertion AUC | random orders | beats chance '
        '| s / image |'
    )
    print('|---|---:|---:|---:|---:|---:|---:|---:|')
    for method, title in METHODS:
        rows = [explain(m, image, method, baseline='black') for image in images]
        f = [r.faithfulness for r in rows]
        dele = statistics.mean(x.deletion.auc for x in f)
        ins = statistics.mean(x.insertion.auc for x in f)
        rdel = statistics.mean(x.random_deletion[0] for x in f)
        rins = statistics.mean(x.random_insertion[0] for x in f)
        bd = sum(x.beats_random_deletion for x in f)
        bi = sum(x.beats_random_insertion for x in f)
        secs = statistics.mean(r.seconds for r in rows)
        n = len(rows)
        print(f'| {title} | {dele:.3f} | {rdel:.3f} | {bd}/{n} | {ins:.3f} | {rins:.3f} | {bi}/{n} | {secs:.2f} |')


if __name__ == '__main__':
    main(sys.argv[1] if len(sys.argv) > 1 else 'fmnist_hybrid_large')
