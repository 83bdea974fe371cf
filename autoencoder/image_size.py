"""The size of a model input: a square side (``256``) or a width and a height (``640x256``).

Elongated parts (line-scan strips, shafts, commutators) keep their aspect in a model input of
their shape instead of being squashed into a square. On the command line a size is ``SIDE`` or
``WIDTHxHEIGHT`` (the order images are described in: a 1260 x 500 strip is 1260 wide); in
info.json a square is the number it always was and any other shape an object
``{"width": W, "height": H}``, so that no reader has to guess an order; in code it is
:class:`ImageSize`, a (height, width) pair in the order of an array's shape.
"""

from __future__ import annotations

import numbers
import re
from typing import NamedTuple

from autoencoder.errors import UserError

EXPECTED = "expected a positive number of pixels: a side (256) or WIDTHxHEIGHT (640x256)"
_TEXT = re.compile(r"\s*(\d+)\s*(?:[xX×]\s*(\d+)\s*)?")


class ImageSize(NamedTuple):
    """(height, width) in pixels, both positive."""

    height: int
    width: int

    @classmethod
    def of(cls, value, name: str = "image size") -> ImageSize:
        """The size `value` describes: an ImageSize or (height, width) pair, a side (a square), the
        JSON object ``{"width": W, "height": H}``, or the text ``SIDE`` / ``WIDTHxHEIGHT``.
        UserError naming `name` when it is none of these."""
        if isinstance(value, ImageSize):
            return value
        if isinstance(value, str):
            return cls.parse(value, name)
        if isinstance(value, dict):
            if set(value) != {"width", "height"}:
                raise UserError(f"{name} {value}: {EXPECTED}")
            return cls._checked(value["height"], value["width"], value, name)
        if isinstance(value, (tuple, list)) and len(value) == 2:
            return cls._checked(value[0], value[1], value, name)
        return cls._checked(value, value, value, name)

    @classmethod
    def parse(cls, text: str, name: str = "--image-size") -> ImageSize:
        """``"256"`` (a square) or ``"640x256"`` (width x height)."""
        match = _TEXT.fullmatch(text) if isinstance(text, str) else None
        if match is None:
            raise UserError(f"{name} {text}: {EXPECTED}")
        width = int(match.group(1))
        height = width if match.group(2) is None else int(match.group(2))
        return cls._checked(height, width, text, name)

    @classmethod
    def _checked(cls, height, width, shown, name: str) -> ImageSize:
        for side in (height, width):
            if isinstance(side, bool) or not isinstance(side, numbers.Integral) or side < 1:
                raise UserError(f"{name} {shown}: {EXPECTED}")
        return cls(int(height), int(width))

    @property
    def square(self) -> bool:
        return self.height == self.width

    @property
    def cv2_size(self) -> tuple[int, int]:
        """(width, height): the order cv2.resize takes."""
        return (self.width, self.height)

    def to_json(self):
        """A square as its side (what info.json has always held), else {"width": W, "height": H}."""
        return self.height if self.square else {"width": self.width, "height": self.height}

    def __str__(self) -> str:
        return str(self.height) if self.square else f"{self.width}x{self.height}"


def size_argument(text: str) -> int | str:
    """argparse type of --image-size: a side as a number, anything else as given (checked, with
    the flag named, where the settings are validated)."""
    return int(text) if text.strip().isdecimal() and text.strip().isascii() else text
