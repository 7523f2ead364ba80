"""Two-turn dialogues for the memory fine-tuning curriculum (epoch0_curriculum.jsonl).

Each sample is U1 -> M1, then U2 -> M2: the user states something in U1, the model only
acknowledges it (M1 is neutral and never repeats the fact), and U2 asks for it, so M2 can only
be right if what U1 said was kept in memory. Some U1s state two facts, so M2 must pick the one
U2 asks about.
"""
import random

from mlot.tokenization import synthetic_vocabulary as vocab

ACKNOWLEDGEMENTS = ("Got it.", "Thanks for telling me.", "I'll remember that.", "Noted.", "Okay, understood.",
                    "Thank you, I have made a note of it.", "All right.", "Good to know.")


def _name_dialogue(rng: random.Random):
    name = rng.choice(vocab.FEMALE_FIRST_NAMES + vocab.MALE_FIRST_NAMES)
    u1 = rng.choice((f"Hi, my name is {name}.", f"Hello! I'm {name}.", f"You can call me {name}."))
    u2 = rng.choice(("What is my name?", "Do you remember my name?", "Who am I?"))
    return u1, u2, f"Your name is {name}."


def _pet_dialogue(rng: random.Random):
    animal, pet = rng.choice(vocab.ANIMALS), rng.choice(vocab.PET_NAMES)
    u1 = rng.choice((f"I have a {animal} called {pet}.", f"My {animal} is named {pet}."))
    u2 = rng.choice((f"What is my {animal} called?", f"Can you remind me of my {animal}'s name?"))
    return u1, u2, f"Your {animal} is called {pet}."


def _left_object_dialogue(rng: random.Random):
    thing, place = rng.choice(vocab.OBJECTS), rng.choice(vocab.PLACES)
    u1 = rng.choice((f"I left my {thing} in the {place}.", f"Just so you know, my {thing} is in the {place}."))
    u2 = rng.choice((f"Where did I leave my {thing}?", f"Where is my {thing}?"))
    return u1, u2, f"Your {thing} is in the {place}."


def _colour_dialogue(rng: random.Random):
    color = rng.choice(vocab.COLORS)
    u1 = rng.choice((f"My favourite colour is {color}.", f"I really love the colour {color}."))
    u2 = rng.choice(("What is my favourite colour?", "Which colour do I like best?"))
    return u1, u2, f"Your favourite colour is {color}."


def _hometown_dialogue(rng: random.Random):
    town = rng.choice(vocab.TOWNS)
    u1 = rng.choice((f"I grew up in {town}.", f"I was born in {town}, by the river."))
    u2 = rng.choice(("Where did I grow up?", "Which town am I from?"))
    return u1, u2, f"You are from {town}."


def _job_dialogue(rng: random.Random):
    job = rng.choice(vocab.PROFESSIONS)
    article = "an" if job[0] in "aeiou" else "a"
    u1 = rng.choice((f"I work as {article} {job}.", f"I have been {article} {job} for ten years."))
    u2 = rng.choice(("What do I do for a living?", "What is my job?"))
    return u1, u2, f"You are {article} {job}."


def _code_dialogue(rng: random.Random):
    container, code = rng.choice(vocab.CONTAINERS), f"{rng.randrange(1000, 10000)}"
    u1 = rng.choice((f"The code for my {container} is {code}.", f"Please keep this safe: my {container} code is {code}."))
    u2 = rng.choice((f"What was the code for my {container}?", f"I forgot my {container} code. What is it?"))
    return u1, u2, f"The code for your {container} is {code}."


def _appointment_dialogue(rng: random.Random):
    day, hour, event = rng.choice(vocab.DAYS), rng.randint(1, 12), rng.choice(vocab.EVENTS)
    u1 = rng.choice((f"I'm going to the {event} on {day} at {hour} o'clock.",
                     f"Remember that the {event} is on {day} at {hour} o'clock."))
    u2 = rng.choice((f"When is the {event}?", f"What day and time was the {event} again?"))
    return u1, u2, f"The {event} is on {day} at {hour} o'clock."


def _sibling_dialogue(rng: random.Random):
    sister, brother = rng.choice(vocab.FEMALE_FIRST_NAMES), rng.choice(vocab.MALE_FIRST_NAMES)
    u1 = rng.choice((f"My sister is {sister} and my brother is {brother}.",
                     f"I have a brother called {brother} and a sister called {sister}."))
    if rng.random() < 0.5:
        return u1, "What is my sister's name?", f"Your sister is {sister}."
    return u1, "What is my brother's name?", f"Your brother is {brother}."


def _allergy_dialogue(rng: random.Random):
    food = rng.choice(vocab.FOODS)
    u1 = rng.choice((f"I am allergic to {food}.", f"I can't eat {food}, I'm allergic."))
    u2 = rng.choice(("Can you suggest a snack for me?", "What should I avoid eating?"))
    return u1, u2, f"Anything without {food}, since you are allergic to {food}."


def _travel_dialogue(rng: random.Random):
    town, day = rng.choice(vocab.TOWNS), rng.choice(vocab.DAYS)
    u1 = rng.choice((f"On {day} I'm travelling to {town}.", f"I have a trip to {town} planned for {day}."))
    u2 = rng.choice(("Where am I travelling to?", f"Where am I going on {day}?"))
    return u1, u2, f"You are travelling to {town} on {day}."


def _two_objects_dialogue(rng: random.Random):
    first, second = rng.sample(vocab.OBJECTS, 2)
    place_a, place_b = rng.sample(vocab.PLACES, 2)
    u1 = f"My {first} is in the {place_a}, and my {second} is in the {place_b}."
    if rng.random() < 0.5:
        return u1, f"Where is my {first}?", f"Your {first} is in the {place_a}."
    return u1, f"Where is my {second}?", f"Your {second} is in the {place_b}."


def _instrument_dialogue(rng: random.Random):
    instrument, years = rng.choice(vocab.INSTRUMENTS), rng.choice(vocab.NUMBER_WORDS)
    u1 = f"I have been playing the {instrument} for {years} years."
    u2 = rng.choice(("Which instrument do I play?", "How long have I been playing my instrument?"))
    if u2.startswith("Which"):
        return u1, u2, f"You play the {instrument}."
    return u1, u2, f"You have been playing the {instrument} for {years} years."


DIALOGUE_KINDS = (
    ("name", _name_dialogue), ("pet", _pet_dialogue), ("left_object", _left_object_dialogue),
    ("colour", _colour_dialogue), ("hometown", _hometown_dialogue), ("job", _job_dialogue),
    ("code", _code_dialogue), ("appointment", _appointment_dialogue), ("sibling", _sibling_dialogue),
    ("allergy", _allergy_dialogue), ("travel", _travel_dialogue), ("two_objects", _two_objects_dialogue),
    ("instrument", _instrument_dialogue),
)


def dialogue(rng: random.Random) -> dict:
    """One sample {"U1", "M1", "U2", "M2", "kind"}."""
    kind, make = rng.choice(DIALOGUE_KINDS)
    u1, u2, m2 = make(rng)
    return {"U1": u1, "M1": rng.choice(ACKNOWLEDGEMENTS), "U2": u2, "M2": m2, "kind": kind}
