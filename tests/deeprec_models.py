"""DeepRec-format artefacts, written without DeepRec (no DeepRec build runs here): a SavedModel whose
embedding is an EmbeddingVariable and the checkpoint DeepRec would save for it.

How each part follows DeepRec's source (DeepRec-AI/DeepRec):
- the graph's EV ops and their attributes: tensorflow/core/ops/kv_variable_ops.cc (KvVarHandleOp with
  shape [dim] and Tkeys; KvResourceGather(resource, indices, default_value) with
  is_use_default_value_tensor/is_inference; InitializeKvVariableOp(resource_self, resource_primary,
  value [default_value_dim, dim], empty_key) with default_value_dim; KvVarIsInitializedOp;
  KvResourceImportV2(prefix, resource_self, resource_primary, value, tensor_names, empty_key)), the
  Python side that builds them: tensorflow/python/ops/kv_variable_ops.py; SaveV2 saving an EV handle
  with has_ev / ev_key_types; IncrSave/IncrRestore of save_incr_model=True exports
  (tensorflow/python/training/incremental_saver.py). NodeDefs need no registered op until imported.
- the checkpoint: tensorflow/core/framework/embedding/embedding_var_ckpt_data.cc (ExportToCkpt): per
  EV <name>-keys, -values [n, dim], -versions, -freqs, -keys_filtered, -versions_filtered,
  -freqs_filtered, -partition_offset and -partition_filter_offset (int32, 1001 entries: keys grouped by
  key % 1000), written here with TensorFlow's own SaveV2.
- what a lookup reads: an id the EV holds reads its row; another reads row (id % default_value_dim) of
  the initializer's value (kv_variable_ops.cc, KvResourceGatherOp with is_use_default_value_tensor
  false).

The same model built from ordinary variables is the reference: its gather's output is fed the rows an EV
lookup gives, and TensorFlow computes the rest.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

DIM = 8
DEFAULT_VALUE_DIM = 16
PER_ID_DEFAULT_SCALE = 0.001  # with is_use_default_value_tensor: id i's default row is i * this, everywhere
SAVED_PARTITIONS = 1000  # DeepRec's kSavedPartitionNum


@dataclass
class DeepRecModel:
    savedmodel_dir: str
    checkpoint_dir: str
    prefix: str
    keys: np.ndarray        # the ids the EV holds
    values: np.ndarray      # their rows
    default_rows: np.ndarray  # [DEFAULT_VALUE_DIM, DIM], the initializer's value
    weights: dict           # the dense variables' values
    default_value_tensor: bool = False  # the gather's defaults come from its per-id input

    def rows(self, ids: np.ndarray) -> np.ndarray:
        """What DeepRec's lookup reads for `ids`."""
        held = {int(k): i for i, k in enumerate(self.keys)}

        def missing(i: int) -> np.ndarray:
            if self.default_value_tensor:
                return np.full(DIM, np.float32(i) * np.float32(PER_ID_DEFAULT_SCALE), np.float32)
            return self.default_rows[i % DEFAULT_VALUE_DIM]
        return np.stack([self.values[held[int(i)]] if int(i) in held else missing(int(i))
                         for i in ids.reshape(-1)]).reshape(ids.shape + (DIM,))

    def expected(self, batch: dict) -> np.ndarray:
        """TensorFlow's prob for `batch` on the ordinary-variable model with the EV's rows."""
        return reference_prob(self.weights, self.rows(batch["user_id"]), batch["dense"])


def _graph(tf, tf1):
    """The ordinary model: prob = sigmoid(fc([embedding(user_id), dense])). Returns its tensors."""
    tf1.set_random_seed(7)
    user_id = tf1.placeholder(tf.int64, [None], name="user_id")
    dense = tf1.placeholder(tf.float32, [None, 4], name="dense")
    table = tf1.get_variable("user_emb", [64, DIM], use_resource=True)
    embedded = tf.nn.embedding_lookup(table, user_id)
    kernel = tf1.get_variable("fc/kernel", [DIM + 4, 1], use_resource=True)
    bias = tf1.get_variable("fc/bias", [1], use_resource=True)
    logits = tf.matmul(tf.concat([embedded, dense], axis=1), kernel) + bias
    prob = tf.identity(tf.sigmoid(tf.reshape(logits, [-1])), name="prob")
    # The EV's initializer value, [default_value_dim, dim], seeded: DeepRec runs it at load to make the
    # default rows, and so does the feature store.
    initial = tf.random.normal([DEFAULT_VALUE_DIM, DIM], seed=11, name="user_emb/Initializer/random_normal")
    # A per-id default tensor ([n, dim]), what a gather with is_use_default_value_tensor reads for ids
    # the EV lacks.
    tf.multiply(tf.cast(tf.tile(tf.expand_dims(user_id, 1), [1, DIM]), tf.float32), PER_ID_DEFAULT_SCALE,
                name="user_emb/per_id_default")
    return user_id, dense, embedded, prob, initial


