"""Early-exit networks, the staged-model protocol, the canvas task, training and live inference."""

from splitrl.models.canvas import (
    TEST_CANVAS_SEED,
    VALIDATION_CANVAS_SEED,
    CanvasConfig,
    CanvasDataset,
    CanvasSources,
)
from splitrl.models.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_default_model,
    save_checkpoint,
)
from splitrl.models.describe import (
    ExitInfo,
    StageInfo,
    count_flops,
    describe_exits,
    describe_stages,
)
from splitrl.models.early_exit import EarlyExitConfig, EarlyExitNet
from splitrl.models.fashion_mnist import IdxFormatError, load_fashion_mnist
from splitrl.models.live import LiveInference, LiveOutcome, TensorCodec
from splitrl.models.protocol import ExitSpec, InputSpec, StagedModel, StagedModule
from splitrl.models.resnet import ResNetStaged, pooled_linear_head
from splitrl.models.training import TrainingSettings, evaluate_exits, train_early_exit_net

__all__ = [
    "TEST_CANVAS_SEED",
    "VALIDATION_CANVAS_SEED",
    "CanvasConfig",
    "CanvasDataset",
    "CanvasSources",
    "CheckpointError",
    "EarlyExitConfig",
    "EarlyExitNet",
    "ExitInfo",
    "ExitSpec",
    "IdxFormatError",
    "InputSpec",
    "LiveInference",
    "LiveOutcome",
    "ResNetStaged",
    "StageInfo",
    "StagedModel",
    "StagedModule",
    "TensorCodec",
    "TrainingSettings",
    "count_flops",
    "describe_exits",
    "describe_stages",
    "evaluate_exits",
    "load_checkpoint",
    "load_default_model",
    "load_fashion_mnist",
    "pooled_linear_head",
    "save_checkpoint",
    "train_early_exit_net",
]
