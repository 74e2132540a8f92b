"""Per-domain defaults of the released X-VLA domain table: embodiment name and chunk time span.

One chunk's 30 actions are evenly spaced over ``chunk_seconds`` (the training data handlers resample each
trajectory window of that length into 30 points), so the span is a property of the domain, not a constant.
Domains without a published handler fall back to the pretraining span (4 s); pass ``--chunk-seconds`` to
``xvla-edge export`` for a robot of your own.
"""

from __future__ import annotations

# domain id → (name, seconds spanned by one chunk, arms)
DOMAINS: dict[int, tuple[str, float, int]] = {
    0: ("bridge-widowx", 5.0, 1), 1: ("rt1-google-robot", 10.0, 1), 2: ("calvin-franka", 1.0, 1),
    3: ("libero-franka", 1.0, 1), 4: ("widowx-air", 5.0, 1), 5: ("air-agilex-hq", 2.0, 2),
    6: ("robotwin2-agilex", 1.0, 2), 7: ("robocasa-human", 1.0, 1), 8: ("vlabench", 1.0, 1),
    9: ("agibot-challenge", 4.0, 2), 10: ("air-agilex", 2.0, 2), 11: ("robomind-franka", 4.0, 1),
    12: ("robomind-ur", 4.0, 1), 13: ("droid-left", 4.0, 1), 14: ("droid-right", 4.0, 1), 15: ("agibot", 4.0, 2),
    16: ("robomind-agilex", 4.0, 2), 17: ("robomind-franka-dual", 4.0, 2), 18: ("airbot", 3.0, 1),
}
DEFAULT_CHUNK_SECONDS = 4.0


def domain_defaults(domain_id: int) -> tuple[str, float, int]:
    """(embodiment name, chunk seconds, arms) of a domain id; ``domain-N``, 4 s, 1 arm for unpublished rows."""
    return DOMAINS.get(domain_id, (f"domain-{domain_id}", DEFAULT_CHUNK_SECONDS, 1))
