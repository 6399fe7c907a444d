"""`cpbench run`: compress (cached) -> score (cached, resumable) -> analyze, for a recipe and the baseline.

Heavy libraries (torch, transformers, llm-compressor) are imported inside the command body only.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from cpbench.base.paths import DEFAULT_RESULTS


def _csv(value: Optional[str]) -> Optional[list[str]]:
    if value is None:
        return None
    items = [v.strip() for v in value.split(",") if v.strip()]
    return items or None


def register(app: typer.Typer) -> None:
    @app.command("run")
    def run(
        model: Optional[str] = typer.Option(
            None, "--model", "-m", metavar="M",
            help="Registry name or alias (llama, llama-3.1-8b, smollm2-135m-instruct@pypi), an HF id or a local "
            "directory. Without --model (and --suite) the `default` suite runs.",
        ),
        model_name: Optional[str] = typer.Option(
            None, "--model-name", metavar="NAME",
            help="Name of a local --model directory or .gguf file in run keys and results (default: a readable name "
            "from the folder, the GGUF file or the config; weights the registry knows keep the registry's name).",
        ),
        quant: Optional[str] = typer.Option(
            None, "--quant", "-q", metavar="Q",
            help="Recipe(s): a name (gptq-4bit, sparsegpt-2:4, ...), a sweep (gptq-bits) or a brace spec "
            "(gptq-{8,4}bit); comma-separated. The uncompressed baseline is always run too.",
        ),
        quant_file: Optional[List[Path]] = typer.Option(
            None, "--quant-file", metavar="RECIPE.yaml",
            help="An llm-compressor recipe (modifiers YAML, as oneshot(recipe=...) takes), run with cpbench's "
            "calibration data and verification, cached by its content; named by the file's stem. Repeatable.",
        ),
        candidate: Optional[List[str]] = typer.Option(
            None, "--candidate", metavar="PATH_OR_HF_ID",
            help="Someone else's compressed model, judged against --model: a checkpoint directory (llm-compressor / "
            "compressed-tensors, GPTQ, AWQ, bitsandbytes), a .gguf file or an HF id[@revision]. Repeatable. Results "
            "land beside the base's under <results>/<base>/<name>/.",
        ),
        candidate_name: Optional[List[str]] = typer.Option(
            None, "--candidate-name", metavar="NAME",
            help="Name of the --candidate in the same position (default: its directory, file or repo name).",
        ),
        tasks: Optional[str] = typer.Option(None, "--tasks", metavar="qa,rc,...", help="Tasks (default: all five)."),
        prompts: Optional[str] = typer.Option(None, "--prompts", metavar="base,shared,task", help="Prompt methods."),
        shots: Optional[int] = typer.Option(None, "--shots", metavar="K", help="Demonstrations per prompt (0-5)."),
        chat: Optional[str] = typer.Option(None, "--chat", metavar="none|v1|v2", help="Chat template mode."),
        limit: Optional[int] = typer.Option(
            None, "--limit", metavar="N", help="First N evaluated items per task (demonstrations excluded)."
        ),
        device: Optional[str] = typer.Option(None, "--device", metavar="auto|cpu|cuda", help="Where to run."),
        scoring: Optional[str] = typer.Option(
            None, "--scoring", metavar="letter|cloze",
            help="letter: logits of the option letters (Ye et al.); cloze: log-likelihood of each option's text.",
        ),
        data: Optional[str] = typer.Option(
            None, "--data", metavar="samples|installed|prepared|original|PATH",
            help="Items: samples (shipped with cpbench, work offline; a smoke test, not benchmark data), installed "
            "(real items from a package setup installs, offline: drs, ds), prepared (Ye et al.'s files, downloaded "
            "from the hub), original (rebuilt from the hub datasets), or a local item file; per task: "
            "drs=PATH,qa=samples (a bare value is the default for the rest). Default: the suite's (the default "
            "suite: installed); with --model: prepared, which needs the hub (offline: --data samples or installed).",
        ),
        suite: Optional[str] = typer.Option(
            None, "--suite", metavar="NAME", help="Named suite from benchmark/suites.yaml; options override it."
        ),
        results: Path = typer.Option(
            Path(DEFAULT_RESULTS), "--results", metavar="DIR",
            help="Results root (default ./runs; the published tree results/ is written only when named here).",
        ),
        batch_size: Optional[int] = typer.Option(
            None, "--batch-size", "-b", metavar="B", help="Prompts per forward pass (default 8 on CPU, 32 on GPU)."
        ),
        chunk_size: Optional[int] = typer.Option(
            None, "--chunk-size", metavar="C", help="Items per resumable chunk flushed to disk (default 256)."
        ),
        alpha: float = typer.Option(0.1, "--alpha", help="Miscoverage level of the conformal analysis."),
        force: bool = typer.Option(False, "--force", help="Rescore even when a matching artifact exists."),
        scorer: Optional[str] = typer.Option(
            None, "--scorer", metavar="BACKEND",
            help="The backend that scores (cpbench.backends.registry): hf, transformers (the reference, default); "
            "vllm, vLLM's engine on CUDA (letter scoring; its own environment, see docs/full-benchmark.md). "
            "Recorded in the run key.",
        ),
        dtype: Optional[str] = typer.Option(
            None, "--dtype", metavar="auto|float32|bfloat16|float16",
            help="Compute dtype for scoring (default: the suite's, else auto = float32 on CPU, the model's bf16/fp16 "
            "on GPU); in the run key.",
        ),
        revision: Optional[str] = typer.Option(None, "--revision", metavar="REV", help="Hub branch, tag or commit."),
        model_args: Optional[str] = typer.Option(
            None, "--model-args", metavar="k=v,...", help="Extra from_pretrained arguments (attn_implementation=sdpa); "
            "keys are checked against from_pretrained and the model's config before loading."
        ),
        trust_remote_code: bool = typer.Option(
            False, "--trust-remote-code",
            help="Run the model repository's own Python code (transformers' trust_remote_code). Off unless the "
            "registry entry needs it; recorded in provenance. Not accepted in --model-args.",
        ),
        seed: Optional[int] = typer.Option(None, "--seed", help="Seed of the calibration/test splits (default 0)."),
        splits: Optional[int] = typer.Option(None, "--splits", help="Calibration/test splits (default 100)."),
        scores: Optional[str] = typer.Option(
            None, "--scores", metavar="lac,aps,...", help="Conformal scores: lac, aps, raps, aps_rand, raps_rand."
        ),
        calibration_data: Optional[str] = typer.Option(
            None, "--calibration-data", metavar="builtin|hf:NAME|PATH",
            help="Compression calibration text: builtin, a hub dataset, or a .txt/.jsonl file.",
        ),
        calibration_samples: Optional[int] = typer.Option(
            None, "--calibration-samples", metavar="N", help="Calibration sequences (default: the suite's, else 128)."
        ),
        calibration_seq_len: Optional[int] = typer.Option(
            None, "--calibration-seq-len", metavar="T", help="Tokens per calibration sequence (suite's, else 512)."
        ),
        until_decided: bool = typer.Option(
            False, "--until-decided",
            help="Sequential gate: score items in stages of one fixed random order per task, re-test after each "
            "stage with the gate's limits, stop scoring a cell once decided (docs/ci-gate.md).",
        ),
        max_items: Optional[int] = typer.Option(
            None, "--max-items", metavar="N", help="--until-decided: most items per task (default: all)."
        ),
        gate_limits: Optional[str] = typer.Option(
            None, "--gate-limits", metavar="LIMIT=V,...",
            help="--until-decided: the gate's limits (max_set_size_increase=0.25,max_accuracy_drop=0.02,"
            "min_coverage=...,max_flip_rate=...); default: cpbench check's.",
        ),
        spending: str = typer.Option("pocock", "--spending", metavar="pocock|obf|linear",
                                     help="--until-decided: alpha-spending function."),
        first_look: int = typer.Option(200, "--first-look", metavar="N", help="--until-decided: items at look 1."),
        futility: Optional[float] = typer.Option(
            None, "--futility", metavar="LEVEL",
            help="--until-decided: one-sided level of the futility stop: a cell whose set-size increase or accuracy "
            "drop shows a regression above none at this level (spent over the looks) stops as FAIL; it never passes "
            "a cell. 0 turns it off; must be below 0.5 (default 0.05). Stored with the design.",
        ),
        log: Optional[str] = typer.Option(
            None, "--log", metavar="wandb|mlflow", help="Also log the run summary to an experiment tracker."
        ),
        verbose: bool = typer.Option(
            False, "--verbose", "-v", help="Show third-party logs (llm-compressor, transformers) on the console."
        ),
    ) -> None:
        """Compress, score and analyse one model: coverage, set size and accuracy vs the uncompressed baseline."""
        from cpbench.weights import models
        from cpbench.base import progress
        from cpbench.run import plan as run_plan
        from cpbench.run.execute import execute
        from cpbench.run.seqrun import parse_limits
        from cpbench.run import summary as runsummary
        from cpbench.run import trackers
        from cpbench.base.console import make_console, quiet_third_party
        from cpbench.base.paths import cache_dir
        from cpbench.base.stamps import utc_now

        models.configure_threads()  # process-wide: the CLI's decision (OMP_NUM_THREADS / CPBENCH_THREADS)
        loggers = trackers.parse(log)
        trackers.check(loggers)  # a missing tracker package fails now, not after the run
        plan = run_plan.plan_from_options(
            suite=suite, model=model, quant=_csv(quant), tasks=_csv(tasks), prompts=_csv(prompts), shots=shots,
            chat=chat, scoring=scoring, data=data, limit=limit, device=device, batch_size=batch_size,
            chunk_size=chunk_size, results=results, alpha=alpha, force=force, scorer=scorer, candidates=candidate,
            candidate_names=candidate_name, quant_files=quant_file, dtype=dtype, revision=revision,
            model_args=model_args, trust_remote_code=trust_remote_code, seed=seed, splits=splits, scores=_csv(scores), calibration_data=calibration_data,
            calibration_samples=calibration_samples, calibration_seq_len=calibration_seq_len, model_name=model_name,
            until_decided=until_decided, max_items=max_items, spending=spending, first_look=first_look,
            futility=futility,
            gate_limits=parse_limits(gate_limits) if until_decided else gate_limits,
        )  # fmt: skip
        console = make_console()

        def echo(text: str) -> None:
            console.print(text, markup=False, highlight=False, soft_wrap=True)

        stamp = utc_now().replace(":", "").replace("-", "")
        log_path = cache_dir() / "logs" / f"run-{stamp}.log"
        with quiet_third_party(verbose, log_path) as third_party_log, progress.use(progress.for_console(console)):
            outcome = execute(plan, echo=echo)
        summary = runsummary.summarize(outcome, third_party_log)
        # A rerun that reused every artifact and left every record untouched writes nothing either (a fresh clone's
        # `cpbench run` leaves `git status` clean); the summary is still printed (and logged to trackers).
        if loggers or any(not c.reused or c.status == "written" for c in outcome.cells):
            runsummary.write(summary)
        else:
            echo("nothing new: every cell reused and every record unchanged; no run summary written")
        runsummary.render(summary, console)
        if loggers:
            for where in trackers.log_run(loggers, summary, Path(summary["files"]["summary"])):
                echo(where)
