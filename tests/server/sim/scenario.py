"""Data-driven scenario scripts, in the style of etcd raft's testdata/*.txt.

A script is a sequence of blocks:

    # comments (kept on rewrite)
    command arg key=value
    ----
    expected output, one or more lines (never blank)

separated by blank lines. `run_script` runs every command against one
ScenarioEnv and compares outputs; with QUORUMKV_REWRITE=1 in the environment
it writes the actual outputs back into the file instead (then review the diff).
The commands are the methods of ScenarioEnv named `cmd_<command>` (scenario_env.py).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

REWRITE_ENV = "QUORUMKV_REWRITE"


@dataclass
class Block:
    comments: list[str]
    command: str
    expected: str
    line: int


def parse(text: str) -> list[Block]:
    blocks: list[Block] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        comments: list[str] = []
        while i < len(lines) and (not lines[i].strip() or lines[i].startswith("#")):
            if lines[i].startswith("#"):
                comments.append(lines[i])
            i += 1
        if i >= len(lines):
            if comments:
                blocks.append(Block(comments, "", "", i))
            break
        start = i
        command = lines[i].strip()
        i += 1
        if i >= len(lines) or lines[i].strip() != "----":
            raise ValueError(f"line {start + 1}: expected ---- after {command!r}")
        i += 1
        out = []
        while i < len(lines) and lines[i].strip():
            out.append(lines[i])
            i += 1
        blocks.append(Block(comments, command, "\n".join(out), start + 1))
    return blocks


def render(blocks: list[Block], outputs: list[str]) -> str:
    parts = []
    for b, out in zip(blocks, outputs):
        text = "\n".join(b.comments)
        if b.command:
            text = (text + "\n" if text else "") + f"{b.command}\n----\n{out}"
        parts.append(text)
    return "\n\n".join(parts) + "\n"


def split_args(command: str) -> tuple[str, list[str], dict[str, str]]:
    name, *rest = command.split()
    positional = [a for a in rest if "=" not in a]
    keywords = dict(a.split("=", 1) for a in rest if "=" in a)
    return name, positional, keywords


def run_script(path: str) -> list[str]:
    """Runs the script; returns mismatch descriptions (rewrites the file instead
    when QUORUMKV_REWRITE is set)."""
    from .scenario_env import ScenarioEnv

    with open(path) as f:
        blocks = parse(f.read())
    env = ScenarioEnv()
    outputs, mismatches = [], []
    for b in blocks:
        if not b.command:
            outputs.append("")
            continue
        out = env.run(b.command).rstrip("\n") or "ok"
        outputs.append(out)
        if out != b.expected:
            mismatches.append(f"{os.path.basename(path)}:{b.line}: {b.command}\n--- expected\n{b.expected}\n"
                              f"--- actual\n{out}")
    if os.environ.get(REWRITE_ENV):
        with open(path, "w") as f:
            f.write(render(blocks, outputs))
        return []
    return mismatches
