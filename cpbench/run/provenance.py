"""What a run knows about the weights it scores, for every artifact of one unit: the one place its provenance keys
are listed (the backend adds how it scored: cpbench.backends.pipeline; the analysis reads `params`, `knob`, `recipe`).
"""

from __future__ import annotations

from typing import Any


def unit_provenance(unit: Any, identity: Any) -> dict[str, Any]:
    """Provenance shared by a unit's artifacts: the model, the recipe (or the candidate judged against the model, in
    the recipe slot), the weights identity and how the analyses classify it. `compression_report` and
    `checkpoint_path` are filled once the weights exist (`with_weights`)."""
    from cpbench.results.analysis.knobs import provenance_fields

    entry, opts, cand = unit.model, unit.options, unit.candidate
    if cand is None:
        recipe = unit.recipe
        name, spec = recipe.name, recipe.spec()
        recipe_block: dict[str, Any] = {"name": name, "spec": spec, "description": recipe.description}
        checkpoint = None
    else:
        from cpbench.weights import candidates

        name, spec = cand.name, candidates.describe(cand)
        recipe_block = {"name": name, "kind": "candidate", "spec": spec,
                        "description": f"candidate {identity.id} judged against {entry.name}"}  # fmt: skip
        checkpoint = str(candidates.local_path(cand) or "") or None
    prov: dict[str, Any] = {
        **entry.provenance(),  # for a candidate: the model it is judged against (model_id, model_name, ...)
        "recipe": recipe_block,
        **({"candidate": cand.entry.provenance()} if cand is not None else {}),
        "compression_report": None,
        "checkpoint_path": checkpoint,
        **identity.provenance(),
        **provenance_fields(entry.params_b, name, spec),  # n_params (of the base), knob: analyses read these
        "sample_data": opts.data == "samples",
        "suite": opts.suite,
    }
    if cand is not None:  # the candidate's weights are not the base's commit
        prov.pop("model_commit", None)
        if entry.source == "hub":
            prov["model_commit"] = entry.weights().commit
    prov["notes"] = list(dict.fromkeys(list(prov.get("notes") or []) + list(unit.notes)))
    return prov


def with_weights(provenance: dict[str, Any], report: Any, checkpoint_path: Any = None) -> None:
    """Fill what is known once the weights exist: the compression report (or what was measured on a candidate's
    loaded weights) and, for a cpbench checkpoint, where it lives."""
    provenance["compression_report"] = report
    if checkpoint_path is not None or provenance.get("candidate") is None:
        provenance["checkpoint_path"] = str(checkpoint_path) if checkpoint_path is not None else None
