"""Prompt-cache affinity by rendezvous (highest-random-weight) hashing, with no shared state.

Theory of operation. The router stage digests a request's long prompt prefix into `affinity_key`. Each
deployment has a fixed 64-bit salt derived from its id (`Deployment.salt`, BLAKE2b of the id). A key's
weight on a deployment is splitmix64(blake2b(key) XOR salt); the key goes to the deployment of highest
weight among the pool. Every worker and replica computes the same answer from the same key and pool,
so providers' prompt caches are hit whoever decides; when a deployment leaves the pool only the keys
that mapped to it move (each to its second-highest weight), and when one joins it takes only the keys
it now wins — no ring, no table, no coordination.

The pool is what "within the policy" means (see `routing.pickers`): the eligible deployments that meet
the policy's constraints and whose total score is within `affinity_tolerance` (a fraction: 0.1 = 10 %)
of the best one's.
A deployment that is cooling down, dropped by a filter, breaks a constraint or falls too far behind
leaves the pool, so its keys yield to the next deployment of highest weight in the pool.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from routing.model import Deployment

_MASK = (1 << 64) - 1


def key_hash(key: bytes) -> int:
    """The 64-bit hash of an affinity key (stable across processes, versions and machines)."""
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big")


def weight(key_h: int, deployment: Deployment) -> int:
    """The rendezvous weight of a hashed key on a deployment (splitmix64 finalizer of key ^ salt)."""
    x = key_h ^ deployment.salt
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


def rendezvous_index(key: bytes, pool: Sequence[Deployment]) -> int:
    """The index in `pool` (non-empty) of the deployment `key` maps to; the deployment chosen does not
    depend on the pool's order (equal weights, all but impossible, go to the smaller id)."""
    h = key_hash(key)
    best = 0
    best_w = weight(h, pool[0])
    for j in range(1, len(pool)):
        d = pool[j]
        w = weight(h, d)
        if w > best_w or (w == best_w and d.id < pool[best].id):
            best, best_w = j, w
    return best


def rendezvous(key: bytes, pool: Sequence[Deployment]) -> Deployment:
    """The deployment of `pool` (non-empty) that `key` maps to; independent of the pool's order."""
    return pool[rendezvous_index(key, pool)]
