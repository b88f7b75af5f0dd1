import ast
import dataclasses
import inspect

import pytest

from vitcompress.errors import VitCompressError
from vitcompress.train import TrainConfig


def test_defaults_validate_and_round_trip():
    cfg = TrainConfig(epochs=3, clip_grad=None, ema_decay=0.99, amp="bf16")
    data = cfg.to_dict()
    assert data["version"] == TrainConfig.VERSION
    assert TrainConfig.from_dict(data) == cfg


@pytest.mark.parametrize(
    "field, value",
    [
        ("epochs", 0),
        ("lr", 0.0),
        ("min_lr", 1.0),
        ("weight_decay", -0.1),
        ("warmup_epochs", 11),
        ("clip_grad", 0.0),
        ("amp", "fp8"),
        ("ema_decay", 1.0),
        ("seed", -1),
        ("log_every", 0),
        ("eval_every", 0),
    ],
)
def test_bad_values_name_the_field(field, value):
    with pytest.raises(VitCompressError, match=field):
        TrainConfig(**{field: value})


def test_every_field_has_a_docstring():
    # The CLI turns these docstrings into --help, so a field without one would be undocumented there.
    tree = ast.parse(inspect.getsource(TrainConfig))
    body = tree.body[0].body
    documented = {
        stmt.target.id
        for stmt, nxt in zip(body, body[1:], strict=False)
        if isinstance(stmt, ast.AnnAssign) and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant)
    }
    assert {f.name for f in dataclasses.fields(TrainConfig)} <= documented
