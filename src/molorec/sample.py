"""Deterministic generators of raw review dumps in the formats molorec ingests.

Two jobs:

* ``generate_sample`` writes the small bundled sample (``resources/sample``): a
  few hundred users per domain in the real Amazon 2014 / 2018 / 2023 and
  MOOCCube formats.  Item titles come in ordered product lines (cleanser ->
  toner -> serum, Halo 3 -> Halo: Reach -> Halo 4, ...) so a small model has
  sequential structure to learn, and a handful of deliberate defects give the
  ingestion's quality accounting something to count.
* ``write_amazon2014_synthetic`` writes large Amazon-2014 style dumps (up to the
  size of Books) for benchmarks; it is vectorised with numpy and streams lines
  out in chunks.

Everything is seeded and gzip headers carry neither a name nor a time, so a
rerun is byte-identical.  Only ``random.Random(seed)`` and
``numpy.random.default_rng(seed)`` are used, never ``hash()`` or set order.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gzip
import json
import random
import string
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

_ALNUM = string.ascii_uppercase + string.digits
_ALNUM_MIXED = string.ascii_letters + string.digits
_DAY_S = 86_400
_EPOCH = dt.date(1970, 1, 1)


def _day(year: int, month: int, day: int) -> int:
    """Days since the Unix epoch; timestamps are built from whole days."""
    return (dt.date(year, month, day) - _EPOCH).days


# --------------------------------------------------------------------------
# Output helpers


@contextmanager
def _gzip_out(path: Path, level: int = 9) -> Iterator[gzip.GzipFile]:
    path.parent.mkdir(parents=True, exist_ok=True)
    # An empty filename and mtime=0 keep the header free of names and times,
    # which is what makes reruns byte-identical.
    with (
        open(path, "wb") as raw,
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=level) as out,
    ):
        yield out


def _write_lines(path: Path, lines: Sequence[str], *, gz: bool = True) -> Path:
    data = "".join(f"{line}\n" for line in lines).encode("utf-8")
    if gz:
        with _gzip_out(path) as out:
            out.write(data)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return path


def _review_time(unix_s: int) -> str:
    """Amazon's "MM D, YYYY" review date (month padded, day not), in UTC."""
    d = dt.datetime.fromtimestamp(unix_s, tz=dt.timezone.utc)
    return f"{d.month:02d} {d.day}, {d.year}"


def _unique(draw: Callable[[], str], n: int) -> list[str]:
    """n distinct codes in draw order (the set is only a membership test)."""
    seen: set[str] = set()
    out: list[str] = []
    while len(out) < n:
        code = draw()
        if code not in seen:
            seen.add(code)
            out.append(code)
    return out


def _code(rng: random.Random, n: int, alphabet: str = _ALNUM) -> str:
    return "".join(rng.choices(alphabet, k=n))


# --------------------------------------------------------------------------
# Review text: short sentences whose mood follows the rating.

_MOOD = {
    1: ("Broke after a week", "Waste of money", "Do not buy", "Returned it"),
    2: ("Disappointed", "Not as described", "Could be better", "Cheaply made"),
    3: ("It is okay", "Average at best", "Does the job", "Mixed feelings"),
    4: ("Very good", "Works well", "Solid choice", "Happy with it", "Nice"),
    5: ("Love it", "Works great", "Exactly what I wanted", "Highly recommend"),
}
_DETAILS = (
    "Arrived fast and well packed.",
    "I bought it as a gift.",
    "Second time ordering it.",
    "Quality feels right for the price.",
    "Took a few days to get used to it.",
    "Used it daily for a month now.",
    "My kids use it all the time.",
    "Looks just like the pictures.",
    "Customer service was helpful.",
    "Compared it with two others first.",
)
_RATINGS = (1, 2, 3, 4, 5)
_RATING_WEIGHTS = (5, 6, 10, 24, 55)  # Amazon ratings are skewed to 5 stars


def _rating(rng: random.Random) -> int:
    return rng.choices(_RATINGS, weights=_RATING_WEIGHTS)[0]


def _review_words(rng: random.Random, rating: int) -> tuple[str, str]:
    """(summary, text) of about 60-120 characters."""
    summary = rng.choice(_MOOD[rating])
    text = summary + "."
    for detail in rng.sample(_DETAILS, 3):
        if len(text) >= 60:
            break
        text += " " + detail
    return summary, text


_FIRST = (
    "John|Mary|David|Linda|Michael|Susan|James|Karen|Robert|Lisa|Chris|Amy|"
    "Daniel|Emily|Kevin|Sarah|Brian|Laura|Jason|Nancy|Eric|Julie|Mark|Anna"
).split("|")
_LAST = (
    "Smith|Johnson|Brown|Miller|Davis|Garcia|Wilson|Moore|Taylor|Clark|Lewis|"
    "Walker|Young|Allen|King|Wright|Scott|Green|Baker|Adams|Nelson|Hill"
).split("|")


def _reviewer_name(rng: random.Random) -> str | None:
    """A display name; None (key left out) for the ~2% of reviews without one."""
    u = rng.random()
    first, last = rng.choice(_FIRST), rng.choice(_LAST)
    if u < 0.02:
        return None
    if u < 0.12:
        return "Amazon Customer"
    if u < 0.45:
        return f"{first[0]}. {last}"
    if u < 0.55:
        return first
    return f"{first} {last}"


# --------------------------------------------------------------------------
# Domain vocabularies.  A line is an ordered series of items (a routine, a
# game franchise, a course sequence); users mostly walk one or two lines.

_Line = tuple[str, list[str]]  # (brand, titles in series order)
_Family = tuple[tuple[str, ...], list[_Line]]  # (category path, lines)


def _cross(brands: str, steps: str) -> list[_Line]:
    """Every brand runs the same ordered routine: one line per brand."""
    return [(b, [f"{b} {s}" for s in steps.split("|")]) for b in brands.split("|")]


def _series(*specs: str) -> list[_Line]:
    """Explicit lines written as 'Brand: first|second|...'."""
    lines = []
    for spec in specs:
        brand, titles = spec.split(": ", 1)
        lines.append((brand, titles.split("|")))
    return lines


_BEAUTY: list[_Family] = [
    (
        ("Beauty", "Skin Care", "Face"),
        _cross(
            "CeraVe|Neutrogena|Cetaphil|La Roche-Posay|Olay|Aveeno|Clinique|Kiehl's|"
            "The Ordinary|Paula's Choice|Burt's Bees|Mario Badescu",
            "Hydrating Facial Cleanser, 12 fl oz|Alcohol-Free Toner, 8 fl oz|"
            "Vitamin C Serum, 1 fl oz|Daily Moisturizing Lotion, 3 fl oz|"
            "Mineral Sunscreen SPF 50, 2.5 fl oz",
        ),
    ),
    (
        ("Beauty", "Hair Care", "Shampoos"),
        _cross(
            "Pantene|Herbal Essences|OGX|Aveda|Redken|TRESemme|Garnier Fructis|"
            "Moroccanoil|John Frieda|Johnson & Johnson",
            "Moisture Renewal Shampoo, 12.6 fl oz|"
            "Moisture Renewal Conditioner, 12.6 fl oz|Deep Repair Hair Mask, 8 oz|"
            "Heat Protectant Spray, 6 oz",
        ),
    ),
    (
        ("Beauty", "Makeup", "Face"),
        _cross(
            "Maybelline|L'Oreal Paris|Revlon|NYX|e.l.f.|CoverGirl|Smashbox|Physicians Formula",
            "Pore Minimizing Primer, 1 fl oz|Liquid Foundation, Natural Beige|"
            "Full Coverage Concealer, Light|Translucent Setting Powder|"
            "Volumizing Mascara, Blackest Black",
        ),
    ),
]


def _phone_lines() -> list[_Line]:
    """Phone -> case -> screen protector -> charger -> mount for that model."""
    models = (
        "Apple iPhone 4|Apple iPhone 4S|Apple iPhone 5|Apple iPhone 5c|"
        "Apple iPhone 5s|Samsung Galaxy S III|Samsung Galaxy S4|Samsung Galaxy S5|"
        "Samsung Galaxy Note II|Samsung Galaxy Note 3|HTC One M7|HTC One M8|"
        "Motorola Moto X|Motorola Moto G|Motorola Droid RAZR M|LG G2|LG Nexus 4|"
        "LG Nexus 5|Nokia Lumia 920|Nokia Lumia 1020|BlackBerry Z10|Sony Xperia Z1"
    ).split("|")
    storage = ("16GB", "32GB")
    colors = ("Black", "White", "Silver", "Blue", "Red")
    carriers = ("Unlocked", "AT&T", "Verizon", "T-Mobile", "Sprint", "Unlocked")
    cases = (
        "OtterBox Defender Series|Spigen Slim Armor|Incipio DualPro|Ringke Fusion|"
        "Speck CandyShell|Case-Mate Tough"
    ).split("|")
    screens = (
        "Zagg InvisibleShield HD|amFilm Tempered Glass|Tech Armor HD Clear|"
        "Supershieldz Anti-Glare|iQShield Matte"
    ).split("|")
    chargers = (
        "Anker 24W Dual USB Car Charger|Belkin 2.1A Car Charger|"
        "Aukey Quick Charge Car Charger|Scosche ReVolt Dual USB Car Charger"
    ).split("|")
    mounts = (
        "iOttie Easy One Touch Car Mount|Mophie Juice Pack Battery Case|Belkin Sport-Fit Armband"
    ).split("|")
    lines = []
    for k, model in enumerate(models):
        # Cycling option lists of coprime lengths varies the accessories by model.
        color = colors[k % len(colors)]
        lines.append(
            (
                model.split()[0],
                [
                    f"{model}, {storage[k % 2]}, {color} ({carriers[k % 6]})",
                    f"{cases[k % 6]} Case for {model} - {color}",
                    f"{screens[k % 5]} Screen Protector for {model}",
                    f"{chargers[k % 4]} for {model}",
                    f"{mounts[k % 3]} for {model}",
                ],
            )
        )
    return lines


