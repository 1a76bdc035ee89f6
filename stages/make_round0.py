"""DVC stage: Fuse CAMs and the saliency prior into the round-0 labels."""

import sys

from auxseg.cli import run_stage
from auxseg.steps import make_round0

if __name__ == "__main__":
    sys.exit(run_stage(make_round0.run, ['dataset', 'saliency', 'classifier', 'cams', 'pseudo_labels', 'runtime']))
