"""Model family adapters (one file per timm family) and the architecture spec that rebuilds compressed models."""

# Importing an adapter registers its family (as importing a timm model file registers its models).
from vitcompress.models import eva, swin, swin_v2, vit  # noqa: F401
from vitcompress.models.family import Family, families, family_of, register_family
from vitcompress.models.spec import build_from_spec, describe_base, get_spec, register_step, unwrap

__all__ = ["Family", "build_from_spec", "describe_base", "families", "family_of", "get_spec", "register_family",
           "register_step", "unwrap"]
