"""ViT-Slim: soft masks on attention dims, MLP units and tokens; budget selection; physical extraction.

ViT/DeiT: `masked.py`, `pruned.py`. Swin (attention dims and MLP units, no token masks, as the paper searched
it): `swin_masked.py`, `swin_pruned.py`. One cost model for every family, `cost.py` (each family's adapter reads its
model into the one `Structure`); the verbs below dispatch by model family.

    masked = attach_masks(model, SlimConfig(tokens=True))       # exact at init
    fit(masked, ..., SlimObjective(masked), ..., param_groups=slim_param_groups(masked, train, sparsity))
    sel = select(masked, macs=0.6)                               # milliseconds, any budget
    small = extract(masked, sel)                                 # == binarize(masked, sel), plain timm forward
"""

from vitcompress.slim.attach import attach_masks
from vitcompress.slim.config import SlimConfig, SparsityConfig
from vitcompress.slim.extraction import binarize, extract
from vitcompress.slim.selection import Selection
from vitcompress.slim.solver import select
from vitcompress.slim.sparsity import SlimObjective, slim_param_groups, sparsity_loss

__all__ = [
    "Selection",
    "SlimConfig",
    "SlimObjective",
    "SparsityConfig",
    "attach_masks",
    "binarize",
    "extract",
    "select",
    "slim_param_groups",
    "sparsity_loss",
]
