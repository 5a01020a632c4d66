"""What a packet's path is made of: stage names, titles, who waits in each, and on which kernel.

One host (latscope.trace.stages) and a path through a QEMU guest
(latscope.trace.vmpath) are two models; the breakdown, its reports and the
Perfetto export read the stages from the model a Packets record carries.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StageModel:
    """Stage k ends at checkpoint k+1; checkpoint 0 is the scheduled send time."""

    key: str                       # "host", "vm-forward", "vm-reverse"
    names: tuple[str, ...]
    titles: dict[str, str]
    #: Who waits in each stage: a role the analysis maps to a pid ("sender", "packet", "receiver", ...).
    roles: tuple[str, ...]
    #: Which kernel each stage's CPU belongs to: "host" or "guest".
    domains: tuple[str, ...]

    def __post_init__(self) -> None:
        n = len(self.names)
        if not (len(self.roles) == len(self.domains) == n) or set(self.titles) != set(self.names):
            raise ValueError(f"stage model {self.key}: names, titles, roles and domains disagree")

    @property
    def ncheck(self) -> int:
        return len(self.names) + 1

    def title(self, name: str) -> str:
        return self.titles.get(name, name)

    def index(self, name: str) -> int:
        return self.names.index(name)
