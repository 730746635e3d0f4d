"""protos/control.proto is the one schema of what crosses the language line; the data plane reads and
writes it by hand (cpp/abi/control_messages.cc), refusing fields it does not know. These tests tie the
two: every field of every message the control plane sends is set and must be accepted by the entry point
that reads it, and what the data plane sends back is read by the generated classes with the values
TensorFlow reports."""
from __future__ import annotations

import pytest

from processor import _core, control_pb2
from processor.config import parse_config
from processor.loading import control

OUT_OF_STEP = "control message"  # how the data plane's reader starts a complaint about a message itself


def fill(message, **values):
    """Sets every field of `message` (recursively, one element per repeated field) to a value that is not
    the default, so that each is on the wire; `values` overrides by field name at any depth."""
    for field in message.DESCRIPTOR.fields:
        repeated = field.is_repeated
        if field.name in values:
            value = values[field.name]
            if field.message_type is not None and not repeated:
                getattr(message, field.name).CopyFrom(value)
            elif repeated:
                getattr(message, field.name).extend(value)
            else:
                setattr(message, field.name, value)
        elif field.message_type is not None:
            child = getattr(message, field.name).add() if repeated else getattr(message, field.name)
            fill(child, **values)
        else:
            value = {field.TYPE_STRING: "x", field.TYPE_BOOL: True, field.TYPE_FLOAT: 0.5}.get(field.type, 3)
            if repeated:
                getattr(message, field.name).append(value)
            else:
                setattr(message, field.name, value)
    assert len(message.ListFields()) == len(message.DESCRIPTOR.fields), message.DESCRIPTOR.name
    return message


SESSION = dict(select_session_policy="RR", session_num=2)


def test_every_field_the_control_plane_sends_is_read_by_the_data_plane(rec_model):
    prefix = rec_model.prefixes()[-1]
    request = fill(control_pb2.LoadRequest(), savedmodel_dir=rec_model.savedmodel_dir, signature_name="serving_default",
                   tags=["serve"], checkpoint_prefix=prefix, feature_store_type="local",
                   embedding_names=["user_embedding"], embedding_min_rows=10**9, **SESSION)
    plan = _core.LoadPlan(request.SerializeToString())  # raises on a field the data plane does not know
    assert [e.name for e in control.planned_embeddings(plan)] == ["user_embedding"]

    sources = fill(control_pb2.TableSources(), variable="not_planned")
    with pytest.raises(_core.LoadError) as error:
        plan.load(sources.SerializeToString())
    assert OUT_OF_STEP not in str(error.value) and "'not_planned'" in str(error.value)

    _core.session_config(fill(control_pb2.SessionSettings(), **SESSION).SerializeToString())

    servable = control.plan_load(control.load_request(parse_config({"savedmodel_dir": rec_model.savedmodel_dir}),
                                                      rec_model.savedmodel_dir)).load()
    restore = fill(control_pb2.RestoreRequest(), checkpoint_prefix=prefix,
                   checkpoint_tensors=[control_pb2.SavedTensor(name="user_embedding", dtype=1, shape=[7, 8])])
    with pytest.raises(_core.LoadError) as error:
        servable.restore(restore.SerializeToString())
    assert OUT_OF_STEP not in str(error.value)
    assert "variable 'user_embedding' has shape [7,8] in the checkpoint but [1000,8] in the graph" in str(error.value)


def test_a_field_the_data_plane_does_not_know_is_refused_by_name():
    known = control_pb2.SessionSettings(session_num=1).SerializeToString()
    unknown_field = bytes([15 << 3 | 0, 1])  # field 15, varint 1
    with pytest.raises(_core.LoadError, match=f"{OUT_OF_STEP} SessionSettings: field 15 is unknown to this data plane"):
        _core.session_config(known + unknown_field)
    wrong_type = bytes([1 << 3 | 2, 1, 0])  # intra_op_parallelism_threads sent as bytes
    with pytest.raises(_core.LoadError, match=f"{OUT_OF_STEP} SessionSettings: field 1 has wire type 2, not 0"):
        _core.session_config(wrong_type)
    with pytest.raises(_core.LoadError, match=f"{OUT_OF_STEP} LoadRequest: it is malformed"):
        _core.LoadPlan(bytes([1 << 3 | 2, 50]))  # a string longer than the message


def test_the_graphs_variables_come_back_as_tensorflow_saves_them(rec_model):
    import tensorflow as tf
    servable = control.plan_load(control.load_request(parse_config({"savedmodel_dir": rec_model.savedmodel_dir}),
                                                      rec_model.savedmodel_dir)).load()
    message = control_pb2.VariableList.FromString(servable.variables())
    reader = tf.train.load_checkpoint(rec_model.prefixes()[-1])
    saved_shapes, saved_dtypes = reader.get_variable_to_shape_map(), reader.get_variable_to_dtype_map()
    variables = {v.name: v for v in message.variables}
    assert variables and set(variables) <= set(saved_shapes)
    for name, variable in variables.items():
        assert variable.known_rank and list(variable.shape) == saved_shapes[name], name
        assert variable.dtype == saved_dtypes[name].as_datatype_enum, name
        assert variable.saved_name == ""
    assert variables["user_embedding"].shape == [1000, 8]
