"""Numba kernels of BPE training: counting distinct words, then learning merges incrementally.

Training works on distinct words with their counts (merges never cross a word boundary). The
merge loop keeps, for every adjacent symbol pair, its count over the corpus and a list of
the words that contain it, and a max-heap of pairs by count. Each merge touches only the
words holding the chosen pair, so a step costs what it changes, not the corpus size.

Table layouts (all int64 unless said otherwise):
- word table: slots (capacity,) -> entry; entries (max_words, 4) = hash, key start,
  key length, count; keys uint8 pool; fill (2,) = entries used, key bytes used.
- pairs (max_pairs, 6) = left id, right id, count, head node of its word list, last word
  appended, last merge step that touched it; pair_index (capacity,) -> pair row.
- nodes (max_nodes, 2) = word, next node (-1 ends a list).
- heap (max_entries, 2) = count, pair row; ordered by count, then smaller (left, right).
"""
import numpy as np
from numba import njit

from mlot.tokenization.hashing import bytes_hash, find_word, pair_hash
from mlot.tokenization.pretokenize import next_word_end


@njit(cache=True)
def _grown_rows(rows, fill_value):
    """rows with twice as many rows, the new ones set to fill_value."""
    bigger = np.full((2 * rows.shape[0],) + rows.shape[1:], fill_value, dtype=rows.dtype)
    bigger[:rows.shape[0]] = rows
    return bigger


@njit(cache=True)
def _rehashed_slots(entries, n_entries, capacity):
    """Slot table (capacity,) for the first n_entries rows of entries, by their stored hash (column 0)."""
    slots = np.full(capacity, -1, dtype=np.int64)
    mask = capacity - 1
    for entry in range(n_entries):
        slot = entries[entry, 0] & mask
        while slots[slot] >= 0:
            slot = (slot + 1) & mask
        slots[slot] = entry
    return slots


@njit(cache=True)
def count_words(data, seg_starts, seg_ends, classes, slots, entries, keys, fill):
    """Add one to the count of every word of every segment data[seg_starts[s]:seg_ends[s]].

    Words are cut by the pre-split; new words get the next entry, in order of first
    appearance (so training is deterministic). Returns (slots, entries, keys), grown (doubled)
    whenever full; fill is updated in place.
    """
    for s in range(seg_starts.shape[0]):
        pos = seg_starts[s]
        end = seg_ends[s]
        while pos < end:
            word_end = next_word_end(data, pos, end, classes)
            length = word_end - pos
            word_hash = bytes_hash(data, pos, word_end)
            slot, entry = find_word(data, pos, word_end, word_hash, slots, entries, keys)
            if entry >= 0:
                entries[entry, 3] += 1
            else:
                if fill[0] == entries.shape[0]:
                    entries = _grown_rows(entries, 0)
                    slots = _rehashed_slots(entries, fill[0], 2 * slots.shape[0])
                    slot, entry = find_word(data, pos, word_end, word_hash, slots, entries, keys)
                while fill[1] + length > keys.shape[0]:
                    keys = _grown_rows(keys, 0)
                entry = fill[0]
                entries[entry, 0] = word_hash
                entries[entry, 1] = fill[1]
                entries[entry, 2] = length
                entries[entry, 3] = 1
                keys[fill[1]:fill[1] + length] = data[pos:word_end]
                slots[slot] = entry
                fill[0] += 1
                fill[1] += length
            pos = word_end
    return slots, entries, keys


@njit(cache=True)
def _pair_slot(pair_index, pairs, left, right):
    """Slot of pair_index holding (left, right), or the free slot where it belongs."""
    mask = pair_index.shape[0] - 1
    slot = pair_hash(left, right) & mask
    while pair_index[slot] >= 0:
        row = pair_index[slot]
        if pairs[row, 0] == left and pairs[row, 1] == right:
            return slot
        slot = (slot + 1) & mask
    return slot


@njit(cache=True)
def _link_word(nodes, n_nodes, pairs, row, w):
    """Prepend word w to the linked list of words holding pair `row`, unless it heads it already
    (column 3: list head, column 4: last word linked); returns (nodes, n_nodes)."""
    if pairs[row, 4] != w:
        if n_nodes == nodes.shape[0]:
            nodes = _grown_rows(nodes, 0)
        nodes[n_nodes, 0] = w
        nodes[n_nodes, 1] = pairs[row, 3]
        pairs[row, 3] = n_nodes
        pairs[row, 4] = w
        n_nodes += 1
    return nodes, n_nodes


@njit(cache=True)
def _pair_row(pair_index, pairs, n_pairs, left, right):
    """Row of the pair (left, right), added with count 0 if new; returns (pair_index, pairs, n_pairs, row)."""
    slot = _pair_slot(pair_index, pairs, left, right)
    if pair_index[slot] >= 0:
        return pair_index, pairs, n_pairs, pair_index[slot]
    if n_pairs == pairs.shape[0]:
        pairs = _grown_rows(pairs, -1)
        pair_index = np.full(2 * pair_index.shape[0], -1, dtype=np.int64)
        for row in range(n_pairs):
            pair_index[_pair_slot(pair_index, pairs, pairs[row, 0], pairs[row, 1])] = row
        slot = _pair_slot(pair_index, pairs, left, right)
    row = n_pairs
    pairs[row, 0] = left
    pairs[row, 1] = right
    pairs[row, 2] = 0
    pairs[row, 3] = -1
    pairs[row, 4] = -1
    pairs[row, 5] = -1
    pair_index[slot] = row
    return pair_index, pairs, n_pairs + 1, row


