from __future__ import annotations

import pytest
import torch
from torch import nn

from vitcompress.errors import VitCompressError
from vitcompress.metrics import LatencyResult, measure_latency


def test_runs_and_reports_positive_times(vit: nn.Module) -> None:
    vit.train()
    threads_before = torch.get_num_threads()
    result = measure_latency(vit, (3, 32, 32), batch_size=2, threads=2, min_run_time=0.05)
    assert isinstance(result, LatencyResult)
    assert result.median_ms > 0 and result.iqr_ms >= 0
    assert (result.batch_size, result.threads) == (2, 2)
    assert result.per_image_ms == pytest.approx(result.median_ms / 2)
    assert torch.get_num_threads() == threads_before
    assert vit.training


def test_threads_default_to_torch(vit: nn.Module) -> None:
    result = measure_latency(vit, (3, 32, 32), min_run_time=0.02, warmup=0)
    assert result.threads == torch.get_num_threads()


def test_model_on_other_device_is_refused() -> None:
    with torch.device("meta"):
        model = nn.Linear(4, 4)
    with pytest.raises(VitCompressError, match=r"call model.to\('cpu'\) first"):
        measure_latency(model, (1, 1, 4), min_run_time=0.01)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"threads": 0}, "threads must be"),
        ({"batch_size": 0}, "batch_size must be"),
        ({"min_run_time": 0}, "min_run"),
    ],
)
def test_bad_arguments(vit: nn.Module, kwargs: dict, message: str) -> None:
    with pytest.raises(VitCompressError, match=message):
        measure_latency(vit, (3, 32, 32), **kwargs)