_CELL_PHONES: list[_Family] = [
    (("Cell Phones & Accessories", "Cell Phones"), _phone_lines()),
    (
        ("Cell Phones & Accessories", "Accessories"),
        _series(
            "Plantronics: Plantronics Voyager Legend Bluetooth Headset|"
            "Plantronics Voyager Legend Charging Case|"
            "Plantronics BackBeat GO 2 Wireless Earbuds",
            "Jabra: Jabra Wave Bluetooth Headset|Jabra Clipper Bluetooth Headset|"
            "Jabra Freeway Bluetooth Speakerphone",
            "Anker: Anker Astro E1 5200mAh Portable Charger|"
            "Anker PowerCore 10000 Portable Charger|Anker PowerPort 5 Wall Charger|"
            "Anker PowerLine Micro USB Cable, 6 ft",
            "SanDisk: SanDisk Ultra 16GB microSDHC Card|"
            "SanDisk Ultra 32GB microSDHC Card|SanDisk Ultra 64GB microSDXC Card",
            "Mpow: Mpow Swift Bluetooth Headphones|Mpow Selfie Stick with Remote|"
            "Mpow Universal Phone Armband",
        ),
    ),
]

_VIDEO_GAMES: list[_Family] = [
    (
        ("Video Games", "Xbox 360", "Games"),
        _series(
            "Microsoft: Xbox 360 250GB Console|Halo 3|Halo 3: ODST|Halo: Reach|"
            "Halo 4|Xbox 360 Wireless Controller",
            "Microsoft: Gears of War|Gears of War 2|Gears of War 3|"
            "Gears of War: Judgment|Xbox 360 Play and Charge Kit",
            "Microsoft: Forza Motorsport 2|Forza Motorsport 3|Forza Motorsport 4|"
            "Forza Horizon|Xbox 360 Wireless Racing Wheel",
            "Electronic Arts: Mass Effect|Mass Effect 2|Mass Effect 3|Xbox 360 Chat Headset",
            "Microsoft: Kinect Sensor for Xbox 360|Kinect Adventures!|Kinect Sports|"
            "Dance Central|Dance Central 2",
        ),
    ),
    (
        ("Video Games", "PlayStation 3", "Games"),
        _series(
            "Sony: PlayStation 3 160GB System|Uncharted: Drake's Fortune|"
            "Uncharted 2: Among Thieves|Uncharted 3: Drake's Deception|"
            "DualShock 3 Wireless Controller",
            "Sony: Killzone 2|Killzone 3|Resistance: Fall of Man|Resistance 2|Resistance 3",
            "Sony: LittleBigPlanet|LittleBigPlanet 2|LittleBigPlanet Karting|"
            "PlayStation Move Motion Controller",
            "Sony: God of War Collection|God of War III|God of War: Ascension|"
            "PlayStation 3 Bluetooth Headset",
        ),
    ),
    (
        ("Video Games", "Wii", "Games"),
        _series(
            "Nintendo: Nintendo Wii Console|Super Mario Galaxy|Super Mario Galaxy 2|"
            "New Super Mario Bros. Wii|Wii Remote Plus",
            "Nintendo: Mario Kart Wii|Wii Wheel|Mario Party 8|Mario Party 9",
            "Nintendo: The Legend of Zelda: Twilight Princess|"
            "The Legend of Zelda: Skyward Sword|Wii MotionPlus Adapter",
            "Nintendo: Wii Sports|Wii Sports Resort|Wii Fit Plus|Wii Balance Board",
        ),
    ),
    (
        ("Video Games", "Nintendo 3DS", "Games"),
        _series(
            "Nintendo: Nintendo 3DS XL|Super Mario 3D Land|Mario Kart 7|"
            "The Legend of Zelda: Ocarina of Time 3D|"
            "The Legend of Zelda: A Link Between Worlds|Nintendo 3DS XL Carrying Case",
            "Nintendo: Pokemon Black Version|Pokemon Black Version 2|Pokemon X|Pokemon Omega Ruby",
        ),
    ),
    (
        ("Video Games", "PC", "Games"),
        _series(
            "Blizzard Entertainment: StarCraft II: Wings of Liberty|"
            "StarCraft II: Heart of the Swarm|StarCraft II: Legacy of the Void|"
            "Razer DeathAdder Gaming Mouse",
            "Blizzard Entertainment: World of Warcraft: Wrath of the Lich King|"
            "World of Warcraft: Cataclysm|World of Warcraft: Mists of Pandaria|"
            "World of Warcraft: Warlords of Draenor",
            "Valve: Half-Life 2: The Orange Box|Portal 2|Left 4 Dead|Left 4 Dead 2",
            "Electronic Arts: The Sims 3|The Sims 3: Late Night|The Sims 3: Pets|The Sims 4",
            "Ubisoft: Assassin's Creed|Assassin's Creed II|"
            "Assassin's Creed: Brotherhood|Assassin's Creed: Revelations|"
            "Assassin's Creed III",
        ),
    ),
    (
        ("Video Games", "PlayStation 4", "Games"),
        _series(
            "Sony: PlayStation 4 500GB Console|Killzone: Shadow Fall|"
            "inFAMOUS: Second Son|Bloodborne|DualShock 4 Wireless Controller|"
            "PlayStation Camera",
            "Microsoft: Xbox One 500GB Console|Titanfall|"
            "Halo: The Master Chief Collection|Forza Motorsport 5|"
            "Xbox One Wireless Controller|Xbox One Chat Headset",
        ),
    ),
    (
        ("Video Games", "Multiplatform", "Games"),
        _series(
            "Ubisoft: Tom Clancy's Splinter Cell: Chaos Theory|"
            "Tom Clancy's Splinter Cell: Conviction|"
            "Tom Clancy's Splinter Cell: Blacklist",
            "Activision: Call of Duty 4: Modern Warfare|Call of Duty: World at War|"
            "Call of Duty: Modern Warfare 2|Call of Duty: Black Ops|"
            "Call of Duty: Modern Warfare 3|Call of Duty: Black Ops II",
            "Warner Bros: Batman: Arkham Asylum|Batman: Arkham City|"
            "Batman: Arkham Origins|Batman: Arkham Knight",
            "Rockstar Games: Grand Theft Auto IV|"
            "Grand Theft Auto: Episodes from Liberty City|Grand Theft Auto V",
            "Square Enix: Final Fantasy XIII|Final Fantasy XIII-2|"
            "Lightning Returns: Final Fantasy XIII",
            "2K Games: BioShock|BioShock 2|BioShock Infinite",
            "Bethesda: The Elder Scrolls IV: Oblivion|The Elder Scrolls V: Skyrim|"
            "The Elder Scrolls V: Skyrim - Dawnguard|Fallout 3|Fallout: New Vegas",
            "2K Games: Borderlands|Borderlands 2|Borderlands: The Pre-Sequel",
            "Capcom: Street Fighter IV|Super Street Fighter IV|"
            "Ultra Street Fighter IV|Mad Catz Arcade FightStick",
        ),
    ),
]

_SPORTS: list[_Family] = [
    (
        ("Sports & Outdoors", "Outdoor Recreation", "Camping & Hiking"),
        _cross(
            "Coleman|Kelty|Marmot|ALPS Mountaineering|Teton Sports|Big Agnes|"
            "Eureka!|Mountainsmith|Browning Camping|Klymit",
            "4-Person Dome Tent|20-Degree Mummy Sleeping Bag|"
            "Self-Inflating Sleeping Pad|Portable Camping Stove|LED Camping Lantern",
        ),
    ),
    (
        ("Sports & Outdoors", "Exercise & Fitness", "Yoga"),
        _cross(
            "Gaiam|Manduka|BalanceFrom|AmazonBasics|Yes4All|TriggerPoint|Fit Simplify|Jade Yoga",
            "Yoga Mat, 6mm|Yoga Block, 2 Pack|Resistance Loop Bands, Set of 5|"
            "High-Density Foam Roller, 18 Inch",
        ),
    ),
    (
        ("Sports & Outdoors", "Cycling", "Accessories"),
        _cross(
            "Bell|Giro|Schwinn|Topeak|CamelBak|Planet Bike|Cateye|Kryptonite",
            "Adult Bike Helmet|USB Rechargeable Bike Light Set|"
            "Bike Water Bottle Cage|Mini Bike Pump|Bike Lock with Mount",
        ),
    ),
    (
        ("Sports & Outdoors", "Hunting & Fishing", "Fishing"),
        _cross(
            "Ugly Stik|Shakespeare|Penn|Abu Garcia|KastKing|Cabela's|Field & Stream",
            "Spinning Rod, 7 ft Medium|Spinning Reel, Size 3000|"
            "Monofilament Fishing Line, 300 yd|Tackle Box with Lures",
        ),
    ),
]

