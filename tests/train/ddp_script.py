"""Run by the DDP test under torchrun: trains one of ``helpers.ddp_case``'s cases and saves it
from rank 0. Arguments: the run folder, the case (default "tiny")."""

import sys

import torch.distributed

from reactfast.train import TrainConfig, Trainer, exit_distributed_process
from tests.train.helpers import ddp_case

out = sys.argv[1]
model, ds, cfg, val = ddp_case(sys.argv[2] if len(sys.argv) > 2 else "tiny")
# CPU processes (gloo) on any machine: a one-GPU machine cannot host two NCCL ranks.
trainer = Trainer(model, ds, TrainConfig(**cfg, out_dir=out), val_dataset=val, device="cpu")
trainer.fit()
# The trainer's DDP wrapper holds the group: dropped first, the group goes with destroy_process_group
# rather than at interpreter teardown. (The trainer does both at exit too; a script that owns the run
# says it explicitly.)
del trainer
torch.distributed.destroy_process_group()
# As the reactfast program does under torchrun: no interpreter finalization, where torch's threads
# aborted rank 1 of a finished run in 3 of about 275 runs (pytorch/pytorch#190489).
exit_distributed_process(0)
