"""``TaskInfo``: one registered task as a front end describes it (display name,
description, category, parameter specs, system flag, default overlap policy), checked
when it is made, in the seed's shape (``to_seed_dict``) or in full (``to_dict``).
``TaskRegistry`` (``dataforge_scheduler.registry``) holds one per Celery task name.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dataforge_scheduler.core.enums import OverlapPolicy
from dataforge_scheduler.core.params import ParamSpec
from dataforge_scheduler.errors import RegistryError

__all__ = ["TaskInfo", "overlap_policy_of", "to_spec"]


@dataclass(frozen=True)
class TaskInfo:
    """One registered task as a front end describes it."""

    task_name: str
    name: str
    description: str
    category: str
    params: tuple[ParamSpec, ...]
    is_system: bool = False
    overlap_policy: OverlapPolicy | None = None  # new schedules' default (None: skip)

    def __post_init__(self) -> None:
        if self.overlap_policy is not None:
            object.__setattr__(
                self, "overlap_policy", overlap_policy_of(self.task_name, self.overlap_policy)
            )
        for attr in ("task_name", "name", "category"):
            value = getattr(self, attr)
            if not isinstance(value, str) or not value.strip():
                raise RegistryError(
                    f"task {self.task_name!r}: {attr} must be a non-empty str, got {value!r}",
                    field=attr,
                )
        if not isinstance(self.description, str):
            raise RegistryError(
                f"task {self.task_name!r}: description must be a str, got {self.description!r}",
                field="description",
            )
        seen: set[str] = set()
        for spec in self.params:
            if spec.name in seen:
                raise RegistryError(
                    f"task {self.task_name!r}: param {spec.name!r} is declared twice",
                    field="params",
                    param=spec.name,
                )
            seen.add(spec.name)

    def to_seed_dict(self) -> dict[str, Any]:
        """Exactly ``{"name", "description", "category", "params"}``, as the seed had it."""
        return {
            "name": self.name,
            "description": self.description,
            "category": self.category,
            "params": [spec.to_seed_dict() for spec in self.params],
        }

    def to_dict(self) -> dict[str, Any]:
        """The full, JSON-safe description (task name, system flag, param details)."""
        return {
            "task_name": self.task_name,
            "name": self.name,
            "description": self.description,
            "category": self.category,
            "is_system": self.is_system,
            "overlap_policy": None if self.overlap_policy is None else self.overlap_policy.value,
            "params": [spec.to_dict() for spec in self.params],
        }


def overlap_policy_of(task_name: str, value: object) -> OverlapPolicy | None:
    if value is None:
        return None
    try:
        return OverlapPolicy(str(value))
    except ValueError:
        allowed = ", ".join(policy.value for policy in OverlapPolicy)
        raise RegistryError(
            f"task {task_name!r}: overlap_policy must be one of {allowed}, got {value!r}",
            field="overlap_policy",
            task_name=task_name,
        ) from None


def to_spec(task_name: str, param: ParamSpec | Mapping[str, Any]) -> ParamSpec:
    if isinstance(param, ParamSpec):
        return param
    try:
        return ParamSpec.from_mapping(param)
    except RegistryError as exc:
        details = {key: value for key, value in exc.details.items() if key != "task_name"}
        raise RegistryError(
            f"task {task_name!r}: {exc.message}", task_name=task_name, **details
        ) from None
