"""Documents of the synthetic corpus, by difficulty level, and the held-out recall cases.

Levels (the curriculum's progressive difficulty):
1. a few short simple sentences about one or two people or a town, common words only;
2. two paragraphs of sentences joined by and/but/so, some uncommon words, one fact asked soon after;
3. a story of several paragraphs: facts stated in the first paragraph (who keeps what where,
   codes, meetings, counts, times, passwords) are asked about in the last, hundreds of tokens later;
4. the same with long compound sentences, rare words, more distractor facts, and facts that are
   updated later in the story (the question asks for the latest value).

A question is written so that its answer is a short span that closes the text: the query ends
with a word, and the answer starts with a space ("... She keeps it in the" + " cellar of Ashford.").
That boundary is a pre-split word boundary, so encode(query) + encode(answer) equals
encode(query + answer).
"""
import functools
import random
from dataclasses import dataclass

from mlot.tokenization import synthetic_vocabulary as vocab
from mlot.tokenization.synthetic_world import Person, World, article, build_world, person_facts, town_facts

_TIER_WEIGHTS = {1: (1.0, 0.0, 0.0), 2: (0.75, 0.25, 0.0), 3: (0.45, 0.4, 0.15), 4: (0.2, 0.4, 0.4)}
_JOIN_PROBABILITY = {1: 0.0, 2: 0.4, 3: 0.55, 4: 0.8}
_MAX_CLAUSES = {1: 1, 2: 2, 3: 3, 4: 4}
_CONNECTIVES = {
    2: (", and ", ", but ", ", so "),
    3: (", and ", ", but ", "; ", " while ", " because ", ", so "),
    4: (", and ", "; moreover, ", ", although ", ", whereas ", " because ", "; nevertheless, ",
        ", which meant that ", " until ", " as soon as ", "; in the meantime, "),
}
_LOWERCASE_STARTS = ("The ", "A ", "An ", "It ", "In ", "On ", "There ", "Outside ", "About ")


@dataclass(frozen=True)
class Fact:
    """A fact stated in a text and the question about it: query + answer is the question sentence."""
    statement: str
    query: str
    answer: str
    thing: str = ""  # for "keeps" facts: the thing kept, which a later sentence may move


class Style:
    """Chooses words and sentence shapes for one difficulty level."""

    def __init__(self, rng: random.Random, level: int):
        self.rng = rng
        self.level = level

    def word(self, kind: str) -> str:
        tier = self.rng.choices(vocab.TIERS, weights=_TIER_WEIGHTS[self.level])[0]
        return self.rng.choice(tier[kind])

    def sentences(self, clauses: list[str]) -> str:
        """Clauses (capitalised, no final stop) as sentences, joined into longer ones as the level allows."""
        out = []
        index = 0
        while index < len(clauses):
            group = [clauses[index]]
            index += 1
            while (index < len(clauses) and len(group) < _MAX_CLAUSES[self.level]
                   and self.rng.random() < _JOIN_PROBABILITY[self.level]):
                clause = clauses[index]
                if clause.startswith(_LOWERCASE_STARTS):
                    clause = clause[0].lower() + clause[1:]
                group.append(self.rng.choice(_CONNECTIVES[self.level]) + clause)
                index += 1
            out.append("".join(group) + ".")
        return " ".join(out)


