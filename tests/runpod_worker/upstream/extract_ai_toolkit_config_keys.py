"""Lists the config keys AI Toolkit reads for an `sd_trainer` job and for its `Qwen3VLCaptioner` extension
job, from its source (no import, no torch).

    python tests/runpod_worker/upstream/extract_ai_toolkit_config_keys.py AI_TOOLKIT_DIR \
        > tests/runpod_worker/upstream/ai_toolkit_config_keys.json

For each section of the job config it parses the reading code with `ast` and collects the string keys read:
`kwargs.get("k")`, `kwargs["k"]` and `"k" in kwargs` in the config classes of `toolkit/config_modules.py`;
`self.get_conf("k")` (first dotted part) along the trainer's class chain (SDTrainer -> BaseSDTrainProcess
-> BaseTrainProcess -> BaseProcess); `config["k"]` / `self.config["k"]` / `process["k"]` in the job classes.
The captioner's: `kwargs` in `CaptionConfig` (its `caption` section), and `self.config.get("k")` and
`self.get_conf("k")` along its class chain (Qwen3VLCaptioner -> BaseCaptioner -> BaseExtensionProcess ->
BaseProcess) for its process.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

CONFIG_MODULES = "toolkit/config_modules.py"
# Section of the job config -> the class in toolkit/config_modules.py that reads it.
CLASS_SECTIONS = {
    "network": "NetworkConfig",
    "save": "SaveConfig",
    "datasets[]": "DatasetConfig",
    "train": "TrainConfig",
    "train.ema_config": "EMAConfig",
    "model": "ModelConfig",
    "sample": "SampleConfig",
    "logging": "LoggingConfig",
}
PROCESS_CHAIN = (
    "extensions_built_in/sd_trainer/SDTrainer.py",
    "jobs/process/BaseSDTrainProcess.py",
    "jobs/process/BaseTrainProcess.py",
    "jobs/process/BaseProcess.py",
)
JOB_FILES = ("toolkit/job.py", "jobs/BaseJob.py", "jobs/ExtensionJob.py")
CAPTIONER_CHAIN = (
    "extensions_built_in/captioner/Qwen3VLCaptioner.py",
    "extensions_built_in/captioner/BaseCaptioner.py",
    "jobs/process/BaseExtensionProcess.py",
    "jobs/process/BaseProcess.py",
)


def _literal(node: ast.AST) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def _name(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_name(node.value)}.{node.attr}"
    return ""


def keys_read_from(tree: ast.AST, mapping: str) -> set[str]:
    """String keys read from the mapping named `mapping` (`kwargs`, `config`, `self.config`, ...)."""
    keys: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.args:
            if node.func.attr == "get" and _name(node.func.value) == mapping:
                keys.add(_literal(node.args[0]) or "")
        elif isinstance(node, ast.Subscript) and _name(node.value) == mapping:
            keys.add(_literal(node.slice) or "")
        elif (
            isinstance(node, ast.Compare)
            and len(node.comparators) == 1
            and isinstance(node.ops[0], ast.In | ast.NotIn)
            and _name(node.comparators[0]) == mapping
        ):
            keys.add(_literal(node.left) or "")
    return keys - {""}


def get_conf_keys(tree: ast.AST) -> set[str]:
    keys = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and _name(node.func) == "self.get_conf" and node.args:
            key = _literal(node.args[0])
            if key:
                keys.add(key.split(".")[0])
    return keys


def class_node(tree: ast.Module, name: str) -> ast.ClassDef:
    return next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == name)


def extract(root: Path) -> dict[str, object]:
    def parse(relative: str) -> ast.Module:
        return ast.parse((root / relative).read_text(encoding="utf-8"))

    modules = parse(CONFIG_MODULES)
    sections: dict[str, list[str]] = {
        section: sorted(keys_read_from(class_node(modules, cls), "kwargs"))
        for section, cls in CLASS_SECTIONS.items()
    }
    process: set[str] = set()
    for relative in PROCESS_CHAIN:
        process |= get_conf_keys(parse(relative))
    job_trees = [parse(relative) for relative in JOB_FILES]
    process |= {key for tree in job_trees for key in keys_read_from(tree, "process")}
    sections["process[]"] = sorted(process)
    sections["config"] = sorted(
        {key for tree in job_trees for key in keys_read_from(tree, "self.config") | get_conf_keys(tree)}
    )
    sections["(top)"] = sorted({key for tree in job_trees for key in keys_read_from(tree, "config")})
    captioner = [parse(relative) for relative in CAPTIONER_CHAIN]
    sections["captioner.caption"] = sorted(
        keys_read_from(class_node(captioner[1], "CaptionConfig"), "kwargs")
    )
    sections["captioner.process[]"] = sorted(
        {key for tree in captioner for key in keys_read_from(tree, "self.config") | get_conf_keys(tree)}
        | {key for tree in job_trees for key in keys_read_from(tree, "process")}
    )
    commit = subprocess.run(
        ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    return {
        "ai_toolkit_commit": commit or "unknown",
        "extracted_by": "tests/runpod_worker/upstream/extract_ai_toolkit_config_keys.py",
        "sources": {
            "classes": f"{CONFIG_MODULES}: " + ", ".join(f"{s}={c}" for s, c in CLASS_SECTIONS.items()),
            "process[]": [*PROCESS_CHAIN, "jobs/BaseJob.py (process['type'])"],
            "config, (top)": list(JOB_FILES),
            "captioner.caption": f"{CAPTIONER_CHAIN[1]}: CaptionConfig",
            "captioner.process[]": [*CAPTIONER_CHAIN, "jobs/BaseJob.py (process['type'])"],
        },
        "sections": dict(sorted(sections.items())),
    }


if __name__ == "__main__":
    print(json.dumps(extract(Path(sys.argv[1])), indent=1))
