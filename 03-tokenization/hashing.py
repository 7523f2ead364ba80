"""Hash functions shared by the BPE kernels' open-addressing tables (word cache, word counts, pairs).

Both keep every intermediate below 2**63, so they give the same values compiled and under
NUMBA_DISABLE_JIT=1 (where numpy int64 arithmetic would warn on overflow).
"""
import numpy as np
from numba import njit

_FNV_OFFSET = 2166136261
_FNV_PRIME = 16777619
_MASK32 = 0xFFFFFFFF


@njit(cache=True)
def bytes_hash(data, start, end):
    """32-bit FNV-1a of data[start:end] (uint8), mixed so that its low bits index a power-of-two table."""
    value = np.int64(_FNV_OFFSET)
    for pos in range(start, end):
        value = ((value ^ np.int64(data[pos])) * _FNV_PRIME) & _MASK32
    return value ^ (value >> 15)


@njit(cache=True)
def pair_hash(left, right):
    """Hash of an ordered pair of token ids (each below 2**31)."""
    value = (np.int64(left) * 0x9E3779B1) ^ (np.int64(right) * 0x85EBCA6B)
    return value ^ (value >> 29)


@njit(cache=True)
def bytes_equal(data_a, start_a, data_b, start_b, length):
    """Whether data_a[start_a:start_a+length] equals data_b[start_b:start_b+length]."""
    for offset in range(length):
        if data_a[start_a + offset] != data_b[start_b + offset]:
            return False
    return True


@njit(cache=True)
def find_word(data, start, end, word_hash, slots, entries, keys):
    """Look data[start:end] up in a byte-string table; returns (slot, entry), entry -1 when absent.

    Table layout: slots (capacity,) hold an entry index or -1; entries rows start with
    (hash, key start, key length) into the byte pool `keys`. On a miss the slot is the free
    one where the string belongs.
    """
    mask = slots.shape[0] - 1
    length = end - start
    slot = word_hash & mask
    while slots[slot] >= 0:
        entry = slots[slot]
        if (entries[entry, 0] == word_hash and entries[entry, 2] == length
                and bytes_equal(keys, entries[entry, 1], data, start, length)):
            return slot, entry
        slot = (slot + 1) & mask
    return slot, -1


def table_capacity(min_entries: int) -> int:
    """Power-of-two slot count keeping an open-addressing table at most half full."""
    capacity = 16
    while capacity < 2 * min_entries:
        capacity *= 2
    return capacity
