"""Plans: ordered lists of steps, each a command with its undo, applied in as few processes as possible.

Consecutive steps that may join the same batch process (``ip -n web -batch -``)
are sent together. If anything fails, the steps already applied are undone in
reverse order and the error is raised, so a failure half-way leaves nothing
behind.

>>> from pynetns.backends.recording import RecordingRunner
>>> plan = Plan()
>>> plan.add(Step(("ip", "netns", "add", "web"), undo=Step(("ip", "netns", "delete", "web"))))
>>> plan.add(Step(("ip", "-n", "web", "link", "set", "lo", "up"),
...               batch=("ip", "-n", "web", "-batch", "-"), line="link set lo up"))
>>> [str(call) for call in plan.calls()]
['ip netns add web', 'ip -n web link set lo up']
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence

import attrs

from .errors import CommandError
from .runner import Call, Runner, as_argv

__all__ = ["Step", "Plan"]

log = logging.getLogger(__name__)


@attrs.frozen
class Step:
    """One command, how to undo it, and the batch process it may join.

    ``argv`` is the command on its own; ``batch`` the argv of a process reading
    commands on stdin and ``line`` this step's line there.
    """

    argv: tuple[str, ...] = attrs.field(converter=as_argv)
    undo: Step | None = None
    batch: tuple[str, ...] | None = attrs.field(default=None, converter=attrs.converters.optional(as_argv))
    line: str | None = None
    #: a batch that applies all or nothing (``nft -f``)
    atomic: bool = False

    def __str__(self) -> str:
        return str(Call(self.argv))


@attrs.frozen
class _Group:
    steps: tuple[Step, ...]

    @property
    def batched(self) -> bool:
        return self.steps[0].batch is not None and len(self.steps) > 1

    def call(self) -> Call:
        first = self.steps[0]
        if not self.batched:
            return Call(first.argv)
        assert first.batch is not None
        return Call(first.batch, "".join(f"{step.line}\n" for step in self.steps))


def _groups(steps: Iterable[Step]) -> Iterator[_Group]:
    current: list[Step] = []
    for step in steps:
        if current and (step.batch is None or step.batch != current[0].batch):
            yield _Group(tuple(current))
            current = []
        current.append(step)
    if current:
        yield _Group(tuple(current))


class Plan:
    """An ordered list of :class:`Step`; :meth:`apply` runs it with rollback."""

    def __init__(self, steps: Iterable[Step] = ()) -> None:
        self.steps: list[Step] = list(steps)

    def add(self, step: Step) -> None:
        self.steps.append(step)

    def extend(self, steps: Iterable[Step]) -> None:
        self.steps.extend(steps)

    def __len__(self) -> int:
        return len(self.steps)

    def __iter__(self) -> Iterator[Step]:
        return iter(self.steps)

    def calls(self) -> list[Call]:
        """The processes :meth:`apply` will start, in order (batches with their input)."""
        return [group.call() for group in _groups(self.steps)]

    def undo_plan(self, steps: Sequence[Step] | None = None) -> Plan:
        """The plan that undoes ``steps`` (default: all of them), last first."""
        chosen = self.steps if steps is None else steps
        return Plan(step.undo for step in reversed(chosen) if step.undo is not None)

    def apply(self, runner: Runner) -> None:
        """Run every step; on failure undo what was applied, then re-raise.

        Interrupted in the middle of a group (Ctrl-C, a timeout), some of its steps may have run:
        they are all undone, tolerating the ones that never happened.
        """
        applied: list[Step] = []
        try:
            for group in _groups(self.steps):
                first = group.steps[0]
                try:
                    if group.batched:
                        assert first.batch is not None
                        runner.run_batch(first.batch, [step.line or "" for step in group.steps], atomic=first.atomic)
                    else:
                        runner.run(first.argv)
                except CommandError as error:
                    if group.batched and not first.atomic and error.line_number:
                        applied.extend(group.steps[: error.line_number - 1])
                    raise
                except BaseException:
                    applied.extend(group.steps)
                    raise
                applied.extend(group.steps)
        except BaseException:
            self.undo_plan(applied).rollback(runner)
            raise

    def rollback(self, runner: Runner) -> None:
        """Run every step, carrying on past failures (used to undo and to tear down)."""
        for group in _groups(self.steps):
            steps = list(group.steps)
            while steps:
                first = steps[0]
                try:
                    if first.batch is None or len(steps) == 1:
                        runner.run(first.argv)
                        steps = steps[1:]
                    else:
                        runner.run_batch(first.batch, [step.line or "" for step in steps], atomic=first.atomic)
                        steps = []
                except CommandError as error:
                    log.debug("while undoing: %s", error)
                    failed = error.line_number if first.batch is not None and len(steps) > 1 else None
                    steps = steps[failed:] if failed else steps[1:]
