"""Step ``synthesize``: write the embedded synthetic VOC-style benchmark."""

from __future__ import annotations

import time
from pathlib import Path

from auxseg.config import SyntheticParams


def run(synthetic: SyntheticParams) -> dict:
    """Generate the dataset into ``synthetic.out_dir`` and print its statistics; returns them."""
    from auxseg.data.stats import format_table
    from auxseg.data.synthetic import generate

    start = time.perf_counter()
    stats = generate(Path(synthetic.out_dir), **synthetic.generator_kwargs())
    elapsed = time.perf_counter() - start
    print(format_table(stats))
    print(f"generated {synthetic.n_train} train + {synthetic.n_val} val images in {elapsed:.1f} s -> {synthetic.out_dir}")
    return stats
