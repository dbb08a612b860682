"""Run by the DDP test under torchrun: trains the tiny model and saves it from rank 0."""

import sys

import torch.distributed

from reactfast.train import TrainConfig, Trainer, exit_distributed_process
from tests.train.helpers import tiny_data, tiny_model

out = sys.argv[1]
ds = tiny_data().dataset(frames=64, window=32, stride=32)
# CPU processes (gloo) on any machine: a one-GPU machine cannot host two NCCL ranks.
trainer = Trainer(tiny_model(), ds, TrainConfig(steps=4, batch_size=4, lr=1e-2, out_dir=out, progress=False),
                  device="cpu")
trainer.fit()
# The trainer's DDP wrapper holds the group: dropped first, the group goes with destroy_process_group
# rather than at interpreter teardown. (The trainer does both at exit too; a script that owns the run
# says it explicitly.)
del trainer
torch.distributed.destroy_process_group()
# As the reactfast program does under torchrun: no interpreter finalization, where torch's threads
# aborted rank 1 of a finished run in 3 of about 275 runs (pytorch/pytorch#190489).
exit_distributed_process(0)
