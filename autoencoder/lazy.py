"""Keras, imported on first use.

Importing Keras imports TensorFlow, which takes seconds. The architecture registry is read by the
scripts' flag checks before that (a wrong name or size answers at once), so the architecture
modules refer to ``keras`` and ``keras.layers`` through these stand-ins: the real module is
imported the first time one of its attributes is read, i.e. when a model is built.
"""

from __future__ import annotations

import importlib
import types


class LazyModule(types.ModuleType):
    """A module object that imports the module it names on the first attribute access."""

    def __init__(self, name: str):
        super().__init__(name)

    def __getattr__(self, attribute: str):
        return getattr(importlib.import_module(self.__name__), attribute)


keras = LazyModule("keras")
layers = LazyModule("keras.layers")
ops = LazyModule("keras.ops")
