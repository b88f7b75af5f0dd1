from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from vitcompress.errors import VitCompressError
from vitcompress.metrics import evaluate, topk_correct

# Six samples over 6 classes; the target's rank among the logits is 1, 2, 3, 5, 6, 1.
LOGITS = torch.tensor(
    [
        [9.0, 1, 2, 3, 4, 5],
        [1.0, 9, 2, 3, 4, 8],
        [1.0, 7, 9, 3, 4, 8],
        [6.0, 7, 9, 3, 4, 8],
        [1.0, 7, 9, 3, 4, 8],
        [0.0, 0, 0, 0, 0, 9],
    ]
)
TARGET = torch.tensor([0, 5, 1, 4, 0, 5])


class Logits(nn.Module):
    """The 'images' are the logits: makes expected accuracies exact."""

    def __init__(self, as_tuple: bool = False) -> None:
        super().__init__()
        self.as_tuple = as_tuple

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        # Two heads whose mean is x, like a distilled model returning (cls, dist) logits.
        return (x - 1, x + 1) if self.as_tuple else x


def loader(batch_size: int = 4) -> DataLoader:
    return DataLoader(TensorDataset(LOGITS, TARGET), batch_size=batch_size)


def test_topk_correct_counts() -> None:
    assert topk_correct(LOGITS, TARGET, ks=(1, 2, 3, 5)) == [2, 3, 4, 5]


def test_topk_clamps_k_to_num_classes() -> None:
    logits, target = torch.tensor([[1.0, 2, 3], [3.0, 2, 1]]), torch.tensor([0, 1])
    assert topk_correct(logits, target, ks=(1, 5)) == [0, 2]


def test_topk_accepts_one_hot_targets() -> None:
    one_hot = nn.functional.one_hot(TARGET, 6).float()
    assert topk_correct(LOGITS, one_hot) == topk_correct(LOGITS, TARGET)


@pytest.mark.parametrize("as_tuple", [False, True], ids=["tensor", "tuple"])
def test_evaluate_exact(as_tuple: bool) -> None:
    out = evaluate(Logits(as_tuple), loader())
    loss = nn.functional.cross_entropy(LOGITS, TARGET).item()
    assert out["n"] == 6
    assert out["top1"] == pytest.approx(100 * 2 / 6)
    assert out["top5"] == pytest.approx(100 * 5 / 6)
    assert out["loss"] == pytest.approx(loss)


def test_evaluate_timm_model_with_amp(vit: nn.Module) -> None:
    vit.train()
    data = TensorDataset(torch.randn(5, 3, 32, 32), torch.randint(0, 1000, (5,)))
    out = evaluate(vit, DataLoader(data, batch_size=2), amp_dtype=torch.bfloat16)
    assert out["n"] == 5 and 0 <= out["top1"] <= out["top5"] <= 100
    assert torch.isfinite(torch.tensor(out["loss"]))
    assert vit.training


def test_empty_loader_is_refused() -> None:
    with pytest.raises(VitCompressError, match="no samples"):
        evaluate(Logits(), [])


def test_single_process_group(tmp_path) -> None:
    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/store", rank=0, world_size=1)
    try:
        assert evaluate(Logits(), loader()) == pytest.approx(evaluate(Logits(), loader(batch_size=6)))
    finally:
        dist.destroy_process_group()


def _rank_evaluates_its_half(rank: int, store: str, results) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        shard = TensorDataset(LOGITS[rank::2], TARGET[rank::2])
        results[rank] = evaluate(Logits(), DataLoader(shard, batch_size=2))
    finally:
        dist.destroy_process_group()


@pytest.mark.distributed
def test_two_ranks_return_global_metrics(tmp_path) -> None:
    results = mp.Manager().dict()
    mp.spawn(_rank_evaluates_its_half, args=(str(tmp_path / "store"), results), nprocs=2)
    expected = evaluate(Logits(), loader())
    assert results[0] == results[1] == pytest.approx(expected)


def test_fit_scores_with_this_evaluator_and_refuses_an_empty_val_loader_alike() -> None:
    from vitcompress.train import CrossEntropyObjective, TrainConfig, fit, loop

    assert loop._default_evaluate is evaluate  # one evaluator: the jobs' numbers and fit's are the same numbers
    model = nn.Linear(6, 6)
    train = DataLoader(TensorDataset(LOGITS, TARGET), batch_size=3)
    empty = DataLoader(TensorDataset(LOGITS[:0], TARGET[:0]), batch_size=3)
    cfg = TrainConfig(epochs=1, warmup_epochs=0)
    with pytest.raises(VitCompressError, match="no samples"):
        fit(model, train, empty, CrossEntropyObjective(), cfg, out_dir=None, progress=False)
    with pytest.raises(VitCompressError, match="no samples"):
        evaluate(model, empty)


def test_device_defaults_to_the_models() -> None:
    assert evaluate(Logits(), loader(), device=None) == evaluate(Logits(), loader(), device="cpu")
