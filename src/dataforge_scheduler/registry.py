"""The task registry: what each task is called, shown as and accepts.

``TaskRegistry`` holds a ``TaskInfo`` (display name, description, category, parameter
specs) per Celery task name, enforces the naming rules (one registration per name, the
configured ``task_name_prefix``) and validates ``handler_kwargs`` against the params
(``dataforge_scheduler.core.params``); ``TaskInfo`` itself is in
``dataforge_scheduler.task_info``. ``register_task`` stacks on top of
``@celery_app.task`` and reads only the task's ``.name``, so this module never imports
Celery. ``registry`` is the default registry and ``REGISTERED_TASKS`` a read-only live
view of it in the seed's exact shape.
"""

from __future__ import annotations

import difflib
import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Final, NoReturn, TypeVar

from dataforge_scheduler.core.enums import OverlapPolicy
from dataforge_scheduler.core.params import MISSING, PARAM_TYPES, ParamSpec, ParamsValidator
from dataforge_scheduler.errors import RegistryError, UnknownTask
from dataforge_scheduler.task_info import TaskInfo, overlap_policy_of, to_spec

__all__ = [
    "MISSING",
    "PARAM_TYPES",
    "REGISTERED_TASKS",
    "ParamSpec",
    "RegisteredTasksView",
    "TaskInfo",
    "TaskRegistry",
    "register_task",
    "registry",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")
_SEED_KEYS: Final = ("name", "description", "category", "params")


def _suggest(task_name: str, names: list[str]) -> list[str]:
    """Up to three registered names close to ``task_name``, best first."""
    # names share a prefix ("dataforge."), which lifts every ratio: hence the high cutoff,
    # and a name given without its prefix is matched on its own
    unprefixed = [name for name in names if name.endswith(f".{task_name}")]
    close = difflib.get_close_matches(task_name, names, n=3, cutoff=0.75)
    return list(dict.fromkeys([*unprefixed, *close]))[:3]


class TaskRegistry:
    """Task descriptions by Celery task name, and the validators of their params.

    Registering is thread-safe. Iteration and ``names()`` are in sorted order.
    """

    def __init__(self, *, task_name_prefix: str = "") -> None:
        self._check_prefix(task_name_prefix)
        self._prefix = task_name_prefix
        self._tasks: dict[str, TaskInfo] = {}
        self._validators: dict[str, ParamsValidator] = {}
        self._lock = threading.RLock()

    @property
    def task_name_prefix(self) -> str:
        return self._prefix

    def register(
        self,
        task_name: str,
        *,
        name: str,
        description: str = "",
        category: str = "general",
        params: Sequence[ParamSpec | Mapping[str, Any]] = (),
        is_system: bool = False,
        overlap_policy: OverlapPolicy | str | None = None,
    ) -> TaskInfo:
        """Describe ``task_name``; re-registering identical details is a no-op.
        ``overlap_policy`` is the default of the schedules created for it without one
        (None: ``skip``).

        Raises ``RegistryError`` for a bad spec, a name taken with other details, or a
        name outside ``task_name_prefix``.
        """
        info = self._build(
            task_name,
            name,
            description,
            category,
            params,
            is_system=is_system,
            overlap_policy=overlap_policy,
        )
        with self._lock:
            return self._add([info])[0]

    def import_seed(self, seed: Mapping[str, Mapping[str, Any]]) -> None:
        """Register every entry of a seed-style ``REGISTERED_TASKS`` dict, all or none."""
        if not isinstance(seed, Mapping):
            raise RegistryError(
                f"a seed must be a mapping, got {type(seed).__name__}", field="seed"
            )
        infos = [self._seed_entry(task_name, entry) for task_name, entry in seed.items()]
        with self._lock:
            self._add(infos)

    def _seed_entry(self, task_name: str, entry: Mapping[str, Any]) -> TaskInfo:
        if not isinstance(entry, Mapping):
            raise RegistryError(f"seed entry {task_name!r} must be a mapping", field="seed")
        unknown = sorted(str(key) for key in entry if key not in _SEED_KEYS)
        if unknown or "name" not in entry:
            raise RegistryError(
                f"seed entry {task_name!r} needs 'name' and may hold only "
                f"{', '.join(_SEED_KEYS)}; got keys {sorted(map(str, entry))}",
                field="seed",
                task_name=task_name,
            )
        return self._build(
            task_name,
            entry["name"],
            entry.get("description", ""),
            entry.get("category", "general"),
            entry.get("params", ()),
            is_system=False,
        )

    def _build(
        self,
        task_name: str,
        name: str,
        description: str,
        category: str,
        params: Iterable[ParamSpec | Mapping[str, Any]],
        *,
        is_system: bool,
        overlap_policy: OverlapPolicy | str | None = None,
    ) -> TaskInfo:
        if isinstance(params, str | bytes | Mapping):
            raise RegistryError(
                f"task {task_name!r}: params must be a list of params, got {params!r}",
                field="params",
                task_name=task_name,
            )
        specs = tuple(to_spec(task_name, param) for param in params)
        return TaskInfo(
            task_name,
            name,
            description,
            category,
            specs,
            is_system=is_system,
            overlap_policy=overlap_policy_of(task_name, overlap_policy),
        )

    def _add(self, infos: list[TaskInfo]) -> list[TaskInfo]:
        """Check every info, then store the new ones (caller holds the lock)."""
        validators: dict[str, ParamsValidator] = {}
        kept: list[TaskInfo] = []
        for info in infos:
            if not info.is_system:  # the library's own tasks keep their own names
                self._check_name(info.task_name)
            existing = self._tasks.get(info.task_name)
            if existing is not None and existing != info:
                raise RegistryError(
                    f"task {info.task_name!r} is already registered as {existing.name!r} "
                    f"(category {existing.category!r}) with other details; a Celery task "
                    "name can be registered once (unregister it first to replace it)",
                    field="task_name",
                    task_name=info.task_name,
                )
            if existing is None:
                validators[info.task_name] = ParamsValidator(info.task_name, info.params)
            kept.append(info if existing is None else existing)
        for info in kept:
            if info.task_name in validators:
                self._tasks[info.task_name] = info
                self._validators[info.task_name] = validators[info.task_name]
                logger.debug("registered task %s (%s)", info.task_name, info.name)
        return kept

    @staticmethod
    def _check_prefix(prefix: object) -> None:
        if not isinstance(prefix, str):
            raise RegistryError(
                f"task_name_prefix must be a str, got {prefix!r}", field="task_name_prefix"
            )

    def _check_name(self, task_name: str) -> None:
        if self._prefix and not task_name.startswith(self._prefix):
            raise RegistryError(
                f"task name {task_name!r} must start with task_name_prefix {self._prefix!r} "
                "(Settings.task_name_prefix); rename the Celery task or change the prefix",
                field="task_name",
                task_name=task_name,
                task_name_prefix=self._prefix,
            )

    def configure(self, *, task_name_prefix: str) -> None:
        """Enforce ``task_name_prefix`` on every registration so far and from now on.

        System tasks (the library's maintenance tasks) are exempt: their names are fixed.
        """
        self._check_prefix(task_name_prefix)
        with self._lock:
            offenders = [
                name
                for name, info in sorted(self._tasks.items())
                if not info.is_system and not name.startswith(task_name_prefix)
            ]
            if offenders:
                raise RegistryError(
                    f"task_name_prefix {task_name_prefix!r} does not fit the registered "
                    f"task name(s) {', '.join(map(repr, offenders))}; rename those tasks "
                    "or change Settings.task_name_prefix",
                    field="task_name_prefix",
                    task_name_prefix=task_name_prefix,
                    offenders=offenders,
                )
            self._prefix = task_name_prefix

    def get(self, task_name: str) -> TaskInfo:
        """The task's info; ``UnknownTask`` (with ``suggestions``) when not registered."""
        try:
            return self._tasks[task_name]
        except (KeyError, TypeError):
            self._unknown(task_name)

    def _unknown(self, task_name: object) -> NoReturn:
        names = self.names()
        suggestions = _suggest(task_name, names) if isinstance(task_name, str) else []
        hint = f"; did you mean {' or '.join(map(repr, suggestions))}?" if suggestions else ""
        raise UnknownTask(
            f"task {task_name!r} is not registered ({len(names)} registered){hint}",
            field="task_name",
            task_name=task_name,
            suggestions=suggestions,
        )

    def unregister(self, task_name: str) -> None:
        """Forget ``task_name``; ``UnknownTask`` when it is not registered."""
        with self._lock:
            if task_name not in self._tasks:
                self._unknown(task_name)
            del self._tasks[task_name]
            del self._validators[task_name]

    def __contains__(self, task_name: object) -> bool:
        return task_name in self._tasks

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._tasks)

    def __repr__(self) -> str:
        return f"<TaskRegistry {len(self)} tasks, task_name_prefix={self._prefix!r}>"

    def names(self) -> list[str]:
        """Registered task names, sorted."""
        return sorted(self._tasks)

    def categories(self) -> list[str]:
        """The distinct categories in use, sorted."""
        return sorted({info.category for info in self._tasks.values()})

    def validate_kwargs(
        self, task_name: str, kwargs: Mapping[str, Any] | None, *, partial: bool = False
    ) -> dict[str, Any]:
        """JSON-safe coerced kwargs with defaults filled (see ``core.params``).

        Raises ``UnknownTask`` or ``InvalidParams`` (``errors`` lists each bad param).
        """
        self.get(task_name)
        return self._validators[task_name].validate(kwargs, partial=partial)

    def as_seed_dict(self) -> dict[str, dict[str, Any]]:
        """A fresh dict in the seed's ``REGISTERED_TASKS`` shape."""
        return {task_name: self._tasks[task_name].to_seed_dict() for task_name in self.names()}


