"""Document streams: rarity levels, level filtering, bucketing and a resumable position."""
import numpy as np

from mlot.training.batching import DocumentStream, rarity_levels


def corpus():
    """Eight documents; documents 5..7 are made of tokens that occur nowhere else."""
    rng = np.random.default_rng(0)
    docs = [rng.integers(0, 4, 20) for _ in range(5)] + [np.arange(100 + 10 * i, 110 + 10 * i) for i in range(3)]
    starts = np.cumsum([0] + [len(d) for d in docs[:-1]])
    return np.concatenate(docs), starts


def test_rarity_levels_rank_documents_by_self_information():
    tokens, starts = corpus()
    levels = rarity_levels(tokens, starts, 2)
    assert levels[5:].tolist() == [2, 2, 2] and (levels == 1).sum() == 4  # rare-token documents rank last
    assert rarity_levels(tokens, starts, 1).tolist() == [1] * 8
    same = rarity_levels(np.zeros(6, np.int64), np.array([0, 2, 4]), 3)
    assert sorted(same.tolist()) == [1, 2, 3]  # ties still fill every level


def test_stream_reads_only_documents_at_or_below_the_level():
    tokens, starts = corpus()
    stream = DocumentStream(tokens, starts, batch_size=2, seed=1, n_levels=2)
    seen = set()
    for _ in range(40):
        _, _, doc_ids = stream.next_segments(8, max_segments=1, max_level=1)
        seen.update(doc_ids.tolist())
    assert seen and seen <= set(np.flatnonzero(stream.doc_levels == 1).tolist())


def test_segments_follow_the_document_and_the_position_resumes():
    tokens, starts = corpus()
    stream = DocumentStream(tokens, starts, batch_size=3, seed=2)
    segments, new, doc_ids = stream.next_segments(7)
    assert new.all()
    for segment, doc in zip(segments, doc_ids):
        np.testing.assert_array_equal(segment, tokens[starts[doc]:starts[doc] + 7])
    state = {k: v.copy() for k, v in stream.state_dict().items()}
    expected = [stream.next_segments(7) for _ in range(10)]
    resumed = DocumentStream(tokens, starts, batch_size=3, seed=2)
    resumed.load_state_dict(state)
    for (a, new_a, ids_a), (b, new_b, ids_b) in zip(expected, (resumed.next_segments(7) for _ in range(10))):
        assert ids_a.tolist() == ids_b.tolist() and new_a.tolist() == new_b.tolist()
        assert all(np.array_equal(x, y) for x, y in zip(a, b))


def _read_visits(stream, visits: int, segment_len: int, max_segments: int) -> list[np.ndarray]:
    """The segments read over the next `visits` documents taken (a visit ends when the row takes another)."""
    read, taken = [], 0
    while True:
        if stream.ending(max_segments)[0] or stream.row_doc[0] < 0:  # the next segment starts a visit
            if taken == visits:
                return read
            taken += 1
        read.append(stream.next_segments(segment_len, max_segments)[0][0])


def test_windows_read_a_long_document_whole_once_per_epoch():
    lengths = [5, 23, 40, 9]
    tokens = np.arange(sum(lengths))  # each token is its own position: a segment says what it read
    starts = np.cumsum([0] + lengths[:-1])
    stream = DocumentStream(tokens, starts, batch_size=1, seed=3, window_tokens=8)
    per_epoch = sum(-(-n // 8) for n in lengths)  # 1 + 3 + 5 + 2 visits of up to 8 tokens
    first = np.concatenate(_read_visits(stream, per_epoch, 4, max_segments=2))
    np.testing.assert_array_equal(np.sort(first), tokens)  # every token once, the 40-token one included
    state = {k: v.copy() for k, v in stream.state_dict().items()}
    second = _read_visits(stream, per_epoch, 4, max_segments=2)
    np.testing.assert_array_equal(np.sort(np.concatenate(second)), tokens)  # from the start again after the end
    resumed = DocumentStream(tokens, starts, batch_size=1, seed=3, window_tokens=8)
    resumed.load_state_dict(state)
    again = _read_visits(resumed, per_epoch, 4, max_segments=2)
    assert all(np.array_equal(a, b) for a, b in zip(second, again)) and len(second) == len(again)


def test_without_windows_a_long_document_restarts_at_its_beginning():
    lengths = [5, 40]
    tokens = np.arange(45)
    stream = DocumentStream(tokens, np.array([0, 5]), batch_size=1, seed=0)
    read = np.concatenate(_read_visits(stream, 4, 4, max_segments=2))  # two epochs of two documents
    assert read.max() < 5 + 8 and np.count_nonzero(read == 5) == 2  # the long one: its first 8 tokens, twice
