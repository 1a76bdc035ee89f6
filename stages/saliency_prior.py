"""DVC stage: Compute the saliency prior of every train image."""

import sys

from auxseg.cli import run_stage
from auxseg.steps import saliency_prior

if __name__ == "__main__":
    sys.exit(run_stage(saliency_prior.run, ['dataset', 'saliency']))
