"""Child process of tests/test_slurm.py's interrupt test: start the test cluster, run the
pipeline in WORKDIR through it, and be stopped by Ctrl-C (SIGINT to the process group) while
a job runs. The cluster's teardown is the fixture's (slurm_cluster.running_cluster).

    python tests/slurm_interrupted_run.py STATE WORKDIR
"""

import subprocess
import sys
from pathlib import Path

from slurm_cluster import running_cluster

REPO = Path(__file__).resolve().parents[1]

if __name__ == "__main__":
    state, workdir = Path(sys.argv[1]), sys.argv[2]
    with running_cluster(state):
        print("cluster up", flush=True)
        cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile")]
        cmd += ["--directory", workdir, "--workflow-profile", str(REPO / "tests/slurm-profile")]
        subprocess.run(cmd, capture_output=True)