_PET_SUPPLIES: list[_Family] = [
    (
        ("Pet Supplies", "Dogs", "Food"),
        _cross(
            "Purina Pro Plan|Blue Buffalo|Hill's Science Diet|Royal Canin|Wellness|"
            "Nutro|Iams|Merrick|Taste of the Wild|Nature's Recipe",
            "Puppy Dry Dog Food, 15 lb|Puppy Training Treats, 8 oz|"
            "Adult Dry Dog Food, 30 lb|Dental Chews for Dogs, 24 Count",
        ),
    ),
    (
        ("Pet Supplies", "Dogs", "Training & Behavior Aids"),
        _cross(
            "AmazonBasics|Hartz|Four Paws|Nature's Miracle|Simple Solution|Arm & Hammer",
            "Dog and Puppy Training Pads, 100 Count|"
            "Stain and Odor Remover Spray, 32 oz|Puppy Potty Training Spray|"
            "Dog Waste Bags, 300 Count",
        ),
    ),
    (
        ("Pet Supplies", "Dogs", "Toys"),
        _cross(
            "KONG|Nylabone|Benebone|Chuckit!|Outward Hound|Petstages",
            "Puppy Teething Chew Toy|Durable Chew Toy for Aggressive Chewers|"
            "Squeaky Plush Dog Toy|Interactive Treat Puzzle Toy",
        ),
    ),
    (
        ("Pet Supplies", "Cats", "Litter & Housebreaking"),
        _cross(
            "Fresh Step|Tidy Cats|Dr. Elsey's|World's Best|Frisco|Feline Pine",
            "Clumping Cat Litter, 25 lb|Litter Box Deodorizer|Litter Scoop|Covered Litter Box",
        ),
    ),
    (
        ("Pet Supplies", "Fish & Aquatic Pets", "Aquariums"),
        _cross(
            "Tetra|Fluval|Aqueon|Marineland|API|Hygger",
            "10 Gallon Aquarium Starter Kit|Power Filter for 10-20 Gallon Aquariums|"
            "Submersible Aquarium Heater, 100W|Tropical Flakes Fish Food, 2.2 oz|"
            "Water Conditioner, 16 oz",
        ),
    ),
]

# (theme, first set number, sets from small to big)
_LEGO_THEMES = (
    ("City", 60200, "Police Patrol Car|Police Station|Fire Truck|Fire Station|"
     "Cargo Train|Airport Passenger Terminal"),
    ("Star Wars", 75200, "X-Wing Starfighter|TIE Fighter|Snowspeeder|AT-AT Walker|"
     "Millennium Falcon|Death Star"),
    ("Friends", 41300, "Heartlake City Park Cafe|Heartlake City Pizzeria|"
     "Heartlake City Hospital|Heartlake City School|Heartlake City Resort"),
    ("Technic", 42090, "Getaway Racer|Race Truck|Rough Terrain Crane|"
     "Ford Mustang Shelby GT500|Bugatti Chiron"),
    ("Ninjago", 70650, "Lloyd's Titan Mech|Kai's Fire Dragon|Ninjago City Docks|"
     "Ninjago City Gardens"),
    ("Harry Potter", 75950, "Hogwarts Whomping Willow|Hogwarts Clock Tower|"
     "Hogwarts Great Hall|Hogwarts Castle"),
    ("Creator", 31090, "Cozy House|Lakeside Lodge|Modular Winter Chalet|"
     "Medieval Castle"),
    ("Minecraft", 21160, "The Cave|The Crafting Box|The Nether Fortress|The Village"),
    ("Marvel Super Heroes", 76120, "Spider-Man Bike Rescue|Avengers Helicarrier|"
     "Avengers Compound Battle|Avengers Tower Battle"),
    ("Duplo", 10900, "My First Number Train|Creative Box|Town Farm|Town Airport"),
    ("Disney Frozen", 41160, "Anna & Kristoff's Sleigh Adventure|"
     "Elsa's Magical Ice Palace|Arendelle Castle Village"),
    ("Jurassic World", 75930, "Velociraptor Chase|Dilophosaurus Outpost Attack|"
     "Indominus Rex Breakout|T. rex Transport"),
    ("Ideas", 21300, "Ship in a Bottle|Central Perk|Treehouse|NASA Apollo Saturn V"),
    ("Speed Champions", 75870, "Ford Fiesta M-Sport WRC|Ferrari FXX K|McLaren Senna|"
     "Porsche 911 RSR"),
    ("Classic", 10690, "Creative Fun|Bricks and Ideas|Medium Creative Brick Box|"
     "Large Creative Brick Box"),
)  # fmt: skip


def _lego_lines() -> list[_Line]:
    lines = []
    for theme, first, sets in _LEGO_THEMES:
        titles = [
            f"LEGO {theme} {name} {first + 3 * k} Building Kit"
            for k, name in enumerate(sets.split("|"))
        ]
        lines.append(("LEGO", titles))
    return lines


_TOYS: list[_Family] = [
    (("Toys & Games", "Building Toys", "Building Sets"), _lego_lines()),
    (
        ("Toys & Games", "Games & Accessories", "Board Games"),
        _series(
            "Catan Studio: Catan Board Game|Catan: Seafarers Expansion|"
            "Catan: Cities & Knights Expansion|Catan: Traders & Barbarians Expansion|"
            "Catan 5-6 Player Extension",
            "Days of Wonder: Ticket to Ride|Ticket to Ride: Europe|"
            "Ticket to Ride: USA 1910 Expansion|Ticket to Ride: Nordic Countries|"
            "Ticket to Ride: Rails & Sails",
            "Z-Man Games: Carcassonne|Carcassonne: Inns & Cathedrals|"
            "Carcassonne: Traders & Builders|Pandemic|Pandemic: On the Brink",
            "Pokemon: Pokemon TCG: Sun & Moon Booster Box|"
            "Pokemon TCG: Guardians Rising Booster Box|"
            "Pokemon TCG: Burning Shadows Booster Box|"
            "Pokemon TCG: Sword & Shield Booster Box|Pokemon TCG: Card Sleeves, 65 Count",
            "Mattel: UNO Card Game|UNO Attack!|DOS Card Game|Phase 10 Card Game",
            "Rubik's: Rubik's Cube|Rubik's Revenge 4x4|Rubik's Professor 5x5|Rubik's Speed Cube",
        ),
    ),
    (
        ("Toys & Games", "Toy Figures & Playsets"),
        _series(
            "Nerf: Nerf N-Strike Elite Disruptor|Nerf N-Strike Elite Strongarm|"
            "Nerf Elite 30-Dart Refill Pack|Nerf Elite Tactical Vest",
            "Hot Wheels: Hot Wheels 20-Car Gift Pack|Hot Wheels Track Builder Unlimited|"
            "Hot Wheels Super Ultimate Garage|Hot Wheels Monster Trucks 5-Pack",
            "Barbie: Barbie Fashionistas Doll|Barbie Dreamhouse|Barbie Camper|Barbie Dream Closet",
        ),
    ),
    (
        ("Toys & Games", "Arts & Crafts"),
        _series(
            "Melissa & Doug: Melissa & Doug Wooden Shape Sorter|"
            "Melissa & Doug Pattern Blocks and Boards|"
            "Melissa & Doug Wooden Town Play Set|Melissa & Doug Deluxe Puzzle Set",
            "Crayola: Crayola Crayons, 64 Count|Crayola Washable Markers, 40 Count|"
            "Crayola Inspiration Art Case|Crayola Light-Up Tracing Pad",
            "Play-Doh: Play-Doh Modeling Compound 10-Pack|Play-Doh Fun Factory|"
            "Play-Doh Kitchen Creations Ice Cream Truck|"
            "Play-Doh Modeling Compound 36-Pack",
            "Magna-Tiles: Magna-Tiles Clear Colors 32-Piece Set|"
            "Magna-Tiles Clear Colors 100-Piece Set|Magna-Tiles Deluxe 48-Piece Set",
        ),
    ),
]