class Narrator:
    """Writes clauses and facts about the world's people and towns for one document."""

    def __init__(self, world: World, rng: random.Random, level: int):
        self.world = world
        self.rng = rng
        self.style = Style(rng, level)
        self.used: set[tuple[str, str]] = set()  # (kind, key) already used by a fact of this document

    def person(self) -> Person:
        return self.rng.choice(self.world.people)

    def _fresh(self, kind: str, options) -> str:
        """A value of `options` not yet used for `kind` in this document."""
        choices = [option for option in options if (kind, option) not in self.used]
        value = self.rng.choice(choices or list(options))
        self.used.add((kind, value))
        return value

    # ---- filler clauses -----------------------------------------------------------------------
    def scene_clause(self) -> str:
        adj, noun, noun2 = self.style.word("adjectives"), self.style.word("nouns"), self.style.word("nouns")
        place = self.rng.choice(vocab.PLACES)
        return self.rng.choice((
            f"The {adj} {noun} lay near the {noun2}",
            f"It was {article(adj)} {adj} {self.rng.choice(('morning', 'evening', 'night', 'afternoon'))}",
            f"There was {article(adj)} {adj} {noun} beside the {noun2}",
            f"Outside the {place}, the air felt {adj}",
            f"In the {place} stood {article(adj)} {adj} {noun}",
        ))

    def action_clause(self, person: Person) -> str:
        adj, noun = self.style.word("adjectives"), self.style.word("nouns")
        act, move = self.style.word("transitive"), self.style.word("intransitive")
        return self.rng.choice((
            f"{person.first} {act} the {adj} {noun}",
            f"{person.first} {move} near the {self.rng.choice(vocab.PLACES)}",
            f"{person.name} {move} with {article(adj)} {adj} smile",
            f"{person.first} {move} for a while and then {act} the {noun}",
        ))

    def travel_clause(self, person: Person) -> str:
        origin, destination = self.rng.sample(vocab.TOWNS, 2)
        river = self.world.town(destination).river
        return self.rng.choice((
            f"{person.first} travelled from {origin} to {destination} along the river {river}",
            f"{person.name} took the {self.rng.choice(vocab.VEHICLES)} to {destination}",
            f"On {self.rng.choice(vocab.DAYS)} {person.first} went to {destination} to buy {self.rng.choice(vocab.GOODS)}",
        ))

    def speech_sentence(self, person: Person) -> str:
        adj, noun = self.style.word("adjectives"), self.style.word("nouns")
        line = self.rng.choice((
            f"The {noun} looks {adj} today", f"Where did you put the {noun}",
            f"I have never seen such {article(adj)} {adj} {noun}", f"Don't forget the {noun}",
            f"Let's meet at the {self.rng.choice(vocab.EVENTS)}", f"We're late, the {noun} isn't ready",
        ))
        return f"\"{line},\" said {person.first}."

    def semantic_clause(self, cast: list[Person]) -> str:
        """A fixed fact about a cast member or a town, without its final stop."""
        if self.rng.random() < 0.7:
            return self.rng.choice(person_facts(self.world, self.rng.choice(cast)))[:-1]
        return self.rng.choice(town_facts(self.rng.choice(self.world.towns)))[:-1]

    def filler_paragraph(self, cast: list[Person], n_clauses: int) -> str:
        clauses = []
        speech = []
        for _ in range(n_clauses):
            roll = self.rng.random()
            person = self.rng.choice(cast)
            if roll < 0.25:
                clauses.append(self.scene_clause())
            elif roll < 0.5:
                clauses.append(self.action_clause(person))
            elif roll < 0.65:
                clauses.append(self.travel_clause(person))
            elif roll < 0.85:
                clauses.append(self.semantic_clause(cast))
            else:
                speech.append(self.speech_sentence(person))
        text = self.style.sentences(clauses)
        return " ".join([text] + speech) if speech else text

    # ---- episodic facts -----------------------------------------------------------------------
    def fact(self, cast: list[Person]) -> Fact:
        """A new fact about this document's cast, with its question."""
        person = self.rng.choice(cast)
        other = self.rng.choice([p for p in cast if p is not person] or [self.person()])
        kind = self.rng.randrange(8)
        He = person.he.capitalize()
        if kind == 0:
            color = self.rng.choice(vocab.COLORS)
            thing = self._fresh("object", vocab.OBJECTS)
            place, town = self.rng.choice(vocab.PLACES), self.rng.choice(vocab.TOWNS)
            return Fact(f"{person.name} keeps the {color} {thing} in the {place} of {town}.",
                        f"Where does {person.name} keep the {color} {thing}? {He} keeps it in the",
                        f" {place} of {town}.", thing=f"{color} {thing}")
        if kind == 1:
            container = self._fresh("container", vocab.CONTAINERS)
            code = f"{self.rng.randrange(1000, 10000)}"
            return Fact(f"The code of the {container} is {code}.",
                        f"What is the code of the {container}? The code is", f" {code}.")
        if kind == 2:
            day = self._fresh("day", vocab.DAYS)
            place = self.rng.choice(vocab.PLACES)
            return Fact(f"On {day}, {person.name} met {other.name} at the {place}.",
                        f"Who did {person.name} meet on {day}? {He} met", f" {other.name}.")
        if kind == 3:
            thing = self._fresh("object", vocab.OBJECTS)
            return Fact(f"{person.name} lent {person.his} {thing} to {other.name}.",
                        f"To whom did {person.name} lend {person.his} {thing}? {He} lent it to", f" {other.name}.")
        if kind == 4:
            goods = self._fresh("goods", vocab.GOODS)
            count = self.rng.choice(vocab.NUMBER_WORDS)
            town = self.rng.choice(vocab.TOWNS)
            return Fact(f"{person.name} bought {count} {goods} at the market of {town}.",
                        f"How many {goods} did {person.name} buy? {He} bought", f" {count} {goods}.")
        if kind == 5:
            event = self._fresh("event", vocab.EVENTS)
            hour, day = self.rng.randint(1, 12), self.rng.choice(vocab.DAYS)
            return Fact(f"The {event} begins at {hour} o'clock on {day}.",
                        f"When does the {event} begin? It begins at", f" {hour} o'clock on {day}.")
        if kind == 6:
            room = self._fresh("room", vocab.ROOMS)
            word = self.rng.choice(vocab.PASSWORDS)
            return Fact(f"The password for the {room} is {word}.",
                        f"What is the password for the {room}? The password is", f" {word}.")
        vehicle = self._fresh("vehicle", vocab.VEHICLES)
        color = self.rng.choice(vocab.COLORS)
        return Fact(f"{person.name} painted {person.his} {vehicle} {color}.",
                    f"What colour is the {vehicle} of {person.name}? It is", f" {color}.")

    def moved(self, fact: Fact, cast: list[Person]) -> Fact:
        """For a 'keeps' fact: a later statement moving the thing, with the question of where it is now."""
        place, town = self.rng.choice(vocab.PLACES), self.rng.choice(vocab.TOWNS)
        mover = self.rng.choice(cast)
        return Fact(f"Later, {mover.name} moved the {fact.thing} to the {place} of {town}.",
                    f"Where is the {fact.thing} now? It is in the", f" {place} of {town}.")

    def semantic_question(self, person: Person) -> Fact:
        """A question answered by the person's fixed facts (not necessarily stated in this text)."""
        He = person.he.capitalize()
        kind = self.rng.randrange(5 if person.sibling >= 0 else 4)
        if kind == 0:
            return Fact("", f"What does {person.name} do for a living? {He} works as",
                        f" {article(person.profession)} {person.profession}.")
        if kind == 1:
            return Fact("", f"Where does {person.name} come from? {He} comes from", f" {person.town}.")
        if kind == 2:
            return Fact("", f"What is the name of {person.name}'s {person.animal}? The {person.animal} is called",
                        f" {person.pet_name}.")
        if kind == 3:
            return Fact("", f"Where does {person.name} work? {He} works at the",
                        f" {person.workplace} in {person.town}.")
        relation = self.world.sibling_word(person)
        return Fact("", f"Who is {person.name}'s {relation}? {person.his.capitalize()} {relation} is",
                    f" {self.world.people[person.sibling].name}.")


