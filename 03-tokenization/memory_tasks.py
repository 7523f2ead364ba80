"""Synthetic memory tasks with exactly known answers: text generators, pure functions of a seed.

Every generator returns a case {"context", "query", "answer", ...}: the model reads `context`
into memory, then fills `query + [MASK]`; the case counts when the span equals `answer`.
Extra keys say what was generated (where the key sits, which facts support the answer), so
that tests can check the cases by hand.

Lengths are in tokens of the caller's tokenizer, through `count_tokens(text) -> int`; a text is
built sentence by sentence, so lengths and depths are met to within one sentence. Filler is
plain, repetitive nature talk (the classic passkey haystack) from word lists that share no word
with the facts, so a fact is never hidden inside filler and filler never answers a question.

    from mlot.tokenization.memory_tasks import passkey_case
    case = passkey_case(seed=3, depth=0.5, n_tokens=512, count_tokens=lambda t: len(tokenizer.encode(t)))
"""
from __future__ import annotations

import re

import numpy as np

FILLER_NOUNS = ("grass", "sky", "sun", "river", "hill", "road", "wind", "stone", "field", "cloud", "tree", "lake")
FILLER_ADJECTIVES = ("green", "wide", "warm", "quiet", "long", "bright", "old", "calm", "soft", "still")
FILLER_EXTRAS = ("Here we go.", "There and back again.", "The day goes on.", "Nothing happens for a while.")

NUMBERS = range(10, 100)  # few enough that each is seen often in training; chance is 1/90
PASSKEY_QUESTION = "What is the pass key? The pass key is"

COLOURS = ("red", "blue", "yellow", "purple", "orange", "silver", "golden", "black", "white", "pink")
CONTAINERS = ("box", "door", "chest", "locker", "safe", "gate", "drawer", "cabinet", "vault", "trunk")

PEOPLE = ("Mara", "Tomas", "Lena", "Anton", "Nora", "Emil", "Vera", "Oskar", "Ines", "Hugo")
PLACES = ("kitchen", "garden", "office", "hallway", "bedroom", "bathroom", "cellar", "attic")
OBJECTS = ("apple", "football", "milk", "book", "lantern", "scarf", "hat", "violin")

_PRE_WORD = re.compile(r" ?[^\W\d_]+| ?\d+| ?[^\s\w]+|\s+")


def count_pre_words(text: str) -> int:
    """Words, numbers and punctuation runs (the BPE pre-split): the token count of a tokenizer
    that holds every word of these tasks as one token."""
    return len(_PRE_WORD.findall(text))


def two_digit_number(rng: np.random.Generator) -> str:
    """Pass keys and codes: one of NUMBERS (one token each in a tokenizer trained on these tasks)."""
    return str(int(rng.integers(NUMBERS.start, NUMBERS.stop)))


def filler_sentences(rng: np.random.Generator, n: int) -> list[str]:
    nouns = rng.integers(0, len(FILLER_NOUNS), n)
    adjectives = rng.integers(0, len(FILLER_ADJECTIVES), n)
    extras = rng.integers(0, len(FILLER_EXTRAS), n)
    use_extra = rng.random(n) < 0.2
    return [FILLER_EXTRAS[e] if x else f"The {FILLER_NOUNS[a]} is {FILLER_ADJECTIVES[b]}."
            for a, b, e, x in zip(nouns, adjectives, extras, use_extra)]


def _sentence_tokens(sentences, count_tokens) -> np.ndarray:
    """Tokens each sentence adds when the sentences are joined by spaces (the first has no space)."""
    return np.array([count_tokens(("" if i == 0 else " ") + s) for i, s in enumerate(sentences)], dtype=np.int64)


