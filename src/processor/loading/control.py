"""The messages the control plane gives the data plane at each step of a version's life, and reads back
(protos/control.proto; the data plane's side is cpp/abi/control_messages.cc): one typed message per
crossing of the language line.

  plan     LoadRequest -> _core.LoadPlan, whose EmbeddingPlan says what the feature store serves
  load     TableSources (the feature store's tables, prepared meanwhile) -> _core.Servable
  restore  RestoreRequest (resource_preserving)
  deltas   VariableList (read once per version) to plan them; Servable.apply_delta
"""
from __future__ import annotations

import dataclasses
from typing import List, Optional

from .. import _core, control_pb2
from ..config import BatchingParameters, ProcessorConfig
from ..errors import ModelLoadError
from ..formats.checkpoint_index import CheckpointIndexError, read_index
from ..session_group import pool_threads


def session_settings(config: ProcessorConfig) -> control_pb2.SessionSettings:
    """The session's threads: the config's settings, with the serving pools sized by the session group."""
    return control_pb2.SessionSettings(
        intra_op_parallelism_threads=config.intra_op_parallelism_threads,
        inter_op_parallelism_threads=pool_threads(config), session_num=config.session_num,
        select_session_policy=config.select_session_policy, use_per_session_threads=config.use_per_session_threads,
        enable_inline_execute=config.enable_inline_execute, model_update_inter_threads=config.model_update_inter_threads)


def checkpoint_tensors(prefix: str, what: str) -> List[control_pb2.SavedTensor]:
    """The tensors of the checkpoint at `prefix` (its index), which the data plane checks against the
    graph before restoring anything; ModelLoadError names `what` when the index cannot be read."""
    try:
        saved = read_index(prefix)
    except CheckpointIndexError as e:
        raise ModelLoadError(f"cannot load model version {what}: {e}") from None
    return [control_pb2.SavedTensor(name=name, dtype=entry.dtype, shape=entry.shape) for name, entry in saved.items()]


def load_request(config: ProcessorConfig, savedmodel_dir: str, checkpoint_prefix: Optional[str] = None,
                 feature_store: Optional[control_pb2.FeatureStore] = None,
                 what: Optional[str] = None) -> control_pb2.LoadRequest:
    """Step 1's request: the local SavedModel, and the checkpoint to restore with its index (read here;
    ModelLoadError names `what` when it cannot be)."""
    request = control_pb2.LoadRequest(savedmodel_dir=savedmodel_dir, signature_name=config.signature_name,
                                      tags=config.saved_model_tags, session=session_settings(config),
                                      strict_signature_name=config.strict_signature_name)
    if config.enable_batching:
        parameters = config.batching_parameters or BatchingParameters()
        request.batching.CopyFrom(control_pb2.Batching(enabled=True, **dataclasses.asdict(parameters)))
    if checkpoint_prefix:
        request.checkpoint_prefix = checkpoint_prefix
        request.checkpoint_tensors.extend(checkpoint_tensors(checkpoint_prefix, what or checkpoint_prefix))
    if feature_store is not None:
        request.feature_store.CopyFrom(feature_store)
    return request


def plan_load(request: control_pb2.LoadRequest) -> _core.LoadPlan:
    """Step 1 (raises _core.LoadError)."""
    return _core.LoadPlan(request.SerializeToString())


def planned_embeddings(plan: _core.LoadPlan) -> List[control_pb2.Embedding]:
    return list(control_pb2.EmbeddingPlan.FromString(plan.embeddings).embeddings)


def restore(servable: _core.Servable, prefix: str, what: str) -> None:
    """Restores the checkpoint at `prefix` into a loaded version, once the data plane has checked that it
    fits the graph (raises ModelLoadError or _core.LoadError)."""
    servable.restore(control_pb2.RestoreRequest(checkpoint_prefix=prefix,
                                                checkpoint_tensors=checkpoint_tensors(prefix, what)).SerializeToString())


def graph_variables(servable: _core.Servable) -> List[control_pb2.Variable]:
    return list(control_pb2.VariableList.FromString(servable.variables()).variables)
