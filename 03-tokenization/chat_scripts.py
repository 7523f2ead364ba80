"""Scripted chats for the chat benchmark: a fact told once, other talk, then the question.

    script = chat_script(seed=12, kind="pet", other_turns=8)
    script.fact_turn      # ("I have a parrot called Bramble.", "Thanks for telling me.")
    script.other_turns    # 8 (user, model reply) pairs that never name the fact
    script.question       # "What is my parrot called?"
    script.answer_words   # ("Bramble",): what a right reply must say, each as a whole word

A script is a pure function of its seed. The user tells one fact in the first turn (KINDS: a
name, a pet's name, a code, the town where they live or work, a colour, a job, a date, an
object and where it is); the model's scripted reply only acknowledges it, in the words of the
training dialogues (`synthetic_dialogues.ACKNOWLEDGEMENTS`), never repeating it. Then come
`other_turns` exchanges of small talk drawn from OTHER_TALK, none of which contains an answer
word or the fact's subject (the pet's animal, the object, ...), and last the question. So a
reply can only be right if the first turn was remembered.

Held-out seeds: the benchmark draws its cases from HELD_OUT_SEEDS, [0, 10^9). Every training
generator keeps out of them: per-case training seeds start at 10^9
(`memory_training_corpus.TRAINING_SEED_BASE`, and 2 * 10^9 for recall practice), and the
corpus generator's streams are keyed "mlot-documents-", "mlot-dialogues-", "mlot-recall-" and
"mlot-world-", while a chat script's stream is keyed CHAT_STREAM + its kind and seed. A generator that
wants chat scripts for training must take seeds at or above HELD_OUT_SEEDS.stop.
"""
from __future__ import annotations

import random
import re
from typing import NamedTuple

from mlot.tokenization import synthetic_vocabulary as vocab
from mlot.tokenization.synthetic_dialogues import ACKNOWLEDGEMENTS

HELD_OUT_SEEDS = range(0, 10 ** 9)
CHAT_STREAM = "mlot-chat-"
KINDS = ("name", "pet", "code", "place", "colour", "job", "date", "object")
CODES = range(1000, 10000)   # four-digit codes
BIRTHDAYS = range(1, 29)     # day of the month, valid in every month


class ChatScript(NamedTuple):
    seed: int
    kind: str
    fact_turn: tuple          # (user text, model reply): the fact, acknowledged
    other_turns: tuple        # (user text, model reply) pairs of other talk
    question: str
    answer_words: tuple       # words (or multi-word names) a right reply contains as whole words
    possible_answers: int     # how many answers the question could have: chance is 1 / this


def _name(rng):
    name = rng.choice(vocab.FEMALE_FIRST_NAMES + vocab.MALE_FIRST_NAMES)
    fact = rng.choice((f"Hi, my name is {name}.", f"Hello! I'm {name}.", f"You can call me {name}."))
    question = rng.choice(("What is my name?", "Do you remember my name?"))
    return fact, question, (name,), (), len(vocab.FEMALE_FIRST_NAMES + vocab.MALE_FIRST_NAMES)


def _pet(rng):
    animal, pet = rng.choice(vocab.ANIMALS), rng.choice(vocab.PET_NAMES)
    fact = rng.choice((f"I have a {animal} called {pet}.", f"My {animal} is named {pet}."))
    question = rng.choice((f"What is my {animal} called?", f"Can you remind me of my {animal}'s name?"))
    return fact, question, (pet,), (animal,), len(vocab.PET_NAMES)


def _code(rng):
    container, code = rng.choice(vocab.CONTAINERS), str(rng.choice(CODES))
    fact = rng.choice((f"The code for my {container} is {code}.", f"Please keep this safe: my {container} code is {code}."))
    question = rng.choice((f"What was the code for my {container}?", f"I forgot my {container} code. What is it?"))
    return fact, question, (code,), (container,), len(CODES)


def _place(rng):
    town = rng.choice(vocab.TOWNS)
    if rng.random() < 0.5:
        fact = rng.choice((f"I live in {town}.", f"My home is in {town}, near the river."))
        question = rng.choice(("Where do I live?", "Which town is my home in?"))
    else:
        fact = rng.choice((f"I work in {town}.", f"Every day I go to work in {town}."))
        question = rng.choice(("Where do I work?", "In which town do I work?"))
    return fact, question, (town,), (), len(vocab.TOWNS)


def _colour(rng):
    colour = rng.choice(vocab.COLORS)
    fact = rng.choice((f"My favourite colour is {colour}.", f"I really love the colour {colour}."))
    question = rng.choice(("What is my favourite colour?", "Which colour do I like best?"))
    return fact, question, (colour,), (), len(vocab.COLORS)


def _job(rng):
    job = rng.choice(vocab.PROFESSIONS)
    article = "an" if job[0] in "aeiou" else "a"
    fact = rng.choice((f"I work as {article} {job}.", f"I have been {article} {job} for ten years."))
    question = rng.choice(("What do I do for a living?", "What is my job?"))
    return fact, question, (job,), (), len(vocab.PROFESSIONS)


