"""Contract tests of a resources server's verifier, run in process without starting any server.

A server declares `VERIFIER_FIXTURE = VerifierFixture(server_factory, request_model, cases_path)`
next to its app; `cases_path` is a JSONL file of cases, each one of:
- `full_reward`: a request the verifier must score at the best end of the reward range;
- `zero_reward`: one it must score at the worst end;
- `malformed`: one that must raise, with `expected_error` in the message;
- `determinism`: (for seeded environments) one that must score the same on two fresh servers.
Each scored case also pins its exact `expected_reward`. `exercise_verifier_fixture` runs them
all against the environment's declared reward range, on a fresh server per case, and can
rewrite the expected rewards from what it observed (`update_expected=True`).
"""

from __future__ import annotations

import inspect
import json
import math
import os
import tempfile
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

CaseKind = Literal["full_reward", "zero_reward", "malformed", "determinism"]
FixtureInvocation = Callable[[Any, BaseModel], Any | Awaitable[Any]]
_FiniteReward = Annotated[float, Field(strict=True, allow_inf_nan=False)]


class VerifierFixtureError(ValueError):
    """The fixture is invalid, or the verifier does not behave as it says."""


@dataclass(frozen=True)
class VerifierFixture:
    """How to build a fresh server, parse a case's request, and (optionally) verify or reseed."""

    server_factory: Callable[[], Any]
    request_model: type[BaseModel]
    cases_path: str | Path
    # Defaults to `server.verify(request)`.
    invoke: FixtureInvocation | None = None
    # Seeds a fresh server before a determinism case.
    reseed: FixtureInvocation | None = None


class VerifierFixtureCase(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    name: str = Field(min_length=1)
    kind: CaseKind
    request: dict[str, Any]
    expected_reward: _FiniteReward | None = None
    expected_error: str | None = None

    @model_validator(mode="after")
    def _one_expectation(self) -> VerifierFixtureCase:
        if self.kind == "malformed":
            if not self.expected_error or self.expected_reward is not None:
                raise ValueError("a malformed case needs expected_error and no expected_reward")
        elif self.expected_reward is None or self.expected_error is not None:
            raise ValueError(f"a {self.kind} case needs expected_reward and no expected_error")
        return self


@dataclass(frozen=True)
class VerifierFixtureResult:
    name: str
    kind: CaseKind
    observed_rewards: tuple[float, ...] = ()


def load_verifier_fixture(path: str | Path) -> list[VerifierFixtureCase]:
    """The cases of a fixture file; errors name the file and line."""
    fixture_path = Path(path)
    try:
        lines = fixture_path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeError) as error:
        raise VerifierFixtureError(f"cannot read verifier fixture {fixture_path}: {error}") from error
    cases = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            payload = json.loads(line)
        except json.JSONDecodeError as error:
            raise VerifierFixtureError(f"{fixture_path}:{number}: invalid JSON ({error.msg})") from error
        try:
            cases.append(VerifierFixtureCase.model_validate(payload))
        except ValidationError as error:
            first = error.errors(include_url=False, include_context=False, include_input=False)[0]
            where = ".".join(str(part) for part in first["loc"])
            message = first["msg"].removeprefix("Value error, ")
            raise VerifierFixtureError(
                f"{fixture_path}:{number}: {where + ': ' if where else ''}{message}"
            ) from error
    if not cases:
        raise VerifierFixtureError(f"verifier fixture {fixture_path} has no cases")
    return cases


def _reward_of(result: Any, case: VerifierFixtureCase) -> float:
    reward = result.get("reward") if isinstance(result, Mapping) else getattr(result, "reward", result)
    if isinstance(reward, bool) or not isinstance(reward, int | float) or not math.isfinite(reward):
        raise VerifierFixtureError(f"case {case.name!r} returned no finite numeric reward: {reward!r}")
    return float(reward)


async def _maybe_await(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


async def _score(fixture: VerifierFixture, case: VerifierFixtureCase, *, reseed: bool = False) -> float:
    """The reward of one case on a fresh server; a verifier exception propagates as it is."""
    if reseed and fixture.reseed is None:
        raise VerifierFixtureError(f"determinism case {case.name!r} needs the fixture's reseed adapter")
    try:
        server = fixture.server_factory()
    except Exception as error:
        raise VerifierFixtureError(f"case {case.name!r}: could not create a fresh server: {error}") from error
    request = fixture.request_model.model_validate(case.request)
    if reseed:
        await _maybe_await(fixture.reseed(server, request))  # type: ignore[misc]
    if fixture.invoke is not None:
        result = await _maybe_await(fixture.invoke(server, request))
    else:
        verify = getattr(server, "verify", None)
        if not callable(verify):
            raise VerifierFixtureError("server_factory returned an object without a verify method")
        result = await _maybe_await(verify(request))
    return _reward_of(result, case)


async def _score_or_fail(
    fixture: VerifierFixture, case: VerifierFixtureCase, *, reseed: bool = False
) -> float:
    try:
        return await _score(fixture, case, reseed=reseed)
    except VerifierFixtureError:
        raise
    except Exception as error:
        raise VerifierFixtureError(f"case {case.name!r} failed: {type(error).__name__}: {error}") from error


def _expect(observed: float, expected: float, what: str) -> None:
    if observed != expected:
        raise VerifierFixtureError(f"{what}: expected {expected}, observed {observed}")


def _write_cases(path: Path, cases: list[VerifierFixtureCase]) -> None:
    """Replace the fixture file atomically (same permissions), refusing links and non-files."""
    if path.is_symlink() or not path.is_file():
        raise VerifierFixtureError(f"refusing to rewrite {path}: not a regular file")
    text = "".join(
        json.dumps(case.model_dump(mode="json", exclude_none=True), sort_keys=True) + "\n" for case in cases
    )
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temporary, path.stat().st_mode & 0o777)
        os.replace(temporary, path)
    except OSError as error:
        raise VerifierFixtureError(f"cannot rewrite verifier fixture {path}: {error}") from error
    finally:
        Path(temporary).unlink(missing_ok=True)


