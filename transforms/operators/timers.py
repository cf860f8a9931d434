"""Stateful DoFns whose timers cannot collide with another step's.

Beam's FnApiRunner (the DirectRunner in batch) keeps the timers a fused stage sets in one
buffer per timer-family *name* (``timers:<name>``), not per transform. Two stateful DoFns
that declare a timer of the same name and land in the same fused stage (one query step's
LAG reading another step's LAG, a sliding window over an analytic step, ...) then share that
buffer: the timers of the first fire on the second, whose state is empty, and the rows the
first buffered vanish without an error. ``own_timers`` gives each DoFn instance timer names
no other instance has, so each step's timers fire on that step.

>>> import apache_beam as beam
>>> from apache_beam.transforms.timeutil import TimeDomain
>>> from apache_beam.transforms.userstate import TimerSpec, on_timer
>>> WAKE = TimerSpec("wake", TimeDomain.WATERMARK)
>>> class Emit(beam.DoFn):
...     def process(self, kv, t=beam.DoFn.TimerParam(WAKE)):
...         t.set(0)
...     @on_timer(WAKE)
...     def wake(self, key=beam.DoFn.KeyParam):
...         yield key
>>> a, b = own_timers(Emit)(), own_timers(Emit)()
>>> from apache_beam.transforms.userstate import get_dofn_specs
>>> [t.name for t in get_dofn_specs(a)[1]] != [t.name for t in get_dofn_specs(b)[1]]
True
"""

from __future__ import annotations

import itertools
import types
from typing import TypeVar

import apache_beam as beam
from apache_beam.transforms.core import _TimerDoFnParam
from apache_beam.transforms.userstate import TimerSpec, on_timer

_serial = itertools.count(1)

D = TypeVar("D", bound=type)


def own_timers(cls: D) -> D:
    """A subclass of the stateful DoFn class ``cls`` whose TimerSpecs have process-unique names.

    Every method taking a ``DoFn.TimerParam`` and every ``@on_timer`` callback is copied with
    the renamed specs; the rest (state, logic) is inherited unchanged. Built per transform
    instance; the class is pickled by value (cloudpickle), so workers see the same names.
    """
    n = next(_serial)
    renamed: dict[int, TimerSpec] = {}

    def rename(spec: TimerSpec) -> TimerSpec:
        if id(spec) not in renamed:
            base = spec.name[len(TimerSpec.prefix):] if spec.name.startswith(TimerSpec.prefix) else spec.name
            renamed[id(spec)] = TimerSpec(f"{base}_{n}", spec.time_domain)
        return renamed[id(spec)]

    def copy(fn: types.FunctionType) -> types.FunctionType:
        defaults = tuple(beam.DoFn.TimerParam(rename(d.timer_spec)) if isinstance(d, _TimerDoFnParam) else d
                         for d in fn.__defaults__ or ())
        out = types.FunctionType(fn.__code__, fn.__globals__, fn.__name__, defaults or None, fn.__closure__)
        out.__kwdefaults__ = fn.__kwdefaults__
        out.__qualname__ = fn.__qualname__
        return out

    namespace: dict[str, object] = {}
    callbacks: dict[str, TimerSpec] = {}  # name of an @on_timer method -> its original spec
    for name in dir(cls):
        fn = getattr(cls, name, None)
        if not isinstance(fn, types.FunctionType):
            continue
        specs = [d.timer_spec for d in fn.__defaults__ or () if isinstance(d, _TimerDoFnParam)]
        if specs:
            namespace[name] = copy(fn)
        for spec in specs:
            if spec._attached_callback is not None:
                callbacks[spec._attached_callback.__name__] = spec
    for name, spec in callbacks.items():
        fn = namespace.get(name) or copy(getattr(cls, name))
        namespace[name] = on_timer(rename(spec))(fn)
    namespace["__qualname__"] = f"{cls.__qualname__}_timers{n}"  # not importable: pickled by value
    return type(f"{cls.__name__}_timers{n}", (cls,), namespace)  # type: ignore[return-value]
