"""DVC stage: Composite pictures of sample train images (image | GT | CAM seeds | r0 | ... | final DeepLab)."""

import sys

from auxseg.cli import run_stage
from auxseg.steps import samples

if __name__ == "__main__":
    sys.exit(run_stage(samples.run, ['dataset', 'cams', 'pseudo_labels', 'rounds', 'final_round', 'deeplab', 'evaluate',
                                     'runtime', 'samples']))
