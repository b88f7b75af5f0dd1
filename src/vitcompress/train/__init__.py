"""One training loop for plain training, distillation and mask search; single process or torchrun.

from vitcompress.train import CrossEntropyObjective, TrainConfig, fit
history = fit(model, train_loader, val_loader, CrossEntropyObjective(), TrainConfig(epochs=5), "runs/a")
"""

from vitcompress.train.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from vitcompress.train.config import TrainConfig
from vitcompress.train.distributed import DistInfo, cleanup, setup_distributed
from vitcompress.train.log import History
from vitcompress.train.loop import fit
from vitcompress.train.objectives import CrossEntropyObjective, Objective, head_logits
from vitcompress.train.optim import build_optimizer, build_scheduler, make_param_groups
from vitcompress.train.resume import CHECKPOINT_DIR
from vitcompress.train.seed import seed_everything

__all__ = [
    "CHECKPOINT_DIR",
    "Checkpoint",
    "CrossEntropyObjective",
    "DistInfo",
    "History",
    "Objective",
    "TrainConfig",
    "build_optimizer",
    "build_scheduler",
    "cleanup",
    "fit",
    "head_logits",
    "load_checkpoint",
    "make_param_groups",
    "save_checkpoint",
    "seed_everything",
    "setup_distributed",
]
