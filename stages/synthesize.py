"""DVC stage: generate the embedded synthetic VOC-style dataset (params section ``synthetic``)."""

import sys

from auxseg.cli import run_stage
from auxseg.steps import synthesize

if __name__ == "__main__":
    sys.exit(run_stage(synthesize.run, ["synthetic"]))
