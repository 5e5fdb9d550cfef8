"""Config values that must name an entry of a registry (objectives, scores, data formats, model
families).

    ObjectiveName = Annotated[str, OBJECTIVE]        # OBJECTIVE = RegisteredName(module, attr)

The registry is imported only when a value is checked: the registry modules import torch and
friends, and they may import the config themselves, so the config package must not import them
at import time. A name registered at run time (a plugin, a test) is therefore accepted too.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import GetCoreSchemaHandler
from pydantic_core import PydanticCustomError, core_schema

if TYPE_CHECKING:
    from uaclm_dist.registry import Registry

__all__ = ["RegisteredName", "UNKNOWN_NAME_ERROR"]

#: The pydantic error type of a name that is not registered (its ctx holds the choices).
UNKNOWN_NAME_ERROR = "uaclm_unknown_name"


@dataclass(frozen=True)
class RegisteredName:
    """Field metadata: the value must be a name registered in ``module.attr`` (a
    :class:`~uaclm_dist.registry.Registry`).

    Args:
        module: dotted module that defines the registry, imported on first use.
        attr: the registry's name in that module.
    """

    module: str
    attr: str

    def registry(self) -> Registry[Any]:
        """The registry itself (imports its module)."""
        return self.from_module(self.attr)

    def from_module(self, attr: str) -> Any:
        """Another attribute of the registry's module, e.g. its default selection."""
        return getattr(importlib.import_module(self.module), attr)

    def choices(self) -> tuple[str, ...]:
        """The registered names, in registration order."""
        return tuple(self.registry().names())

    def check(self, value: str) -> str:
        """``value`` if it is registered; a pydantic error listing the choices otherwise."""
        registry = self.registry()
        if value not in registry:
            raise PydanticCustomError(
                UNKNOWN_NAME_ERROR, "{message}",
                {"message": registry.unknown_message(value), "choices": list(registry.names())},
            )
        return value

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(self.check, handler(source))