def _date(rng):
    if rng.random() < 0.5:
        day, month = str(rng.choice(BIRTHDAYS)), rng.choice(vocab.MONTHS)
        fact = rng.choice((f"My birthday is on {day} {month}.", f"I was born on {day} {month}."))
        question = rng.choice(("When is my birthday?", "On which date is my birthday?"))
        return fact, question, (day, month), ("birthday",), len(BIRTHDAYS) * len(vocab.MONTHS)
    day, place = rng.choice(vocab.DAYS), rng.choice(vocab.PLACES)
    fact = rng.choice((f"I have an appointment at the {place} on {day}.", f"On {day} I must be at the {place}."))
    question = rng.choice(("On which day do I have to be somewhere?", "What day is my appointment?"))
    return fact, question, (day,), (place, "appointment"), len(vocab.DAYS)


def _object(rng):
    thing, place = rng.choice(vocab.OBJECTS), rng.choice(vocab.PLACES)
    fact = rng.choice((f"I left my {thing} in the {place}.", f"Just so you know, my {thing} is in the {place}."))
    question = rng.choice((f"Where did I leave my {thing}?", f"Where is my {thing}?"))
    return fact, question, (place,), (thing,), len(vocab.PLACES)


_FACTS = dict(zip(KINDS, (_name, _pet, _code, _place, _colour, _job, _date, _object)))

WEATHER = ("cold", "warm", "wet", "dry", "windy", "foggy")
# Small talk: (user, model reply) templates; {slots} are filled from the vocabulary lists.
OTHER_TALK = (
    ("What do you think of {hobby}?", "Many people find {hobby} a calm way to spend an afternoon."),
    ("I bought some {goods} at the market this morning.", "Fresh things from the market are always welcome."),
    ("The weather has been {weather} all week.", "Let us hope the next few days are kinder."),
    ("Can you tell me something about rivers?", "Rivers carry water from the hills down to the sea."),
    ("I read a story about the {landmark} last night.", "Old places often have the best stories."),
    ("Some friends are planning a {event} in the spring.", "That sounds like a lot of fun to prepare."),
    ("I watched someone make {product} at a fair.", "Watching skilled hands at work is a pleasure."),
    ("I would like to learn the {instrument} one day.", "Practising a little every day is the best way to start."),
    ("Is it better to travel by {vehicle} or on foot?", "It depends on how far you need to go."),
    ("I have been sleeping badly lately.", "A quiet evening and a warm drink might help."),
    ("Tell me something cheerful, please.", "Every long winter ends in spring."),
    ("How long does bread take to bake?", "Most loaves need about an hour in a hot oven."),
    ("The {region} is lovely at this time of year.", "The light must be beautiful there now."),
    ("I spent the whole afternoon tidying up.", "A tidy room makes the mind feel lighter."),
    ("What is a good thing to read on a rainy evening?", "A long story with many chapters suits a rainy evening."),
    ("My neighbours are having a party tonight.", "I hope it is not too loud for you."),
)
_SLOTS = {"hobby": vocab.HOBBIES, "goods": vocab.GOODS, "weather": WEATHER, "landmark": vocab.LANDMARKS,
          "event": vocab.EVENTS, "product": vocab.PRODUCTS, "instrument": vocab.INSTRUMENTS,
          "vehicle": vocab.VEHICLES, "region": vocab.REGIONS}
_TRIES = 20  # fillings of one template tried before it is passed over for a fact it would name


def mentions(text: str, words) -> bool:
    """Whether `text` holds any of `words` as a whole word (a multi-word name as whole words),
    case-insensitively: "Cobble Hill" is in "to cobble  hill." but "cook" is not in "cooked"."""
    return any(re.search(whole_word_pattern(word), text, flags=re.IGNORECASE) for word in words)


def whole_word_pattern(word: str) -> str:
    """A regex matching `word` as a whole word; the words of a multi-word name may be spaced any way."""
    return r"(?<!\w)" + r"\s+".join(map(re.escape, word.split())) + r"(?!\w)"


def _other_turns(rng, n: int, avoid) -> tuple:
    """n small-talk exchanges, templates in a shuffled order (reshuffled when n is larger than
    OTHER_TALK), none mentioning a word of `avoid`."""
    turns = []
    while len(turns) < n:
        order = rng.sample(range(len(OTHER_TALK)), len(OTHER_TALK))
        for index in order:
            for _ in range(_TRIES):
                values = {slot: rng.choice(words) for slot, words in _SLOTS.items()}
                turn = tuple(text.format(**values) for text in OTHER_TALK[index])
                if not mentions(" ".join(turn), avoid):
                    turns.append(turn)
                    break
            if len(turns) == n:
                break
    return tuple(turns)


def chat_script(seed: int, kind: str, other_turns: int = 8) -> ChatScript:
    """The scripted chat of `seed` about a fact of `kind` (one of KINDS)."""
    rng = random.Random(f"{CHAT_STREAM}{kind}-{seed}")
    fact, question, answer_words, subject, possible = _FACTS[kind](rng)
    acknowledgement = rng.choice(ACKNOWLEDGEMENTS)
    talk = _other_turns(rng, other_turns, answer_words + subject)
    return ChatScript(seed, kind, (fact, acknowledgement), talk, question, answer_words, possible)
