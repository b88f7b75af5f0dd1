"""Model adapters (one file per timm family) and the architecture spec that rebuilds compressed models."""

from vitcompress.models.spec import build_from_spec, describe_base, family_of, get_spec, unwrap

__all__ = ["build_from_spec", "describe_base", "family_of", "get_spec", "unwrap"]