def simple_document(world: World, rng: random.Random) -> str:
    """Level 1: a few short sentences about one person or one town."""
    narrator = Narrator(world, rng, 1)
    if rng.random() < 0.6:
        person = narrator.person()
        facts = rng.sample(person_facts(world, person), rng.randint(2, 4))
        clauses = [fact[:-1] for fact in facts]
        clauses += [narrator.action_clause(person) for _ in range(rng.randint(1, 3))]
    else:
        facts = rng.sample(town_facts(rng.choice(world.towns)), rng.randint(2, 4))
        clauses = [fact[:-1] for fact in facts] + [narrator.scene_clause() for _ in range(rng.randint(1, 3))]
    rng.shuffle(clauses)
    return narrator.style.sentences(clauses)


def compound_document(world: World, rng: random.Random) -> str:
    """Level 2: two paragraphs with joined sentences and one fact asked right after."""
    narrator = Narrator(world, rng, 2)
    cast = rng.sample(world.people, 2)
    fact = narrator.fact(cast)
    first = narrator.filler_paragraph(cast, rng.randint(3, 6))
    second = narrator.filler_paragraph(cast, rng.randint(3, 6))
    return f"{fact.statement} {first}\n\n{second} {fact.query}{fact.answer}"


def _story(narrator: Narrator, level: int) -> tuple[str, list[Person], list[Fact]]:
    """Story text without its question paragraph, its cast, and the facts a question may ask about."""
    rng = narrator.rng
    cast = rng.sample(narrator.world.people, rng.randint(2, 4))
    n_facts = rng.randint(2, 4) if level == 3 else rng.randint(3, 6)
    facts = [narrator.fact(cast) for _ in range(n_facts)]
    intro = [f"This is a story about {', '.join(p.name for p in cast[:-1])} and {cast[-1].name}."]
    intro += [rng.choice(person_facts(narrator.world, person)) for person in cast if rng.random() < 0.6]
    intro += [fact.statement for fact in facts]
    paragraphs = [" ".join(intro)]
    n_paragraphs = rng.randint(5, 11) if level == 3 else rng.randint(7, 16)
    moved_from = [fact for fact in facts if level == 4 and fact.thing and rng.random() < 0.5]
    moves = [narrator.moved(fact, cast) for fact in moved_from]
    move_paragraph = [rng.randrange(n_paragraphs) for _ in moves]
    for index in range(n_paragraphs):
        paragraph = narrator.filler_paragraph(cast, rng.randint(4, 8))
        if level == 4 and rng.random() < 0.5:  # a distractor fact nobody asks about
            paragraph += " " + narrator.fact(rng.sample(narrator.world.people, 2)).statement
        paragraph += "".join(" " + move.statement for move, at in zip(moves, move_paragraph) if at == index)
        paragraphs.append(paragraph)
    askable = [fact for fact in facts if fact not in moved_from] + moves
    return "\n\n".join(paragraphs), cast, askable


