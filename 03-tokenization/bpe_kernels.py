"""Numba kernels of the BPE codec: merge lookup, merging one word, encoding with a word cache, decoding.

Encoding follows HF `tokenizers`' BPE exactly: within a word, the adjacent pair with the lowest
merge rank is merged, leftmost first, until no adjacent pair has a merge. Most words repeat,
so each word's ids are kept in a bounded cache (cleared when full) keyed by its bytes.

Tables are plain arrays:
- merge table, int32 (capacity, 4): columns left id, right id (-1 = empty slot), rank, new id;
- word cache: slots int64 (capacity,) -> entry, entries int64 (max_entries, 5) with columns
  hash, key start, key length, ids start, ids length; key bytes uint8; ids int32;
  fill int64 (3,) = entries, key bytes, ids used.
"""
import numpy as np
from numba import njit

from mlot.tokenization.hashing import bytes_hash, find_word, pair_hash
from mlot.tokenization.pretokenize import next_word_end

MAX_CACHED_WORD_BYTES = 128
_POSITION_BITS = 32
_POSITION_MASK = (1 << _POSITION_BITS) - 1


@njit(cache=True)
def build_merge_table(merge_left, merge_right, merge_new, capacity):
    """Merge table (capacity, 4) mapping (left, right) -> (rank, new id); rank = index in the merge list.

    A pair listed twice keeps its last rank, as HF's merge map does. capacity is a power of two
    at least twice the merge count.
    """
    table = np.full((capacity, 4), -1, dtype=np.int32)
    mask = capacity - 1
    for rank in range(merge_left.shape[0]):
        slot = pair_hash(merge_left[rank], merge_right[rank]) & mask
        while table[slot, 0] >= 0 and not (table[slot, 0] == merge_left[rank]
                                            and table[slot, 1] == merge_right[rank]):
            slot = (slot + 1) & mask
        table[slot, 0] = merge_left[rank]
        table[slot, 1] = merge_right[rank]
        table[slot, 2] = rank
        table[slot, 3] = merge_new[rank]
    return table


@njit(cache=True)
def find_merge(table, left, right):
    """Slot of the merge (left, right) in the merge table, or -1."""
    mask = table.shape[0] - 1
    slot = pair_hash(left, right) & mask
    while table[slot, 0] >= 0:
        if table[slot, 0] == left and table[slot, 1] == right:
            return slot
        slot = (slot + 1) & mask
    return -1


@njit(cache=True)
def _heap_push(heap, size, key):
    """Push key onto the binary min-heap heap[:size]; returns the new size."""
    child = size
    heap[child] = key
    while child > 0:
        parent = (child - 1) >> 1
        if heap[parent] <= heap[child]:
            break
        heap[parent], heap[child] = heap[child], heap[parent]
        child = parent
    return size + 1


@njit(cache=True)
def _heap_pop(heap, size):
    """Remove the smallest key of heap[:size]; returns (key, new size)."""
    top = heap[0]
    size -= 1
    heap[0] = heap[size]
    parent = 0
    while True:
        smallest = parent
        left = 2 * parent + 1
        if left < size and heap[left] < heap[smallest]:
            smallest = left
        if left + 1 < size and heap[left + 1] < heap[smallest]:
            smallest = left + 1
        if smallest == parent:
            break
        heap[parent], heap[smallest] = heap[smallest], heap[parent]
        parent = smallest
    return top, size


@njit(cache=True)
def bpe_word(data, start, end, byte_ids, merge_table, new_by_rank, out, out_pos):
    """Write the BPE ids of the word data[start:end] to out[out_pos:]; returns the end position.

    Symbols form a linked list over the word's byte positions; a min-heap holds candidate
    merges keyed (rank, position of the left symbol). A popped entry is stale, and skipped, when
    its left symbol was absorbed, has no right neighbour, or the pair there no longer produces
    the entry's new id — the same tests as HF's `Word::merge_all`. O(n log n) in word length.
    """
    length = end - start
    symbols = np.empty(length, dtype=np.int32)
    next_pos = np.empty(length, dtype=np.int64)
    prev_pos = np.empty(length, dtype=np.int64)
    alive = np.ones(length, dtype=np.bool_)
    for i in range(length):
        symbols[i] = byte_ids[data[start + i]]
        next_pos[i] = i + 1 if i + 1 < length else -1
        prev_pos[i] = i - 1
    heap = np.empty(3 * length, dtype=np.int64)  # length-1 initial pairs + at most 2 per merge
    size = 0
    for i in range(length - 1):
        slot = find_merge(merge_table, symbols[i], symbols[i + 1])
        if slot >= 0:
            size = _heap_push(heap, size, (np.int64(merge_table[slot, 2]) << _POSITION_BITS) | i)
    while size > 0:
        key, size = _heap_pop(heap, size)
        rank = key >> _POSITION_BITS
        pos = key & _POSITION_MASK
        right = next_pos[pos]
        if not alive[pos] or right < 0:
            continue
        slot = find_merge(merge_table, symbols[pos], symbols[right])
        if slot < 0 or merge_table[slot, 3] != new_by_rank[rank]:
            continue
        symbols[pos] = merge_table[slot, 3]
        alive[right] = False
        next_pos[pos] = next_pos[right]
        if next_pos[right] >= 0:
            prev_pos[next_pos[right]] = pos
        before = prev_pos[pos]
        if before >= 0:
            slot = find_merge(merge_table, symbols[before], symbols[pos])
            if slot >= 0:
                size = _heap_push(heap, size, (np.int64(merge_table[slot, 2]) << _POSITION_BITS) | before)
        after = next_pos[pos]
        if after >= 0:
            slot = find_merge(merge_table, symbols[pos], symbols[after])
            if slot >= 0:
                size = _heap_push(heap, size, (np.int64(merge_table[slot, 2]) << _POSITION_BITS) | pos)
    pos = 0
    while pos >= 0:
        out[out_pos] = symbols[pos]
        out_pos += 1
        pos = next_pos[pos]
    return out_pos


