"""Plans: ordered lists of steps, each a command with its undo, applied in as few processes as possible.

Consecutive steps that may join the same batch process (``ip -n web -batch -``)
are sent together. If anything fails, the steps already applied are undone in
reverse order and the error is raised, so a failure half-way leaves nothing
behind; what the undo could not do is attached to that error (``undo_errors``).

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

from .errors import BackendUnavailable, CommandError, CommandTimeout, InvalidInput, NotFound, ResourceBusy
from .runner import Call, Runner, as_argv

__all__ = ["Plan", "Step", "attach_undo_errors", "undo_errors"]

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
    #: what the command reads on its standard input (a step with input is never batched)
    input: str | None = None

    def __str__(self) -> str:
        return str(Call(self.argv, self.input))


@attrs.frozen
class _Group:
    steps: tuple[Step, ...]

    @property
    def batched(self) -> bool:
        return self.steps[0].batch is not None and len(self.steps) > 1

    def call(self) -> Call:
        first = self.steps[0]
        if not self.batched:
            return Call(first.argv, first.input)
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
        """Run every step; on failure undo what may have been applied, then re-raise.

        Interrupted in the middle of a group (Ctrl-C, a timeout, a batch killed without naming its failing
        line), any of its steps may have run: they are all undone, tolerating the ones that never happened.
        The undo carries on past its own failures, which are attached to the raised error
        (:func:`attach_undo_errors`): an error without ``undo_errors`` means nothing of the plan is left.
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
                        runner.run(first.argv, input=first.input)
                except CommandError as error:
                    if group.batched and error.line_number:
                        if not first.atomic:  # the lines before the failing one were applied
                            applied.extend(group.steps[: error.line_number - 1])
                    elif group.batched or _interrupted(error):
                        applied.extend(group.steps)  # no line named, or killed: any step may have run
                    raise
                except (BackendUnavailable, InvalidInput):
                    raise  # refused before any process started
                except BaseException:
                    applied.extend(group.steps)
                    raise
                applied.extend(group.steps)
        except BaseException as error:
            attach_undo_errors(error, self.undo_plan(applied).rollback(runner))
            raise

    def rollback(self, runner: Runner) -> list[Exception]:
        """Run every step, carrying on past failures (used to undo and to tear down); return the failures.

        A step whose object is already gone (:class:`~pynetns.errors.NotFound`) counts as done. A transient
        failure (:class:`~pynetns.errors.ResourceBusy`) is sent again, bounded like the runner's own retries.
        A batch that fails without naming its line is sent again step by step, since any of its lines may
        have run. Ctrl-C is not caught.
        """
        failures: list[Exception] = []
        for group in _groups(self.steps):
            failures += _run_carrying_on(runner, list(group.steps))
        return failures


def _interrupted(error: CommandError) -> bool:
    """The command was stopped from outside (a timeout, a signal: exit 128+n), so it may have done its work."""
    return isinstance(error, CommandTimeout) or error.returncode < 0 or 128 < error.returncode < 160


def _run_carrying_on(runner: Runner, steps: list[Step]) -> list[Exception]:
    """Run ``steps`` (one group) as :meth:`Plan.rollback` does."""
    failures: list[Exception] = []
    singly = False  # after a batch failed without naming its line
    while steps:
        first = steps[0]
        batched = first.batch is not None and len(steps) > 1 and not singly
        try:
            for retry in runner.retrying():
                with retry:
                    try:
                        if batched:
                            assert first.batch is not None
                            runner.run_batch(first.batch, [step.line or "" for step in steps], atomic=first.atomic)
                        else:
                            runner.run(first.argv, input=first.input)
                    except ResourceBusy as error:
                        if batched and error.line_number and not first.atomic:
                            steps = steps[error.line_number - 1 :]  # those before it were done: resend from it
                        raise
        except Exception as error:
            line = error.line_number if batched and isinstance(error, CommandError) else None
            if batched and not line:
                log.debug("while undoing, a batch failed without naming its line (%s): step by step", error)
                singly = True
                continue
            if isinstance(error, NotFound):
                log.debug("while undoing, already gone: %s", error)
            else:
                log.warning("while undoing: %s", error)
                failures.append(error)
            again = steps[: line - 1] if line and first.atomic else []  # an atomic batch applied nothing
            steps = again + (steps[line:] if line else steps[1:])
        else:
            steps = [] if batched else steps[1:]
    return failures


def attach_undo_errors(error: BaseException, failures: Sequence[BaseException]) -> None:
    """Attach ``failures``, met while undoing after ``error``, to ``error``.

    They are appended to its ``undo_errors`` list (made on first use, so errors without it had a complete
    undo) and, on Python 3.11+, added as notes, which its traceback shows.
    """
    if not failures:
        return
    listed = undo_errors(error)
    listed.extend(failures)
    error.undo_errors = listed  # type: ignore[attr-defined]
    add_note = getattr(error, "add_note", None)
    if add_note is not None:
        for failure in failures:
            add_note(f"while undoing: {type(failure).__name__}: {failure}")


def undo_errors(error: BaseException) -> list[BaseException]:
    """The failures :func:`attach_undo_errors` attached to ``error`` (empty: the undo was complete)."""
    return list(getattr(error, "undo_errors", ()))