@njit(cache=True)
def _heap_before(heap, i, j, pairs):
    """Whether heap entry i ranks above entry j: higher count, then smaller (left, right)."""
    if heap[i, 0] != heap[j, 0]:
        return heap[i, 0] > heap[j, 0]
    row_i = heap[i, 1]
    row_j = heap[j, 1]
    if pairs[row_i, 0] != pairs[row_j, 0]:
        return pairs[row_i, 0] < pairs[row_j, 0]
    return pairs[row_i, 1] < pairs[row_j, 1]


@njit(cache=True)
def _heap_push(heap, size, count, row, pairs):
    """Push (count, row); returns (heap, size), the heap grown when full."""
    if size == heap.shape[0]:
        heap = _grown_rows(heap, 0)
    child = size
    heap[child, 0] = count
    heap[child, 1] = row
    while child > 0:
        parent = (child - 1) >> 1
        if not _heap_before(heap, child, parent, pairs):
            break
        for col in range(2):
            heap[parent, col], heap[child, col] = heap[child, col], heap[parent, col]
        child = parent
    return heap, size + 1


@njit(cache=True)
def _heap_pop(heap, size, pairs):
    """Remove the top entry; returns (count, row, new size)."""
    count = heap[0, 0]
    row = heap[0, 1]
    size -= 1
    heap[0, 0] = heap[size, 0]
    heap[0, 1] = heap[size, 1]
    parent = 0
    while True:
        best = parent
        for child in (2 * parent + 1, 2 * parent + 2):
            if child < size and _heap_before(heap, child, best, pairs):
                best = child
        if best == parent:
            break
        for col in range(2):
            heap[parent, col], heap[best, col] = heap[best, col], heap[parent, col]
        parent = best
    return count, row, size


