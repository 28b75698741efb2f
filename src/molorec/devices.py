"""Which GPU a job runs on, for local runs that share a machine's cards.

Snakemake's ``gpu`` resource (profiles/default) caps how many GPU jobs run at once, but it
does not say which card each one gets: every job would open device 0. A job claims its
cards here instead: one lock file per device, held with ``flock`` for the job's life (the
kernel drops it when the process ends, killed or not), and CUDA_VISIBLE_DEVICES set to the
claimed ones before CUDA starts. Under SLURM the allocation already sets
CUDA_VISIBLE_DEVICES, and the job keeps it.

    python -m molorec.devices --gpus 2 -- accelerate launch ...   # a command on 2 cards
"""

from __future__ import annotations

import argparse
import fcntl
import logging
import os
import tempfile
import time
from pathlib import Path

log = logging.getLogger("molorec")

# Where the lock files live: one folder per machine, shared by every run on it.
LOCKS_ENV = "MOLOREC_GPU_LOCKS"
# Jobs one card takes at once (default 1): small models (the sample's 135M) fit many times
# on one card, and `--resources gpu=N` then counts slots, N = cards x this.
SLOTS_ENV = "MOLOREC_JOBS_PER_GPU"
# Held locks, kept open (and inheritable, so that an exec'd command keeps them) until exit.
_held: list[int] = []


def lock_dir() -> Path:
    path = Path(os.environ.get(LOCKS_ENV) or Path(tempfile.gettempdir()) / "molorec-gpu-locks")
    path.mkdir(parents=True, exist_ok=True)
    return path


def visible_devices() -> list[str]:
    """The devices this process may use: CUDA_VISIBLE_DEVICES where it is set (indices or
    UUIDs), else every card NVML counts (torch asks NVML without starting CUDA)."""
    given = os.environ.get("CUDA_VISIBLE_DEVICES")
    if given is not None:
        return [d.strip() for d in given.split(",") if d.strip()]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


def slots_per_card() -> int:
    value = os.environ.get(SLOTS_ENV, "1")
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"{SLOTS_ENV}={value!r}: give a whole number of jobs per card, >= 1")
    return int(value)


def _try_lock(path: Path) -> int | None:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _try_slot(folder: Path, device: str, slots: list[str]) -> int | None:
    for slot in slots:
        fd = _try_lock(folder / f"gpu-{device}{slot}.lock")
        if fd is not None:
            return fd
    return None


def claim_gpus(n: int, wait_s: float = 5.0, timeout_s: float | None = None) -> list[str]:
    """Claim ``n`` of the visible devices for this process and make them the only ones CUDA
    sees; waits while other jobs hold them. Returns the claimed devices ([] for n = 0 and
    where no device is visible, in which case the job runs on the CPU)."""
    if n <= 0:
        return []
    if os.environ.get("SLURM_JOB_ID") and "CUDA_VISIBLE_DEVICES" in os.environ:
        devices = visible_devices()
        log.info("GPUs given by SLURM job %s: %s", os.environ["SLURM_JOB_ID"], ",".join(devices))
        return devices
    devices = visible_devices()
    if not devices:
        log.warning("asked for %d GPU(s) but none is visible: running on the CPU", n)
        return []
    if n > len(devices):
        raise RuntimeError(
            f"the job asks for {n} GPUs but this machine shows {len(devices)} "
            f"({','.join(devices)}): lower the rule's gpu resource"
        )
    folder, start, said = lock_dir(), time.monotonic(), False
    # One lock file per slot of a card (gpu-<card>.lock, then gpu-<card>.<k>.lock); a job
    # takes one slot on each of n distinct cards.
    slots = [""] + [f".{k}" for k in range(1, slots_per_card())]
    while True:
        fds, claimed = [], []
        for device in devices:
            fd = _try_slot(folder, device, slots)
            if fd is not None:
                fds.append(fd)
                claimed.append(device)
                if len(claimed) == n:
                    break
        if len(claimed) == n:
            break
        for fd in fds:
            os.close(fd)
        if timeout_s is not None and time.monotonic() - start > timeout_s:
            raise TimeoutError(f"no {n} free GPU(s) among {','.join(devices)} in {timeout_s} s")
        if not said:
            log.info("waiting for %d free GPU(s) among %s (locks in %s)", n, devices, folder)
            said = True
        time.sleep(wait_s)
    for fd in fds:
        os.set_inheritable(fd, True)
    _held.extend(fds)
    os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(claimed)
    log.info("GPU(s) %s claimed (locks in %s)", ",".join(claimed), folder)
    return claimed


def release_gpus() -> None:
    """Give the claimed cards back before the process ends (the end of a job does it too)."""
    while _held:
        os.close(_held.pop())


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(
        prog="python -m molorec.devices",
        description="Run a command on GPUs claimed for it (CUDA_VISIBLE_DEVICES).",
    )
    ap.add_argument("--gpus", type=int, required=True)
    ap.add_argument("command", nargs=argparse.REMAINDER, help="-- command and arguments")
    args = ap.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        ap.error("no command given")
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    claim_gpus(args.gpus)
    # The command replaces this process and inherits the lock files: they are held until it
    # (and every process it starts) has ended.
    os.execvp(command[0], command)


if __name__ == "__main__":
    main()
