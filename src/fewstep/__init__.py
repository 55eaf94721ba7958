"""fewstep: distill masked and continuous diffusion models into one-step and few-step generators."""

import os

# libgomp spin-waiting makes 2-thread CPU torch 10-50x slower whenever another process is busy;
# this must be set before torch is first imported to take effect.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

# Denormals in backward passes made identical CPU steps vary 10-20x in time.
torch.set_flush_denormal(True)

# Two multi-threaded jobs on the same cores slow small models down ~40x (threads wait for each other's time
# slices); FEWSTEP_THREADS=1 lets several jobs share a machine, one core each.
if os.environ.get("FEWSTEP_THREADS"):
    torch.set_num_threads(int(os.environ["FEWSTEP_THREADS"]))

__version__ = "0.1.0"

from fewstep.errors import FewstepError  # noqa: E402

__all__ = ["FewstepError", "__version__"]