def _reward_bounds(reward_range: Sequence[float]) -> tuple[float, float]:
    if len(reward_range) != 2:
        raise VerifierFixtureError("reward_range must have exactly two endpoints")
    if any(isinstance(v, bool) or not isinstance(v, int | float) for v in reward_range):
        raise VerifierFixtureError("reward_range endpoints must be numbers")
    lower, upper = float(reward_range[0]), float(reward_range[1])
    if not (math.isfinite(lower) and math.isfinite(upper)) or lower > upper:
        raise VerifierFixtureError("reward_range must be two finite numbers with lower <= upper")
    return lower, upper


@dataclass(frozen=True)
class _RewardEnds:
    """The reward range, and which end a full-reward case must score."""

    lower: float
    upper: float
    higher_is_better: bool

    def check(self, case: VerifierFixtureCase, observed: float) -> None:
        if not self.lower <= observed <= self.upper:
            raise VerifierFixtureError(
                f"case {case.name!r} scored {observed}, outside the range [{self.lower}, {self.upper}]"
            )
        best, worst = (self.upper, self.lower) if self.higher_is_better else (self.lower, self.upper)
        best_end, worst_end = ("upper", "lower") if self.higher_is_better else ("lower", "upper")
        if case.kind == "full_reward":
            _expect(observed, best, f"full-reward case {case.name!r} must score the {best_end} end")
        elif case.kind == "zero_reward":
            _expect(observed, worst, f"zero-reward case {case.name!r} must score the {worst_end} end")


def _determinism_mode(determinism: str | Enum) -> str:
    mode = str(getattr(determinism, "value", determinism))
    if mode not in ("seeded", "stochastic", "unknown"):
        raise VerifierFixtureError(f"determinism must be seeded, stochastic or unknown, not {mode!r}")
    return mode


def _check_kinds_present(path: Path, cases: list[VerifierFixtureCase], mode: str) -> None:
    required = {"full_reward", "zero_reward", "malformed"} | ({"determinism"} if mode == "seeded" else set())
    missing = sorted(required - {case.kind for case in cases})
    if missing:
        raise VerifierFixtureError(f"verifier fixture {path} has no case of kind: {', '.join(missing)}")


async def _check_malformed(fixture: VerifierFixture, case: VerifierFixtureCase) -> None:
    """A malformed case must make the verifier raise, with the expected words in its message."""
    try:
        await _score(fixture, case)
    except VerifierFixtureError:
        raise
    except Exception as error:
        if case.expected_error not in str(error):
            raise VerifierFixtureError(
                f"malformed case {case.name!r} raised, but its message lacks {case.expected_error!r}: {error}"
            ) from error
    else:
        raise VerifierFixtureError(f"malformed case {case.name!r} did not raise")


async def _scored_rewards(
    fixture: VerifierFixture, case: VerifierFixtureCase, ends: _RewardEnds
) -> tuple[float, ...]:
    """The case's reward (twice, on fresh servers, for a determinism case), checked against the range."""
    observed = await _score_or_fail(fixture, case, reseed=case.kind == "determinism")
    ends.check(case, observed)
    if case.kind != "determinism":
        return (observed,)
    again = await _score_or_fail(fixture, case, reseed=True)
    _expect(again, observed, f"determinism case {case.name!r} changed on a fresh server")
    return (observed, again)


async def exercise_verifier_fixture(
    fixture: VerifierFixture,
    *,
    reward_range: Sequence[float],
    higher_is_better: bool = True,
    determinism: str | Enum,
    update_expected: bool = False,
) -> tuple[VerifierFixtureResult, ...]:
    """Run every case; raise `VerifierFixtureError` at the first one the verifier does not honour."""
    path = Path(fixture.cases_path)
    cases = load_verifier_fixture(path)
    lower, upper = _reward_bounds(reward_range)
    if not isinstance(higher_is_better, bool):
        raise VerifierFixtureError("higher_is_better must be true or false")
    ends = _RewardEnds(lower, upper, higher_is_better)
    mode = _determinism_mode(determinism)
    _check_kinds_present(path, cases, mode)

    results: list[VerifierFixtureResult] = []
    observed_by_index: dict[int, float] = {}
    for index, case in enumerate(cases):
        if case.kind == "determinism" and mode != "seeded":
            continue
        if case.kind == "malformed":
            await _check_malformed(fixture, case)
            results.append(VerifierFixtureResult(case.name, case.kind))
            continue
        rewards = await _scored_rewards(fixture, case, ends)
        if update_expected:
            observed_by_index[index] = rewards[0]
        else:
            _expect(rewards[0], float(case.expected_reward), f"case {case.name!r}")  # type: ignore[arg-type]
        results.append(VerifierFixtureResult(case.name, case.kind, rewards))

    if update_expected:
        updated = [
            case.model_copy(update={"expected_reward": observed_by_index[i]})
            if i in observed_by_index
            else case
            for i, case in enumerate(cases)
        ]
        if updated != cases:
            _write_cases(path, updated)
    return tuple(results)


__all__ = [
    "CaseKind",
    "VerifierFixture",
    "VerifierFixtureCase",
    "VerifierFixtureError",
    "VerifierFixtureResult",
    "exercise_verifier_fixture",
    "load_verifier_fixture",
]
