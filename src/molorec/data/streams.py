"""Seeded random streams for many keys at once, equal to ``np.random.PCG64(key)``.

Every example draws from its own generator, seeded by a 64-bit hash of the example's key
(molorec.data.examples.example_rng). Building a SeedSequence and a generator per example
is most of what a cheap example costs, so here the SeedSequence step runs on all keys at
once in numpy (its 32-bit hash mixing, as numpy defines it), and one generator is re-seeded
per key by setting its PCG64 state. numpy keeps SeedSequence and PCG64 streams stable
across versions; tests/test_examples.py checks the streams against numpy's own.
"""

from __future__ import annotations

import numpy as np

_M32 = np.uint64(0xFFFFFFFF)
_SHIFT = np.uint64(16)
# numpy.random.SeedSequence's constants (pool of 4 words).
_INIT_A, _MULT_A, _INIT_B, _MULT_B = 0x43B0D7E5, 0x931E8875, 0x8B51F9DD, 0x58F38DED
_MIX_L, _MIX_R = np.uint64(0xCA01F9DD), np.uint64(0x4973F715)
_POOL = 4
# PCG64's 128-bit LCG multiplier.
_PCG_MULT = 0x2360ED051FC65DA44385DF649FCCF645
_M128 = (1 << 128) - 1


def seed_words(keys: np.ndarray) -> np.ndarray:
    """``SeedSequence(k).generate_state(4, np.uint64)`` for each 64-bit key: [n, 4]."""
    keys = np.asarray(keys, dtype=np.uint64)
    zero = np.zeros_like(keys)
    entropy = [keys & _M32, keys >> np.uint64(32), zero, zero]
    const = _INIT_A

    def hashmix(value: np.ndarray) -> np.ndarray:
        nonlocal const
        value = value ^ np.uint64(const)
        const = (const * _MULT_A) & 0xFFFFFFFF
        value = (value * np.uint64(const)) & _M32
        return value ^ (value >> _SHIFT)

    def mix(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        result = (_MIX_L * x - _MIX_R * y) & _M32
        return result ^ (result >> _SHIFT)

    pool = [hashmix(word) for word in entropy]
    for src in range(_POOL):
        for dst in range(_POOL):
            if src != dst:
                pool[dst] = mix(pool[dst], hashmix(pool[src]))
    const = _INIT_B
    words = []
    for i in range(2 * _POOL):
        value = pool[i % _POOL] ^ np.uint64(const)
        const = (const * _MULT_B) & 0xFFFFFFFF
        value = (value * np.uint64(const)) & _M32
        words.append(value ^ (value >> _SHIFT))
    return np.stack([words[2 * i] | (words[2 * i + 1] << np.uint64(32)) for i in range(4)], 1)


def pcg64_states(keys: np.ndarray) -> list[tuple[int, int]]:
    """(state, increment) of ``np.random.PCG64(k)`` for each key, as PCG64 seeds itself
    from the SeedSequence words (pcg_setseq_128_srandom_r)."""
    states = []
    for w0, w1, w2, w3 in seed_words(keys).tolist():
        start, sequence = (w0 << 64) | w1, (w2 << 64) | w3
        inc = ((sequence << 1) | 1) & _M128
        state = (((inc + start) & _M128) * _PCG_MULT + inc) & _M128
        states.append((state, inc))
    return states


class Streams:
    """One generator, set to the stream of one key after another."""

    def __init__(self, keys: np.ndarray):
        self.states = pcg64_states(keys)
        self.bits = np.random.PCG64(0)
        self.rng = np.random.Generator(self.bits)

    def __getitem__(self, i: int) -> np.random.Generator:
        """The generator as ``np.random.Generator(np.random.PCG64(keys[i]))`` starts."""
        state, inc = self.states[i]
        self.bits.state = {
            "bit_generator": "PCG64",
            "state": {"state": state, "inc": inc},
            "has_uint32": 0,
            "uinteger": 0,
        }
        return self.rng
