"""DVC stage: Train the final DeepLab on the final round's labels."""

import sys

from auxseg.cli import run_stage
from auxseg.steps import train_deeplab

if __name__ == "__main__":
    sys.exit(run_stage(train_deeplab.run, ['seed', 'final_round', 'dataset', 'classifier', 'deeplab', 'pseudo_labels', 'runtime']))
