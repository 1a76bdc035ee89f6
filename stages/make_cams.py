"""DVC stage: Extract multi-scale CAMs of every train image."""

import sys

from auxseg.cli import run_stage
from auxseg.steps import make_cams

if __name__ == "__main__":
    sys.exit(run_stage(make_cams.run, ['dataset', 'classifier', 'cams', 'runtime']))
