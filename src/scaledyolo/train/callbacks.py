"""Training events users can hook into, named as ultralytics names them.

A callback is a function of one argument, the trainer (`train.trainer.Trainer`): it reads what it
needs (`epoch`, `rows[-1]` the latest results row, `metrics`, `run_dir`, `model`, `ema.ema`, `loop.mloss`,
`saved` the files just written) and may set `trainer.stop = True` to end training after the epoch.
Register them with `train(..., callbacks=[...])`, each item a mapping `{event: function}` or an object
whose methods are named after events, or with `Trainer.add_callback(event, function)`.

Events, in the order they fire: on_pretrain_routine_start, on_pretrain_routine_end, on_train_start,
on_train_epoch_start, on_train_batch_start, on_train_batch_end, on_train_epoch_end, on_val_start,
on_val_end, on_model_save, on_fit_epoch_end, on_train_end, teardown (always, also after an error).
`on_epoch_end` and `on_fit_end` are accepted as other names of on_fit_epoch_end and on_train_end.
Under torchrun callbacks run on rank 0 only. The run's loggers (`train.loggers`) are callbacks too,
called before the user's, so a user's on_fit_epoch_end sees this epoch's files written.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

EVENTS = ("on_pretrain_routine_start", "on_pretrain_routine_end", "on_train_start", "on_train_epoch_start",
          "on_train_batch_start", "on_train_batch_end", "on_train_epoch_end", "on_val_start", "on_val_end",
          "on_model_save", "on_fit_epoch_end", "on_train_end", "teardown")
ALIASES = {"on_epoch_end": "on_fit_epoch_end", "on_fit_end": "on_train_end"}

Callback = Callable[[Any], None]


def event_name(event: str) -> str:
    """The canonical name of `event` (aliases resolved); ValueError naming the valid ones otherwise."""
    name = ALIASES.get(event, event)
    if name not in EVENTS:
        raise ValueError(f"unknown training event {event!r}; expected one of {', '.join(EVENTS + tuple(ALIASES))}")
    return name


class Callbacks:
    """Functions per event, called in registration order."""

    def __init__(self) -> None:
        self._by_event: dict[str, list[Callback]] = {e: [] for e in EVENTS}

    def add(self, event: str, callback: Callback, first: bool = False) -> None:
        """Call `callback(trainer)` at `event`, after those registered so far (`first`: before them)."""
        if not callable(callback):
            raise TypeError(f"callback for {event} is not callable: {callback!r}")
        funcs = self._by_event[event_name(event)]
        funcs.insert(0, callback) if first else funcs.append(callback)

    def add_all(self, source: Mapping[str, Callback | Iterable[Callback]] | object, first: bool = False) -> None:
        """Register a mapping `{event: function or functions}` or every event-named method of an object."""
        if isinstance(source, Mapping):
            for event, funcs in source.items():
                for func in (funcs if isinstance(funcs, (list, tuple)) else [funcs]):
                    self.add(event, func, first)
            return
        found = [e for e in EVENTS + tuple(ALIASES) if callable(getattr(source, e, None))]
        if not found:
            raise TypeError(f"{type(source).__name__} has no method named after a training event "
                            f"({', '.join(EVENTS)})")
        for event in found:
            self.add(event, getattr(source, event), first)

    def run(self, event: str, trainer: Any) -> None:
        """Call every callback of `event` with the trainer."""
        for callback in self._by_event[event_name(event)]:
            callback(trainer)

    def __contains__(self, event: str) -> bool:
        return bool(self._by_event[event_name(event)])
