"""Training, checkpoints and dataset-wide generation for reactfast generators."""

from reactfast._distributed import exit_distributed_process
from reactfast.train.checkpoint import (CheckpointError, link_checkpoint, load_into, load_model, load_trainer_state,
                                        read_config, save_checkpoint)
from reactfast.train.generation import PartialGeneration, generate_dataset
from reactfast.train.trainer import TrainConfig, Trainer, TrainingDiverged, seed_everything

__all__ = ["CheckpointError", "PartialGeneration", "TrainConfig", "Trainer", "TrainingDiverged",
           "exit_distributed_process", "generate_dataset", "link_checkpoint", "load_into", "load_model",
           "load_trainer_state", "read_config", "save_checkpoint", "seed_everything"]
