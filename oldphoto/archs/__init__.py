"""Network architectures, one nn.Module per file. ARCHS maps a registry name to its class."""

from __future__ import annotations

import torch.nn as nn

ARCHS: dict[str, type[nn.Module]] = {}


def register(name: str):
    """Class decorator: ARCHS[name] = the class (the name registry entries give as "arch"); ValueError if taken."""
    def deco(cls: type[nn.Module]) -> type[nn.Module]:
        if name in ARCHS:
            raise ValueError(f"architecture {name!r} registered twice")
        ARCHS[name] = cls
        return cls

    return deco


def build(name: str, **kwargs) -> nn.Module:
    """A new, untrained ARCHS[name](**kwargs); KeyError naming the known architectures for an unknown name."""
    if name not in ARCHS:
        raise KeyError(f"unknown architecture {name!r}; known: {', '.join(sorted(ARCHS))}")
    return ARCHS[name](**kwargs)


# Import the modules so that their @register decorators run (kept at the bottom on purpose).
from . import _all  # noqa: E402,F401
