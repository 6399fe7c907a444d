"""The one way in for `cpbench run`, `cpbench.evaluate` and the Action: a plan runs once (cpbench.run.runner), or in
stages until the gate has decided every cell (`--until-decided`, cpbench.run.seqrun, which runs each stage once)."""

from __future__ import annotations

from typing import Any, Callable


def execute(plan: Any, echo: Callable[[str], None] = print, progress: bool = True) -> Any:
    """Run `plan` (a cpbench.run.plan.RunPlan) and return its cpbench.run.runner.RunOutcome."""
    if plan.until_decided:
        from cpbench.run.seqrun import run_until_decided

        return run_until_decided(plan, echo, progress)
    from cpbench.run.runner import run

    return run(plan, echo, progress)
