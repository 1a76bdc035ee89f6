"""DVC stage: Score the classifier on val (mAP, F1)."""

import sys

from auxseg.cli import run_stage
from auxseg.steps import eval_classifier

if __name__ == "__main__":
    sys.exit(run_stage(eval_classifier.run, ['dataset', 'classifier', 'runtime']))