class RegisteredTasksView(Mapping[str, dict[str, Any]]):
    """A read-only live view of a registry in the seed's ``REGISTERED_TASKS`` shape.

    Each lookup builds a fresh dict, so changing what it returns changes nothing.
    """

    def __init__(self, registry: TaskRegistry) -> None:
        self._registry = registry

    def __getitem__(self, task_name: str) -> dict[str, Any]:
        if task_name not in self._registry:
            raise KeyError(task_name)
        return self._registry.get(task_name).to_seed_dict()

    def __iter__(self) -> Iterator[str]:
        return iter(self._registry)

    def __len__(self) -> int:
        return len(self._registry)

    def __repr__(self) -> str:
        return f"RegisteredTasksView({self._registry.as_seed_dict()!r})"

    def _read_only(self, *args: object, **kwargs: object) -> NoReturn:
        raise TypeError(
            "REGISTERED_TASKS is a read-only view; register tasks with @register_task "
            "or registry.register()"
        )

    __setitem__ = __delitem__ = _read_only
    pop = popitem = clear = update = setdefault = _read_only


_default_registry: Final = TaskRegistry()
registry: Final[TaskRegistry] = _default_registry
REGISTERED_TASKS: Final[Mapping[str, dict[str, Any]]] = RegisteredTasksView(_default_registry)