@njit(cache=True, inline="always")
def _encode_word(data, start, end, byte_ids, merge_table, new_by_rank, out, out_pos,
                 slots, entries, keys, ids, fill):
    """Ids of one word via the cache (miss: BPE, then store it; full cache: clear it first).

    Inlined into encode_segments: as a call per word, passing its 13 arrays cost more than the lookup.
    """
    length = end - start
    if length == 1:
        out[out_pos] = byte_ids[data[start]]
        return out_pos + 1
    if length > MAX_CACHED_WORD_BYTES:
        return bpe_word(data, start, end, byte_ids, merge_table, new_by_rank, out, out_pos)
    word_hash = bytes_hash(data, start, end)
    slot, entry = find_word(data, start, end, word_hash, slots, entries, keys)
    if entry >= 0:
        ids_start = entries[entry, 3]
        for k in range(entries[entry, 4]):
            out[out_pos + k] = ids[ids_start + k]
        return out_pos + entries[entry, 4]
    new_pos = bpe_word(data, start, end, byte_ids, merge_table, new_by_rank, out, out_pos)
    count = new_pos - out_pos
    if (fill[0] + 1 > entries.shape[0] or fill[1] + length > keys.shape[0]
            or fill[2] + count > ids.shape[0]):
        slots[:] = -1
        fill[:] = 0
        slot = word_hash & (slots.shape[0] - 1)
    entry = fill[0]
    entries[entry, 0] = word_hash
    entries[entry, 1] = fill[1]
    entries[entry, 2] = length
    entries[entry, 3] = fill[2]
    entries[entry, 4] = count
    keys[fill[1]:fill[1] + length] = data[start:end]
    ids[fill[2]:fill[2] + count] = out[out_pos:new_pos]
    slots[slot] = entry
    fill[0] += 1
    fill[1] += length
    fill[2] += count
    return new_pos


@njit(cache=True)
def encode_segments(data, seg_starts, seg_ends, seg_special, classes, byte_ids, merge_table,
                    new_by_rank, slots, entries, keys, ids, fill):
    """Token ids of every segment of the UTF-8 buffer `data`, concatenated.

    Segment s is data[seg_starts[s]:seg_ends[s]], pre-split into words and BPE-encoded, unless
    seg_special[s] >= 0, in which case it is that single (special token) id. Returns
    (ids int32 (n_ids,), seg_id_ends int64 (n_segments,)): segment s owns
    ids[seg_id_ends[s-1]:seg_id_ends[s]]. Sequential: the word cache is shared state.
    """
    n_segments = seg_starts.shape[0]
    n_special = 0
    for s in range(n_segments):
        if seg_special[s] >= 0:
            n_special += 1
    out = np.empty(data.shape[0] + n_special, dtype=np.int32)  # at most one id per byte
    seg_id_ends = np.empty(n_segments, dtype=np.int64)
    out_pos = 0
    for s in range(n_segments):
        if seg_special[s] >= 0:
            out[out_pos] = seg_special[s]
            out_pos += 1
        else:
            pos = seg_starts[s]
            end = seg_ends[s]
            while pos < end:
                word_end = next_word_end(data, pos, end, classes)
                out_pos = _encode_word(data, pos, word_end, byte_ids, merge_table, new_by_rank,
                                       out, out_pos, slots, entries, keys, ids, fill)
                pos = word_end
        seg_id_ends[s] = out_pos
    return out[:out_pos], seg_id_ends


@njit(cache=True)
def gather_token_bytes(token_ids, token_offsets, token_pool, keep):
    """Concatenated bytes of the token_ids t with keep[t], where t owns token_pool[token_offsets[t]:token_offsets[t+1]].

    Ids must be valid (checked by the caller); keep drops special tokens when asked.
    """
    total = 0
    for k in range(token_ids.shape[0]):
        token = token_ids[k]
        if keep[token]:
            total += token_offsets[token + 1] - token_offsets[token]
    out = np.empty(total, dtype=np.uint8)
    pos = 0
    for k in range(token_ids.shape[0]):
        token = token_ids[k]
        if keep[token]:
            begin = token_offsets[token]
            length = token_offsets[token + 1] - begin
            out[pos:pos + length] = token_pool[begin:begin + length]
            pos += length
    return out
