"""Content of the bundled general evaluation set and the general held-out pairs (used by scripts/make_data.py).

Every answer here is a fact checked by hand, or computed (arithmetic, units); lists of irregular forms are standard
English. Items that repeat, or nearly repeat, a question of the anchor corpus (general/train.jsonl) or of a domain
training corpus are dropped when the set is built.
"""
from __future__ import annotations

import random

from make_data import near_duplicate, norm, place

LEGACY = [
    ["What is the capital of France?", ["Paris", "Lyon", "Marseille", "Nice"], 0, "geography"],
    ["What is the capital of Italy?", ["Rome", "Milan", "Venice", "Naples"], 0, "geography"],
    ["What is the capital of Spain?", ["Barcelona", "Madrid", "Seville", "Valencia"], 1, "geography"],
    ["What is the capital of Germany?", ["Munich", "Hamburg", "Berlin", "Frankfurt"], 2, "geography"],
    ["What is the capital of the United Kingdom?", ["London", "Manchester", "Liverpool", "Birmingham"], 0, "geography"],
    ["What is the capital of Egypt?", ["Alexandria", "Cairo", "Luxor", "Aswan"], 1, "geography"],
    ["What is the capital of Russia?", ["Kazan", "Novosibirsk", "Moscow", "Saint Petersburg"], 2, "geography"],
    ["What is the capital of China?", ["Beijing", "Shanghai", "Guangzhou", "Shenzhen"], 0, "geography"],
    ["Which city is the capital of the United States?", ["New York", "Chicago", "Los Angeles", "Washington"], 3, "geography"],
    ["On which continent is Kenya?", ["Asia", "Europe", "South America", "Africa"], 3, "geography"],
    ["In which country is the Eiffel Tower?", ["Italy", "France", "Spain", "Germany"], 1, "geography"],
    ["Which is the largest continent?", ["Africa", "Europe", "Asia", "Australia"], 2, "geography"],
    ["What is the capital of India?", ["Mumbai", "New Delhi", "Kolkata", "Chennai"], 1, "geography"],
    ["Which ocean lies off the east coast of the United States?", ["Atlantic", "Pacific", "Indian", "Arctic"], 0, "geography"],
    ["What is the capital of Austria?", ["Salzburg", "Vienna", "Graz", "Innsbruck"], 1, "geography"],
    ["What is the capital of the Netherlands?", ["Rotterdam", "Amsterdam", "Utrecht", "Eindhoven"], 1, "geography"],
    ["What is the capital of Belgium?", ["Antwerp", "Brussels", "Ghent", "Bruges"], 1, "geography"],
    ["Which city is nicknamed the Big Apple?", ["Chicago", "Boston", "New York", "Miami"], 2, "geography"],
    ["In which country is the city of Venice?", ["France", "Italy", "Greece", "Spain"], 1, "geography"],
    ["What is the capital of Scotland?", ["Glasgow", "Aberdeen", "Edinburgh", "Dundee"], 2, "geography"],
    ["What is the capital of Denmark?", ["Copenhagen", "Aarhus", "Odense", "Aalborg"], 0, "geography"],
    ["What is the capital of Finland?", ["Helsinki", "Tampere", "Turku", "Oulu"], 0, "geography"],
    ["In which country is the city of Sydney?", ["New Zealand", "Australia", "Canada", "England"], 1, "geography"],
    ["In which country is the city of Toronto?", ["Canada", "United States", "England", "Australia"], 0, "geography"],
    ["Which country is directly north of the United States?", ["Mexico", "Canada", "Brazil", "Cuba"], 1, "geography"],
    ["On which planet do humans live?", ["Mars", "Venus", "Earth", "Jupiter"], 2, "science"],
    ["Which gas do humans need to breathe in to stay alive?", ["Oxygen", "Helium", "Hydrogen", "Neon"], 0, "science"],
    ["What happens to liquid water when it gets very cold?", ["It freezes", "It boils", "It burns", "It evaporates"], 0, "science"],
    ["What is the Sun?", ["A star", "A planet", "A moon", "A comet"], 0, "science"],
    ["Which sense do you use your nose for?", ["Smell", "Taste", "Hearing", "Sight"], 0, "science"],
    ["Which body parts do we use to see?", ["Ears", "Nose", "Eyes", "Tongue"], 2, "science"],
    ["Which body parts do we use to hear?", ["Eyes", "Knees", "Ears", "Hands"], 2, "science"],
    ["What do we call frozen water?", ["Steam", "Fog", "Ice", "Dew"], 2, "science"],
    ["What do magnets attract?", ["Iron", "Wood", "Glass", "Plastic"], 0, "science"],
    ["Which season is usually the coldest?", ["Winter", "Summer", "Spring", "Autumn"], 0, "science"],
    ["Which season comes after spring?", ["Winter", "Autumn", "Fall", "Summer"], 3, "science"],
    ["Which body parts do we use to chew food?", ["Knees", "Elbows", "Teeth", "Toes"], 2, "science"],
    ["What shape is the Earth, roughly?", ["A cube", "A cone", "A sphere", "A pyramid"], 2, "science"],
    ["What does ice become when it melts?", ["Steam", "Snow", "Water", "Salt"], 2, "science"],
    ["What is the main source of light during the day?", ["The Moon", "The stars", "Lightning", "The Sun"], 3, "science"],
    ["What do we call a scientist who studies the stars?", ["Astronomer", "Geologist", "Botanist", "Chemist"], 0, "science"],
    ["What do plant roots take up from the soil?", ["Sunlight", "Smoke", "Water", "Heat"], 2, "science"],
    ["What does a caterpillar turn into?", ["Spider", "Ant", "Bee", "Butterfly"], 3, "animals"],
    ["What is 2 + 3?", ["4", "6", "7", "5"], 3, "arithmetic"],
    ["What is 10 - 4?", ["5", "7", "6", "8"], 2, "arithmetic"],
    ["What is 3 x 3?", ["6", "8", "9", "12"], 2, "arithmetic"],
    ["What is 4 + 4?", ["6", "8", "7", "9"], 1, "arithmetic"],
    ["What is 12 divided by 3?", ["3", "5", "6", "4"], 3, "arithmetic"],
    ["What is 5 x 2?", ["12", "15", "10", "25"], 2, "arithmetic"],
    ["What is 9 - 3?", ["5", "7", "4", "6"], 3, "arithmetic"],
    ["What is 20 + 30?", ["40", "60", "50", "70"], 2, "arithmetic"],
    ["What is 7 + 1?", ["6", "8", "7", "9"], 1, "arithmetic"],
    ["What is 100 divided by 10?", ["20", "10", "50", "90"], 1, "arithmetic"],
    ["What is 6 + 6?", ["11", "12", "13", "14"], 1, "arithmetic"],
    ["How many days are in a week?", ["7", "5", "6", "8"], 0, "time"],
    ["How many months are in a year?", ["10", "12", "11", "13"], 1, "time"],
    ["How many hours are in a day?", ["12", "20", "24", "30"], 2, "time"],
    ["How many minutes are in an hour?", ["30", "60", "90", "100"], 1, "time"],
    ["How many sides does a triangle have?", ["4", "5", "3", "6"], 2, "arithmetic"],
    ["How many sides does a square have?", ["4", "3", "5", "6"], 0, "arithmetic"],
    ["What is half of 10?", ["5", "2", "4", "8"], 0, "arithmetic"],
    ["What is double 4?", ["8", "6", "10", "12"], 0, "arithmetic"],
    ["What is 1 + 1?", ["1", "3", "4", "2"], 3, "arithmetic"],
    ["What is 3 + 4?", ["6", "8", "7", "9"], 2, "arithmetic"],
    ["How many fingers are on one hand?", ["4", "6", "5", "10"], 2, "common_sense"],
    ["How many wheels does a bicycle have?", ["3", "4", "6", "2"], 3, "common_sense"],
    ["How many legs does a dog have?", ["2", "4", "6", "8"], 1, "animals"],
    ["How many legs does a spider have?", ["6", "8", "4", "10"], 1, "animals"],
    ["How many legs does an insect have?", ["6", "8", "4", "10"], 0, "animals"],
    ["What is the opposite of hot?", ["Warm", "Wet", "Soft", "Cold"], 3, "language"],
    ["What is the opposite of up?", ["Left", "Down", "Over", "Around"], 1, "language"],
    ["What is the opposite of big?", ["Tall", "Small", "Wide", "Heavy"], 1, "language"],
    ["What is the opposite of fast?", ["Quick", "Loud", "Early", "Slow"], 3, "language"],
    ["What is the opposite of day?", ["Morning", "Night", "Noon", "Week"], 1, "language"],
    ["What is the opposite of happy?", ["Glad", "Kind", "Sad", "Tired"], 2, "language"],
    ["What is the opposite of open?", ["Empty", "Broken", "Full", "Closed"], 3, "language"],
    ["What is the opposite of young?", ["New", "Tall", "Small", "Old"], 3, "language"],
    ["What is the opposite of wet?", ["Cold", "Clean", "Soft", "Dry"], 3, "language"],
    ["What is the opposite of win?", ["Play", "Tie", "Lose", "Score"], 2, "language"],
    ["What is the opposite of always?", ["Often", "Sometimes", "Usually", "Never"], 3, "language"],
    ["What is the opposite of heavy?", ["Big", "Dark", "Light", "Strong"], 2, "language"],
    ["What is the plural of tooth?", ["Teeth", "Tooths", "Toothes", "Toothen"], 0, "language"],
    ["What is the plural of foot?", ["Foots", "Feet", "Footes", "Footen"], 1, "language"],
    ["What is the plural of goose?", ["Gooses", "Goosen", "Geese", "Goosies"], 2, "language"],
    ["What is the past tense of run?", ["Ran", "Runned", "Runs", "Running"], 0, "language"],
    ["What is the past tense of see?", ["Saw", "Seed", "Seen", "Seeing"], 0, "language"],
    ["How many letters are in the English alphabet?", ["24", "25", "26", "28"], 2, "language"],
    ["Which word rhymes with cat?", ["Dog", "Cup", "Hat", "Car"], 2, "language"],
    ["Which word rhymes with moon?", ["Star", "Sun", "Mile", "Spoon"], 3, "language"],
    ["Which word means the same as small?", ["Huge", "Little", "Tall", "Loud"], 1, "language"],
    ["What does the Spanish word 'hola' mean in English?", ["Goodbye", "Thanks", "Please", "Hello"], 3, "language"],
    ["What does the Spanish word 'gracias' mean in English?", ["Hello", "Goodbye", "Thank you", "Please"], 2, "language"],
    ["Which spelling is correct: becuase, becouse, beacuse or because?", ["Becuase", "Becouse", "Beacuse", "Because"], 3, "language"],
    ["Which of these words is a colour: chair, blue, quickly or jump?", ["Chair", "Blue", "Quickly", "Jump"], 1, "language"],
    ["Which day comes after Monday?", ["Wednesday", "Sunday", "Tuesday", "Friday"], 2, "time"],
    ["Which day comes before Saturday?", ["Friday", "Thursday", "Sunday", "Monday"], 0, "time"],
    ["Which month comes after January?", ["March", "December", "April", "February"], 3, "time"],
    ["Which month comes before December?", ["October", "November", "January", "September"], 1, "time"],
    ["What is the first month of the year?", ["January", "March", "June", "December"], 0, "time"],
    ["What is the last month of the year?", ["December", "November", "January", "June"], 0, "time"],
    ["Which of these days is part of the weekend: Monday, Tuesday, Wednesday or Sunday?", ["Monday", "Tuesday", "Wednesday", "Sunday"], 3, "time"],
    ["Which month usually has the fewest days?", ["January", "March", "February", "August"], 2, "time"],
    ["Which month comes after June?", ["August", "July", "May", "September"], 1, "time"],
    ["Which day comes after Friday?", ["Thursday", "Sunday", "Monday", "Saturday"], 3, "time"],
    ["In which month is Christmas Day?", ["November", "December", "January", "July"], 1, "time"],
    ["In which month is Halloween?", ["October", "September", "November", "December"], 0, "time"],
    ["What colour is grass?", ["Green", "Blue", "Red", "Purple"], 0, "colours"],
    ["What colour is a ripe banana?", ["Blue", "Purple", "Yellow", "Green"], 2, "colours"],
    ["What colour is fresh snow?", ["White", "Grey", "Brown", "Black"], 0, "colours"],
    ["What colour do you get by mixing blue and yellow?", ["Green", "Orange", "Purple", "Pink"], 0, "colours"],
    ["What colour do you get by mixing red and white?", ["Purple", "Orange", "Pink", "Brown"], 2, "colours"],
    ["What colour is a stop sign?", ["Red", "Blue", "Green", "Yellow"], 0, "colours"],
    ["What colour is coal?", ["White", "Pink", "Yellow", "Black"], 3, "colours"],
    ["What colour is a ripe tomato?", ["Blue", "Purple", "Black", "Red"], 3, "colours"],
    ["What colour is milk?", ["Green", "Brown", "White", "Blue"], 2, "colours"],
    ["What colour do you get by mixing red and yellow?", ["Green", "Purple", "Blue", "Orange"], 3, "colours"],
    ["What colour do you get by mixing red and blue?", ["Purple", "Green", "Orange", "Brown"], 0, "colours"],
    ["Which animal says 'moo'?", ["Cow", "Dog", "Sheep", "Duck"], 0, "animals"],
    ["Which animal barks?", ["Cat", "Cow", "Horse", "Dog"], 3, "animals"],
    ["Which is the largest land animal?", ["Giraffe", "Elephant", "Hippo", "Rhino"], 1, "animals"],
    ["Which animal has a very long neck?", ["Zebra", "Giraffe", "Lion", "Bear"], 1, "animals"],
    ["Which animal is called the king of the jungle?", ["Tiger", "Lion", "Bear", "Wolf"], 1, "animals"],
    ["What drink do we get from cows?", ["Juice", "Tea", "Milk", "Coffee"], 2, "animals"],
    ["What is a baby cat called?", ["Puppy", "Kitten", "Calf", "Foal"], 1, "animals"],
    ["What is a baby dog called?", ["Kitten", "Cub", "Lamb", "Puppy"], 3, "animals"],
    ["What is a baby sheep called?", ["Calf", "Foal", "Kid", "Lamb"], 3, "animals"],
    ["Which farm animal lays eggs?", ["Chicken", "Cow", "Pig", "Horse"], 0, "animals"],
    ["Which animal has black and white stripes?", ["Tiger", "Leopard", "Horse", "Zebra"], 3, "animals"],
    ["Which of these animals can fly: a penguin, a cat, an eagle or a horse?", ["Penguin", "Cat", "Eagle", "Horse"], 2, "animals"],
    ["Where do fish live?", ["Trees", "Deserts", "Caves", "Water"], 3, "animals"],
    ["Which animal hops and carries its baby in a pouch?", ["Rabbit", "Kangaroo", "Frog", "Deer"], 1, "animals"],
    ["What sweet food do bees make?", ["Jam", "Butter", "Syrup", "Honey"], 3, "animals"],
    ["Which animal is famous for being very slow?", ["Cheetah", "Snail", "Rabbit", "Horse"], 1, "animals"],
    ["What is the fastest land animal?", ["Lion", "Horse", "Elephant", "Cheetah"], 3, "animals"],
    ["Which animal says 'meow'?", ["Cat", "Dog", "Cow", "Duck"], 0, "animals"],
    ["What does a spider spin?", ["A nest", "A hive", "A shell", "A web"], 3, "animals"],
    ["What do we get from sheep to make sweaters?", ["Wool", "Silk", "Cotton", "Linen"], 0, "animals"],
    ["What do you use to write on paper?", ["Spoon", "Pen", "Comb", "Brush"], 1, "common_sense"],
    ["What do you use to cut food?", ["Spoon", "Knife", "Cup", "Plate"], 1, "common_sense"],
    ["What do you use to eat soup?", ["Fork", "Knife", "Spoon", "Plate"], 2, "common_sense"],
    ["What do you sleep on at night?", ["Table", "Bed", "Stove", "Sink"], 1, "common_sense"],
    ["Which appliance is used to bake bread?", ["Fridge", "Kettle", "Dishwasher", "Oven"], 3, "common_sense"],
    ["What do you use to tell the time?", ["Clock", "Ruler", "Scale", "Compass"], 0, "common_sense"],
    ["What do you wear on your feet?", ["Gloves", "Shoes", "Hats", "Scarves"], 1, "common_sense"],
    ["What do you wear on your hands in cold weather?", ["Socks", "Boots", "Gloves", "Belts"], 2, "common_sense"],
    ["What do you use to open a locked door?", ["Key", "Spoon", "Brush", "Cup"], 0, "common_sense"],
    ["What do you use to brush your teeth?", ["Hairbrush", "Toothbrush", "Comb", "Sponge"], 1, "common_sense"],
    ["Where do you go to buy bread?", ["Library", "Bakery", "Pharmacy", "Garage"], 1, "common_sense"],
    ["Where do planes take off and land?", ["Harbour", "Station", "Stadium", "Airport"], 3, "common_sense"],
    ["What do you use to dry yourself after a shower?", ["Pillow", "Blanket", "Curtain", "Towel"], 3, "common_sense"],
    ["Which meal do people usually eat in the morning?", ["Breakfast", "Dinner", "Lunch", "Supper"], 0, "common_sense"],
    ["What do you use to measure length?", ["Clock", "Scale", "Ruler", "Thermometer"], 2, "common_sense"],
    ["Which device is used to take photos?", ["Radio", "Kettle", "Camera", "Printer"], 2, "common_sense"],
    ["Who teaches students at school?", ["Teacher", "Pilot", "Chef", "Farmer"], 0, "common_sense"],
    ["Who flies a plane?", ["Sailor", "Chef", "Farmer", "Pilot"], 3, "common_sense"],
    ["Who cooks food in a restaurant kitchen?", ["Waiter", "Pilot", "Nurse", "Chef"], 3, "common_sense"],
    ["Where do you go when you are very sick and need a doctor?", ["Bakery", "Library", "Cinema", "Hospital"], 3, "common_sense"],
]


