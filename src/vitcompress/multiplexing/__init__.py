"""MiniViT weight multiplexing: shared blocks, weight transformations, init from the teacher, distillation.

The package is named after the method, not the verb: a subpackage named `multiplex` would be bound over the
`vitcompress.multiplex` function as soon as any of its modules is imported.
"""

from vitcompress.multiplexing.build import multiplex
from vitcompress.multiplexing.config import MultiplexConfig

__all__ = ["MultiplexConfig", "multiplex"]
