"""DVC stage: Tabulate the pseudo-label quality of every round."""

import sys

from auxseg.cli import run_stage
from auxseg.steps import summarize

if __name__ == "__main__":
    sys.exit(run_stage(summarize.run, ['rounds', 'final_round', 'cams', 'pseudo_labels', 'evaluate']))
