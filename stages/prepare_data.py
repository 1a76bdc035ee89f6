"""DVC stage: validate the dataset named by ``dataset`` and write the manifests (params ``prepare_data``)."""

import sys

from auxseg.cli import run_stage
from auxseg.steps import prepare_data

if __name__ == "__main__":
    sys.exit(run_stage(prepare_data.run, ["dataset", "prepare_data"]))
