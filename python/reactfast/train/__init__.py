"""Training, checkpoints and dataset-wide generation for reactfast generators."""

from reactfast.train.checkpoint import (CheckpointError, load_into, load_model, load_trainer_state,
                                        save_checkpoint)
from reactfast.train.generation import generate_dataset
from reactfast.train.trainer import TrainConfig, Trainer

__all__ = ["CheckpointError", "TrainConfig", "Trainer", "generate_dataset", "load_into", "load_model",
           "load_trainer_state", "save_checkpoint"]
