"""Why the scheduler refuses a task at submit, rather than leave it queued forever."""

from __future__ import annotations


class NoDeviceFits(ValueError):
    """No device can run the task at all: refused at submit, never left queued."""


class NoDeviceServes(NoDeviceFits):
    """No configured device runs the task's family (`devices.<id>.families`), or no live
    machine has the models it names; `field`: the request field to blame."""

    def __init__(self, reason: str, field: str = "model") -> None:
        super().__init__(reason)
        self.field = field


class InputsTooLarge(NoDeviceFits):
    """The job's input files are more than may travel to another machine with it."""

    def __init__(self, reason: str, field: str) -> None:
        super().__init__(reason)
        self.field = field