# MOOC course series: "School: course|follow-up course|...".
_MOOC_SERIES = _series(
    "TsinghuaX: 数据结构（上）|数据结构（下）|算法设计与分析|高级算法",
    "TsinghuaX: C++语言程序设计基础|C++语言程序设计进阶|面向对象程序设计|软件工程",
    "TsinghuaX: 线性代数|概率论与数理统计|数理统计|随机过程",
    "TsinghuaX: 微积分（一）|微积分（二）|微积分（三）|常微分方程",
    "TsinghuaX: 大学物理（一）|大学物理（二）|大学物理实验|电磁学",
    "PekingX: 计算概论A|数据结构与算法（一）|数据结构与算法（二）|算法基础",
    "TsinghuaX: 电路原理|模拟电子技术基础|数字电子技术基础|信号与系统",
    "TsinghuaX: 计算机原理|操作系统|计算机网络|编译原理",
    "TsinghuaX: Python语言程序设计|数据分析与可视化|机器学习概论|深度学习",
    "TsinghuaX: 经济学原理（微观）|经济学原理（宏观）|计量经济学|金融学概论",
    "PekingX: 心理学概论|社会心理学|发展心理学|认知心理学",
    "TsinghuaX: 中国近现代史纲要|思想道德修养与法律基础|马克思主义基本原理概论",
    "TsinghuaX: 大学英语（一）|大学英语（二）|英语写作|学术英语",
    "FudanX: 无机化学|有机化学（上）|有机化学（下）|物理化学",
    "TsinghuaX: 会计学原理|财务管理|管理会计|审计学",
    "TsinghuaX: 生命科学导论|细胞生物学|遗传学|分子生物学",
    "TsinghuaX: 工程图学|工程力学|材料力学|机械设计基础",
    "XJTUX: 自动控制原理|现代控制理论|单片机原理与应用|嵌入式系统",
    "TsinghuaX: 文物精品与文化中国|中国建筑史（上）|中国建筑史（下）",
    "TsinghuaX: 离散数学|组合数学|数论基础|密码学基础",
    "PekingX: 数据库系统概论|大数据系统基础|云计算与分布式系统|数据挖掘",
    "TsinghuaX: 创业基础|创业管理|商业模式创新|互联网产品设计",
    "FudanX: 大学国文|古典诗词鉴赏|中国文学史|红楼梦研究",
    "TsinghuaX: 人工智能原理|自然语言处理|计算机视觉|知识图谱",
    "NJUX: 计算机系统基础（一）|计算机系统基础（二）|计算机系统基础（三）",
    "ZJUX: Java程序设计|Java高级编程|Web开发技术|移动应用开发",
    "TsinghuaX: 运筹学|最优化方法|博弈论|数学建模",
    "PekingX: 美学原理|艺术史|西方美术史|中国美术史",
    "TsinghuaX: 新闻写作|传播学概论|媒介与社会",
    "TsinghuaX: 营养与健康|心理健康|体育与健康",
    "TsinghuaX: 电工技术|电子技术|电力电子技术",
    "TsinghuaX: 化学原理|分析化学|普通化学实验",
)
_MOOC_SCHOOLS = {
    "TsinghuaX": "清华大学",
    "PekingX": "北京大学",
    "FudanX": "复旦大学",
    "XJTUX": "西安交通大学",
    "NJUX": "南京大学",
    "ZJUX": "浙江大学",
}


@dataclass(frozen=True)
class _Item:
    title: str
    brand: str
    path: tuple[str, ...]
    line: int
    pos: int  # position in its line


def _catalog(families: Sequence[_Family]) -> tuple[list[_Item], list[list[int]]]:
    """Flatten families into items plus each line as a list of item indices."""
    items: list[_Item] = []
    lines: list[list[int]] = []
    for path, family_lines in families:
        for brand, titles in family_lines:
            line = len(lines)
            lines.append([])
            for pos, title in enumerate(titles):
                lines[line].append(len(items))
                items.append(_Item(title, brand, path, line, pos))
    titles = [item.title for item in items]
    if len(set(titles)) != len(titles):
        raise ValueError("vocabulary titles must be distinct within a domain")
    return items, lines


# --------------------------------------------------------------------------
# User behaviour: walk one or two lines in order, plus ~20% popular extras.


def _zipf_cum(rng: random.Random, n: int, exponent: float) -> list[float]:
    """Cumulative Zipf weights over a random ranking of n things."""
    ranks = list(range(n))
    rng.shuffle(ranks)
    weights = [1.0 / (r + 1) ** exponent for r in ranks]
    cum, total = [], 0.0
    for w in weights:
        total += w
        cum.append(total)
    return cum


def _simulate(
    rng: random.Random,
    lines: list[list[int]],
    n_items: int,
    n_users: int,
    *,
    light_share: float = 0.0,
    min_item_degree: int = 0,
) -> list[list[int]]:
    """Per user the ordered list of distinct items they interacted with.

    Every user gets >= 5 items unless drawn as a light user (light_share);
    min_item_degree > 0 tops items up so the set is 5-core by construction.
    """
    item_ids, line_ids = range(n_items), range(len(lines))
    item_cum = _zipf_cum(rng, n_items, 0.9)
    line_cum = _zipf_cum(rng, len(lines), 0.6)
    seqs: list[list[int]] = []
    for _ in range(n_users):
        if rng.random() < light_share:
            n = rng.randint(1, 4)
        else:
            # 5 plus an exponential tail: mean around 8.5, capped.
            n = min(5 + int(rng.expovariate(1 / 4.0)), 24)
        n_line = max(n - sum(rng.random() < 0.2 for _ in range(n)), min(n, 3))
        seq: list[int] = []
        while len(seq) < n_line:
            line = lines[rng.choices(line_ids, cum_weights=line_cum)[0]]
            # Most users start a line at its beginning; some join midway.
            start = 0 if rng.random() < 0.75 else rng.randrange(len(line) - 1)
            for item in line[start:]:
                if len(seq) == n_line:
                    break
                if item not in seq:
                    seq.append(item)
        while len(seq) < n:
            item = rng.choices(item_ids, cum_weights=item_cum)[0]
            if item not in seq:
                seq.insert(rng.randint(0, len(seq)), item)
        seqs.append(seq)
    if min_item_degree:
        degree = [0] * n_items
        for seq in seqs:
            for item in seq:
                degree[item] += 1
        for item in range(n_items):
            need = min_item_degree - degree[item]
            if need > 0:
                lacking = [u for u, seq in enumerate(seqs) if item not in seq]
                for u in rng.sample(lacking, need):
                    seqs[u].insert(rng.randint(0, len(seqs[u])), item)
    return seqs


def _thin_items(rng: random.Random, seqs: list[list[int]], n_items: int, count: int) -> None:
    """Leave `count` random items with only 1-4 users, as in a non-5-core dump."""
    for item in rng.sample(range(n_items), count):
        holders = [u for u, seq in enumerate(seqs) if item in seq and len(seq) > 1]
        for u in holders[rng.randint(1, 4) :]:
            seqs[u].remove(item)


def _days(rng: random.Random, n: int, lo: int, hi: int) -> list[int]:
    """n strictly increasing days inside one user's activity window."""
    span = min(hi - lo, max(20 * n, rng.randint(90, 1200)))
    start = rng.randint(lo, hi - span)
    return [start + d for d in sorted(rng.sample(range(span), n))]


# --------------------------------------------------------------------------
# Injected defects, shared by the Amazon families.

_PAGE_SCRIPT = "var aPageStart = (new Date()).getTime();"


def _title_junk(
    rng: random.Random,
    items: list[_Item],
    ids: list[str],
    meta_name: str,
    reviewed: Sequence[bool],
) -> tuple[dict[int, str | None], list[int], list[str]]:
    """Deface a few meta titles.

    Returns title overrides (None: drop the 'title' key), the items whose meta
    line gets duplicated, and README notes naming the affected item ids.
    """
    quoted = [i for i, item in enumerate(items) if "'" in item.title or "&" in item.title]
    entity = rng.sample(quoted, 2)
    # Items left without a usable title must have reviews, so the pipeline has
    # reviews to drop as no_title.
    untitled = rng.sample([i for i in range(len(items)) if reviewed[i] and i not in entity], 5)
    missing, html = untitled[:3], untitled[3:]
    rest = [i for i in range(len(items)) if i not in entity and i not in untitled]
    spaces, pipes, *dups = rng.sample(rest, 4)
    overrides: dict[int, str | None] = {i: None for i in missing}
    overrides[html[0]] = _PAGE_SCRIPT
    overrides[html[1]] = f'<span class="a-size-large">{items[html[1]].title}</span>'
    for i in entity:
        overrides[i] = items[i].title.replace("&", "&amp;").replace("'", "&#39;")
    overrides[spaces] = items[spaces].title.replace(" ", "  ", 1)
    title = items[pipes].title
    overrides[pipes] = title.replace(", ", " || ", 1) if ", " in title else f"{title} || 2 Pack"

    def names(idx: list[int]) -> str:
        return ", ".join(ids[i] for i in idx)

    notes = [
        f"`{meta_name}`: no 'title' key for {names(missing)} (these items have "
        "reviews, which the pipeline should drop as no_title)",
        f"`{meta_name}`: HTML/script junk as title for {names(html)}",
        f"`{meta_name}`: HTML entities (&amp; / &#39;) in titles of {names(entity)}",
        f"`{meta_name}`: doubled internal whitespace in the title of {ids[spaces]}",
        f"`{meta_name}`: a literal `||` in the title of {ids[pipes]}",
    ]
    return overrides, dups, notes


