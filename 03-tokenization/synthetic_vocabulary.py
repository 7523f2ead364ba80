"""Word lists of the synthetic corpus: names, places, things, and words by rarity tier.

Everything here is invented or ordinary English; the tiers give the curriculum its range from
common to rare vocabulary (level 1 texts draw only from COMMON, level 4 texts mostly from RARE).
Lists are tuples so their order, and so the generated corpus, never depends on hashing.
"""

FEMALE_FIRST_NAMES = (
    "Mara", "Lena", "Ilse", "Nora", "Tessa", "Wren", "Anya", "Clara", "Edda", "Freya", "Greta", "Hanna",
    "Isolde", "Juna", "Katja", "Liora", "Maren", "Nadia", "Orla", "Petra", "Rosa", "Selma", "Thea", "Ulla",
    "Vera", "Yara", "Zora", "Brielle", "Dagny", "Elin", "Fenna", "Gisela", "Halla", "Ines", "Jora", "Kaia",
    "Lotte", "Mira", "Nell", "Odette",
)
MALE_FIRST_NAMES = (
    "Tomas", "Anton", "Bram", "Caspar", "Dario", "Emil", "Falk", "Gideon", "Henrik", "Ivo", "Jonas", "Kasimir",
    "Lukas", "Magnus", "Nils", "Oskar", "Pavel", "Quentin", "Rafe", "Stellan", "Tobin", "Ulric", "Viktor",
    "Wendel", "Yannick", "Zeno", "Alaric", "Bastian", "Corin", "Dorian", "Elias", "Florian", "Gunnar",
    "Hugo", "Ingmar", "Jasper", "Konrad", "Leopold", "Matthias", "Niko",
)
SURNAMES = (
    "Voss", "Reed", "Hale", "Marsh", "Thorne", "Brandt", "Calloway", "Dunmore", "Ellery", "Fairweather",
    "Grell", "Holloway", "Ingram", "Jessup", "Kestrel", "Lindqvist", "Morrow", "Nettle", "Oakhart", "Pell",
    "Quill", "Ravenscroft", "Sorensen", "Tallis", "Underhill", "Vance", "Whitlock", "Yarrow", "Zeller",
    "Ashby", "Birch", "Crane", "Dorsey", "Everly", "Finch", "Gale", "Hartmann", "Ivers", "Jarvis", "Krol",
)
TOWNS = (
    "Ashford", "Brindlemoor", "Caldwick", "Dunhollow", "Eastmere", "Fenwick", "Greyhaven", "Harrowgate",
    "Ivydale", "Juniper Cross", "Kettleby", "Larkspur", "Millbrook", "Northwold", "Oakenshaw", "Pennywell",
    "Quarry End", "Rookhaven", "Saltmarsh", "Thistlebury", "Umberton", "Valewood", "Westcombe", "Yarrowby",
    "Amberley", "Blackwater", "Cobble Hill", "Dovecote", "Elmstead", "Foxley", "Gildersby", "Highcliff",
    "Ironbridge", "Kingsmere", "Lowmoor", "Marrowdale", "Nettlebed", "Oxbury", "Pinecrest", "Redhollow",
)
RIVERS = ("Avel", "Brenn", "Corrow", "Dessa", "Elder", "Fallow", "Glim", "Hesk", "Isen", "Lune", "Mere", "Tarrow")
REGIONS = ("northern hills", "southern plain", "eastern coast", "western valley", "high moor", "river delta",
           "pine forest", "lake country")
PRODUCTS = ("cheese", "glass", "wool", "copper pots", "apples", "rope", "candles", "paper", "honey", "clocks",
            "salt", "barley", "lace", "boats", "pottery", "ink")
LANDMARKS = ("old stone bridge", "clock tower", "red lighthouse", "round chapel", "iron gate", "water mill",
             "twin oaks", "market hall", "windmill", "observatory", "grey fortress", "glass house")
