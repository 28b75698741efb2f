"""Small chat-format instruction sets for the trainer and fusion tests."""

from __future__ import annotations

import polars as pl

TITLES = [
    "CeraVe Hydrating Facial Cleanser",
    "Halo 3: ODST",
    "LEGO City Fire Station",
    "数据结构（上）",
    "Xbox 360 Wireless Controller",
    "Burt's Bees Lip Balm",
]


def conversation(i: int, answer: str) -> list[dict]:
    history = TITLES[(i + 1) % len(TITLES)]
    return [
        {"role": "system", "content": "You are a helpful recommendation assistant."},
        {
            "role": "user",
            "content": f"User {i} bought [{history}]. Candidates: [{'||'.join(TITLES)}]. "
            "The top products are:",
        },
        {"role": "assistant", "content": answer},
    ]


def instructions(path, n: int, answer=lambda i: TITLES[i % len(TITLES)], split="train"):
    rows = [
        {
            "domain": "d",
            "user": f"U{i}",
            "split": split,
            "position": 1,
            "target": f"I{i}",
            "cold": False,
            "held_out": split == "test",
            "messages": conversation(i, answer(i)),
        }
        for i in range(n)
    ]
    pl.DataFrame(rows).write_parquet(path)
    return str(path)