def reference_prob(weights: dict, rows: np.ndarray, dense: np.ndarray) -> np.ndarray:
    """The ordinary model's prob through TensorFlow, its gather's output fed `rows`."""
    import tensorflow as tf
    tf1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default():
        user_id, dense_input, embedded, prob, _ = _graph(tf, tf1)
        with tf1.Session(graph=graph) as session:
            for name, value in weights.items():
                variable = [v for v in tf1.global_variables() if v.op.name == name][0]
                variable.load(value, session)
            return session.run(prob, {embedded: rows, dense_input: dense,
                                      user_id: np.zeros(len(dense), np.int64)})


def _to_deeprec_graph(graph_def, tf, default_value_tensor: bool) -> None:
    """Rewrites the ordinary model's GraphDef in place into the one DeepRec's EV API builds."""
    from tensorflow.core.framework import attr_value_pb2, node_def_pb2, tensor_shape_pb2
    from tensorflow.core.framework import types_pb2
    shape_dim = tensor_shape_pb2.TensorShapeProto(dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=DIM)])
    nodes = {n.name: n for n in graph_def.node}
    handle = nodes["user_emb"]
    handle.op = "KvVarHandleOp"
    for key in list(handle.attr):
        if key not in ("container", "shared_name", "dtype"):
            del handle.attr[key]
    handle.attr["shape"].CopyFrom(attr_value_pb2.AttrValue(shape=shape_dim))
    handle.attr["Tkeys"].CopyFrom(attr_value_pb2.AttrValue(type=types_pb2.DT_INT64))

    def add(name, op, inputs=(), **attrs):
        node = node_def_pb2.NodeDef(name=name, op=op, input=list(inputs))
        for key, value in attrs.items():
            node.attr[key].CopyFrom(value)
        graph_def.node.append(node)
        return node

    type_attr = lambda t: attr_value_pb2.AttrValue(type=t)  # noqa: E731
    common = {"dtype": type_attr(types_pb2.DT_FLOAT), "Tkeys": type_attr(types_pb2.DT_INT64)}
    const_i64 = lambda v: attr_value_pb2.AttrValue(tensor=tf.make_tensor_proto(np.int64(v)))  # noqa: E731
    add("user_emb/empty_key", "Const", value=const_i64(-1), dtype=type_attr(types_pb2.DT_INT64))
    add("user_emb/default_value", "Const", dtype=type_attr(types_pb2.DT_FLOAT),
        value=attr_value_pb2.AttrValue(tensor=tf.make_tensor_proto(np.zeros(DIM, np.float32))))
    # Every read of the handle: the embedding_lookup's gather becomes DeepRec's.
    for node in graph_def.node:
        if node.op == "ResourceGather" and node.input[0] in ("user_emb", "user_emb/Read/ReadVariableOp"):
            ids = node.input[1]
            controls = [i for i in node.input if i.startswith("^")]
            del node.input[:]
            defaults = "user_emb/per_id_default" if default_value_tensor else "user_emb/default_value"
            node.input.extend(["user_emb", ids, defaults] + controls)
            node.op = "KvResourceGather"
            for key in list(node.attr):
                del node.attr[key]
            node.attr["dtype"].CopyFrom(common["dtype"])
            node.attr["Tkeys"].CopyFrom(common["Tkeys"])
            node.attr["is_use_default_value_tensor"].CopyFrom(attr_value_pb2.AttrValue(b=default_value_tensor))
            node.attr["validate_indices"].CopyFrom(attr_value_pb2.AttrValue(b=True))
            node.attr["is_inference"].CopyFrom(attr_value_pb2.AttrValue(b=False))
    ev_attrs = dict(common, shape=attr_value_pb2.AttrValue(shape=shape_dim),
                    counter_type=type_attr(types_pb2.DT_INT64),
                    default_value_dim=attr_value_pb2.AttrValue(i=DEFAULT_VALUE_DIM),
                    slot_num=attr_value_pb2.AttrValue(i=0), ht_partition_num=attr_value_pb2.AttrValue(i=1000),
                    storage_type=attr_value_pb2.AttrValue(i=1))
    init = add("user_emb/InitializeKvVariableOp", "InitializeKvVariableOp",
               ["user_emb", "user_emb", "user_emb/Initializer/random_normal", "user_emb/empty_key"], **ev_attrs)
    add("user_emb/IsInitialized/KvVarIsInitializedOp", "KvVarIsInitializedOp", ["user_emb"], **common)
    # The ordinary variable's initializer, reads and restore of user_emb go: DeepRec's EV has none of them.
    ordinary = {n.name for n in graph_def.node
                if n.name != "user_emb" and n.name.startswith("user_emb/") and n.op in
                ("AssignVariableOp", "ReadVariableOp", "VarIsInitializedOp")}
    restore_assigns = {n.name for n in graph_def.node if n.op == "AssignVariableOp" and "user_emb" in n.input}
    gone = ordinary | restore_assigns
    producer = lambda i: i.lstrip("^").split(":")[0]  # noqa: E731
    for grew in iter(lambda: True, False):  # what read a gone node by data goes too; SaveV2 saves the handle
        grew = False
        for node in graph_def.node:
            if node.name in gone:
                continue
            reads_gone = [k for k, i in enumerate(node.input) if not i.startswith("^") and producer(i) in gone]
            if node.op == "SaveV2":
                for k in reads_gone:
                    node.input[k] = "user_emb"
            elif reads_gone:
                gone.add(node.name)
                grew = True
        if not grew:
            break
    kept = [n for n in graph_def.node if n.name not in gone]
    del graph_def.node[:]
    graph_def.node.extend(kept)
    for node in graph_def.node:
        controls = [i for i in node.input if i.startswith("^") and i[1:] in gone]
        for control in controls:
            node.input.remove(control)
    nodes = {n.name: n for n in graph_def.node}
    # Restoring the EV: KvResourceImportV2 under the saver's restore_all; saving it: SaveV2 takes its
    # handle (has_ev); save_incr_model=True adds IncrSave / IncrRestore.
    add("save/KvResourceImportV2", "KvResourceImportV2",
        ["save/Const", "user_emb", "user_emb", "user_emb/Initializer/random_normal", "save/EvTensorName",
         "user_emb/empty_key"], **ev_attrs)
    add("save/EvTensorName", "Const", dtype=type_attr(types_pb2.DT_STRING),
        value=attr_value_pb2.AttrValue(tensor=tf.make_tensor_proto(b"user_emb")))
    nodes["save/restore_all"].input.append("^save/KvResourceImportV2")
    save = next(n for n in graph_def.node if n.op == "SaveV2")
    save.attr["has_ev"].CopyFrom(attr_value_pb2.AttrValue(b=True))
    save.attr["ev_key_types"].CopyFrom(attr_value_pb2.AttrValue(
        list=attr_value_pb2.AttrValue.ListValue(type=[types_pb2.DT_INT64])))
    add("incr_save/IncrSave", "IncrSave", ["save/Const", "user_emb"], **common)
    add("incr_restore/IncrRestore", "IncrRestore", ["save/Const", "user_emb"], **common)
    nodes["init"] = next(n for n in graph_def.node if n.name == "init")
    nodes["init"].input.append("^" + init.name)


