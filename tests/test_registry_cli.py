"""`cpbench models list` and `cpbench recipes list` (issue 12): registries with what runs on CPU vs GPU."""

from __future__ import annotations

import json

from cpbench.cli import main


def test_recipes_list_says_what_runs_where(capsys):
    assert main(["recipes", "list", "--json"]) == 0
    rows = {r["name"]: r for r in map(json.loads, capsys.readouterr().out.splitlines())}
    assert rows["bnb-nf4"]["runs_on"] == "GPU only" and "CUDA" in rows["bnb-nf4"]["requires_reason"]
    assert rows["gptq-4bit"]["runs_on"] == "CPU or GPU" and rows["gptq-4bit"]["sweep"].startswith("gptq-bits")
    assert main(["recipes", "list", "--device", "cpu", "--json"]) == 0
    cpu = {json.loads(line)["name"] for line in capsys.readouterr().out.splitlines()}
    assert "bnb-nf4" not in cpu and "magnitude-50" in cpu and "base" in cpu


def test_models_list_and_family_filter(capsys):
    assert main(["models", "list", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    names = {r["name"] for r in rows}
    assert "llama-3.1-8b" in names and all(r["hf_id"] for r in rows)
    assert main(["models", "list", "--family", "lama"]) == 2
    assert "did you mean 'llama'" in capsys.readouterr().err
    assert main(["models", "list"]) == 0
    out = capsys.readouterr().out
    assert "llama-3.1-8b" in out and "licence" in out
