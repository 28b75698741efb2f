"""Test-only: the light data env (envs/data.yaml) without conda, which no test machine can
reach. On PYTHONPATH, in a job whose script is one of MOLOREC_LIGHT_SCRIPTS, importing a
module of a package that only envs/molorec.yaml installs (MOLOREC_LIGHT_DENY) fails as it
would in that env; the job's script name is appended to MOLOREC_LIGHT_RECORD, so a test can
see which jobs ran guarded. Any other process is left alone."""

import os
import sys
from importlib.abc import MetaPathFinder


def guarded_script() -> str | None:
    """The light script this process runs (Snakemake runs a copy named tmpXXXX.<name>.py)."""
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    for script in filter(None, os.environ.get("MOLOREC_LIGHT_SCRIPTS", "").split(",")):
        if name == f"{script}.py" or name.endswith(f".{script}.py"):
            return script
    return None


class NotInTheDataEnv(MetaPathFinder):
    def __init__(self, script: str, denied: set[str]):
        self.script, self.denied = script, denied

    def find_spec(self, fullname, path=None, target=None):
        top = fullname.partition(".")[0]
        if top in self.denied:
            raise ModuleNotFoundError(
                f"{self.script} runs in envs/data.yaml, which does not install {top!r} "
                f"(only envs/molorec.yaml does): move the import or the rule",
                name=fullname,
            )
        return None


SCRIPT = guarded_script()
if SCRIPT is not None:
    sys.meta_path.insert(
        0, NotInTheDataEnv(SCRIPT, set(os.environ["MOLOREC_LIGHT_DENY"].split(",")))
    )
    if os.environ.get("MOLOREC_LIGHT_RECORD"):
        with open(os.environ["MOLOREC_LIGHT_RECORD"], "a") as record:
            record.write(SCRIPT + "\n")
