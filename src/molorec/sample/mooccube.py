"""MOOCCube (XuetangX) in the sample: plain UTF-8 JSON lines of courses and users, plus the
tab-separated user-course relation."""

from __future__ import annotations

import datetime as dt
import json
import random
import string
from pathlib import Path

import yaml

from molorec.sample.common import (
    DAY_S,
    HERE,
    WORDS,
    catalog,
    code,
    day,
    days,
    simulate,
    unique,
    write_lines,
)

FIRST_DAY, LAST_DAY = day(2015, 9, 1), day(2019, 12, 31)


def write_mooccube(out_dir: Path, *, seed: int, n_users: int, notes: list[str]) -> list[Path]:
    rng = random.Random(seed)
    doc = yaml.safe_load((HERE / "catalogs" / "mooccube.yaml").read_text(encoding="utf-8"))
    series = [(line["brand"], line["titles"]) for line in doc["lines"]]
    schools = doc["schools"]
    courses, lines = catalog([((), series)])
    seqs = simulate(rng, lines, len(courses), n_users, light_share=0.1)
    codes = unique(lambda: code(rng, 8, string.digits), len(courses))
    ids = [
        f"C_course-v1:{c.brand}+{code}X+{rng.randint(2015, 2018)}_T{rng.randint(1, 2)}"
        for c, code in zip(courses, codes, strict=True)
    ]
    nameless = rng.randrange(len(courses))
    course_lines = []
    for i, course in enumerate(courses):
        previous = lines[course.line][course.pos - 1] if course.pos else None
        school = schools[course.brand]
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

    user_ids = unique(lambda: f"U_{rng.randint(100_000, 9_999_999)}", n_users)
    user_lines, relation_lines = [], []
    shuffled = 0
    for u, seq in enumerate(seqs):
        pairs = [
            (
                ids[c],
                dt.datetime.fromtimestamp(
                    day * DAY_S + rng.randrange(DAY_S), tz=dt.timezone.utc
                ).strftime("%Y-%m-%d %H:%M:%S"),
            )
            for c, day in zip(seq, days(rng, len(seq), FIRST_DAY, LAST_DAY), strict=True)
        ]
        if len(pairs) > 1 and rng.random() < 0.3:
            # The real dump does not keep course_order chronological; pairs stay aligned.
            rng.shuffle(pairs)
            shuffled += 1
        user = {
            "id": user_ids[u],
            "name": "".join(rng.sample(WORDS["syllables"], 2)) + str(rng.randint(1, 999)),
            "gender": rng.choice((0, 0, 1, 2)),
            "school": rng.choice(list(schools.values())) if rng.random() < 0.2 else "",
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
        write_lines(out_dir / "mooccube/entities/course.json", course_lines, gz=False),
        write_lines(out_dir / "mooccube/entities/user.json", user_lines, gz=False),
        write_lines(out_dir / "mooccube/relations/user-course.json", relation_lines, gz=False),
    ]