# --------------------------------------------------------------------------------------------------------------------
# Generated from checked lists

def arithmetic(rng: random.Random) -> list[tuple]:
    """(question, correct, wrong x3, category): sums, differences, products and quotients of small numbers."""
    out, seen = [], set()

    def add(q, ans, offsets):
        if q in seen:
            return
        wrong = []
        for d in offsets:
            w = ans + d
            if w >= 0 and w != ans and str(w) not in wrong:
                wrong.append(str(w))
        if len(wrong) >= 3:
            seen.add(q)
            out.append((q, str(ans), wrong[:3], "arithmetic"))

    for _ in range(14):
        a, b = rng.randint(11, 49), rng.randint(11, 49)
        add(f"What is {a} + {b}?", a + b, rng.sample([-10, -2, -1, 1, 2, 10], 3))
    for _ in range(12):
        a = rng.randint(30, 99)
        b = rng.randint(11, a - 5)
        add(f"What is {a} - {b}?", a - b, rng.sample([-10, -2, -1, 1, 2, 10], 3))
    for _ in range(14):
        a, b = rng.randint(3, 9), rng.randint(3, 9)
        add(f"What is {a} times {b}?", a * b, rng.sample([-a, a, -b, b, -1, 1, 2], 3) if a != b else [-a, a, 1])
    for _ in range(8):
        b, q = rng.randint(2, 9), rng.randint(3, 12)
        add(f"What is {b * q} divided by {b}?", q, rng.sample([-2, -1, 1, 2, 3], 3))
    for n in (14, 22, 36, 50):
        add(f"What is half of {n}?", n // 2, [-2, 2, n // 2])
    for n in (7, 15, 25):
        add(f"What is double {n}?", 2 * n, [-2, 2, -n])
    return out


UNITS = [  # (question, answer, wrong x3): definitions of units and counts
    ("How many centimetres are in one metre?", "100", ["10", "1000", "12"]),
    ("How many grams are in one kilogram?", "1000", ["100", "10", "500"]),
    ("How many metres are in one kilometre?", "1000", ["100", "10000", "500"]),
    ("How many millimetres are in one centimetre?", "10", ["100", "12", "1000"]),
    ("How many millilitres are in one litre?", "1000", ["100", "10", "250"]),
    ("How many seconds are in one minute?", "60", ["100", "30", "24"]),
    ("How many days are there in a leap year?", "366", ["365", "360", "364"]),
    ("How many weeks are in a year?", "52", ["12", "48", "36"]),
    ("How many inches are in one foot?", "12", ["10", "16", "3"]),
    ("How many feet are in one yard?", "3", ["12", "5", "10"]),
    ("How many ounces are in one pound?", "16", ["12", "10", "20"]),
    ("How many years are in a century?", "100", ["10", "1000", "50"]),
    ("How many years are in a decade?", "10", ["100", "5", "12"]),
    ("How many years are in a millennium?", "1000", ["100", "10", "500"]),
    ("How many cents make one US dollar?", "100", ["10", "50", "1000"]),
    ("How many days are in a fortnight?", "14", ["7", "10", "30"]),
    ("How many things are in a dozen?", "12", ["10", "6", "20"]),
    ("How many degrees are in a right angle?", "90", ["180", "45", "360"]),
    ("How many degrees are in a full circle?", "360", ["180", "90", "100"]),
    ("How many hours are in two days?", "48", ["24", "36", "72"]),
    ("How many minutes are in half an hour?", "30", ["15", "50", "60"]),
    ("How many seconds are in one hour?", "3600", ["600", "360", "6000"]),
    ("How many days does April have?", "30", ["31", "28", "29"]),
    ("How many days does February have in a leap year?", "29", ["28", "30", "31"]),
    ("At what temperature in degrees Celsius does pure water boil at sea level?", "100", ["50", "212", "90"]),
    ("At what temperature in degrees Celsius does pure water freeze?", "0", ["32", "10", "4"]),
    ("How many players does a soccer team have on the field at once?", "11", ["9", "7", "15"]),
    ("How many players does a basketball team have on the court at once?", "5", ["6", "11", "4"]),
    ("How many cards are in a standard deck without jokers?", "52", ["54", "48", "64"]),
    ("How many squares are on a chessboard?", "64", ["100", "81", "36"]),
    ("How many strings does a standard guitar have?", "6", ["4", "5", "12"]),
    ("How many keys does a standard piano have?", "88", ["66", "100", "72"]),
]

SHAPES = [("pentagon", "5"), ("hexagon", "6"), ("octagon", "8"), ("heptagon", "7"), ("decagon", "10"),
          ("rectangle", "4")]

OPPOSITES = [  # each word appears once: no distractor can also be a right answer
    ("tall", "short"), ("early", "late"), ("push", "pull"), ("rich", "poor"), ("hard", "soft"),
    ("inside", "outside"), ("above", "below"), ("buy", "sell"), ("thick", "thin"), ("loud", "quiet"),
    ("strong", "weak"), ("clean", "dirty"), ("remember", "forget"), ("friend", "enemy"), ("question", "answer"),
    ("rough", "smooth"), ("wide", "narrow"), ("first", "last"), ("give", "take"), ("enter", "exit"),
    ("true", "false"), ("maximum", "minimum"), ("asleep", "awake"), ("cheap", "expensive"), ("safe", "dangerous"),
    ("accept", "refuse"), ("victory", "defeat"), ("north", "south"), ("east", "west"), ("love", "hate"),
    ("lend", "borrow"), ("ancient", "modern"), ("increase", "decrease"), ("arrive", "depart"), ("sharp", "blunt"),
    ("deep", "shallow"), ("generous", "mean"), ("polite", "rude"),
]

PAST = [  # (verb, simple past, past participle)
    ("go", "went", "gone"), ("eat", "ate", "eaten"), ("write", "wrote", "written"), ("swim", "swam", "swum"),
    ("sing", "sang", "sung"), ("drink", "drank", "drunk"), ("fly", "flew", "flown"), ("bring", "brought", None),
    ("buy", "bought", None), ("think", "thought", None), ("teach", "taught", None), ("catch", "caught", None),
    ("take", "took", "taken"), ("give", "gave", "given"), ("speak", "spoke", "spoken"), ("break", "broke", "broken"),
    ("choose", "chose", "chosen"), ("drive", "drove", "driven"), ("ride", "rode", "ridden"),
    ("freeze", "froze", "frozen"), ("steal", "stole", "stolen"), ("sleep", "slept", None), ("keep", "kept", None),
    ("feel", "felt", None), ("meet", "met", None), ("sit", "sat", None), ("stand", "stood", None),
    ("tell", "told", None), ("sell", "sold", None), ("find", "found", None), ("build", "built", None),
    ("send", "sent", None), ("begin", "began", "begun"), ("sink", "sank", "sunk"), ("throw", "threw", "thrown"),
    ("grow", "grew", "grown"), ("know", "knew", "known"), ("draw", "drew", "drawn"), ("fall", "fell", "fallen"),
    ("forget", "forgot", "forgotten"), ("bite", "bit", "bitten"), ("shake", "shook", "shaken"),
    ("wear", "wore", "worn"),
]

PLURALS = [  # (singular, plural, wrong x3)
    ("man", "men", ["mans", "mens", "manes"]), ("woman", "women", ["womans", "womens", "womanes"]),
    ("person", "people", ["persones", "peoples", "personen"]), ("ox", "oxen", ["oxes", "oxs", "oxi"]),
    ("cactus", "cacti", ["cactuses", "cactes", "cactis"]), ("knife", "knives", ["knifes", "knifs", "knive"]),
    ("leaf", "leaves", ["leafs", "leafes", "leaven"]), ("wolf", "wolves", ["wolfs", "wolfes", "wolven"]),
    ("potato", "potatoes", ["potatos", "potatis", "potaties"]), ("city", "cities", ["citys", "cityes", "citi"]),
    ("baby", "babies", ["babys", "babyes", "babi"]), ("box", "boxes", ["boxs", "boxen", "bixes"]),
    ("louse", "lice", ["louses", "lices", "lousen"]), ("crisis", "crises", ["crisises", "crisiss", "crisi"]),
    ("phenomenon", "phenomena", ["phenomenons", "phenomenas", "phenomeni"]),
    ("criterion", "criteria", ["criterions", "criterias", "criteri"]), ("half", "halves", ["halfs", "halfes", "halven"]),
    ("fungus", "fungi", ["funguses", "fungis", "fungae"]), ("church", "churches", ["churchs", "churchen", "churchies"]),
]

CAPITALS = [  # (country, capital, three other cities of that country)
    ("Australia", "Canberra", ["Sydney", "Melbourne", "Brisbane"]),
    ("Canada", "Ottawa", ["Toronto", "Vancouver", "Montreal"]),
    ("Brazil", "Brasília", ["Rio de Janeiro", "São Paulo", "Salvador"]),
    ("Turkey", "Ankara", ["Istanbul", "Izmir", "Antalya"]),
    ("Switzerland", "Bern", ["Zurich", "Geneva", "Basel"]),
    ("Kenya", "Nairobi", ["Mombasa", "Kisumu", "Nakuru"]),
    ("Nigeria", "Abuja", ["Lagos", "Kano", "Ibadan"]),
    ("South Korea", "Seoul", ["Busan", "Incheon", "Daegu"]),
    ("Vietnam", "Hanoi", ["Ho Chi Minh City", "Da Nang", "Hue"]),
    ("Argentina", "Buenos Aires", ["Córdoba", "Rosario", "Mendoza"]),
    ("Peru", "Lima", ["Cusco", "Arequipa", "Trujillo"]),
    ("Chile", "Santiago", ["Valparaíso", "Concepción", "Antofagasta"]),
    ("Colombia", "Bogotá", ["Medellín", "Cali", "Cartagena"]),
    ("Mexico", "Mexico City", ["Guadalajara", "Monterrey", "Cancún"]),
    ("Portugal", "Lisbon", ["Porto", "Faro", "Coimbra"]),
    ("Greece", "Athens", ["Thessaloniki", "Patras", "Heraklion"]),
    ("Poland", "Warsaw", ["Kraków", "Gdańsk", "Wrocław"]),
    ("Sweden", "Stockholm", ["Gothenburg", "Malmö", "Uppsala"]),
    ("Ireland", "Dublin", ["Cork", "Galway", "Limerick"]),
    ("Hungary", "Budapest", ["Debrecen", "Szeged", "Pécs"]),
    ("the Czech Republic", "Prague", ["Brno", "Ostrava", "Plzeň"]),
    ("Morocco", "Rabat", ["Casablanca", "Marrakesh", "Fez"]),
    ("Pakistan", "Islamabad", ["Karachi", "Lahore", "Peshawar"]),
    ("Saudi Arabia", "Riyadh", ["Jeddah", "Mecca", "Dammam"]),
    ("Iran", "Tehran", ["Isfahan", "Shiraz", "Mashhad"]),
    ("Iraq", "Baghdad", ["Basra", "Mosul", "Erbil"]),
    ("the Philippines", "Manila", ["Cebu City", "Davao City", "Zamboanga"]),
    ("New Zealand", "Wellington", ["Auckland", "Christchurch", "Dunedin"]),
    ("Cuba", "Havana", ["Santiago de Cuba", "Camagüey", "Holguín"]),
    ("Ukraine", "Kyiv", ["Kharkiv", "Odesa", "Lviv"]),
    ("Wales", "Cardiff", ["Swansea", "Newport", "Bangor"]),
    ("Jordan", "Amman", ["Aqaba", "Irbid", "Zarqa"]),
]

SYMBOLS = [  # (element, symbol, wrong x3): two-letter symbols only, none an English word
    ("gold", "Au", ["Ag", "Gd", "Gl"]), ("silver", "Ag", ["Au", "Si", "Sv"]), ("sodium", "Na", ["Sd", "Sm", "Nm"]),
    ("lead", "Pb", ["Ld", "Pd", "Pl"]), ("copper", "Cu", ["Cp", "Cr", "Co"]), ("tin", "Sn", ["Tn", "Ti", "Sb"]),
    ("mercury", "Hg", ["Mc", "Hy", "Mu"]), ("calcium", "Ca", ["Cm", "Ck", "Cc"]), ("zinc", "Zn", ["Zi", "Zc", "Zr"]),
    ("chlorine", "Cl", ["Ch", "Ci", "Cn"]), ("magnesium", "Mg", ["Mn", "Ms", "Mm"]),
]

# --------------------------------------------------------------------------------------------------------------------
# Written by hand: (question, correct, wrong x3, category)

HAND = [
    # science
    ("Which planet is known as the Red Planet?", "Mars", ["Venus", "Jupiter", "Saturn"], "science"),
    ("Which planet is best known for its bright rings?", "Saturn", ["Mars", "Mercury", "Venus"], "science"),
    ("Which gas do green plants take in from the air to make their food?", "Carbon dioxide",
     ["Helium", "Hydrogen", "Neon"], "science"),
    ("What force pulls objects towards the ground?", "Gravity", ["Magnetism", "Friction", "Electricity"], "science"),
    ("Which organs do fish use to breathe underwater?", "Gills", ["Lungs", "Fins", "Scales"], "science"),
    ("Which part of a plant takes in water from the soil?", "Roots", ["Leaves", "Flowers", "Petals"], "science"),
    ("What do bees collect from flowers to make honey?", "Nectar", ["Sap", "Seeds", "Bark"], "science"),
    ("What is the hardest natural substance?", "Diamond", ["Gold", "Iron", "Chalk"], "science"),
    ("What is H2O more commonly called?", "Water", ["Salt", "Sugar", "Oil"], "science"),
    ("How many bones are in the body of an adult human?", "206", ["106", "306", "186"], "science"),
    ("What do we call animals that eat only plants?", "Herbivores", ["Carnivores", "Omnivores", "Predators"],
     "science"),
    ("What do we call animals that eat only meat?", "Carnivores", ["Herbivores", "Omnivores", "Grazers"], "science"),
    ("What is it called when liquid water turns into vapour?", "Evaporation",
     ["Condensation", "Freezing", "Melting"], "science"),
    ("What is it called when water vapour cools and turns back into liquid?", "Condensation",
     ["Evaporation", "Erosion", "Boiling"], "science"),
    ("Which blood cells fight infections?", "White blood cells", ["Red blood cells", "Platelets", "Plasma"],
     "science"),
    ("What does a thermometer measure?", "Temperature", ["Weight", "Speed", "Height"], "science"),
    ("What does a barometer measure?", "Air pressure", ["Rainfall", "Wind speed", "Humidity"], "science"),
    ("Which instrument makes very small things look bigger so you can study them?", "Microscope",
     ["Telescope", "Periscope", "Stethoscope"], "science"),
    ("Which instrument do astronomers use to look at distant stars?", "Telescope",
     ["Microscope", "Thermometer", "Compass"], "science"),
    ("Which metal is a liquid at room temperature?", "Mercury", ["Iron", "Copper", "Aluminium"], "science"),
    ("Through what can sound not travel at all?", "A vacuum", ["Water", "Wood", "Steel"], "science"),
    ("Roughly how long does sunlight take to reach the Earth?", "8 minutes", ["8 seconds", "8 hours", "8 days"],
     "science"),
    ("What is the Earth's natural satellite?", "The Moon", ["Mars", "Venus", "The Sun"], "science"),
    ("How long does the Earth take to travel once around the Sun?", "One year",
     ["One day", "One month", "One week"], "science"),
    ("What is the chemical name of common table salt?", "Sodium chloride",
     ["Calcium carbonate", "Potassium nitrate", "Sodium bicarbonate"], "science"),
    ("Which vitamin does human skin make when it is exposed to sunlight?", "Vitamin D",
     ["Vitamin A", "Vitamin C", "Vitamin K"], "science"),
    ("Which is a mammal: a shark, a whale, a tuna or an octopus?", "Whale", ["Shark", "Tuna", "Octopus"],
     "science"),
    ("What is the scientific study of living things called?", "Biology", ["Geology", "Astronomy", "Chemistry"],
     "science"),
    ("What is the scientific study of rocks called?", "Geology", ["Biology", "Astronomy", "Botany"], "science"),
    ("What is the scientific study of plants called?", "Botany", ["Zoology", "Geology", "Astronomy"], "science"),
    ("Which organs clean the blood and make urine?", "Kidneys", ["Lungs", "Heart", "Stomach"], "science"),
    ("What is the nearest large galaxy to our Milky Way?", "Andromeda", ["Orion", "Pegasus", "Sirius"],
     "science"),
    ("What colour is the pigment chlorophyll in leaves?", "Green", ["Red", "Blue", "Yellow"], "science"),
    ("Which part of the human body contains the cornea and the retina?", "The eye",
     ["The ear", "The nose", "The tongue"], "science"),
    # history and culture
    ("In which year did the Second World War end?", "1945", ["1939", "1918", "1950"], "history"),
    ("In which year did the First World War begin?", "1914", ["1939", "1905", "1920"], "history"),
    ("In which year did humans first land on the Moon?", "1969", ["1959", "1979", "1989"], "history"),
    ("Who was the first person to walk on the Moon?", "Neil Armstrong",
     ["Buzz Aldrin", "Yuri Gagarin", "John Glenn"], "history"),
    ("Who was the first human to travel into space?", "Yuri Gagarin",
     ["Neil Armstrong", "Alan Shepard", "John Glenn"], "history"),
    ("In which year did Christopher Columbus first reach the Americas?", "1492", ["1066", "1588", "1776"],
     "history"),
    ("In which year was the Battle of Hastings fought?", "1066", ["1492", "1215", "1415"], "history"),
    ("In which year did the Berlin Wall fall?", "1989", ["1961", "1945", "1975"], "history"),
    ("In which year did the Titanic sink?", "1912", ["1905", "1921", "1898"], "history"),
    ("Who wrote the play Romeo and Juliet?", "William Shakespeare",
     ["Charles Dickens", "Jane Austen", "Mark Twain"], "history"),
    ("Who painted the ceiling of the Sistine Chapel?", "Michelangelo",
     ["Raphael", "Donatello", "Rembrandt"], "history"),
    ("Who developed the theory of relativity?", "Albert Einstein",
     ["Isaac Newton", "Charles Darwin", "Galileo Galilei"], "history"),
    ("Who proposed the theory of evolution by natural selection?", "Charles Darwin",
     ["Albert Einstein", "Isaac Newton", "Louis Pasteur"], "history"),
    ("Who is credited with inventing the telephone?", "Alexander Graham Bell",
     ["Thomas Edison", "Nikola Tesla", "Guglielmo Marconi"], "history"),
    ("Who discovered penicillin in 1928?", "Alexander Fleming",
     ["Louis Pasteur", "Joseph Lister", "Edward Jenner"], "history"),
    ("Who wrote the novel Pride and Prejudice?", "Jane Austen",
     ["Charlotte Brontë", "George Eliot", "Virginia Woolf"], "history"),
    ("Which country gave the Statue of Liberty to the United States?", "France", ["Britain", "Spain", "Italy"],
     "history"),
    ("What was the name of the ship that carried the Pilgrims to America in 1620?", "Mayflower",
     ["Santa Maria", "Endeavour", "Beagle"], "history"),
    ("Which Roman wall was built across the north of England?", "Hadrian's Wall",
     ["Offa's Dyke", "The Great Wall", "Antrim Wall"], "history"),
    ("In which country did the ancient Olympic Games begin?", "Greece", ["Italy", "Egypt", "Persia"], "history"),
    ("Which Roman town was buried by the eruption of Mount Vesuvius in 79 AD?", "Pompeii",
     ["Athens", "Carthage", "Troy"], "history"),
    ("What was the name of the first artificial satellite, launched in 1957?", "Sputnik",
     ["Apollo", "Voyager", "Hubble"], "history"),
    ("Who was the British Prime Minister for most of the Second World War?", "Winston Churchill",
     ["Neville Chamberlain", "Clement Attlee", "David Lloyd George"], "history"),
    ("Who was the first woman to become Prime Minister of the United Kingdom?", "Margaret Thatcher",
     ["Theresa May", "Queen Victoria", "Emmeline Pankhurst"], "history"),
    ("Who composed the Moonlight Sonata?", "Ludwig van Beethoven",
     ["Wolfgang Amadeus Mozart", "Johann Sebastian Bach", "Frédéric Chopin"], "history"),
    ("Who wrote the Harry Potter books?", "J. K. Rowling", ["Roald Dahl", "C. S. Lewis", "Enid Blyton"], "history"),
    ("Which ancient wonder stood in the harbour of Rhodes?", "The Colossus",
     ["The Lighthouse", "The Hanging Gardens", "The Mausoleum"], "history"),
    # geography beyond capitals
    ("What is the largest desert in Africa?", "Sahara", ["Kalahari", "Namib", "Gobi"], "geography"),
    ("What is the longest river in Africa?", "Nile", ["Congo", "Niger", "Zambezi"], "geography"),
    ("Which ocean lies between Europe and North America?", "Atlantic", ["Pacific", "Indian", "Arctic"],
     "geography"),
    ("Which African country has the largest population?", "Nigeria", ["Kenya", "Ghana", "Morocco"], "geography"),
    ("What is the smallest country in the world by area?", "Vatican City", ["Monaco", "Malta", "Luxembourg"],
     "geography"),
    ("In which mountain range is Mount Everest?", "Himalayas", ["Andes", "Alps", "Rockies"], "geography"),
    ("Which river flows through London?", "Thames", ["Seine", "Danube", "Rhine"], "geography"),
    ("Which river flows through Rome?", "Tiber", ["Po", "Arno", "Thames"], "geography"),
    ("Which river flows through both Vienna and Budapest?", "Danube", ["Rhine", "Volga", "Elbe"], "geography"),
    ("On which continent is Argentina?", "South America", ["Africa", "Europe", "Asia"], "geography"),
    ("On which continent is Egypt?", "Africa", ["Asia", "Europe", "South America"], "geography"),
    ("In which country is the city of Kyoto?", "Japan", ["China", "Korea", "Thailand"], "geography"),
    ("In which country is the city of Munich?", "Germany", ["Austria", "Switzerland", "Poland"], "geography"),
    ("In which country is the city of Barcelona?", "Spain", ["Portugal", "Italy", "Mexico"], "geography"),
    ("Which is the coldest continent?", "Antarctica", ["Europe", "Asia", "Australia"], "geography"),
    ("What is the largest country in the world by area?", "Russia", ["Canada", "China", "Brazil"], "geography"),
    ("Which sea is so salty that people float in it easily?", "Dead Sea", ["Red Sea", "Black Sea", "North Sea"],
     "geography"),
    ("In which country is the ancient city of Machu Picchu?", "Peru", ["Chile", "Mexico", "Bolivia"], "geography"),
    # language
    ("What does the French word 'chat' mean in English?", "Cat", ["Dog", "Hat", "Chair"], "language"),
    ("What does the French word 'merci' mean in English?", "Thank you", ["Please", "Goodbye", "Sorry"], "language"),
    ("What does the French word 'pain' mean in English?", "Bread", ["Hurt", "Paint", "Water"], "language"),
    ("What does the Spanish word 'perro' mean in English?", "Dog", ["Cat", "Bird", "Horse"], "language"),
    ("What does the Spanish word 'agua' mean in English?", "Water", ["Fire", "Milk", "Air"], "language"),
    ("What does the Spanish word 'libro' mean in English?", "Book", ["Free", "Pound", "Table"], "language"),
    ("What does the Spanish word 'casa' mean in English?", "House", ["Car", "Cheese", "Street"], "language"),
    ("What does the German word 'Hund' mean in English?", "Dog", ["Hand", "Hundred", "Honey"], "language"),
    ("What does the German word 'danke' mean in English?", "Thank you", ["Dark", "Hello", "Goodbye"], "language"),
    ("What does the Italian word 'grazie' mean in English?", "Thank you", ["Grass", "Goodbye", "Please"],
     "language"),
    ("Which word means the same as 'enormous'?", "Huge", ["Tiny", "Quick", "Ancient"], "language"),
    ("Which word means the same as 'begin'?", "Start", ["Finish", "Stop", "Wait"], "language"),
    ("Which word means the same as 'purchase'?", "Buy", ["Sell", "Lose", "Borrow"], "language"),
    ("Which word means the same as 'reply'?", "Answer", ["Ask", "Whisper", "Forget"], "language"),
    ("Which word means the same as 'difficult'?", "Hard", ["Easy", "Simple", "Soft"], "language"),
    ("Which word means the same as 'glad'?", "Happy", ["Angry", "Tired", "Sad"], "language"),
    ("Which word means the same as 'rapid'?", "Quick", ["Slow", "Heavy", "Calm"], "language"),
    ("Which word is a noun: run, table, happy or quickly?", "Table", ["Run", "Happy", "Quickly"], "language"),
    ("Which word is a verb: chair, green, jump or slowly?", "Jump", ["Chair", "Green", "Slowly"], "language"),
    ("Which word is an adjective: sing, window, beautiful or softly?", "Beautiful",
     ["Sing", "Window", "Softly"], "language"),
    ("Which word rhymes with 'cake'?", "Lake", ["Cook", "Cape", "Kick"], "language"),
    ("Which word rhymes with 'bell'?", "Shell", ["Ball", "Bill", "Belt"], "language"),
    ("How many vowels are in the English alphabet (not counting y)?", "5", ["3", "7", "10"], "language"),
    ("What is the first letter of the English alphabet?", "A", ["B", "Z", "E"], "language"),
    # animals
    ("What is a baby horse called?", "Foal", ["Calf", "Cub", "Kid"], "animals"),
    ("What is a baby cow called?", "Calf", ["Foal", "Lamb", "Piglet"], "animals"),
    ("What is a baby pig called?", "Piglet", ["Calf", "Foal", "Duckling"], "animals"),
    ("What is a baby duck called?", "Duckling", ["Gosling", "Cygnet", "Piglet"], "animals"),
    ("What is a baby bear called?", "Cub", ["Foal", "Lamb", "Kitten"], "animals"),
    ("What is a baby kangaroo called?", "Joey", ["Cub", "Pup", "Calf"], "animals"),
    ("What is a baby frog called?", "Tadpole", ["Caterpillar", "Larva", "Froglet"], "animals"),
    ("What is a baby deer called?", "Fawn", ["Foal", "Cub", "Kid"], "animals"),
    ("What is a baby swan called?", "Cygnet", ["Duckling", "Gosling", "Chick"], "animals"),
    ("What is a group of lions called?", "Pride", ["Pack", "Herd", "Flock"], "animals"),
    ("What is a group of wolves called?", "Pack", ["Pride", "School", "Swarm"], "animals"),
    ("What is a group of fish swimming together called?", "School", ["Pack", "Herd", "Pride"], "animals"),
    ("What is a group of bees called?", "Swarm", ["Herd", "Pack", "Pride"], "animals"),
    ("What is a group of sheep called?", "Flock", ["Pride", "Swarm", "School"], "animals"),
    ("Where do bees live?", "Hive", ["Den", "Nest", "Burrow"], "animals"),
    ("What is the home of a rabbit dug under the ground called?", "Burrow", ["Hive", "Web", "Stable"],
     "animals"),
    ("Which is the largest animal that has ever lived?", "Blue whale",
     ["African elephant", "Great white shark", "Giraffe"], "animals"),
    ("Which bird cannot fly: an ostrich, an eagle, a pigeon or a swallow?", "Ostrich",
     ["Eagle", "Pigeon", "Swallow"], "animals"),
    ("What do giant pandas mainly eat?", "Bamboo", ["Fish", "Grass", "Insects"], "animals"),
    ("Which sound does a cow make?", "Moo", ["Woof", "Neigh", "Quack"], "animals"),
    ("Which sound does a duck make?", "Quack", ["Moo", "Woof", "Oink"], "animals"),
    ("Which sound does a horse make?", "Neigh", ["Moo", "Quack", "Oink"], "animals"),
    ("How many legs does an octopus have?", "8", ["6", "10", "4"], "animals"),
    ("Which animal has a trunk?", "Elephant", ["Giraffe", "Rhinoceros", "Hippo"], "animals"),
    ("Which animal is known for changing its skin colour to match its surroundings?", "Chameleon",
     ["Crocodile", "Tortoise", "Hedgehog"], "animals"),
    ("What do caterpillars hatch from?", "Eggs", ["Seeds", "Cocoons", "Flowers"], "animals"),
    # everyday
    ("What do you call a doctor who looks after teeth?", "Dentist", ["Vet", "Pilot", "Plumber"], "everyday"),
    ("Who repairs leaking water pipes in a house?", "Plumber", ["Baker", "Dentist", "Pilot"], "everyday"),
    ("Who treats sick animals?", "Vet", ["Dentist", "Plumber", "Barber"], "everyday"),
    ("Who cuts and styles people's hair?", "Hairdresser", ["Baker", "Plumber", "Pilot"], "everyday"),
    ("Which tool do you use to knock nails into wood?", "Hammer", ["Saw", "Screwdriver", "Spanner"], "everyday"),
    ("Which tool do you use to cut a plank of wood in two?", "Saw", ["Hammer", "Ladder", "Brush"], "everyday"),
    ("Which holiday is celebrated on 25 December?", "Christmas", ["Easter", "Halloween", "Thanksgiving"],
     "everyday"),
    ("What do you call the meal eaten in the middle of the day?", "Lunch", ["Breakfast", "Supper", "Dessert"],
     "everyday"),
    ("What do teachers traditionally write with on a blackboard?", "Chalk", ["Crayon", "Ink", "Paint"],
     "everyday"),
    ("Where do you keep food cold at home?", "Fridge", ["Oven", "Toaster", "Cupboard"], "everyday"),
    ("What do you use to keep dry when it rains?", "Umbrella", ["Sunglasses", "Scarf", "Fan"], "everyday"),
    ("Where do you go to borrow books for free?", "Library", ["Bakery", "Bank", "Garage"], "everyday"),
    ("Which room of a house is usually used for cooking?", "Kitchen", ["Bedroom", "Bathroom", "Garage"],
     "everyday"),
    ("What do you call money that you keep in a bank to use later?", "Savings", ["Bills", "Taxes", "Debts"],
     "everyday"),
    ("What do you need to unlock a smartphone with a code?", "PIN", ["Stamp", "Receipt", "Ticket"], "everyday"),
    ("Which traffic light colour means stop?", "Red", ["Green", "Blue", "White"], "everyday"),
    ("Which traffic light colour means go?", "Green", ["Red", "Purple", "White"], "everyday"),
    ("What do you put on a letter before you post it?", "Stamp", ["Sticker", "Coin", "Ribbon"], "everyday"),
    ("Which sport is played at Wimbledon?", "Tennis", ["Golf", "Cricket", "Rugby"], "everyday"),
    ("In which sport do players try to hit a small ball into a hole with a club?", "Golf",
     ["Tennis", "Hockey", "Cricket"], "everyday"),
    ("What do you call the person who leads an orchestra?", "Conductor", ["Driver", "Pilot", "Referee"],
     "everyday"),
    ("Who makes sure the rules are kept in a football match?", "Referee", ["Conductor", "Coach", "Goalkeeper"],
     "everyday"),
    ("Which day comes after Wednesday?", "Thursday", ["Tuesday", "Friday", "Monday"], "time"),
    ("Which month comes after September?", "October", ["August", "November", "December"], "time"),
    ("Which month comes before April?", "March", ["May", "February", "June"], "time"),
    ("How many months of the year have 31 days?", "7", ["5", "6", "8"], "time"),
]


def _opposite_item(i, word, right, pool):
    wrong = [w for _, w in pool if w != right][i % 7::7][:3]
    return (f"What is the opposite of '{word}'?", right.capitalize(), [w.capitalize() for w in wrong], "opposites")


def _regular_ed(v):
    if v.endswith("e"):
        return v + "d"
    if v.endswith("y") and v[-2] not in "aeiou":
        return v[:-1] + "ied"
    return v + "ed"


def _ing(v):
    if v.endswith("e") and not v.endswith("ee"):
        return v[:-1] + "ing"
    return v + "ing"


def _third(v):
    if v.endswith(("s", "sh", "ch", "x", "o")):
        return v + "es"
    if v.endswith("y") and v[-2] not in "aeiou":
        return v[:-1] + "ies"
    return v + "s"


def candidates(rng: random.Random) -> list[tuple]:
    """Every new candidate item as (question, correct, wrong x3, category)."""
    out = arithmetic(rng)
    out += [(q, a, w, "units") for q, a, w in UNITS]
    for shape, n in SHAPES:
        wrong = [str(int(n) + d) for d in (-1, 1, 2)]
        out.append((f"How many sides does a {shape} have?", n, wrong, "arithmetic"))
    for i, (w, r) in enumerate(OPPOSITES):
        out.append(_opposite_item(i, w, r, OPPOSITES))
    for v, past, part in PAST:
        wrong = [_regular_ed(v), part if part and part != past else _ing(v), _third(v)]
        out.append((f"What is the past tense of '{v}'?", past.capitalize(), [x.capitalize() for x in wrong],
                    "language"))
    for s, p, wrong in PLURALS:
        out.append((f"What is the plural of '{s}'?", p.capitalize(), [x.capitalize() for x in wrong], "language"))
    for country, cap, others in CAPITALS:
        out.append((f"What is the capital of {country}?", cap, others, "geography"))
    for el, sym, wrong in SYMBOLS:
        out.append((f"What is the chemical symbol for {el}?", sym, wrong, "science"))
    out += HAND
    return out


def build(anchor_questions: list[str], training_questions: list[str]):
    """(eval items, held-out pairs, dropped lines): the general eval set and the general held-out pairs."""
    rng = random.Random(20261201)
    items, dropped, seen = [], [], set()
    others = list(anchor_questions) + list(training_questions)

    def clashes(q):
        return next((a for a in others if near_duplicate(q, a)), None)

    for k, (q, choices, ans, cat) in enumerate(LEGACY, start=1):
        hit = clashes(q)
        if hit:
            dropped.append(f"{q!r} ~ {hit!r}")
            continue
        seen.add(norm(q))
        items.append({"id": f"gen-{k:03d}", "question": q, "choices": choices, "answer": ans, "category": cat})
    k = len(LEGACY)
    for q, right, wrong, cat in candidates(rng):
        if norm(q) in seen:
            continue
        hit = clashes(q)
        if hit:
            dropped.append(f"{q!r} ~ {hit!r}")
            continue
        seen.add(norm(q))
        k += 1
        choices, ans = place(right, list(wrong), rng.randrange(4))
        items.append({"id": f"gen-{k:03d}", "question": q, "choices": choices, "answer": ans, "category": cat})

    eval_questions = [it["question"] for it in items]
    pairs = []
    for q, a in heldout_pairs(random.Random(7)):
        hit = clashes(q) or next((e for e in eval_questions if near_duplicate(q, e)), None)
        if hit:
            dropped.append(f"held-out {q!r} ~ {hit!r}")
            continue
        pairs.append({"id": f"gen-h{len(pairs) + 1:03d}", "instruction": q, "output": a})
    return items, pairs, dropped


# --------------------------------------------------------------------------------------------------------------------
# Held-out general pairs (instruction/output): facts that neither the eval set nor any training corpus asks

HELD_CAPITALS = [
    ("Ghana", "Accra"), ("Ethiopia", "Addis Ababa"), ("Senegal", "Dakar"), ("Uruguay", "Montevideo"),
    ("Venezuela", "Caracas"), ("Ecuador", "Quito"), ("Paraguay", "Asunción"), ("Romania", "Bucharest"),
    ("Bulgaria", "Sofia"), ("Serbia", "Belgrade"), ("Croatia", "Zagreb"), ("Slovakia", "Bratislava"),
    ("Slovenia", "Ljubljana"), ("Lithuania", "Vilnius"), ("Latvia", "Riga"), ("Estonia", "Tallinn"),
    ("Iceland", "Reykjavik"), ("Nepal", "Kathmandu"), ("Bangladesh", "Dhaka"), ("Afghanistan", "Kabul"),
    ("Syria", "Damascus"), ("Lebanon", "Beirut"), ("Tunisia", "Tunis"), ("Algeria", "Algiers"),
    ("Sudan", "Khartoum"), ("Uganda", "Kampala"), ("Zimbabwe", "Harare"), ("Zambia", "Lusaka"),
    ("Malaysia", "Kuala Lumpur"), ("Mongolia", "Ulaanbaatar"), ("Cambodia", "Phnom Penh"), ("Laos", "Vientiane"),
    ("Jamaica", "Kingston"),
]
HELD_OPPOSITES = [("brave", "cowardly"), ("visible", "invisible"), ("begin", "end"), ("awake", "asleep"),
                  ("fresh", "stale"), ("guilty", "innocent"), ("temporary", "permanent"), ("raise", "lower"),
                  ("import", "export"), ("expand", "shrink")]
HELD_PAST = [("fight", "fought"), ("seek", "sought"), ("lead", "led"), ("feed", "fed"), ("hang", "hung"),
             ("dig", "dug"), ("shoot", "shot"), ("lay", "laid"), ("bleed", "bled"), ("swing", "swung")]
HELD_FACTS = [
    ("Which planet is the hottest in the solar system?",
     "Venus is the hottest planet. Its thick carbon dioxide atmosphere traps heat, so it is hotter than Mercury."),
    ("How many continents are there?", "There are seven continents: Africa, Antarctica, Asia, Australia, Europe, "
     "North America and South America."),
    ("What is the freezing point of water in degrees Fahrenheit?", "Water freezes at 32 degrees Fahrenheit, which "
     "is 0 degrees Celsius."),
    ("What do you call a word that sounds the same as another but has a different meaning?",
     "Such a word is a homophone, like 'pair' and 'pear'."),
    ("How many hearts does an octopus have?", "An octopus has three hearts: two pump blood through the gills and "
     "one pumps it around the body."),
    ("Who wrote the novel 'Moby-Dick'?", "Herman Melville wrote 'Moby-Dick', published in 1851."),
    ("What is the largest bone in the human body?", "The femur, or thigh bone, is the largest bone in the human "
     "body."),
    ("Which country has the most people?", "India has the largest population, having passed China in 2023."),
    ("What is the tallest animal?", "The giraffe is the tallest animal; adult males can be over 5 metres tall."),
    ("What does a compass needle point to?", "A compass needle points towards magnetic north, close to the "
     "geographic North Pole."),
    ("Which instrument has black and white keys?", "The piano has black and white keys; a standard piano has 88."),
    ("What is a haiku?", "A haiku is a short Japanese poem of three lines with five, seven and five syllables."),
    ("How many sides does a dodecagon have?", "A dodecagon has 12 sides."),
    ("What is the square root of 81?", "The square root of 81 is 9, because 9 × 9 = 81."),
    ("What is 15 percent of 200?", "15 percent of 200 is 30, because 200 × 0.15 = 30."),
]


def heldout_pairs(rng: random.Random) -> list[tuple[str, str]]:
    pairs = [(f"Which city is the capital of {c}?", f"{cap} is the capital of {c}.") for c, cap in HELD_CAPITALS]
    pairs += [(f"Name the opposite of the word '{w}'.", f"The opposite of '{w}' is '{o}'.")
              for w, o in HELD_OPPOSITES]
    pairs += [(f"What is the simple past form of the verb '{v}'?", f"The simple past of '{v}' is '{p}'.") for v, p in HELD_PAST]
    for _ in range(24):
        a, b = rng.randint(101, 899), rng.randint(101, 899)
        pairs.append((f"Add {a} and {b}.", f"{a} + {b} = {a + b}."))
    for _ in range(12):
        a, b = rng.randint(500, 999), rng.randint(101, 499)
        pairs.append((f"Subtract {b} from {a}.", f"{a} − {b} = {a - b}."))
    for _ in range(12):
        a, b = rng.randint(12, 25), rng.randint(3, 9)
        pairs.append((f"Multiply {a} by {b}.", f"{a} × {b} = {a * b}."))
    for n, unit, per, big in ((3, "hours", 60, "minutes"), (5, "minutes", 60, "seconds"), (4, "kilometres", 1000,
                              "metres"), (7, "weeks", 7, "days"), (3, "kilograms", 1000, "grams"),
                              (6, "feet", 12, "inches"), (2, "litres", 1000, "millilitres"), (9, "days", 24, "hours")):
        pairs.append((f"Convert {n} {unit} into {big}.", f"{n} {unit} is {n * per} {big}, because "
                      f"{n} × {per} = {n * per}."))
    pairs += HELD_FACTS
    return pairs
