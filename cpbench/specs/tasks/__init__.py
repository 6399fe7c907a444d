"""The five six-option tasks of Ye et al. 2024: definitions, items and the exact prompts.

```python
spec = load_task("qa")                                   # tasks/qa.yaml, validated
items = load_items(spec, "samples")                      # or "prepared", "original", a local file path
prompts = build_prompts(spec, items, method="task", shots=5, chat="none")
```
Only pydantic and PyYAML are imported here; `datasets`, `huggingface_hub` and the tokenizer are used only when a hub
source or a chat template is asked for.
"""

from cpbench.specs.tasks.construct import BuildReport, letter_distribution
from cpbench.specs.tasks.itemfile import read_items, write_items
from cpbench.specs.tasks.prompts import Prompt, build_prompts, format_item, prompts_hash
from cpbench.specs.tasks.schema import FIXED_OPTIONS, IDK_TEXT, LETTERS, NOTA_TEXT, Item, TaskSpec
from cpbench.specs.tasks.sources import data_tag, load_items, load_original, load_prepared, source_provenance
from cpbench.specs.tasks.spec import list_tasks, load_task, load_task_file

__all__ = [
    "FIXED_OPTIONS",
    "IDK_TEXT",
    "LETTERS",
    "NOTA_TEXT",
    "BuildReport",
    "Item",
    "Prompt",
    "TaskSpec",
    "build_prompts",
    "data_tag",
    "format_item",
    "letter_distribution",
    "list_tasks",
    "load_items",
    "load_original",
    "load_prepared",
    "load_task",
    "load_task_file",
    "prompts_hash",
    "read_items",
    "source_provenance",
    "write_items",
]
