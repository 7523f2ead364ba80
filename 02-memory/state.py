"""Checkpoint state of the memory stores: flat dicts of plain arrays, checked before they are used.

A store's state is `{name: np.ndarray}` (counters as 0-d arrays), so that a checkpoint is a zip
of .npy files loadable with allow_pickle=False. Loading checks every name, shape and dtype
kind against the store's own arrays before anything is copied, so that a checkpoint made for
another capacity fails with the key named and leaves the store untouched.
"""
from __future__ import annotations

import numpy as np


def export_arrays(arrays: dict) -> dict:
    """Copies of the arrays (scalars become 0-d arrays), safe against later in-place updates."""
    return {name: np.array(value, copy=True) for name, value in arrays.items()}


def checked_arrays(owner: str, state: dict, expected: dict) -> dict:
    """Arrays of `state` cast to the dtypes of `expected`, after checking names, shapes and kinds.

    Raises KeyError for a missing or unexpected name, ValueError for a wrong shape, TypeError
    for a wrong kind of dtype (float for an int array, ...); the message names the key.
    """
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise KeyError(f"{owner}.load_state_dict: missing keys {missing}, unexpected keys {unexpected}")
    loaded = {}
    for name, reference in expected.items():
        array = np.asarray(state[name])
        reference = np.asarray(reference)
        if array.shape != reference.shape:
            raise ValueError(f"{owner}.load_state_dict: '{name}' has shape {array.shape}, "
                             f"this store expects {reference.shape}")
        if not _same_kind(array.dtype, reference.dtype):
            raise TypeError(f"{owner}.load_state_dict: '{name}' has dtype {array.dtype}, "
                            f"this store expects {reference.dtype}")
        loaded[name] = np.array(array, dtype=reference.dtype, copy=True)
    return loaded


def require(owner: str, condition: bool, message: str) -> None:
    """Reject a checkpoint whose arrays have the right shapes but break an invariant of the store."""
    if not condition:
        raise ValueError(f"{owner}.load_state_dict: {message}")


def _same_kind(found: np.dtype, wanted: np.dtype) -> bool:
    integer = "iu"
    if wanted.kind in integer:
        return found.kind in integer
    return found.kind == wanted.kind
