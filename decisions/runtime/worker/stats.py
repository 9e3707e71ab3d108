"""What a worker counted since it started (``Worker.run`` returns it)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Stats:
    processed: int = 0
    dead_lettered: int = 0
    duplicates: int = 0
    fired: int = 0
    batches: int = 0
    effects: int = 0
    reloads: int = 0
    retries: int = 0
    rebalances: int = 0
    max_in_flight: int = 0  # most records held at once (bounded by 4 * batch_size)
    scorer_errors: int = 0
    isolations: int = 0  # batches decided record by record after failing on their data
    phase_seconds: dict[str, float] = field(default_factory=dict)  # where batch time goes

    @property
    def seen(self) -> int:
        """Records consumed: decided, dead-lettered or dropped as duplicates."""
        return self.processed + self.dead_lettered + self.duplicates