def scatter(facts: list[str], depths, n_tokens: int, rng: np.random.Generator, count_tokens):
    """Join facts (in order) and filler into a text of about n_tokens tokens, fact i starting at
    about depths[i] of it; returns (text, the token offset at which each fact starts)."""
    fact_tokens = int(_sentence_tokens(facts, count_tokens).sum()) + len(facts)
    filler_budget = max(n_tokens - fact_tokens, 0)
    filler = filler_sentences(rng, max(filler_budget // 3 + 8, 8))
    filler_cumulative = np.cumsum(_sentence_tokens(filler, count_tokens))
    n_filler = int(np.searchsorted(filler_cumulative, filler_budget, side="right"))
    filler = filler[:n_filler]
    before = np.concatenate([[0], filler_cumulative[:n_filler]])  # filler tokens before each gap
    insert_at = [int(np.searchsorted(before, depth * filler_budget, side="left")) for depth in depths]
    insert_at = np.minimum(np.maximum.accumulate(insert_at), n_filler)  # facts keep their order
    sentences, starts, fact_index = [], [], 0
    for gap in range(n_filler + 1):
        while fact_index < len(facts) and insert_at[fact_index] == gap:
            starts.append(len(sentences))
            sentences.append(facts[fact_index])
            fact_index += 1
        if gap < n_filler:
            sentences.append(filler[gap])
    offsets = np.concatenate([[0], np.cumsum(_sentence_tokens(sentences, count_tokens))])
    return " ".join(sentences), [int(offsets[i]) for i in starts]


def passkey_case(seed: int, depth: float, n_tokens: int, count_tokens=count_pre_words) -> dict:
    """A two-digit pass key stated at `depth` (0..1) of a filler context of about n_tokens.

    The same seed and depth with a smaller n_tokens give the same key in a shorter haystack
    (the upper-bound version of the case).
    """
    if not 0.0 <= depth <= 1.0:
        raise ValueError(f"passkey depth must lie in [0, 1], got {depth}")
    rng = np.random.default_rng([seed, 1])
    key = two_digit_number(rng)
    fact = f"The pass key is {key}. Remember it. {key} is the pass key."
    context, (offset,) = scatter([fact], [depth], n_tokens, np.random.default_rng([seed, 2]), count_tokens)
    return {"context": context, "query": PASSKEY_QUESTION, "answer": key, "depth": depth, "key_offset": offset}


def _code_sentence(colour: str, container: str, value: str) -> str:
    return f"The code of the {colour} {container} is {value}."


def _code_question(colour: str, container: str) -> str:
    return f"The code of the {colour} {container} is"


def _change_sentence(colour: str, container: str, value: str) -> str:
    return f"The code of the {colour} {container} was changed to {value}."


def associative_pairs(rng: np.random.Generator, n_pairs: int) -> list[tuple[str, str, str]]:
    """n_pairs distinct (colour, container) keys with two-digit values."""
    if not 1 <= n_pairs <= len(COLOURS) * len(CONTAINERS):
        raise ValueError(f"n_pairs must lie in [1, {len(COLOURS) * len(CONTAINERS)}], got {n_pairs}")
    keys = rng.choice(len(COLOURS) * len(CONTAINERS), n_pairs, replace=False)
    return [(COLOURS[k // len(CONTAINERS)], CONTAINERS[k % len(CONTAINERS)], two_digit_number(rng)) for k in keys]


def associative_recall_case(seed: int, n_pairs: int, n_tokens: int, overwrite: bool = False,
                            count_tokens=count_pre_words) -> dict:
    """Key-value pairs at the start of the context, then filler; the query asks one key
    ("all_questions" lists every key's question with its newest value).

    overwrite: half the keys (at least one) get a new value in the middle of the context
    ("... was changed to ..."); the query asks a changed key, whose newest value is the answer.
    """
    rng = np.random.default_rng([seed, 3])
    pairs = associative_pairs(rng, n_pairs)
    facts = [_code_sentence(*pair) for pair in pairs]
    depths = [0.0] * n_pairs
    asked = int(rng.integers(n_pairs))
    answer = pairs[asked][2]
    changes = []
    if overwrite:
        changed = rng.choice(n_pairs, max(1, n_pairs // 2), replace=False)
        asked = int(rng.choice(changed))
        for index in changed:
            colour, container, old = pairs[index]
            new = old
            while new == old:
                new = two_digit_number(rng)
            changes.append((colour, container, new))
            facts.append(_change_sentence(colour, container, new))
            depths.append(0.5)
            if index == asked:
                answer = new
    context, offsets = scatter(facts, depths, n_tokens, rng, count_tokens)
    colour, container, _ = pairs[asked]
    newest = {(colour, container): value for colour, container, value in pairs}
    newest.update({(colour, container): value for colour, container, value in changes})
    return {"context": context, "query": _code_question(colour, container), "answer": answer,
            "facts": facts, "fact_offsets": offsets,
            "all_questions": [[_code_question(*key), value] for key, value in newest.items()]}


def _chain(n_supporting: int, person: str, other: str, obj: str, place: str):
    """The k facts that place the question's subject, and the question."""
    if n_supporting == 1:
        return [f"{person} went to the {place}."], f"Where is {person}? {person} is in the"
    if n_supporting == 2:
        return [f"{person} picked up the {obj}.", f"{person} went to the {place}."], \
            f"Where is the {obj}? The {obj} is in the"
    if n_supporting == 3:
        return [f"{person} picked up the {obj}.", f"{person} gave the {obj} to {other}.",
                f"{other} went to the {place}."], f"Where is the {obj}? The {obj} is in the"
    raise ValueError(f"n_supporting must be 1, 2 or 3, got {n_supporting}")


def fact_case(seed: int, n_supporting: int, n_tokens: int, n_distractors: int = 3,
              count_tokens=count_pre_words) -> dict:
    """bAbI-style: the answer follows from exactly n_supporting facts, scattered in order through
    filler among distractor facts about other people and objects (who never meet the chain's)."""
    rng = np.random.default_rng([seed, 4])
    people = [PEOPLE[i] for i in rng.permutation(len(PEOPLE))]
    objects = [OBJECTS[i] for i in rng.permutation(len(OBJECTS))]
    place = PLACES[int(rng.integers(len(PLACES)))]
    supporting, query = _chain(n_supporting, people[0], people[1], objects[0], place)
    distractors = []
    for i in range(n_distractors):  # other people moving and carrying other objects
        who, what = people[2 + i % (len(people) - 2)], objects[1 + i % (len(objects) - 1)]
        where = PLACES[int(rng.integers(len(PLACES)))]
        distractors.append(f"{who} picked up the {what}." if i % 2 else f"{who} went to the {where}.")
    slots = np.sort(rng.choice(len(supporting) + n_distractors, len(supporting), replace=False))
    in_order, rest = [], iter(distractors)
    for slot in range(len(supporting) + n_distractors):  # supporting facts keep their order
        in_order.append(supporting[int(np.searchsorted(slots, slot))] if slot in slots else next(rest))
    depths = np.sort(rng.random(len(in_order)))
    context, _ = scatter(in_order, depths, n_tokens, rng, count_tokens)
    return {"context": context, "query": query, "answer": place, "supporting": supporting,
            "distractors": distractors}
