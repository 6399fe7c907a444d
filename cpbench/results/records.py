"""Typed result records and artifact provenance: one definition shared by the writer, the store and the tests.

- `ArtifactProvenance`: the `provenance` object of a logits artifact (written by the scorer and the importers,
  validated by `LogitsArtifact.save` and `.load`).
- `ResultProvenance`: the same plus what the analysis adds (`artifact_hash`, `artifact_path`, `cpbench_version`,
  `analyzed_at`).
- `ResultRecord`: the result record of docs/design.md, schema `cpbench.result/3` (`SCHEMA`), with range checks
  (probabilities in [0, 1], 0 <= set size <= K, n = n_cal + n_test, per-split arrays of length `splits` whose means are
  the stored means, ...). Built by `cpbench.results.conformal.protocols.analyze_artifact`, read by `cpbench.results.store` through
  `load_record`, and by the tests' `result_factory`.

Every model forbids unknown keys, so a typo or a flipped byte in a key name is an error rather than a silently
ignored field. Provenance has one escape hatch, `extra` (a free-form object): details specific to one scorer or
importer that no analysis reads (e.g. a backend's tuning flags). Anything the analysis, leaderboard or gate reads
must be a declared field.

Adding an optional field (the way to extend the schema; it stays `cpbench.result/3`):
1. declare it on the model with a default of None, e.g. `n_layers: int | None = Field(default=None, ge=1)`;
2. write it in the producer (scorer provenance dict, importer, or `analyze_artifact`);
3. read it with `record.provenance.n_layers` (typed) or `record_dict["provenance"].get("n_layers")`.
Old files without the field stay valid. Dumps leave out fields that were never set (`to_json`), so a new optional
field does not change existing files. Renaming or removing a field, or changing its meaning, needs a new schema
version plus a migration function like `migrate_v1` below.

Older records: `cpbench.result/2` records load through `migrate_v2` (the split percentile ranges `<metric>_ci95`
are renamed `<metric>_split_range95`: they are not confidence intervals; `provenance.migrated_from` set);
`cpbench.result/1` records load through `migrate_v1` and then `migrate_v2` (baseline recipe `fp16` -> `base`, the
factory-only `model_params` -> `n_params`, undeclared provenance keys moved into `extra`, `provenance.migrated_from` set).
Unknown schema versions are refused with one line saying how to regenerate them.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, Strict, ValidationError, model_validator

from cpbench.base.errors import CpbenchError
from cpbench.base.runkey import RunKey, ScoreKey

SCHEMA = "cpbench.result/3"
SCHEMA_V1 = "cpbench.result/1"
SCHEMA_V2 = "cpbench.result/2"
READABLE_SCHEMAS = (SCHEMA_V1, SCHEMA_V2, SCHEMA)
# schema 3 renamed the split-to-split percentile ranges: `<metric>_ci95` read as a confidence interval, which they are
# not (how much one split's value moves with other random splits of the same items, not item sampling)
RENAMED_V2 = {"_ci95": "_split_range95"}
SCORE_FIELDS = ("lac", "aps", "aps_rand", "raps", "raps_rand")  # conformal score blocks a record may carry
LEGACY_BASELINE = "fp16"  # the baseline recipe's name in schema 1 ("base" now: it is not always fp16)
REGENERATE = "regenerate it with `cpbench analyze ARTIFACT --out FILE` or `cpbench run`"
TOL = 1e-6  # float tolerance of the consistency checks (stored means vs per-split means, histograms)

# Numbers: strict (no "0.5" strings, no booleans), finite.
Finite = Annotated[float, Strict(), Field(allow_inf_nan=False)]
NonNeg = Annotated[float, Strict(), Field(ge=0, allow_inf_nan=False)]
Prob = Annotated[float, Strict(), Field(ge=0, le=1, allow_inf_nan=False)]
Sha256 = Annotated[str, Field(pattern=r"^sha256:[0-9a-f]{64}$")]
Interval = tuple[Finite, Finite]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")

    def to_json(self) -> dict[str, Any]:
        """The JSON object as stored: fields never set are left out, so adding optional fields changes no file."""
        return self.model_dump(mode="json", by_alias=True, exclude_unset=True)


# ---------------------------------------------------------------------------------------------------- provenance
class ModelInfo(_Model):
    """A model entry's provenance (cpbench.weights.models.ModelEntry.provenance): the `candidate` block of a candidate run."""

    model_id: str | None = None
    model_revision: str | None = None
    model_commit: str | None = None
    model_source: str | None = None
    model_name: str | None = None
    model_key: str | None = None
    pypi: dict[str, Any] | None = None
    model_args: dict[str, Any] | None = None
    trust_remote_code: bool | None = None
    notes: list[str] = Field(default_factory=list)


