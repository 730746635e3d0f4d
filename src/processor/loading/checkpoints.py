"""Finds the checkpoint versions under `checkpoint_dir`.

Rules (what DeepRec and tf.train.Saver write):
- `checkpoint_dir` holds a TF checkpoint directly (a `checkpoint` state file, `model.ckpt-N.index`,
  `model.ckpt-N.data-XXXXX-of-YYYYY`), or holds run directories each laid out like that, or both.
  Hidden directories (such as `.incremental_checkpoint`, which holds deltas) are not run directories.
- A version is a checkpoint prefix named by a state file (`model_checkpoint_path` or
  `all_model_checkpoint_paths`). Files that no state file names (stray .index files, temp files) are
  never versions, with two exceptions for trees copied from the training machine, whose state files
  hold that machine's absolute paths: a named prefix that is not there but whose file name is in the
  state file's own directory is that one (the tree was relocated); and a directory whose state file
  names only files that are not there (or that has none) offers the checkpoints it holds (`*.index`,
  complete with their shards), as DeepRec does. Each fallback is logged with the rule that chose it. A
  state file that cannot be read, or names nothing, is reported, never bypassed.
- A version is complete when its .index file is a readable non-empty file and every data shard
  0..YYYYY-1 is a readable file.
- The newest version is the complete one with the highest global step (the number after the last '-');
  across run directories the step decides, so a new run that has trained further wins.
"""
from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from typing import List, Optional

from ..stores import LocalModelStore, ModelStore

logger = logging.getLogger(__name__)

STATE_FILE = "checkpoint"
_STATE_LINE = re.compile(r'^\s*(model_checkpoint_path|all_model_checkpoint_paths)\s*:\s*"((?:[^"\\]|\\.)*)"\s*$')
_SHARD = re.compile(r"\.data-(\d+)-of-(\d+)$")
_STEP = re.compile(r"-(\d+)$")


@dataclass(frozen=True)
class CheckpointVersion:
    prefix: str           # what the saver restores from, e.g. /ckpt/run1/model.ckpt-2000
    step: int             # global step from the prefix; -1 when the prefix carries none
    complete: bool
    reason: str = ""      # why it is not complete


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


def read_state_file(store: ModelStore, directory: str) -> List[str]:
    """Checkpoint prefixes a `checkpoint` state file names, as paths (relative ones resolved)."""
    path = store.join(directory, STATE_FILE)
    try:
        text = store.read_text(path)
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError) as e:  # unreadable, a directory, not text
        logger.warning("cannot read checkpoint state file %s: %s", path, e)
        return []
    prefixes = []
    for line in text.splitlines():
        match = _STATE_LINE.match(line)
        if match:
            prefix = store.resolve(directory, _unescape(match.group(2)))
            if prefix not in prefixes:
                prefixes.append(prefix)
    return prefixes


def check_version(store: ModelStore, prefix: str) -> CheckpointVersion:
    step_match = _STEP.search(os.path.basename(prefix))
    step = int(step_match.group(1)) if step_match else -1

    def incomplete(reason: str) -> CheckpointVersion:
        return CheckpointVersion(prefix, step, False, reason)

    index = prefix + ".index"
    if not store.is_readable_file(index):
        return incomplete(f"{index} is missing or unreadable")
    if store.size(index) == 0:
        return incomplete(f"{index} is empty")
    directory, base = os.path.split(prefix)
    shards = {}
    for name in store.list_dir(directory):
        if name.startswith(base + ".data-"):
            match = _SHARD.search(name)
            if match and name == f"{base}.data-{match.group(1)}-of-{match.group(2)}":
                shards[int(match.group(1))] = int(match.group(2))
    if not shards:
        return incomplete(f"no data shards {base}.data-*-of-*")
    totals = set(shards.values())
    if len(totals) != 1:
        return incomplete(f"data shards disagree on the shard count: {sorted(totals)}")
    total = totals.pop()
    for i in range(total):
        shard = store.join(directory, f"{base}.data-{i:05d}-of-{total:05d}")
        if i not in shards or not store.is_readable_file(shard):
            return incomplete(f"data shard {os.path.basename(shard)} is missing or unreadable")
    return CheckpointVersion(prefix, step, True)


_logged_fallbacks = set()


def _log_fallback_once(message: str) -> None:
    if message not in _logged_fallbacks:
        _logged_fallbacks.add(message)
        logger.info("%s", message)


def versions_in(store: ModelStore, directory: str) -> List[CheckpointVersion]:
    """The versions of one directory: what its state file names, relocated or not; else what it holds."""
    named = read_state_file(store, directory)
    versions, missing = [], []
    for prefix in named:
        version = check_version(store, prefix)
        if not version.complete and not store.is_readable_file(prefix + ".index"):
            here = store.join(directory, os.path.basename(prefix))
            if here != prefix and store.is_readable_file(here + ".index"):
                _log_fallback_once(f"checkpoint state file in {directory} names {prefix}, which is not there: "
                                   f"using {here} (the tree was copied from where it was written)")
                version = check_version(store, here)
            else:
                missing.append(prefix)
        versions.append(version)
    if named and len(missing) < len(named):
        return versions
    if not named and STATE_FILE in store.list_dir(directory):
        return versions  # one that cannot be read (or names nothing) is reported, not bypassed
    held = [check_version(store, store.join(directory, name[: -len(".index")]))
            for name in store.list_dir(directory) if name.endswith(".index") and not name.startswith(".")]
    held = [v for v in held if v.complete]
    if held:
        why = (f"its state file names only files that are not there ({', '.join(missing[:2])})" if named
               else "it has no checkpoint state file")
        _log_fallback_once(f"{directory}: {why}: offering the complete checkpoints it holds "
                           f"({', '.join(os.path.basename(v.prefix) for v in held)})")
        return held
    return versions


def list_versions(store: ModelStore, checkpoint_dir: str) -> List[CheckpointVersion]:
    """Every version the state files name (or, by the fallbacks above, the directories hold), complete
    or not, oldest step first."""
    # Hidden directories are not runs: `.incremental_checkpoint` holds deltas, not full versions.
    directories = [checkpoint_dir] + [
        store.join(checkpoint_dir, name) for name in store.list_dir(checkpoint_dir)
        if not name.startswith(".") and store.is_dir(store.join(checkpoint_dir, name))]
    versions = [version for d in directories for version in versions_in(store, d)]
    return sorted(versions, key=lambda v: (v.step, v.prefix))


def newest_version(checkpoint_dir: str, store: Optional[ModelStore] = None) -> Optional[CheckpointVersion]:
    """The complete version with the highest step, or None. Incomplete ones are logged and skipped."""
    store = store or LocalModelStore()
    newest = None
    for version in list_versions(store, checkpoint_dir):
        if not version.complete:
            logger.info("skipping incomplete checkpoint %s: %s", version.prefix, version.reason)
        elif newest is None or version.step >= newest.step:
            newest = version
    return newest