def _pending_celery_name(task: object) -> str | None:
    """The name of a Celery task proxy not evaluated yet, read without evaluating it.

    Before its app is finalized, ``@app.task`` returns a ``PromiseProxy``. Reading
    ``.name`` on it builds the task class early, which loads the app's configuration and
    freezes options such as ``acks_late`` before ``setup()`` has applied the settings.
    """
    try:
        evaluated = object.__getattribute__(task, "__evaluated__")
        pending = object.__getattribute__(task, "_Proxy__kwargs")
    except AttributeError:
        return None
    if not callable(evaluated) or evaluated() or not isinstance(pending, Mapping):
        return None
    name = pending.get("name")
    return name if isinstance(name, str) else None


def _celery_task_name(task: object) -> str:
    name = _pending_celery_name(task)
    if name is None:
        name = getattr(task, "name", None)
    if not isinstance(name, str) or not name:
        what = getattr(task, "__qualname__", type(task).__name__)
        raise RegistryError(
            f"@register_task got {what!r}, which has no Celery task name: put "
            "@register_task(...) above @celery_app.task(..., name=...) so it receives the "
            "task (decorators apply bottom-up)",
            field="task",
        )
    return name


def register_task(
    *,
    name: str,
    description: str = "",
    category: str = "general",
    params: Sequence[ParamSpec | Mapping[str, Any]] = (),
    registry: TaskRegistry | None = None,
    is_system: bool = False,
    overlap_policy: OverlapPolicy | str | None = None,
) -> Callable[[T], T]:
    """Describe a Celery task; stack it **on top of** ``@celery_app.task``.
    ``overlap_policy``: the default of schedules created for it without one.

    The decorator reads the task's ``.name``, registers it and returns the task unchanged.
    """
    target = registry if registry is not None else _default_registry

    def decorate(task: T) -> T:
        target.register(
            _celery_task_name(task),
            name=name,
            description=description,
            category=category,
            params=params,
            is_system=is_system,
            overlap_policy=overlap_policy,
        )
        return task

    return decorate
