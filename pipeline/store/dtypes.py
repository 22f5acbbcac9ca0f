"""Logical vs stored dtypes, and exact bfloat16 <-> float32 conversion in numpy.

Neither Zarr nor Parquet knows bfloat16, so a bfloat16 activation is stored as its raw
16 bits in a uint16 array whose ``logical_dtype`` attribute says "bfloat16". Every array
carries ``logical_dtype`` (also "float32" / "float16") so readers never have to guess.

bfloat16 is the top half of a float32, so widening is exact: put the 16 bits in the high
half of a uint32 and view it as float32. Narrowing (only needed by callers that hold
float32 data; torch callers use ``tensor.view(torch.uint16)``) rounds to nearest even like
torch does. This module keeps the store free of torch.
"""

from __future__ import annotations

import numpy as np

LOGICAL_DTYPES = ("float32", "float16", "bfloat16")

_STORED = {"float32": np.dtype("<f4"), "float16": np.dtype("<f2"), "bfloat16": np.dtype("<u2")}


def check_logical_dtype(name: str, field: str = "dtype") -> str:
    if name not in _STORED:
        raise ValueError(f"{field} must be one of {list(LOGICAL_DTYPES)}, got {name!r}")
    return name


def stored_dtype(logical: str) -> np.dtype:
    """The numpy dtype of the bytes on disk (uint16 for bfloat16)."""
    return _STORED[check_logical_dtype(logical)]


def bfloat16_bits_to_float32(bits: np.ndarray) -> np.ndarray:
    """Exact widening: uint16 bfloat16 bits -> float32 values of the same shape."""
    if bits.dtype != np.uint16:
        raise TypeError(f"bfloat16 bits must be uint16, got {bits.dtype}")
    return (bits.astype(np.uint32) << np.uint32(16)).view(np.float32)


def float32_to_bfloat16_bits(values: np.ndarray) -> np.ndarray:
    """Round float32 to the nearest bfloat16 (ties to even); NaN stays a quiet NaN."""
    values = np.ascontiguousarray(values, dtype=np.float32)
    u32 = values.view(np.uint32)
    rounding = ((u32 >> np.uint32(16)) & np.uint32(1)) + np.uint32(0x7FFF)
    bits = ((u32 + rounding) >> np.uint32(16)).astype(np.uint16)
    nan = np.isnan(values)
    if nan.any():
        bits[nan] = ((u32[nan] >> np.uint32(16)) | np.uint32(0x0040)).astype(np.uint16)
    return bits


def to_float32(stored: np.ndarray, logical: str) -> np.ndarray:
    """Stored bytes (as read from Zarr) -> float32 values."""
    if logical == "bfloat16":
        return bfloat16_bits_to_float32(stored)
    return stored.astype(np.float32, copy=False)
