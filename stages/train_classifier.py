"""DVC stage: Train the multi-label classifier that gives the CAMs."""

import sys

from auxseg.cli import run_stage
from auxseg.steps import train_classifier

if __name__ == "__main__":
    sys.exit(run_stage(train_classifier.run, ['seed', 'dataset', 'classifier', 'runtime']))