@njit(cache=True)
def learn_merges(word_keys, word_key_starts, word_lengths, word_counts, byte_ids,
                 token_pool, token_offsets, n_reserved, vocab_target):
    """Learn merges until the vocabulary holds vocab_target tokens or no pair is left.

    Inputs: the distinct words (bytes word_keys[start:start+length]) with their counts; the
    initial vocabulary as byte strings (token t = token_pool[token_offsets[t]:token_offsets[t+1]]);
    byte_ids maps a byte to its token. Each step merges the most frequent pair (ties: smaller
    left id, then smaller right id). If the merged string already is a token, that id is reused
    (as HF's trainer does) — unless it is one of the first n_reserved tokens (the special
    tokens), which ordinary text must never produce: such a pair is skipped.
    Returns merges int32 (n_merges, 3) = left id, right id, new id.
    """
    n_words = word_counts.shape[0]
    word_start = np.empty(n_words, dtype=np.int64)
    word_len = word_lengths.astype(np.int64)
    total = 0
    for w in range(n_words):
        word_start[w] = total
        total += word_len[w]
    symbols = np.empty(max(total, 1), dtype=np.int32)
    for w in range(n_words):
        for i in range(word_len[w]):
            symbols[word_start[w] + i] = byte_ids[word_keys[word_key_starts[w] + i]]

    # vocabulary strings, as a byte-string table (the vocabulary never exceeds vocab_target)
    n_tokens = token_offsets.shape[0] - 1
    vocab_keys = np.empty(max(2 * token_pool.shape[0], 64), dtype=np.uint8)
    vocab_keys[:token_pool.shape[0]] = token_pool
    vocab_rows = np.zeros((vocab_target, 4), dtype=np.int64)  # hash, start, length, token id
    vocab_capacity = 16
    while vocab_capacity < 2 * vocab_target:
        vocab_capacity *= 2
    vocab_slots = np.full(vocab_capacity, -1, dtype=np.int64)
    for token in range(n_tokens):
        start = token_offsets[token]
        end = token_offsets[token + 1]
        token_hash = bytes_hash(vocab_keys, start, end)
        slot, found = find_word(vocab_keys, start, end, token_hash, vocab_slots, vocab_rows, vocab_keys)
        vocab_rows[token, 0] = token_hash
        vocab_rows[token, 1] = start
        vocab_rows[token, 2] = end - start
        vocab_rows[token, 3] = token
        if found < 0:
            vocab_slots[slot] = token
    keys_used = token_pool.shape[0]
    token_start = np.empty(vocab_target, dtype=np.int64)
    token_len = np.empty(vocab_target, dtype=np.int64)
    token_start[:n_tokens] = token_offsets[:n_tokens]
    token_len[:n_tokens] = token_offsets[1:] - token_offsets[:n_tokens]

    # pair counts and word lists
    pairs = np.full((1024, 6), -1, dtype=np.int64)
    pair_index = np.full(2048, -1, dtype=np.int64)
    n_pairs = 0
    nodes = np.empty((max(total, 16), 2), dtype=np.int64)
    n_nodes = 0
    for w in range(n_words):
        base = word_start[w]
        for i in range(word_len[w] - 1):
            pair_index, pairs, n_pairs, row = _pair_row(pair_index, pairs, n_pairs,
                                                        symbols[base + i], symbols[base + i + 1])
            pairs[row, 2] += word_counts[w]
            nodes, n_nodes = _link_word(nodes, n_nodes, pairs, row, w)
    heap = np.empty((max(n_pairs, 16), 2), dtype=np.int64)
    heap_size = 0
    for row in range(n_pairs):
        heap, heap_size = _heap_push(heap, heap_size, pairs[row, 2], row, pairs)

    merges = np.empty((max(vocab_target, 16), 3), dtype=np.int32)
    n_merges = 0
    word_step = np.full(n_words, -1, dtype=np.int64)
    touched = np.empty(64, dtype=np.int64)
    step = 0
    while n_tokens < vocab_target and heap_size > 0:
        count, row, heap_size = _heap_pop(heap, heap_size, pairs)
        current = pairs[row, 2]
        if current != count:  # stale entry: re-queue a lowered count, drop an outdated one
            if 0 < current < count:
                heap, heap_size = _heap_push(heap, heap_size, current, row, pairs)
            continue
        if count <= 0:
            continue
        left = pairs[row, 0]
        right = pairs[row, 1]
        # the merged string, written tentatively at the end of the vocabulary pool
        new_len = token_len[left] + token_len[right]
        while keys_used + new_len > vocab_keys.shape[0]:
            vocab_keys = _grown_rows(vocab_keys, 0)
        vocab_keys[keys_used:keys_used + token_len[left]] = \
            vocab_keys[token_start[left]:token_start[left] + token_len[left]]
        vocab_keys[keys_used + token_len[left]:keys_used + new_len] = \
            vocab_keys[token_start[right]:token_start[right] + token_len[right]]
        new_hash = bytes_hash(vocab_keys, keys_used, keys_used + new_len)
        slot, found = find_word(vocab_keys, keys_used, keys_used + new_len, new_hash,
                                vocab_slots, vocab_rows, vocab_keys)
        if found >= 0 and vocab_rows[found, 3] < n_reserved:
            continue
        if found >= 0:
            new_id = vocab_rows[found, 3]
        else:
            new_id = n_tokens
            vocab_rows[new_id, 0] = new_hash
            vocab_rows[new_id, 1] = keys_used
            vocab_rows[new_id, 2] = new_len
            vocab_rows[new_id, 3] = new_id
            vocab_slots[slot] = new_id
            token_start[new_id] = keys_used
            token_len[new_id] = new_len
            keys_used += new_len
            n_tokens += 1
        if n_merges == merges.shape[0]:
            merges = _grown_rows(merges, 0)
        merges[n_merges, 0] = left
        merges[n_merges, 1] = right
        merges[n_merges, 2] = new_id
        n_merges += 1
        step += 1
        n_touched = 0

        node = pairs[row, 3]
        while node >= 0:
            w = nodes[node, 0]
            node = nodes[node, 1]
            if word_step[w] == step:
                continue
            word_step[w] = step
            base = word_start[w]
            length = word_len[w]
            holds_pair = False
            for i in range(length - 1):
                if symbols[base + i] == left and symbols[base + i + 1] == right:
                    holds_pair = True
                    break
            if not holds_pair:
                continue
            freq = word_counts[w]
            for i in range(length - 1):  # remove the word's old pairs ...
                old = pair_index[_pair_slot(pair_index, pairs, symbols[base + i], symbols[base + i + 1])]
                pairs[old, 2] -= freq
            kept = 0
            i = 0
            while i < length:  # ... merge it in place, leftmost occurrence first ...
                if i + 1 < length and symbols[base + i] == left and symbols[base + i + 1] == right:
                    symbols[base + kept] = new_id
                    i += 2
                else:
                    symbols[base + kept] = symbols[base + i]
                    i += 1
                kept += 1
            word_len[w] = kept
            for i in range(kept - 1):  # ... and add its new pairs
                a = symbols[base + i]
                b = symbols[base + i + 1]
                pair_index, pairs, n_pairs, new_row = _pair_row(pair_index, pairs, n_pairs, a, b)
                pairs[new_row, 2] += freq
                if a != new_id and b != new_id:
                    continue
                nodes, n_nodes = _link_word(nodes, n_nodes, pairs, new_row, w)
                if pairs[new_row, 5] != step:
                    pairs[new_row, 5] = step
                    if n_touched == touched.shape[0]:
                        touched = _grown_rows(touched, 0)
                    touched[n_touched] = new_row
                    n_touched += 1
        pairs[row, 3] = -1  # every word holding the pair was merged
        for k in range(n_touched):
            if pairs[touched[k], 2] > 0:
                heap, heap_size = _heap_push(heap, heap_size, pairs[touched[k], 2], touched[k], pairs)
    return merges[:n_merges].copy()
