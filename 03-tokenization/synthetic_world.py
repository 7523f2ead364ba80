"""The fixed world the synthetic corpus talks about: ~200 people and 40 towns with stable facts.

Every document draws its characters from this one world, and states their facts the same way
each time (Mara Voss is always a baker from Ashford with a cat named Pip), so these facts recur
across many documents: they are what semantic memory can learn. The world depends only on the
seed, never on the corpus size.
"""
import random
from dataclasses import dataclass

from mlot.tokenization import synthetic_vocabulary as vocab


@dataclass(frozen=True)
class Town:
    name: str
    region: str
    river: str
    landmark: str
    product: str
    founded: int
    population: int


@dataclass(frozen=True)
class Person:
    first: str
    last: str
    female: bool
    profession: str
    town: str
    age: int
    animal: str
    pet_name: str
    color: str
    hobby: str
    workplace: str
    sibling: int  # index into World.people, -1 for none
    friend: int

    @property
    def name(self) -> str:
        return f"{self.first} {self.last}"

    @property
    def he(self) -> str:
        return "she" if self.female else "he"

    @property
    def his(self) -> str:
        return "her" if self.female else "his"

    @property
    def him(self) -> str:
        return "her" if self.female else "him"


@dataclass(frozen=True)
class World:
    people: tuple[Person, ...]
    towns: tuple[Town, ...]

    def town(self, name: str) -> Town:
        return next(town for town in self.towns if town.name == name)

    def sibling_word(self, person: Person) -> str:
        """'sister' or 'brother': what person's sibling is to them."""
        return "sister" if self.people[person.sibling].female else "brother"


def _unique_names(rng: random.Random, count: int, n_sibling_pairs: int) -> list[tuple[str, str, bool]]:
    """(first, last, female) for count people; the first 2 * n_sibling_pairs come in pairs sharing a surname."""
    names: list[tuple[str, str, bool]] = []
    taken: set[tuple[str, str]] = set()
    while len(names) < 2 * n_sibling_pairs:
        last = rng.choice(vocab.SURNAMES)
        pair = []
        for _ in range(2):
            female = rng.random() < 0.5
            first = rng.choice(vocab.FEMALE_FIRST_NAMES if female else vocab.MALE_FIRST_NAMES)
            pair.append((first, last, female))
        if pair[0][0] != pair[1][0] and not any((f, l) in taken for f, l, _ in pair):
            taken.update((f, l) for f, l, _ in pair)
            names.extend(pair)
    while len(names) < count:
        female = rng.random() < 0.5
        first = rng.choice(vocab.FEMALE_FIRST_NAMES if female else vocab.MALE_FIRST_NAMES)
        last = rng.choice(vocab.SURNAMES)
        if (first, last) not in taken:
            taken.add((first, last))
            names.append((first, last, female))
    return names


def build_world(seed: int, n_people: int = 200, n_sibling_pairs: int = 40) -> World:
    """The world for `seed` (deterministic)."""
    rng = random.Random(f"mlot-world-{seed}")
    towns = tuple(
        Town(name=name, region=rng.choice(vocab.REGIONS), river=rng.choice(vocab.RIVERS),
             landmark=rng.choice(vocab.LANDMARKS), product=rng.choice(vocab.PRODUCTS),
             founded=rng.randint(900, 1890), population=rng.randrange(300, 40000, 10))
        for name in vocab.TOWNS
    )
    names = _unique_names(rng, n_people, n_sibling_pairs)
    people = []
    for index, (first, last, female) in enumerate(names):
        sibling = index ^ 1 if index < 2 * n_sibling_pairs else -1
        friend = rng.randrange(n_people - 1)
        people.append(Person(
            first=first, last=last, female=female, profession=rng.choice(vocab.PROFESSIONS),
            town=rng.choice(vocab.TOWNS), age=rng.randint(19, 84), animal=rng.choice(vocab.ANIMALS),
            pet_name=rng.choice(vocab.PET_NAMES), color=rng.choice(vocab.COLORS), hobby=rng.choice(vocab.HOBBIES),
            workplace=rng.choice(vocab.PLACES), sibling=sibling, friend=friend + (friend >= index),
        ))
    return World(people=tuple(people), towns=towns)


def article(word: str) -> str:
    """'a' or 'an' before word."""
    return "an" if word[0] in "aeiou" else "a"


def person_facts(world: World, person: Person) -> list[str]:
    """Sentences stating person's fixed facts (the semantic layer), one fact each."""
    facts = [
        f"{person.name} is {article(person.profession)} {person.profession} from {person.town}.",
        f"{person.name} is {person.age} years old.",
        f"{person.name} has a {person.animal} named {person.pet_name}.",
        f"The favourite colour of {person.name} is {person.color}.",
        f"{person.name} works at the {person.workplace} in {person.town}.",
        f"In the evenings {person.name} enjoys {person.hobby}.",
        f"{person.name} is a close friend of {world.people[person.friend].name}.",
    ]
    if person.sibling >= 0:
        facts.append(f"{person.name}'s {world.sibling_word(person)} is {world.people[person.sibling].name}.")
    return facts


def town_facts(town: Town) -> list[str]:
    """Sentences stating a town's fixed facts."""
    return [
        f"{town.name} lies in the {town.region}.",
        f"{town.name} is known for its {town.product}.",
        f"The river {town.river} runs through {town.name}.",
        f"The {town.landmark} of {town.name} is famous in the whole region.",
        f"{town.name} was founded in {town.founded}.",
        f"About {town.population} people live in {town.name}.",
    ]