PROFESSIONS = (
    "baker", "blacksmith", "carpenter", "teacher", "fisher", "weaver", "doctor", "potter", "miller", "tailor",
    "gardener", "librarian", "sailor", "shepherd", "glassblower", "mason", "cook", "painter", "clockmaker",
    "beekeeper", "cartographer", "apothecary", "brewer", "bookbinder", "farmer", "nurse", "musician",
    "ferryman", "locksmith", "jeweller", "innkeeper", "astronomer", "chandler", "cooper", "engineer",
    "merchant", "printer", "saddler", "surveyor", "watchman",
)
COLORS = ("red", "blue", "green", "yellow", "black", "white", "grey", "brown", "silver", "golden", "orange",
          "purple", "amber", "crimson", "teal", "violet")
OBJECTS = (
    "key", "lantern", "map", "violin", "ledger", "compass", "hammer", "teapot", "notebook", "telescope",
    "umbrella", "scarf", "ring", "clock", "basket", "kettle", "letter", "coin", "candle", "mirror", "drum",
    "flute", "saddle", "blanket", "chest", "spoon", "whistle", "knife", "bell", "book", "jar", "hat",
    "glove", "bottle", "rope", "shovel", "brush", "cup", "pipe", "box",
)
PLACES = (
    "cellar", "attic", "library", "harbor", "mill", "chapel", "market", "orchard", "bakery", "lighthouse",
    "workshop", "garden shed", "stable", "kitchen", "boathouse", "school", "tower", "barn", "inn",
    "post office", "greenhouse", "study", "pantry", "forge",
)
CONTAINERS = ("vault", "safe", "locker", "cabinet", "strongbox", "gate", "padlock", "trunk", "cellar door",
              "archive", "treasury", "lockbox")
ROOMS = ("map room", "north wing", "old archive", "east tower", "wine cellar", "council chamber",
         "guest house", "engine room", "reading room", "boat shed")
EVENTS = ("harvest fair", "council meeting", "boat race", "choir rehearsal", "wedding", "lantern parade",
          "market day", "chess tournament", "spring dance", "book auction", "horse show", "town feast")
ANIMALS = ("cat", "dog", "horse", "goat", "parrot", "rabbit", "owl", "donkey", "ferret", "tortoise", "hen",
           "pony")
PET_NAMES = ("Pip", "Bramble", "Juniper", "Mosk", "Tinder", "Biscuit", "Pepper", "Sable", "Clover", "Rusk",
             "Nutmeg", "Fable", "Ember", "Quince", "Thimble", "Button", "Sorrel", "Wisp", "Maple", "Tansy")
GOODS = ("apples", "eggs", "candles", "loaves", "pears", "jars of honey", "bolts of cloth", "fish", "lemons",
         "nails", "cabbages", "cheeses", "plums", "sacks of flour", "bottles of ink", "spools of thread")
VEHICLES = ("boat", "cart", "bicycle", "wagon", "sled", "barge", "carriage", "canoe")
PASSWORDS = ("heron", "thimble", "lantern", "marigold", "quartz", "falcon", "ember", "juniper", "cobalt",
             "sparrow", "willow", "granite", "saffron", "tundra", "velvet", "harbor")
DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September",
          "October", "November", "December")
FOODS = ("peanuts", "strawberries", "shellfish", "milk", "wheat", "eggs", "walnuts", "sesame", "celery",
         "mustard")
HOBBIES = ("chess", "painting", "sailing", "gardening", "fishing", "knitting", "climbing", "singing",
           "woodcarving", "astronomy", "pottery", "archery")
INSTRUMENTS = ("violin", "cello", "flute", "piano", "harp", "drums", "guitar", "accordion", "trumpet", "oboe")
NUMBER_WORDS = ("two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve")