def save_deeprec_checkpoint(prefix: str, weights: dict, keys: np.ndarray, values: np.ndarray,
                            name: str = "user_emb") -> None:
    """The checkpoint DeepRec saves for the dense variables and the EV `name` (ExportToCkpt's nine
    tensors; keys grouped by key % 1000 as DeepRec's partitioned save orders them)."""
    import tensorflow as tf
    order = np.argsort(keys % SAVED_PARTITIONS, kind="stable")
    keys, values = keys[order], values[order]
    offsets = np.zeros(SAVED_PARTITIONS + 1, np.int32)
    np.add.at(offsets, (keys % SAVED_PARTITIONS) + 1, 1)
    tensors = dict(weights)
    tensors.update({
        f"{name}-keys": keys.astype(np.int64), f"{name}-values": values.astype(np.float32),
        f"{name}-versions": np.zeros(0, np.int64), f"{name}-freqs": np.zeros(0, np.int64),
        f"{name}-keys_filtered": np.zeros(0, np.int64), f"{name}-versions_filtered": np.zeros(0, np.int64),
        f"{name}-freqs_filtered": np.zeros(0, np.int64),
        f"{name}-partition_offset": np.cumsum(offsets).astype(np.int32),
        f"{name}-partition_filter_offset": np.zeros(SAVED_PARTITIONS + 1, np.int32),
    })
    names = sorted(tensors)
    graph = tf.Graph()
    with graph.as_default():
        save = tf.raw_ops.SaveV2(prefix=prefix, tensor_names=names, shape_and_slices=[""] * len(names),
                                 tensors=[tf.constant(tensors[n]) for n in names])
        with tf.compat.v1.Session(graph=graph) as session:
            session.run(save)