class ArtifactProvenance(_Model):
    """Provenance header of a logits artifact. Every key is optional: importers know less than the scorer."""

    run_key: ScoreKey | None = None
    # the model (cpbench.weights.models.ModelEntry.provenance)
    model_id: str | None = None
    model_revision: str | None = None
    model_commit: str | None = None
    model_source: str | None = None
    model_name: str | None = None
    model_key: str | None = None
    pypi: dict[str, Any] | None = None
    model_args: dict[str, Any] | None = Field(default=None, description="extra from_pretrained kwargs (--model-args)")
    trust_remote_code: bool | None = Field(
        default=None, description="True: the model repository's own code ran (registry entry or --trust-remote-code)"
    )
    n_params: Annotated[float, Strict(), Field(gt=0, allow_inf_nan=False)] | None = Field(
        default=None, description="parameter count of the base model (size-effect analysis reads it from here)"
    )
    candidate: ModelInfo | None = Field(
        default=None, description="the candidate's own model entry (a user's compressed checkpoint judged against "
        "the base model above); what was measured on it is in `compression_report`, its config in `recipe.spec`"
    )
    # the compression
    recipe: dict[str, Any] | None = None
    knob: dict[str, Finite | None] | None = Field(
        default=None, description="compression strength, e.g. {'bits': 4} or {'sparsity': 0.5} (thresholds)"
    )
    compression_report: dict[str, Any] | None = None
    checkpoint_path: str | None = None
    weights: dict[str, Any] | None = Field(default=None, description="cpbench.weights.identity.WeightsIdentity as a dict")
    weights_id: str | None = None
    # the items and prompts
    task: str | None = None
    sample_data: Annotated[bool, Strict()] = False
    data_source: dict[str, Any] | None = None
    limit: int | None = None
    suite: str | None = None
    prompts_hash: str | None = None
    items_hash: str | None = None
    # the scoring
    tokenizer: dict[str, Any] | None = None
    option_token_ids: dict[str, Any] | None = None
    dtype: str | None = None
    device: str | None = None
    backend: str | None = None
    scorer: str | None = None
    scoring: str | None = None
    scoring_detail: dict[str, Any] | None = None
    batch_size: int | None = None
    model_hash: str | None = None
    versions: dict[str, str | None] | None = None
    created_at: str | None = None
    host: str | None = None
    # imported artifacts (cpbench.backends.pickles)
    source_format: str | None = None
    source_files: dict[str, str] | None = None
    source_sha256: dict[str, str] | None = None
    imported_at: str | None = None
    lm_eval_filters: list[str] | None = None
    lm_eval: dict[str, Any] | None = Field(default=None, description="the lm-eval run behind imported samples "
                                           "(cpbench.backends.lmeval.LmEvalRun.provenance)")
    # always last
    notes: list[str] = Field(default_factory=list)
    migrated_from: str | None = Field(default=None, description="schema a migrated record was read from")
    extra: dict[str, Any] = Field(
        default_factory=dict, description="scorer/importer-specific details no analysis reads (the escape hatch)"
    )

    @model_validator(mode="before")
    @classmethod
    def _plain_json(cls, data: Any) -> Any:
        # Free-form parts (extra, scoring_detail, ...) must still be plain JSON with finite numbers: pydantic's JSON
        # dump would otherwise turn NaN into null silently.
        _check_plain(data, "provenance", 0)
        return data


MAX_DEPTH = 32