# ---- words by rarity tier: adjectives, nouns (things), transitive and intransitive past-tense verbs ----
COMMON = {
    "adjectives": ("big", "small", "old", "new", "warm", "cold", "long", "short", "good", "happy", "quiet",
                   "loud", "bright", "dark", "soft", "hard", "clean", "wet", "dry", "kind", "busy", "calm",
                   "tall", "young", "full", "empty", "red", "heavy", "light", "round"),
    "nouns": ("table", "chair", "book", "cup", "bread", "box", "bag", "door", "window", "basket", "coat",
              "ball", "plate", "bowl", "lamp", "bed", "pen", "shoe", "hat", "key", "stone", "apple", "bench",
              "fence", "gate", "wall", "roof", "bucket", "ladder", "letter"),
    "transitive": ("opened", "closed", "found", "took", "carried", "painted", "cleaned", "washed", "moved",
                   "lifted", "fixed", "held", "filled", "dropped", "brought", "wanted", "liked", "used"),
    "intransitive": ("walked", "ran", "sat", "waited", "smiled", "laughed", "slept", "sang", "rested",
                     "stopped", "looked around", "stayed", "worked", "talked", "listened", "danced"),
}
UNCOMMON = {
    "adjectives": ("weathered", "gleaming", "narrow", "restless", "sturdy", "faded", "hollow", "crooked",
                   "fragrant", "solemn", "brittle", "vivid", "frugal", "rugged", "patient", "drowsy",
                   "nimble", "stately", "peculiar", "tranquil", "shabby", "earnest", "gloomy", "meager",
                   "lavish", "sullen", "radiant", "cautious", "elaborate", "ornate"),
    "nouns": ("lantern", "parchment", "cobblestone", "hearth", "ledger", "tapestry", "furnace", "sleigh",
              "bellows", "trellis", "almanac", "spindle", "satchel", "weathervane", "chalice", "quill",
              "anvil", "tinderbox", "hourglass", "goblet", "banister", "wheelbarrow", "inkwell", "cauldron",
              "saddlebag", "candlestick", "footstool", "mantelpiece", "crate", "sieve"),
    "transitive": ("polished", "mended", "sketched", "examined", "gathered", "rummaged through", "bartered",
                   "inspected", "unwrapped", "repaired", "scrubbed", "measured", "arranged", "guarded",
                   "admired", "fetched", "sharpened", "tidied"),
    "intransitive": ("wandered", "lingered", "hesitated", "stumbled", "whispered", "trudged", "clambered",
                     "pondered", "shuffled", "murmured", "dozed", "grumbled", "strolled", "paused",
                     "sighed", "hummed"),
}
RARE = {
    "adjectives": ("crepuscular", "obstreperous", "perspicacious", "lugubrious", "mellifluous", "pellucid",
                   "recondite", "tenebrous", "quiescent", "effulgent", "sempiternal", "inchoate", "lambent",
                   "fulvous", "chthonic", "vertiginous", "saturnine", "refulgent", "indefatigable",
                   "susurrous", "opalescent", "querulous", "perfunctory", "ineffable", "labyrinthine",
                   "gossamer", "diaphanous", "antediluvian", "sesquipedalian", "eldritch"),
    "nouns": ("palimpsest", "escritoire", "astrolabe", "reliquary", "phylactery", "portmanteau", "vellum",
              "bezoar", "gnomon", "orrery", "codex", "baldachin", "sextant", "psaltery", "armillary",
              "clepsydra", "thurible", "ewer", "aspergillum", "monstrance", "tabard", "quern", "astragal",
              "ciborium", "lorgnette", "chatelaine", "reredos", "aumbry", "triptych", "cartouche"),
    "transitive": ("obfuscated", "promulgated", "sequestered", "ameliorated", "adumbrated", "expurgated",
                   "bifurcated", "excoriated", "palpated", "burnished", "annotated", "transmogrified",
                   "catalogued", "scrutinized", "embellished", "deciphered", "collated", "appraised"),
    "intransitive": ("perambulated", "expostulated", "ruminated", "remonstrated", "equivocated",
                     "prevaricated", "cogitated", "tergiversated", "extemporized", "vituperated",
                     "genuflected", "meandered", "dawdled", "convalesced", "philosophized", "gesticulated"),
}
TIERS = (COMMON, UNCOMMON, RARE)