def save_deeprec_delta(model: DeepRecModel, step: int, keys: np.ndarray, values: np.ndarray, weights: dict,
                       name: str = "user_emb") -> str:
    """DeepRec's incremental checkpoint of the EV's changed rows and the dense variables, whole
    (incremental_saver.py: <run dir>/.incremental_checkpoint/incremental_model.ckpt-<step>, its state
    file naming it by absolute path; per EV <name>-sparse_incr_keys, -sparse_incr_values,
    -sparse_incr_versions, -sparse_incr_freqs and -incr_partition_offset). `model` then holds the rows
    and weights after it."""
    import tensorflow as tf
    directory = os.path.join(model.checkpoint_dir, ".incremental_checkpoint")
    os.makedirs(directory, exist_ok=True)
    prefix = os.path.join(directory, f"incremental_model.ckpt-{step}")
    offsets = np.zeros(SAVED_PARTITIONS + 1, np.int32)
    np.add.at(offsets, (keys % SAVED_PARTITIONS) + 1, 1)
    tensors = dict(weights)
    tensors.update({f"{name}-sparse_incr_keys": keys.astype(np.int64),
                    f"{name}-sparse_incr_values": values.astype(np.float32),
                    f"{name}-sparse_incr_versions": np.full(len(keys), step, np.int64),
                    f"{name}-sparse_incr_freqs": np.ones(len(keys), np.int64),
                    f"{name}-incr_partition_offset": np.cumsum(offsets).astype(np.int32)})
    names = sorted(tensors)
    graph = tf.Graph()
    with graph.as_default():
        save = tf.raw_ops.SaveV2(prefix=prefix, tensor_names=names, shape_and_slices=[""] * len(names),
                                 tensors=[tf.constant(tensors[n]) for n in names])
        with tf.compat.v1.Session(graph=graph) as session:
            session.run(save)
    with open(os.path.join(directory, "checkpoint.tmp"), "w") as f:
        f.write(f'model_checkpoint_path: "{prefix}"\nall_model_checkpoint_paths: "{prefix}"\n')
    os.replace(os.path.join(directory, "checkpoint.tmp"), os.path.join(directory, "checkpoint"))
    held = {int(k): i for i, k in enumerate(model.keys)}
    all_keys, all_values = list(model.keys), list(model.values)
    for key, row in zip(keys, values):
        if int(key) in held:
            all_values[held[int(key)]] = row
        else:
            all_keys.append(key)
            all_values.append(row)
    model.keys, model.values = np.array(all_keys, np.int64), np.array(all_values, np.float32)
    model.weights = dict(weights)
    return prefix


def build_deeprec_model(root: str, seed: int = 0, default_value_tensor: bool = False) -> DeepRecModel:
    """A DeepRec-format SavedModel (root/saved_model) and checkpoint (root/checkpoints/model.ckpt-1);
    with `default_value_tensor`, its gather reads defaults from a per-id tensor."""
    import tensorflow as tf
    from tensorflow.core.protobuf import saved_model_pb2
    tf1 = tf.compat.v1
    rng = np.random.default_rng(seed)
    savedmodel_dir = os.path.join(root, "saved_model")
    graph = tf.Graph()
    with graph.as_default():
        user_id, dense, _, prob, initial = _graph(tf, tf1)
        with tf1.Session(graph=graph) as session:
            session.run(tf1.global_variables_initializer())
            default_rows = session.run(initial)
            weights = {v.op.name: session.run(v) for v in tf1.global_variables() if v.op.name != "user_emb"}
            from model_builders import save_predict_signature
            save_predict_signature(session, savedmodel_dir, {"user_id": user_id, "dense": dense}, {"prob": prob},
                                   saver=tf1.train.Saver(sharded=False))
    path = os.path.join(savedmodel_dir, "saved_model.pb")
    saved_model = saved_model_pb2.SavedModel.FromString(open(path, "rb").read())
    _to_deeprec_graph(saved_model.meta_graphs[0].graph_def, tf, default_value_tensor)
    open(path, "wb").write(saved_model.SerializeToString())

    keys = np.sort(rng.choice(np.arange(0, 2000, 2), 40, replace=False)).astype(np.int64)  # even ids, some held
    values = rng.standard_normal((len(keys), DIM)).astype(np.float32)
    weights = {name: rng.standard_normal(value.shape).astype(np.float32) for name, value in weights.items()}
    checkpoint_dir = os.path.join(root, "checkpoints")
    os.makedirs(checkpoint_dir, exist_ok=True)
    prefix = os.path.join(checkpoint_dir, "model.ckpt-1")
    save_deeprec_checkpoint(prefix, weights, keys, values)
    save_deeprec_checkpoint(os.path.join(savedmodel_dir, "variables", "variables"), weights, keys, values)
    with open(os.path.join(checkpoint_dir, "checkpoint"), "w") as f:
        f.write(f'model_checkpoint_path: "{prefix}"\nall_model_checkpoint_paths: "{prefix}"\n')
    return DeepRecModel(savedmodel_dir, checkpoint_dir, prefix, keys, values, default_rows, weights,
                        default_value_tensor)
