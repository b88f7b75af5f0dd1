"""Base class for every method config: a validated, versioned dataclass that round-trips through JSON."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, TypeVar

from vitcompress.errors import VitCompressError

C = TypeVar("C", bound="BaseConfig")


@dataclasses.dataclass
class BaseConfig:
    """Configs validate in `__post_init__` (via `validate`) and serialise to plain JSON types."""

    VERSION: ClassVar[int] = 1

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise `VitCompressError` naming the bad field and the fix. Subclasses override."""

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["version"] = self.VERSION
        return out

    @classmethod
    def from_dict(cls: type[C], data: dict[str, Any]) -> C:
        data = dict(data)
        version = data.pop("version", cls.VERSION)
        if version > cls.VERSION:
            raise VitCompressError(
                f"{cls.__name__} version {version} is newer than this vitcompress understands "
                f"({cls.VERSION}); upgrade vitcompress"
            )
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise VitCompressError(
                f"unknown {cls.__name__} field(s) {unknown}; valid fields are {sorted(known)}"
            )
        return cls(**data)
