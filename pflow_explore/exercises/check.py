"""The checker: the learner writes a function, :func:`check` compares it with the
reference on random inputs and says what differs; :class:`Exercise` bundles one exercise.

    def my_denoiser(x, sigma): ...
    check(my_denoiser, reference=gaussian.ve_denoiser, inputs=random_inputs, name="denoiser")

``inputs(generator)`` returns the positional arguments for one trial (a tuple); both
functions are called on the same arguments, and the outputs compared by shape, finiteness
and value (``torch.allclose`` with rtol/atol). The report names the first trial that
differs, the largest error and where it is, so a learner can find the mistake.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import torch
from torch import Tensor


@dataclass
class CheckResult:
    """passed: all trials agree; message: one paragraph for the learner."""

    name: str
    passed: bool
    message: str
    trials: int

    def _repr_html_(self) -> str:
        color, mark = ("#1a7f37", "&#10004;") if self.passed else ("#b00020", "&#10008;")
        return (
            f"<div class='pflow-exercise' style='border-left:3px solid {color};padding:4px 8px'>"
            f"<b style='color:{color}'>{mark} {html.escape(self.name)}</b>: "
            f"{html.escape(self.message)}</div>"
        )

    def __str__(self) -> str:
        return f"{'PASS' if self.passed else 'FAIL'} {self.name}: {self.message}"


def _describe(args: tuple[Any, ...]) -> str:
    parts = []
    for a in args:
        if isinstance(a, Tensor):
            parts.append(f"tensor{tuple(a.shape)}" if a.numel() > 4 else repr(a.tolist()))
        else:
            parts.append(repr(a))
    return ", ".join(parts)


def check(
    learner: Callable[..., Any],
    reference: Callable[..., Any],
    inputs: Callable[[torch.Generator], tuple[Any, ...]],
    *,
    name: str = "exercise",
    trials: int = 5,
    rtol: float = 1e-5,
    atol: float = 1e-6,
    seed: int = 0,
) -> CheckResult:
    """Compare ``learner(*args)`` with ``reference(*args)`` over ``trials`` random inputs.

    Failing outcomes, each with a specific message: the learner raises (its error is
    shown), returns None (not written yet), a non-tensor, a wrong shape, non-finite
    values, or values that differ beyond |a - b| <= atol + rtol |b|.
    """
    gen = torch.Generator().manual_seed(seed)
    for trial in range(trials):
        args = inputs(gen)
        expected = torch.as_tensor(reference(*args))
        try:
            got = learner(*args)
        except NotImplementedError:
            return CheckResult(name, False, "not written yet (it raises NotImplementedError)", 0)
        except Exception as err:  # the learner's bug, reported, not raised
            return CheckResult(
                name,
                False,
                f"raised {type(err).__name__}: {err} on inputs ({_describe(args)})",
                trial,
            )
        if got is None:
            return CheckResult(name, False, "returned None: did you forget `return`?", trial)
        try:
            got = torch.as_tensor(got, dtype=expected.dtype, device=expected.device)
        except (TypeError, ValueError, RuntimeError) as err:
            return CheckResult(name, False, f"returned something not a tensor ({err})", trial)
        if got.shape != expected.shape:
            return CheckResult(
                name,
                False,
                f"returned shape {tuple(got.shape)}, expected {tuple(expected.shape)} "
                f"on inputs ({_describe(args)})",
                trial,
            )
        if not torch.isfinite(got).all():
            return CheckResult(
                name, False, f"returned NaN or inf on inputs ({_describe(args)})", trial
            )
        if not torch.allclose(got, expected, rtol=rtol, atol=atol):
            diff = (got - expected).abs()
            where = tuple(int(i) for i in torch.nonzero(diff == diff.max())[0])
            return CheckResult(
                name,
                False,
                f"differs from the reference on trial {trial + 1} (inputs {_describe(args)}): "
                f"largest error {diff.max().item():.3g} at index {where}, where you return "
                f"{got[where].item():.6g} and the reference {expected[where].item():.6g}",
                trial,
            )
    return CheckResult(name, True, f"matches the reference on {trials} random inputs", trials)


@dataclass(frozen=True)
class Exercise:
    """One exercise of a chapter.

    name: what the learner reads ("Gaussian denoiser"); function: the name the learner's
    function has in the notebook and in its worked answer (e.g.
    ``"gaussian_denoiser"``); inputs(generator) -> the positional arguments of one trial;
    reference: the package's implementation, called on the same arguments; rtol, atol,
    trials: as in :func:`check`.
    """

    name: str
    function: str
    inputs: Callable[[torch.Generator], tuple[Any, ...]]
    reference: Callable[..., Any]
    rtol: float = 1e-5
    atol: float = 1e-6
    trials: int = 5

    def check(
        self, learner: Callable[..., Any], seed: int = 0, trials: int | None = None
    ) -> CheckResult:
        """Compare ``learner`` with the reference on ``trials`` (default: the exercise's)
        random inputs drawn from ``seed``."""
        return check(
            learner,
            self.reference,
            self.inputs,
            name=self.name,
            trials=trials or self.trials,
            rtol=self.rtol,
            atol=self.atol,
            seed=seed,
        )

    def grade(self, learner: Callable[..., Any], seed: int = 0, trials: int | None = None) -> None:
        """For an autograder cell (nbgrader): raise AssertionError with the checker's message
        unless ``learner`` matches the reference (hidden tests: other seeds, more trials)."""
        result = self.check(learner, seed, trials)
        if not result.passed:
            raise AssertionError(f"{self.name}: {result.message}")

    def use(self, learner: Callable[..., Any]) -> Callable[..., Any]:
        """The function the chapter runs from here on: the learner's once it matches the
        reference, else the reference; prints one line saying which and why."""
        result = self.check(learner)
        if result.passed:
            print(f"[{self.name}] the chapter runs your {self.function} from here on")
            return learner
        print(
            f"[{self.name}] the chapter runs the package's {self.function} until yours "
            f"passes ({result.message})"
        )
        return self.reference


def chapter_exercises(module: ModuleType) -> list[Exercise]:
    """The :class:`Exercise` objects a chapter's exercises module defines, in file order."""
    return [v for v in vars(module).values() if isinstance(v, Exercise)]
