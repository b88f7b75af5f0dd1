"""The shipped Swin recipes parse into their commands' configs and fit the model the teacher recipe builds."""

from __future__ import annotations

import timm
import torch

import vitcompress as vc
from vitcompress.cli import job_of
from vitcompress.cli_args import job_kwargs, load_recipe


def _kwargs(command: str, recipe: str) -> dict:
    """The job arguments a shipped recipe gives its command, validated as strictly as `--config` is."""
    return job_kwargs(job_of(command), load_recipe(recipe), {"out": "o", **({} if command == "train" else
                                                                         {"model": "m", "teacher": "t"})})


def _teacher() -> torch.nn.Module:
    recipe = load_recipe("digits-swin-teacher")
    torch.manual_seed(0)
    return timm.create_model(recipe["model"], pretrained=False, **recipe["model_args"]).eval()


def test_swin_recipes_validate():
    assert _kwargs("train", "digits-swin-teacher")["model"].model_args["window_size"] == 4
    assert _kwargs("multiplex", "digits-swin-multiplex")["config"].share == "stage"
    assert _kwargs("slim search", "digits-swin-slim")["kd"].alpha == 0.5


def test_swin_teacher_recipe_builds_for_digits():
    teacher = _teacher()
    assert teacher.patch_embed.img_size == (16, 16) and teacher.num_classes == 10
    with torch.no_grad():
        assert teacher(torch.randn(2, 3, 16, 16)).shape == (2, 10)


def test_swin_multiplex_recipe_fits_the_teacher():
    """share=stage on the teacher: one owner per stage; a fresh student equals plain sharing of the first blocks."""
    config = _kwargs("multiplex", "digits-swin-multiplex")["config"]
    teacher = _teacher()
    student = vc.multiplex(teacher, config)
    assert student.vitcompress_spec["steps"][0]["groups"] == [[0, 1], [2, 3], [4, 5, 6, 7], [8, 9]]
    assert vc.count_params(student) < vc.count_params(teacher) / 2
    with torch.no_grad():
        assert torch.isfinite(student(torch.randn(2, 3, 16, 16))).all()


def test_swin_slim_recipe_fits_the_teacher():
    slim = _kwargs("slim search", "digits-swin-slim")["slim"]
    assert not slim.tokens  # Swin is searched without token masks
    teacher = _teacher()
    x = torch.randn(2, 3, 16, 16)
    masked = vc.attach_masks(teacher, slim)
    with torch.no_grad():
        torch.testing.assert_close(masked(x), teacher(x), rtol=1e-5, atol=1e-5)