def _duplicate_reviews(
    rng: random.Random, records: list[dict], later: Callable[[dict, int], dict]
) -> list[dict]:
    """Repeat 2-3 reviews (same user and item, a later time) right after the
    original; returns the copies for the README."""
    copies = []
    # Inserting from the back keeps the earlier picked positions valid.
    for p in sorted(rng.sample(range(len(records)), rng.randint(2, 3)), reverse=True):
        copies.append(later(records[p], rng.randint(1, 30)))
        records.insert(p + 1, copies[-1])
    return copies


def _insert_copies(
    rng: random.Random,
    lines: list[str],
    originals: list[str],
    copy: Callable[[str], str] | None = None,
    *,
    before: bool = False,
) -> None:
    """Insert a (possibly altered) copy of each original line at a random
    position after it, or before it."""
    for original in originals:
        pos = lines.index(original)  # the first occurrence is the original
        at = rng.randint(0, pos) if before else rng.randint(pos + 1, len(lines))
        lines.insert(at, copy(original) if copy else original)


def _truncate_one(rng: random.Random, lines: list[str], enabled: bool) -> int | None:
    """Insert one half-written JSON line (only into files of >= 1000 lines)."""
    if not enabled or len(lines) < 1000:
        return None
    pos = rng.randrange(len(lines) // 4, 3 * len(lines) // 4)
    lines.insert(pos, lines[pos][: len(lines[pos]) // 2])
    return pos + 1


def _also_bought(
    rng: random.Random,
    items: list[_Item],
    lines: list[list[int]],
    ids: list[str],
    i: int,
) -> list[str]:
    """Next items of the same line first (the real co-purchase signal), then noise."""
    item = items[i]
    nxt = lines[item.line][item.pos + 1 : item.pos + 4]
    noise = rng.sample(range(len(items)), rng.randint(0, 3))
    return [ids[j] for j in dict.fromkeys([*nxt, *noise]) if j != i]


def _description(rng: random.Random, item: _Item) -> str:
    # Brand and category only: the title must not leak into items whose title is junk.
    return f"A {item.path[-1].lower()} product by {item.brand}. {rng.choice(_DETAILS)}"


def _image_url(rng: random.Random, host: str, suffix: str) -> str:
    return f"{host}/images/I/{_code(rng, 11, _ALNUM_MIXED)}{suffix}"


# --------------------------------------------------------------------------
# Amazon 2014: JSON reviews, Python-literal meta.

_2014_LO, _2014_HI = _day(2005, 1, 1), _day(2014, 7, 23)
_2014_IMG = "http://ecx.images-amazon.com"


def _write_amazon2014(
    out_dir: Path,
    category: str,
    families: list[_Family],
    *,
    seed: int,
    n_users: int,
    malformed: bool,
    notes: list[str],
) -> list[Path]:
    rng = random.Random(seed)
    items, lines = _catalog(families)
    seqs = _simulate(rng, lines, len(items), n_users, min_item_degree=5)
    asins = _unique(lambda: "B00" + _code(rng, 7), len(items))
    users = _unique(lambda: "A" + _code(rng, rng.randint(12, 14)), n_users)
    records = []
    for u, seq in enumerate(seqs):
        name = _reviewer_name(rng)
        for item, day in zip(seq, _days(rng, len(seq), _2014_LO, _2014_HI), strict=True):
            rating = _rating(rng)
            summary, text = _review_words(rng, rating)
            helpful_total = int(rng.expovariate(0.5))
            rec = {"reviewerID": users[u], "asin": asins[item]}
            if name is not None:
                rec["reviewerName"] = name
            rec.update(
                helpful=[rng.randint(0, helpful_total), helpful_total],
                reviewText=text,
                overall=float(rating),
                summary=summary,
                unixReviewTime=day * _DAY_S,
                reviewTime=_review_time(day * _DAY_S),
            )
            records.append(rec)
    # The real 5-core files come grouped by item.
    records.sort(key=lambda r: (r["asin"], r["unixReviewTime"], r["reviewerID"]))

    def later(rec: dict, days: int) -> dict:
        ts = rec["unixReviewTime"] + days * _DAY_S
        return {**rec, "unixReviewTime": ts, "reviewTime": _review_time(ts)}

    review_name = f"amazon2014/reviews_{category}_5.json.gz"
    dups = _duplicate_reviews(rng, records, later)
    review_lines = [json.dumps(r) for r in records]
    bad = _truncate_one(rng, review_lines, malformed)

    meta_name = f"amazon2014/meta_{category}.json.gz"
    overrides, dup_items, title_notes = _title_junk(
        rng, items, asins, meta_name, [True] * len(items)
    )
    meta_lines = []
    order = list(range(len(items)))
    rng.shuffle(order)
    for i in order:
        item = items[i]
        meta: dict = {"asin": asins[i]}
        title = overrides.get(i, item.title)
        if title is not None:
            meta["title"] = title
        if rng.random() < 0.9:
            meta["price"] = round(rng.uniform(2.5, 80.0), 2)
        meta["imUrl"] = _image_url(rng, _2014_IMG, "._SY300_.jpg")
        related = {"also_bought": _also_bought(rng, items, lines, asins, i)}
        if rng.random() < 0.3:
            related["bought_together"] = [asins[rng.randrange(len(items))]]
        meta["related"] = related
        meta["salesRank"] = {item.path[0]: rng.randint(100, 400_000)}
        meta["categories"] = [list(item.path)]
        meta["brand"] = item.brand
        meta["description"] = _description(rng, item)
        meta_lines.append(repr(meta))
    # Exact repeats somewhere after the original line.
    _insert_copies(rng, meta_lines, [meta_lines[order.index(i)] for i in dup_items])
    code_at = rng.randrange(len(meta_lines) // 4, 3 * len(meta_lines) // 4)
    meta_lines.insert(code_at, "__import__('os').system('echo pwned')")

    pairs = ", ".join(f"({c['reviewerID']}, {c['asin']})" for c in dups)
    notes.append(f"`{review_name}`: duplicate (user, item) reviews with a later time: {pairs}")
    if bad:
        notes.append(f"`{review_name}`: line {bad} is truncated JSON")
    notes.extend(title_notes)
    notes.append(
        f"`{meta_name}`: exact repeated lines for {', '.join(asins[i] for i in dup_items)}"
    )
    notes.append(
        f"`{meta_name}`: line {code_at + 1} is the code expression "
        "`__import__('os').system('echo pwned')` (ast.literal_eval must reject it)"
    )
    return [
        _write_lines(out_dir / review_name, review_lines),
        _write_lines(out_dir / meta_name, meta_lines),
    ]


# --------------------------------------------------------------------------
# Amazon 2018: JSON reviews with per-line key order, strict JSON meta.

_2018_LO, _2018_HI = _day(2008, 1, 1), _day(2018, 9, 30)
_2018_IMG = "https://images-na.ssl-images-amazon.com"
_SIZES = ("Small", "Medium", "Large", "X-Large")
_COLORS = ("Black", "Blue", "Red", "Green", "Gray")


def _style_2018(rng: random.Random, item: _Item) -> dict[str, str] | None:
    if rng.random() < 0.6:
        return None
    if item.path[0] == "Video Games":
        return {"Platform:": f" {item.path[1]}"}
    return {"Size:": f" {rng.choice(_SIZES)}", "Color:": f" {rng.choice(_COLORS)}"}


def _write_amazon2018(
    out_dir: Path,
    category: str,
    families: list[_Family],
    *,
    seed: int,
    n_users: int,
    malformed: bool,
    notes: list[str],
) -> list[Path]:
    rng = random.Random(seed)
    items, lines = _catalog(families)
    seqs = _simulate(rng, lines, len(items), n_users, min_item_degree=5)
    # A few old catalogue numbers are ISBN-like digits, as in the real dump.
    asins = _unique(
        lambda: _code(rng, 10, string.digits) if rng.random() < 0.1 else "B00" + _code(rng, 7),
        len(items),
    )
    users = _unique(lambda: "A" + _code(rng, rng.randint(12, 14)), n_users)
    records = []
    for u, seq in enumerate(seqs):
        name = _reviewer_name(rng)
        for item, day in zip(seq, _days(rng, len(seq), _2018_LO, _2018_HI), strict=True):
            rating = _rating(rng)
            summary, text = _review_words(rng, rating)
            rec: dict = {
                "overall": float(rating),
                "verified": rng.random() < 0.85,
                "reviewTime": _review_time(day * _DAY_S),
                "reviewerID": users[u],
                "asin": asins[item],
            }
            style = _style_2018(rng, items[item])
            if style is not None:
                rec["style"] = style
            if name is not None:
                rec["reviewerName"] = name
            rec.update(reviewText=text, summary=summary, unixReviewTime=day * _DAY_S)
            if rng.random() < 0.2:
                rec["vote"] = str(rng.randint(2, 60))
            if rng.random() < 0.03:
                rec["image"] = [_image_url(rng, _2018_IMG, "._SY88.jpg")]
            records.append(rec)
    records.sort(key=lambda r: (r["asin"], r["unixReviewTime"], r["reviewerID"]))

    def later(rec: dict, days: int) -> dict:
        ts = rec["unixReviewTime"] + days * _DAY_S
        return {**rec, "unixReviewTime": ts, "reviewTime": _review_time(ts)}

    review_name = f"amazon2018/{category}_5.json.gz"
    dups = _duplicate_reviews(rng, records, later)
    review_lines = []
    for rec in records:
        # The 2018 crawl has no stable key order; readers must not rely on one.
        fields = list(rec.items())
        rng.shuffle(fields)
        review_lines.append(json.dumps(dict(fields)))
    bad = _truncate_one(rng, review_lines, malformed)

    meta_name = f"amazon2018/meta_{category}.json.gz"
    overrides, dup_items, title_notes = _title_junk(
        rng, items, asins, meta_name, [True] * len(items)
    )
    meta_lines = []
    order = list(range(len(items)))
    rng.shuffle(order)
    for i in order:
        item = items[i]
        also = _also_bought(rng, items, lines, asins, i)
        rank = rng.randint(100, 200_000)
        big = _image_url(rng, _2018_IMG, ".jpg")
        meta = {
            "category": list(item.path),
            "tech1": "",
            "description": [_description(rng, item)],
            "fit": "",
            "title": overrides.get(i, item.title),
            "also_buy": also,
            "tech2": "",
            "brand": item.brand,
            "feature": rng.sample(_DETAILS, 2),
            "rank": f"{rank:,} in {item.path[0]} (",
            "also_view": also[::-1],
            "main_cat": item.path[0],
            "similar_item": "",
            "date": "" if rng.random() < 0.6 else f"{rng.randint(2006, 2017)}",
            "price": f"${rng.uniform(4.0, 60.0):.2f}" if rng.random() < 0.8 else "",
            "asin": asins[i],
            "imageURL": [big.replace(".jpg", "._SS40_.jpg")],
            "imageURLHighRes": [big],
            "details": {},
        }
        if meta["title"] is None:
            del meta["title"]
        meta_lines.append(json.dumps(meta))

    def empty_title(line: str) -> str:
        return json.dumps({**json.loads(line), "title": ""})

    # The real 2018 meta has empty-title lines ahead of the complete one.
    originals = [meta_lines[order.index(i)] for i in dup_items]
    _insert_copies(rng, meta_lines, originals, empty_title, before=True)

    pairs = ", ".join(f"({c['reviewerID']}, {c['asin']})" for c in dups)
    notes.append(f"`{review_name}`: duplicate (user, item) reviews with a later time: {pairs}")
    if bad:
        notes.append(f"`{review_name}`: line {bad} is truncated JSON")
    notes.extend(title_notes)
    notes.append(
        f"`{meta_name}`: {', '.join(asins[i] for i in dup_items)} each also appear "
        'earlier in the file with an empty title ""'
    )
    return [
        _write_lines(out_dir / review_name, review_lines),
        _write_lines(out_dir / meta_name, meta_lines),
    ]


# --------------------------------------------------------------------------
# Amazon 2023 (McAuley Lab): JSON lines, millisecond timestamps, parent_asin.

_2023_LO, _2023_HI = _day(2015, 1, 1), _day(2023, 9, 1)
_2023_IMG = "https://m.media-amazon.com"


def _write_amazon2023(
    out_dir: Path,
    category: str,
    families: list[_Family],
    *,
    seed: int,
    n_users: int,
    malformed: bool,
    notes: list[str],
) -> list[Path]:
    rng = random.Random(seed)
    items, lines = _catalog(families)
    # Not 5-core: some light users and a few items with only 1-4 reviews.
    seqs = _simulate(rng, lines, len(items), n_users, light_share=0.12)
    _thin_items(rng, seqs, len(items), count=6)
    parents = _unique(lambda: "B0" + _code(rng, 8), len(items))
    variants = [
        [p] + ["B0" + _code(rng, 8) for _ in range(rng.randint(1, 3))]
        if rng.random() < 0.3
        else [p]
        for p in parents
    ]
    users = _unique(lambda: "A" + _code(rng, 27), n_users)
    records = []
    for u, seq in enumerate(seqs):
        for item, day in zip(seq, _days(rng, len(seq), _2023_LO, _2023_HI), strict=True):
            rating = _rating(rng)
            summary, text = _review_words(rng, rating)
            images = []
            if rng.random() < 0.04:
                url = _image_url(rng, _2023_IMG, "._SL256_.jpg")
                images = [
                    {
                        "small_image_url": url,
                        "medium_image_url": url.replace("256", "800"),
                        "large_image_url": url.replace("._SL256_", ""),
                        "attachment_type": "IMAGE",
                    }
                ]
            records.append(
                {
                    "rating": float(rating),
                    "title": summary,
                    "text": text,
                    "images": images,
                    "asin": rng.choice(variants[item]),
                    "parent_asin": parents[item],
                    "user_id": users[u],
                    "timestamp": day * _DAY_S * 1000 + rng.randrange(_DAY_S * 1000),
                    "helpful_vote": int(rng.expovariate(0.7)),
                    "verified_purchase": rng.random() < 0.9,
                }
            )

    def later(rec: dict, days: int) -> dict:
        return {**rec, "timestamp": rec["timestamp"] + days * _DAY_S * 1000}

    review_name = f"amazon2023/{category}.jsonl.gz"
    dups = _duplicate_reviews(rng, records, later)
    review_lines = [json.dumps(r) for r in records]
    bad = _truncate_one(rng, review_lines, malformed)

    ratings: list[list[float]] = [[] for _ in items]
    by_parent = {p: i for i, p in enumerate(parents)}
    for rec in records:
        ratings[by_parent[rec["parent_asin"]]].append(rec["rating"])

    meta_name = f"amazon2023/meta_{category}.jsonl.gz"
    reviewed = [bool(r) for r in ratings]
    overrides, dup_items, title_notes = _title_junk(rng, items, parents, meta_name, reviewed)
    meta_lines = []
    order = list(range(len(items)))
    rng.shuffle(order)
    for i in order:
        item = items[i]
        mean = sum(ratings[i]) / len(ratings[i]) if ratings[i] else rng.uniform(3, 5)
        url = _image_url(rng, _2023_IMG, "._AC_US40_.jpg")
        meta = {"main_category": item.path[0], "title": overrides.get(i, item.title)}
        if meta["title"] is None:
            del meta["title"]
        meta.update(
            average_rating=round(min(5.0, max(1.0, mean + rng.uniform(-0.3, 0.3))), 1),
            rating_number=len(ratings[i]) * rng.randint(3, 40) + rng.randint(0, 50),
            features=rng.sample(_DETAILS, 2),
            description=[_description(rng, item)],
            price=round(rng.uniform(3.0, 90.0), 2) if rng.random() < 0.75 else None,
            images=[
                {
                    "thumb": url,
                    "large": url.replace("._AC_US40_", "._AC_"),
                    "variant": "MAIN",
                    "hi_res": None,
                }
            ],
            videos=[],
            store=item.brand,
            categories=list(item.path),
            details={
                "Manufacturer": item.brand,
                "Date First Available": f"{rng.randint(2012, 2022)}",
            },
            parent_asin=parents[i],
            bought_together=None,
        )
        meta_lines.append(json.dumps(meta))
    _insert_copies(rng, meta_lines, [meta_lines[order.index(i)] for i in dup_items])

    pairs = ", ".join(f"({c['user_id']}, {c['parent_asin']})" for c in dups)
    notes.append(f"`{review_name}`: duplicate (user, item) reviews with a later time: {pairs}")
    if bad:
        notes.append(f"`{review_name}`: line {bad} is truncated JSON")
    notes.extend(title_notes)
    notes.append(
        f"`{meta_name}`: exact repeated lines for {', '.join(parents[i] for i in dup_items)}"
    )
    return [
        _write_lines(out_dir / review_name, review_lines),
        _write_lines(out_dir / meta_name, meta_lines),
    ]


# --------------------------------------------------------------------------
# MOOCCube (XuetangX): plain UTF-8 JSON lines plus a tab-separated relation.

_MOOC_LO, _MOOC_HI = _day(2015, 9, 1), _day(2019, 12, 31)
_SYLLABLES = (
    "zhang|wang|li|liu|chen|yang|zhao|huang|zhou|wu|xu|sun|hu|zhu|gao|lin|he|guo|"
    "ma|luo|xiao|ming|hua|jun|yan|lei|fang|ting|wei|xin"
).split("|")


def _write_mooccube(out_dir: Path, *, seed: int, n_users: int, notes: list[str]) -> list[Path]:
    rng = random.Random(seed)
    courses, lines = _catalog([((), _MOOC_SERIES)])
    seqs = _simulate(rng, lines, len(courses), n_users, light_share=0.1)
    codes = _unique(lambda: _code(rng, 8, string.digits), len(courses))
    ids = [
        f"C_course-v1:{c.brand}+{code}X+{rng.randint(2015, 2018)}_T{rng.randint(1, 2)}"
        for c, code in zip(courses, codes, strict=True)
    ]
    nameless = rng.randrange(len(courses))
    course_lines = []
    for i, course in enumerate(courses):
        previous = lines[course.line][course.pos - 1] if course.pos else None
        school = _MOOC_SCHOOLS[course.brand]
        course_lines.append(
            json.dumps(
                {
                    "id": ids[i],
                    "name": "" if i == nameless else course.title,
                    "prerequisites": courses[previous].title if previous is not None else "",
                    "about": f"本课程由{school}开设，系统讲授{course.title}的核心内容。",
                    "core_id": f"{codes[i]}X",
                },
                ensure_ascii=False,
            )
        )

    user_ids = _unique(lambda: f"U_{rng.randint(100_000, 9_999_999)}", n_users)
    user_lines, relation_lines = [], []
    shuffled = 0
    for u, seq in enumerate(seqs):
        pairs = [
            (
                ids[c],
                dt.datetime.fromtimestamp(
                    day * _DAY_S + rng.randrange(_DAY_S), tz=dt.timezone.utc
                ).strftime("%Y-%m-%d %H:%M:%S"),
            )
            for c, day in zip(seq, _days(rng, len(seq), _MOOC_LO, _MOOC_HI), strict=True)
        ]
        if len(pairs) > 1 and rng.random() < 0.3:
            # The real dump does not keep course_order chronological; pairs stay aligned.
            rng.shuffle(pairs)
            shuffled += 1
        user = {
            "id": user_ids[u],
            "name": "".join(rng.sample(_SYLLABLES, 2)) + str(rng.randint(1, 999)),
            "gender": rng.choice((0, 0, 1, 2)),
            "school": rng.choice(list(_MOOC_SCHOOLS.values())) if rng.random() < 0.2 else "",
            "year_of_birth": rng.randint(1975, 2002),
            "course_order": [c for c, _ in pairs],
            "enroll_time": [t for _, t in pairs],
        }
        user_lines.append(json.dumps(user, ensure_ascii=False))
        relation_lines.extend(f"{user_ids[u]}\t{c}" for c, _ in pairs)
    broken = rng.randrange(len(user_lines))
    user_lines[broken] = user_lines[broken][: len(user_lines[broken]) // 2]

    notes.append(f"`mooccube/entities/course.json`: {ids[nameless]} has an empty name")
    notes.append(
        f"`mooccube/entities/user.json`: line {broken + 1} ({user_ids[broken]}) is "
        "truncated JSON; its enrolments are still in user-course.json"
    )
    notes.append(
        f"`mooccube/entities/user.json`: {shuffled} users list course_order out of "
        "time order (enroll_time stays paired with it)"
    )
    return [
        _write_lines(out_dir / "mooccube/entities/course.json", course_lines, gz=False),
        _write_lines(out_dir / "mooccube/entities/user.json", user_lines, gz=False),
        _write_lines(out_dir / "mooccube/relations/user-course.json", relation_lines, gz=False),
    ]


# --------------------------------------------------------------------------
# The bundled sample

# (writer, category, vocabulary, users, malformed review line allowed)
_SAMPLE_DOMAINS = (
    (_write_amazon2014, "Beauty", _BEAUTY, 320, True),
    (_write_amazon2014, "Cell_Phones_and_Accessories", _CELL_PHONES, 300, False),
    (_write_amazon2018, "Video_Games", _VIDEO_GAMES, 340, True),
    (_write_amazon2018, "Sports_and_Outdoors", _SPORTS, 300, False),
    (_write_amazon2023, "Pet_Supplies", _PET_SUPPLIES, 360, True),
    (_write_amazon2023, "Toys_and_Games", _TOYS, 330, False),
)
_MOOC_USERS = 300


def _line_count(path: Path) -> int:
    raw = path.read_bytes()
    if path.suffix == ".gz":
        raw = gzip.decompress(raw)
    return raw.count(b"\n")


def _readme(out_dir: Path, paths: list[Path], notes: list[str], seed: int) -> str:
    files = "\n".join(
        f"| `{p.relative_to(out_dir).as_posix()}` | {_line_count(p)} |" for p in paths
    )
    junk = "\n".join(f"- {note}" for note in notes)
    return f"""# molorec bundled sample

Synthetic data, not real reviews: every user, item, review and course here was
made up by `python -m molorec.sample resources/sample` (seed {seed}), which
rewrites these files byte for byte.  The files use the real raw formats of
four dataset families so the ingestion runs on them unchanged:

- `amazon2014/`: Amazon reviews 2014 (McAuley), 5-core review JSON lines and
  meta as Python dict literals (`ast.literal_eval`, not JSON).
- `amazon2018/`: Amazon reviews 2018 (Ni et al.), 5-core review JSON lines
  whose key order varies per line, strict JSON meta.
- `amazon2023/`: Amazon reviews 2023 (McAuley Lab), JSON lines with
  millisecond timestamps; items keyed by `parent_asin`, some reviews name a
  variant `asin`; not 5-core.
- `mooccube/`: MOOCCube (XuetangX) course and user entities (UTF-8 JSON
  lines) and the tab-separated user-course relation; not 5-core.

Item titles form ordered product lines (a brand's skin-care routine, a game
franchise in release order, a course followed by its sequel); users mostly
walk one or two lines forward in time, plus about 20% popular extras.
Amazon 2014 and 2018 domains are 5-core before the junk below was added.

| file | lines |
| --- | --- |
{files}

## Injected junk

Deliberate defects for the ingestion's quality accounting:

{junk}
"""


def generate_sample(out_dir: Path, seed: int = 7) -> list[Path]:
    """Write the whole bundled sample under out_dir; returns the written paths."""
    out_dir = Path(out_dir)
    paths: list[Path] = []
    notes: list[str] = []
    for k, (writer, category, families, n_users, malformed) in enumerate(_SAMPLE_DOMAINS):
        paths += writer(
            out_dir,
            category,
            families,
            seed=seed * 1000 + k,  # one independent stream per domain
            n_users=n_users,
            malformed=malformed,
            notes=notes,
        )
    paths += _write_mooccube(
        out_dir, seed=seed * 1000 + len(_SAMPLE_DOMAINS), n_users=_MOOC_USERS, notes=notes
    )
    readme = out_dir / "README.md"
    readme.write_text(_readme(out_dir, paths, notes, seed), encoding="utf-8")
    return [*paths, readme]


# --------------------------------------------------------------------------
# Large synthetic Amazon 2014 dumps for benchmarks

_CHUNK = 200_000
_HELPFUL_MAX = 30
_TEXTS_PER_RATING = 400
_RATING_P = np.array(_RATING_WEIGHTS) / sum(_RATING_WEIGHTS)
_REVIEW_LINE = (
    '{"reviewerID": "%s", "asin": "%s", %s"helpful": %s, "reviewText": %s, '
    '"overall": %s, "summary": %s, %s}\n'
)
_ADJ = (
    "Silent|Hidden|Last|Broken|Golden|Lost|Secret|Burning|Distant|Quiet|Wild|"
    "Forgotten|Crimson|Winter|Midnight|Iron|Glass|Little|Bright|Classic|Premium|"
    "Compact|Ultra|Deluxe|Natural|Everyday|Travel|Professional|Gentle|Essential"
).split("|")
_NOUN = (
    "River|Garden|Kingdom|House|Road|Promise|Letter|Storm|Island|Daughter|Shadow|"
    "Crown|Summer|Harbor|Forest|Set|Kit|Organizer|Bottle|Case|Cream|Brush|Lamp|"
    "Stand|Bag|Cleaner|Holder|Cover|Pack|Guide"
).split("|")
_BRANDS = (
    "Acme|Northwind|Bluebird|Summit|Evergreen|Lumina|Vertex|Harbor|Pioneer|Nimbus|"
    "Orchid|Granite|Willow|Aurora|Keystone|Meridian"
).split("|")


def _core_degrees(
    rng: np.random.Generator, n: int, total: int, sigma: float, cap: int
) -> np.ndarray:
    """Degrees >= 5 summing to total, lognormal-skewed, each at most cap."""
    weights = rng.lognormal(0.0, sigma, n)
    deg = np.full(n, 5, dtype=np.int64)
    extra = total - 5 * n
    while extra > 0:
        p = np.where(deg < cap, weights, 0.0)
        deg += np.bincount(rng.choice(n, size=extra, p=p / p.sum()), minlength=n)
        over = np.maximum(deg - cap, 0)
        deg -= over
        extra = int(over.sum())  # redistribute what went over the cap
    return deg


def _rewire_duplicates(
    rng: np.random.Generator, users: np.ndarray, items: np.ndarray, n_items: int
) -> None:
    """Swap item ends of repeated (user, item) edges until all pairs are unique.

    Swaps keep every user's and item's degree, so the graph stays 5-core.
    """
    for _ in range(200):
        keys = users.astype(np.int64) * n_items + items
        order = np.argsort(keys)
        sorted_keys = keys[order]
        dup = order[1:][sorted_keys[1:] == sorted_keys[:-1]]
        del keys, order, sorted_keys
        if dup.size == 0:
            return
        partners = rng.integers(0, items.size, dup.size)
        # Few duplicates: sequential swaps are simplest and exactly degree-preserving.
        for d, p in zip(dup.tolist(), partners.tolist(), strict=True):
            items[d], items[p] = items[p], items[d]
    raise RuntimeError("could not make (user, item) pairs unique; graph too dense")


def _np_codes(
    rng: np.random.Generator,
    n: int,
    length: int,
    alphabet: str,
    unique_prefix: int | None = None,
) -> np.ndarray:
    """n random codes (numpy str array); with unique_prefix, those leading
    characters are distinct, which keeps codes distinct even when truncated."""
    table = np.frombuffer(alphabet.encode("ascii"), dtype=np.uint8)
    if unique_prefix is None:
        draws = table[rng.integers(0, len(alphabet), (n, length))]
        return draws.view(f"S{length}").ravel().astype(f"U{length}")
    draws = table[rng.integers(0, len(alphabet), (n + n // 50 + 16, length))]
    prefix = np.ascontiguousarray(draws[:, :unique_prefix]).view(f"S{unique_prefix}")
    # Keep first occurrences in draw order so the result depends on the seed only.
    _, first = np.unique(prefix.ravel(), return_index=True)
    keep = np.sort(first)
    if keep.size < n:
        raise RuntimeError("code space too small for the requested count")
    return draws[keep[:n]].view(f"S{length}").ravel().astype(f"U{length}")


def _text_pools(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """JSON-encoded review texts and summaries, _TEXTS_PER_RATING per rating."""
    rng = random.Random(seed)
    texts, summaries = [], []
    for rating in _RATINGS:
        for _ in range(_TEXTS_PER_RATING):
            summary, text = _review_words(rng, rating)
            texts.append(json.dumps(text))
            summaries.append(json.dumps(summary))
    return np.array(texts, dtype=object), np.array(summaries, dtype=object)


def _day_tails(lo: int, hi: int) -> np.ndarray:
    """'"unixReviewTime": ..., "reviewTime": "..."' for every day in [lo, hi)."""
    return np.array(
        [
            f'"unixReviewTime": {d * _DAY_S}, "reviewTime": "{_review_time(d * _DAY_S)}"'
            for d in range(lo, hi)
        ],
        dtype=object,
    )


def write_amazon2014_synthetic(
    out_dir: Path,
    category: str,
    n_users: int,
    n_items: int,
    n_reviews: int,
    seed: int = 0,
    n_meta_items: int | None = None,
) -> tuple[Path, Path]:
    """Write a large 5-core Amazon-2014 style dump for benchmarks.

    ``n_meta_items`` (>= n_items) makes the meta file list that many products, the extra
    ones never reviewed, as in the real dumps (Beauty: 259,204 meta lines for 12,101
    reviewed items); its lines are in asin order, reviewed and unreviewed mixed.

    Writes ``reviews_{category}_5.json.gz`` and ``meta_{category}.json.gz``:
    every user and item has >= 5 reviews, (user, item) pairs are unique, and
    about 1.5% of items lack a title.  Books size (603,668 users / 367,982
    items / 8,898,041 reviews) takes about a minute and under 0.5 GB RSS.
    """
    if min(n_users, n_items) < 5 or n_reviews < 5 * max(n_users, n_items):
        raise ValueError("need >= 5 users, >= 5 items and >= 5 reviews per user/item")
    if n_reviews > n_users * n_items // 4:
        raise ValueError("too many reviews for unique (user, item) pairs")
    out_dir = Path(out_dir)
    rng = np.random.default_rng(seed)

    # Configuration model: lay out degree stubs, shuffle one side, fix repeats.
    user_deg = _core_degrees(rng, n_users, n_reviews, 1.0, n_items // 2)
    item_deg = _core_degrees(rng, n_items, n_reviews, 1.5, n_users // 2)
    users = np.repeat(np.arange(n_users, dtype=np.int32), user_deg)
    items = np.repeat(np.arange(n_items, dtype=np.int32), item_deg)
    del user_deg, item_deg
    rng.shuffle(items)
    _rewire_duplicates(rng, users, items, n_items)
    order = np.argsort(items, kind="stable")  # real 5-core files group by item
    users, items = users[order], items[order]
    del order

    # Strings are built once per user / item / day and looked up per line.
    lengths = rng.integers(12, 15, n_users)
    reviewer_ids = np.array(
        [
            "A" + c[:k]
            for c, k in zip(
                _np_codes(rng, n_users, 14, _ALNUM, 12).tolist(), lengths.tolist(), strict=True
            )
        ],
        dtype=object,
    )
    n_meta = max(n_items, n_meta_items or 0)
    if category == "Books":  # ISBN-10 style asins
        asin_arr = _np_codes(rng, n_meta, 10, string.digits, 10)
    else:
        asin_arr = np.char.add("B00", _np_codes(rng, n_meta, 7, _ALNUM, 7))
    asins = asin_arr.astype(object)
    del asin_arr
    names = np.array(
        ['"reviewerName": "Amazon Customer", ']
        + [f'"reviewerName": "{f[0]}. {s}", ' for f in _FIRST for s in _LAST]
        + [f'"reviewerName": "{f} {s}", ' for f in _FIRST for s in _LAST]
        + [""],  # a few reviews have no reviewerName at all
        dtype=object,
    )
    user_names = names[rng.integers(0, names.size, n_users)]
    helpful = np.array(
        [f"[{a}, {b}]" for b in range(_HELPFUL_MAX + 1) for a in range(b + 1)],
        dtype=object,
    )
    overall = np.array([f"{r}.0" for r in _RATINGS], dtype=object)
    texts, summaries = _text_pools(seed)
    tails = _day_tails(_2014_LO, _2014_HI)
    span = _2014_HI - _2014_LO

    reviews_path = out_dir / f"reviews_{category}_5.json.gz"
    with _gzip_out(reviews_path, level=1) as out:
        for lo in range(0, n_reviews, _CHUNK):
            u, i = users[lo : lo + _CHUNK], items[lo : lo + _CHUNK]
            n = u.size
            # Review volume grows over the years, so skew days towards the end.
            days = (rng.random(n) ** 0.4 * span).astype(np.int64)
            stars = rng.choice(5, size=n, p=_RATING_P)
            total = np.minimum(rng.geometric(0.45, n) - 1, _HELPFUL_MAX)
            found = rng.binomial(total, 0.7)
            # One pool index per review keeps its summary and text consistent.
            pick = stars * _TEXTS_PER_RATING + rng.integers(0, _TEXTS_PER_RATING, n)
            columns = (
                reviewer_ids[u],
                asins[i],
                user_names[u],
                helpful[total * (total + 1) // 2 + found],
                texts[pick],
                overall[stars],
                summaries[pick],
                tails[days],
            )
            chunk = "".join(
                map(_REVIEW_LINE.__mod__, zip(*(c.tolist() for c in columns), strict=True))
            )
            out.write(chunk.encode("ascii"))
    del users, items

    label = category.replace("_and_", " & ").replace("_", " ")
    meta_path = out_dir / f"meta_{category}.json.gz"
    asins = asins[np.argsort(asins, kind="stable")]  # meta dumps are in asin order
    with _gzip_out(meta_path, level=1) as out:
        for lo in range(0, n_meta, _CHUNK):
            n = min(_CHUNK, n_meta - lo)
            has_title = rng.random(n) >= 0.015
            words = rng.integers(0, [len(_ADJ), len(_NOUN), len(_NOUN), len(_BRANDS)], (n, 4))
            prices = np.round(rng.uniform(1.0, 80.0, n), 2)
            has_price = rng.random(n) < 0.85
            ranks = rng.integers(1, 2_000_000, n)
            image_ids = _np_codes(rng, n, 11, _ALNUM_MIXED)
            n_also = rng.integers(0, 40, n)  # real related lists run to dozens of asins
            also = rng.integers(0, n_meta, (n, 40))
            lines = []
            for k in range(n):
                adj, noun, noun2, brand = words[k].tolist()
                meta: dict = {"asin": asins[lo + k]}
                if has_title[k]:
                    if category == "Books":
                        title = f"The {_ADJ[adj]} {_NOUN[noun]} of {_NOUN[noun2]}"
                    else:
                        title = f"{_BRANDS[brand]} {_ADJ[adj]} {_NOUN[noun]}"
                    meta["title"] = title
                if has_price[k]:
                    meta["price"] = float(prices[k])
                meta["imUrl"] = f"{_2014_IMG}/images/I/{image_ids[k]}._SY300_.jpg"
                meta["related"] = {"also_bought": asins[also[k, : n_also[k]]].tolist()}
                meta["salesRank"] = {label: int(ranks[k])}
                meta["categories"] = [[label]]
                if category != "Books":
                    meta["brand"] = _BRANDS[brand]
                lines.append(repr(meta))
            out.write(("\n".join(lines) + "\n").encode("utf-8"))
    return reviews_path, meta_path


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m molorec.sample",
        description="Write the deterministic bundled sample of raw dumps.",
    )
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    for path in generate_sample(args.out_dir, seed=args.seed):
        print(path)


if __name__ == "__main__":
    main()
