"""Per-domain defaults of the released X-VLA domain table: embodiment name and chunk time span.

One chunk's 30 actions are evenly spaced over ``chunk_seconds`` (the training data handlers resample each
trajectory window of that length into 30 points), so the span is a property of the domain, not a constant.
Domains without a published handler fall back to the pretraining span (4 s); pass ``--chunk-seconds`` to
``xvla-edge export`` for a robot of your own.
"""

from __future__ import annotations

# domain id → (name, seconds spanned by one chunk)
DOMAINS: dict[int, tuple[str, float]] = {
    0: ("bridge-widowx", 5.0), 1: ("rt1-google-robot", 10.0), 2: ("calvin-franka", 1.0), 3: ("libero-franka", 1.0),
    4: ("widowx-air", 5.0), 5: ("air-agilex-hq", 2.0), 6: ("robotwin2-agilex", 1.0), 7: ("robocasa-human", 1.0),
    8: ("vlabench", 1.0), 9: ("agibot-challenge", 4.0), 10: ("air-agilex", 2.0), 11: ("robomind-franka", 4.0),
    12: ("robomind-ur", 4.0), 13: ("droid-left", 4.0), 14: ("droid-right", 4.0), 15: ("agibot", 4.0),
    16: ("robomind-agilex", 4.0), 17: ("robomind-franka-dual", 4.0), 18: ("airbot", 3.0),
}
DEFAULT_CHUNK_SECONDS = 4.0


def domain_defaults(domain_id: int) -> tuple[str, float]:
    """(embodiment name, chunk seconds) for a domain id; ``domain-N`` and 4 s for unpublished rows."""
    return DOMAINS.get(domain_id, (f"domain-{domain_id}", DEFAULT_CHUNK_SECONDS))