def _check_plain(obj: Any, where: str, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise ValueError(f"{where}: nested deeper than {MAX_DEPTH} levels")
    if isinstance(obj, float):
        if not math.isfinite(obj):
            raise ValueError(f"{where}: {obj!r} is not a finite number")
    elif isinstance(obj, dict):
        for key, value in obj.items():
            if not isinstance(key, str):
                raise ValueError(f"{where}: key {key!r} is not a string")
            _check_plain(value, f"{where}.{key}", depth + 1)
    elif isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            _check_plain(value, f"{where}[{i}]", depth + 1)
    elif obj is not None and not isinstance(obj, (str, int, bool)):
        raise ValueError(f"{where}: {type(obj).__name__} is not a JSON value")


class ResultProvenance(ArtifactProvenance):
    """Artifact provenance plus what the analysis adds."""

    artifact_hash: Sha256
    artifact_path: str
    cpbench_version: str
    analyzed_at: str


# ---------------------------------------------------------------------------------------------------- the record
class ScoreBlock(_Model):
    """One conformal score's results: means across splits, the std of one split's value and the 2.5/97.5
    percentiles of the per-split values (`*_split_range95`: where one random split's value falls, not a confidence
    interval; None with 1 split)."""

    coverage: Prob
    coverage_std: NonNeg | None = None
    coverage_split_range95: Interval | None = None
    set_size: NonNeg
    set_size_std: NonNeg | None = None
    set_size_split_range95: Interval | None = None
    uacc: NonNeg
    uacc_std: NonNeg | None = None
    uacc_split_range95: Interval | None = None
    qhat: Finite
    size_hist: list[Prob] = Field(default_factory=list)
    coverage_by_size: dict[str, Prob | None] = Field(default_factory=dict)
    coverage_by_class: dict[str, Prob | None] = Field(default_factory=dict)


class PerSplitBlock(_Model):
    coverage: list[Prob]
    set_size: list[NonNeg]
    uacc: list[NonNeg]
    qhat: list[Finite] | None = None


class PerSplit(_Model):
    acc: list[Prob]
    lac: PerSplitBlock | None = None
    aps: PerSplitBlock | None = None
    aps_rand: PerSplitBlock | None = None
    raps: PerSplitBlock | None = None
    raps_rand: PerSplitBlock | None = None


class Calibration(_Model):
    ece: Prob | None = None
    brier: Annotated[float, Strict(), Field(ge=0, le=2, allow_inf_nan=False)] | None = None
    nll: NonNeg | None = None
    entropy: NonNeg | None = None
    idk_rate: Prob | None = None
    nota_rate: Prob | None = None


class ProtocolInfo(_Model):
    name: Literal["default", "ye2024"]
    quantile: str
    empty: str
    softmax_dtype: str
    split: str
    excluded_ids: list[str] = Field(default_factory=list)
    scores: dict[str, str]
    ece_bins: int | None = None
    reference: str | None = None
    raps: dict[str, Finite] | None = None


class ResultRecord(_Model):
    """One result record (docs/design.md), schema `cpbench.result/3`."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    schema_: Literal["cpbench.result/3"] = Field(default=SCHEMA, alias="schema")
    run_key: RunKey
    provenance: ResultProvenance
    input: str
    items_hash: Sha256 | None = None
    n: Annotated[int, Strict(), Field(ge=2)]
    k: Annotated[int, Strict(), Field(ge=2)]
    n_cal: Annotated[int, Strict(), Field(ge=1)]
    n_test: Annotated[int, Strict(), Field(ge=1)]
    letters: list[str]
    acc: Prob
    acc_std: NonNeg | None = None
    acc_split_range95: Interval | None = None
    calibration: Calibration
    lac: ScoreBlock | None = None
    aps: ScoreBlock | None = None
    aps_rand: ScoreBlock | None = None
    raps: ScoreBlock | None = None
    raps_rand: ScoreBlock | None = None
    per_split: PerSplit | None = None
    protocol: ProtocolInfo

    def to_json(self) -> dict[str, Any]:
        return {**super().to_json(), "schema": SCHEMA}

    def scores(self) -> dict[str, ScoreBlock]:
        return {s: getattr(self, s) for s in SCORE_FIELDS if getattr(self, s) is not None}

    @model_validator(mode="after")
    def _consistent(self) -> "ResultRecord":
        _check_consistency(self)
        return self


def _check_interval(name: str, ci: tuple[float, float] | None, lo: float, hi: float) -> None:
    if ci is None:
        return
    if ci[0] > ci[1] + TOL:
        raise ValueError(f"{name}_split_range95 {list(ci)} has its lower end above its upper end")
    if ci[0] < lo - TOL or ci[1] > hi + TOL:
        raise ValueError(f"{name}_split_range95 {list(ci)} is outside [{lo:g}, {hi:g}]")


def _check_mean(name: str, mean: float, values: list[float] | None) -> None:
    if values:
        m = math.fsum(values) / len(values)
        if abs(m - mean) > TOL * max(1.0, abs(m)):
            raise ValueError(f"{name} {mean!r} is not the mean of its {len(values)} per-split values ({m!r})")


def _check_consistency(r: ResultRecord) -> None:
    """Cross-field rules; each raises ValueError naming the field (pydantic turns it into a ValidationError)."""
    k = r.k
    if r.n != r.n_cal + r.n_test:
        raise ValueError(f"n = {r.n} is not n_cal + n_test = {r.n_cal} + {r.n_test}")
    if len(r.letters) != k or len(set(r.letters)) != k:
        raise ValueError(f"letters {r.letters} are not {k} distinct option letters (k = {k})")
    stated = r.provenance.run_key  # the artifact's own key: a record moved to another cell by an edit disagrees
    if stated is not None and stated != r.run_key.score:
        diff = sorted(k for k in ScoreKey.model_fields if getattr(stated, k) != getattr(r.run_key.score, k))
        raise ValueError(f"run_key.score differs from provenance.run_key in {', '.join(diff)} (record altered?)")
    if r.protocol.name != r.run_key.analysis.protocol:
        raise ValueError(f"protocol.name {r.protocol.name!r} is not the run key's {r.run_key.analysis.protocol!r}")
    scores = r.scores()
    if not scores:
        raise ValueError("no conformal score block (e.g. 'lac' with coverage, set_size, uacc)")
    _check_interval("acc", r.acc_split_range95, 0.0, 1.0)
    if r.calibration.entropy is not None and r.calibration.entropy > math.log(k) + TOL:
        raise ValueError(f"calibration.entropy {r.calibration.entropy!r} exceeds log(k) = {math.log(k):.6g}")
    for s, b in scores.items():
        if b.set_size > k + TOL:
            raise ValueError(f"{s}.set_size {b.set_size!r} is larger than k = {k}")
        _check_interval(f"{s}.coverage", b.coverage_split_range95, 0.0, 1.0)
        _check_interval(f"{s}.set_size", b.set_size_split_range95, 0.0, float(k))
        _check_interval(f"{s}.uacc", b.uacc_split_range95, 0.0, math.inf)
        if b.size_hist:
            if len(b.size_hist) != k + 1:
                raise ValueError(f"{s}.size_hist has {len(b.size_hist)} entries, expected k + 1 = {k + 1}")
            total = math.fsum(b.size_hist)
            if abs(total - 1.0) > TOL:
                raise ValueError(f"{s}.size_hist sums to {total!r}, not 1")
            mean_size = math.fsum(i * f for i, f in enumerate(b.size_hist))
            if abs(mean_size - b.set_size) > 1e-4 * max(1.0, b.set_size):
                raise ValueError(f"{s}.set_size {b.set_size!r} is not the mean of {s}.size_hist ({mean_size!r})")
        bad = set(b.coverage_by_size) - {str(i) for i in range(k + 1)}
        if bad:
            raise ValueError(f"{s}.coverage_by_size has keys outside 0..{k}: {sorted(bad)}")
        bad = set(b.coverage_by_class) - set(r.letters)
        if bad:
            raise ValueError(f"{s}.coverage_by_class has keys that are not option letters: {sorted(bad)}")
    ps = r.per_split
    if ps is None:
        return
    splits = r.run_key.analysis.splits
    arrays: dict[str, list[float] | None] = {"acc": ps.acc}
    _check_mean("acc", r.acc, ps.acc)
    for s in SCORE_FIELDS:
        block, pblock = getattr(r, s), getattr(ps, s)
        if (block is None) != (pblock is None):
            raise ValueError(f"per_split.{s} {'is missing' if pblock is None else 'has no score block ' + repr(s)}")
        if pblock is None:
            continue
        for m in ("coverage", "set_size", "uacc", "qhat"):
            values = getattr(pblock, m)
            arrays[f"{s}.{m}"] = values
            if m != "qhat":
                _check_mean(f"{s}.{m}", getattr(block, m), values)
        if any(v > k + TOL for v in pblock.set_size):
            raise ValueError(f"per_split.{s}.set_size has a value above k = {k}")
    lengths = {name: len(v) for name, v in arrays.items() if v is not None}
    if set(lengths.values()) - {splits}:
        raise ValueError(f"per-split arrays must have one value per split ({splits}); lengths {lengths}")


# -------------------------------------------------------------------------------------------------- entry points
def one_line(exc: ValidationError) -> str:
    """The first pydantic error as 'field.path: message' (with the offending value when it is short)."""
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err.get("loc", ()))
    msg = str(err.get("msg", "")).removeprefix("Value error, ")
    value = err.get("input")
    shown = "" if err.get("type") == "value_error" or isinstance(value, (dict, list)) else f" (got {value!r})"
    if len(shown) > 80:
        shown = ""
    return (f"{loc}: {msg}" if loc else msg) + shown


def provenance(data: Any, where: str = "provenance") -> ArtifactProvenance:
    """Validate an artifact's provenance object; CpbenchError('<where>: <field>: <problem>') otherwise."""
    try:
        return ArtifactProvenance.model_validate(data)
    except ValidationError as exc:
        hint = ""
        if exc.errors()[0].get("type") == "extra_forbidden":  # a producer added a key: say where keys are declared
            hint = " (provenance keys are declared in cpbench/results/records.py ArtifactProvenance; details no analysis " \
                   "reads go under 'extra')"
        raise CpbenchError(f"{where}: invalid provenance: {one_line(exc)}{hint}") from None


def check_provenance(data: Any, where: str = "provenance") -> dict[str, Any]:
    """`provenance(data)` as the JSON object it validates to (only the keys given, values normalised)."""
    return provenance(data, where).to_json()


def migrate_provenance_v1(prov: Any) -> dict[str, Any]:
    """Provenance of a schema-1 record or format-1 artifact in today's vocabulary (see the module docstring)."""
    if not isinstance(prov, dict):
        return prov
    out: dict[str, Any] = {}
    extra: dict[str, Any] = dict(prov.get("extra") or {}) if isinstance(prov.get("extra"), dict) else {}
    declared = set(ResultProvenance.model_fields)
    for key, value in prov.items():
        if key == "model_params":  # written by the old test factory only
            out.setdefault("n_params", value)
        elif key in declared and key != "extra":
            out[key] = value
        elif key != "extra":
            extra[key] = value
    if extra:
        out["extra"] = extra
    run_key = out.get("run_key")
    if isinstance(run_key, dict) and run_key.get("recipe") == LEGACY_BASELINE:
        out["run_key"] = {**run_key, "recipe": "base"}
    return out


def migrate_run_key(run_key: Any) -> Any:
    """A schema-1 run key in today's vocabulary: the old baseline name `fp16` reads as `base`."""
    score = run_key.get("score") if isinstance(run_key, dict) else None
    if isinstance(score, dict) and score.get("recipe") == LEGACY_BASELINE:
        return {**run_key, "score": {**score, "recipe": "base"}}
    return run_key


def migrate_v1(record: dict[str, Any]) -> dict[str, Any]:
    """A `cpbench.result/1` record as a `cpbench.result/2` object (not yet validated)."""
    out = dict(record)
    out["schema"] = SCHEMA_V2
    out["run_key"] = migrate_run_key(record.get("run_key"))
    prov = migrate_provenance_v1(record.get("provenance"))
    if isinstance(prov, dict):
        prov["migrated_from"] = SCHEMA_V1
    out["provenance"] = prov
    return out


def _rename_split_ranges(block: Any) -> Any:
    if not isinstance(block, dict):
        return block
    return {(k[: -len("_ci95")] + "_split_range95" if isinstance(k, str) and k.endswith("_ci95") else k): v
            for k, v in block.items()}


def migrate_v2(record: dict[str, Any]) -> dict[str, Any]:
    """A `cpbench.result/2` record as a `cpbench.result/3` object (not yet validated): `<metric>_ci95` (top level and
    in each score block) renamed `<metric>_split_range95`; `provenance.migrated_from` keeps the first schema read."""
    out = _rename_split_ranges(record)
    for s in SCORE_FIELDS:
        if s in out:
            out[s] = _rename_split_ranges(out[s])
    out["schema"] = SCHEMA
    prov = out.get("provenance")
    if isinstance(prov, dict) and not prov.get("migrated_from"):
        out["provenance"] = {**prov, "migrated_from": SCHEMA_V2}
    return out


def load_record(obj: Any) -> ResultRecord:
    """A parsed JSON object as a validated ResultRecord (schema 1 migrated); CpbenchError with one line otherwise."""
    if not isinstance(obj, dict):
        raise CpbenchError(f"not a cpbench result record (top level is {type(obj).__name__}, not an object)")
    schema = obj.get("schema")
    if schema is None:
        raise CpbenchError("not a cpbench result record (no 'schema' key)")
    if schema == SCHEMA_V1:
        obj = migrate_v2(migrate_v1(obj))
    elif schema == SCHEMA_V2:
        obj = migrate_v2(obj)
    elif schema != SCHEMA:
        raise CpbenchError(f"schema {schema!r} is not one this cpbench reads ({', '.join(READABLE_SCHEMAS)}); "
                           f"{REGENERATE}")
    try:
        return ResultRecord.model_validate(obj)
    except ValidationError as exc:
        raise CpbenchError(f"invalid result record: {one_line(exc)}") from None


def build_record(data: dict[str, Any]) -> dict[str, Any]:
    """Validate a record the caller built (the writer and the test factory) and return its JSON object."""
    try:
        return ResultRecord.model_validate(data).to_json()
    except ValidationError as exc:
        raise CpbenchError(f"invalid result record: {one_line(exc)}") from None