def story_document(world: World, rng: random.Random, level: int) -> str:
    """Levels 3-4: a multi-paragraph story whose last paragraph asks about facts of its first."""
    narrator = Narrator(world, rng, level)
    body, cast, askable = _story(narrator, level)
    if rng.random() < 0.3:
        askable.append(narrator.semantic_question(rng.choice(cast)))
    asked = rng.sample(askable, min(len(askable), rng.randint(1, 3)))
    return body + "\n\n" + " ".join(fact.query + fact.answer for fact in asked)


def recall_case(world: World, rng: random.Random) -> dict:
    """A held-out case {"context", "query", "answer", "kind"}: context + query + answer is a story.

    kind "episodic": the answer was stated in the context (far before the query);
    kind "semantic": the answer is a fixed world fact that the context does not state.
    """
    level = rng.choice((3, 4))
    narrator = Narrator(world, rng, level)
    body, cast, askable = _story(narrator, level)
    if rng.random() < 0.5:
        question = narrator.semantic_question(rng.choice(cast))
        if question.answer.strip(" .") not in body:
            return {"context": body, "query": "\n\n" + question.query, "answer": question.answer,
                    "kind": "semantic", "level": level}
    fact = rng.choice(askable)
    return {"context": body, "query": "\n\n" + fact.query, "answer": fact.answer, "kind": "episodic",
            "level": level}


@functools.cache
def _world(seed: int) -> World:
    return build_world(seed)


def practice_recall_case(seed: int, corpus_seed: int = 0) -> dict:
    """A training twin of recall_case in the world of the corpus of `corpus_seed`: a question about
    a fact the story stated (a world fact it does not state is pretraining's to teach), its
    answer with the full stop the held-out file has; drawn from a stream apart from that file's."""
    rng = random.Random(f"mlot-recall-practice-{seed}")  # the held-out file's stream: "mlot-recall-<corpus seed>"
    while (case := recall_case(_world(corpus_seed), rng))["kind"] != "episodic":
        pass
    return {**case, "answer": case["answer"].strip()}
