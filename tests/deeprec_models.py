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

from processor.training import save_tensors

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
    partitions: int = 1                 # parts of the EV, ids routed by id % partitions

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
        return reference_prob(self.weights, self.rows(batch["user_id"]), batch["dense"], self.partitions)


def handles(partitions: int) -> list:
    """The EV's variables: one, or its parts as a partitioner names them."""
    return ["user_emb"] if partitions == 1 else [f"user_emb/part_{i}" for i in range(partitions)]


def _graph(tf, tf1, partitions: int = 1):
    """The ordinary model: prob = sigmoid(fc([embedding(user_id), dense])). Returns its tensors. With
    partitions, ids go to part id % partitions, each part gathering the raw ids (how a partitioned EV is
    looked up: its keys are ids, not row numbers)."""
    tf1.set_random_seed(7)
    user_id = tf1.placeholder(tf.int64, [None], name="user_id")
    dense = tf1.placeholder(tf.float32, [None, 4], name="dense")
    if partitions == 1:
        table = tf1.get_variable("user_emb", [64, DIM], use_resource=True)
        embedded = tf.nn.embedding_lookup(table, user_id)
    else:
        parts = [tf1.get_variable(name, [64, DIM], use_resource=True) for name in handles(partitions)]
        assignment = tf.cast(tf.math.floormod(user_id, partitions), tf.int32)
        ids = tf.dynamic_partition(user_id, assignment, partitions)
        positions = tf.dynamic_partition(tf.range(tf.size(user_id)), assignment, partitions)
        embedded = tf.dynamic_stitch(positions, [tf.gather(part, i) for part, i in zip(parts, ids)])
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


def reference_prob(weights: dict, rows: np.ndarray, dense: np.ndarray, partitions: int = 1) -> np.ndarray:
    """The ordinary model's prob through TensorFlow, its gather's output fed `rows`."""
    import tensorflow as tf
    tf1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default():
        user_id, dense_input, embedded, prob, _ = _graph(tf, tf1, partitions)
        with tf1.Session(graph=graph) as session:
            for name, value in weights.items():
                variable = [v for v in tf1.global_variables() if v.op.name == name][0]
                variable.load(value, session)
            return session.run(prob, {embedded: rows, dense_input: dense,
                                      user_id: np.zeros(len(dense), np.int64)})


def _to_deeprec_graph(graph_def, tf, default_value_tensor: bool, names: list) -> None:
    """Rewrites the ordinary model's GraphDef in place into the one DeepRec's EV API builds, for the EV
    variables `names` (one EV, or the parts of a partitioned one)."""
    from tensorflow.core.framework import attr_value_pb2, node_def_pb2, tensor_shape_pb2
    from tensorflow.core.framework import types_pb2
    shape_dim = tensor_shape_pb2.TensorShapeProto(dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=DIM)])
    nodes = {n.name: n for n in graph_def.node}
    for name in names:
        handle = nodes[name]
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
    # Every read of a handle: the lookup's gathers become DeepRec's.
    for node in graph_def.node:
        handle = next((h for h in names if node.input and node.input[0] in (h, h + "/Read/ReadVariableOp")), None)
        if node.op == "ResourceGather" and handle is not None:
            ids = node.input[1]
            controls = [i for i in node.input if i.startswith("^")]
            del node.input[:]
            defaults = "user_emb/per_id_default" if default_value_tensor else "user_emb/default_value"
            node.input.extend([handle, ids, defaults] + controls)
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
    inits = [add(f"{name}/InitializeKvVariableOp", "InitializeKvVariableOp",
                 [name, name, "user_emb/Initializer/random_normal", "user_emb/empty_key"], **ev_attrs)
             for name in names]
    for name in names:
        add(f"{name}/IsInitialized/KvVarIsInitializedOp", "KvVarIsInitializedOp", [name], **common)
    # The ordinary variables' initializers, reads and restores go: DeepRec's EV has none of them.
    producer = lambda i: i.lstrip("^").split(":")[0]  # noqa: E731
    ordinary = {n.name for n in graph_def.node
                if n.name not in names and any(n.name.startswith(h + "/") for h in names) and n.op in
                ("AssignVariableOp", "ReadVariableOp", "VarIsInitializedOp")}
    restore_assigns = {n.name for n in graph_def.node
                       if n.op == "AssignVariableOp" and any(h in n.input for h in names)}
    gone = ordinary | restore_assigns
    read_of = {n: next(h for h in names if n.startswith(h + "/")) for n in ordinary}
    for grew in iter(lambda: True, False):  # what read a gone node by data goes too; SaveV2 saves the handle
        grew = False
        for node in graph_def.node:
            if node.name in gone:
                continue
            reads_gone = [k for k, i in enumerate(node.input) if not i.startswith("^") and producer(i) in gone]
            if node.op == "SaveV2":
                for k in reads_gone:
                    node.input[k] = read_of.get(producer(node.input[k]), names[0])
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
    # Restoring each EV: KvResourceImportV2 under the saver's restore_all; saving it: SaveV2 takes its
    # handle (has_ev); save_incr_model=True adds IncrSave / IncrRestore.
    for i, name in enumerate(names):
        add(f"save/KvResourceImportV2_{i}", "KvResourceImportV2",
            ["save/Const", name, name, "user_emb/Initializer/random_normal", f"save/EvTensorName_{i}",
             "user_emb/empty_key"], **ev_attrs)
        add(f"save/EvTensorName_{i}", "Const", dtype=type_attr(types_pb2.DT_STRING),
            value=attr_value_pb2.AttrValue(tensor=tf.make_tensor_proto(name.encode())))
        nodes["save/restore_all"].input.append(f"^save/KvResourceImportV2_{i}")
        add(f"incr_save/IncrSave_{i}", "IncrSave", ["save/Const", name], **common)
        add(f"incr_restore/IncrRestore_{i}", "IncrRestore", ["save/Const", name], **common)
    save = next(n for n in graph_def.node if n.op == "SaveV2")
    save.attr["has_ev"].CopyFrom(attr_value_pb2.AttrValue(b=True))
    save.attr["ev_key_types"].CopyFrom(attr_value_pb2.AttrValue(
        list=attr_value_pb2.AttrValue.ListValue(type=[types_pb2.DT_INT64] * len(names))))
    init = next(n for n in graph_def.node if n.name == "init")
    init.input.extend("^" + op.name for op in inits)


def save_deeprec_checkpoint(prefix: str, weights: dict, keys: np.ndarray, values: np.ndarray,
                            partitions: int = 1) -> None:
    """The checkpoint DeepRec saves for the dense variables and the EV (ExportToCkpt's nine tensors per
    EV or part, a part holding the ids routed to it; keys grouped by key % 1000 as DeepRec's save orders
    them)."""
    tensors = dict(weights)
    for part, name in enumerate(handles(partitions)):
        mine = keys % partitions == part
        tensors.update(_ev_tensors(name, keys[mine], values[mine]))
    save_tensors(prefix, tensors)  # TensorFlow's own SaveV2


def _ev_tensors(name: str, keys: np.ndarray, values: np.ndarray) -> dict:
    order = np.argsort(keys % SAVED_PARTITIONS, kind="stable")
    keys, values = keys[order], values[order]
    offsets = np.zeros(SAVED_PARTITIONS + 1, np.int32)
    np.add.at(offsets, (keys % SAVED_PARTITIONS) + 1, 1)
    return {
        f"{name}-keys": keys.astype(np.int64), f"{name}-values": values.astype(np.float32),
        f"{name}-versions": np.zeros(0, np.int64), f"{name}-freqs": np.zeros(0, np.int64),
        f"{name}-keys_filtered": np.zeros(0, np.int64), f"{name}-versions_filtered": np.zeros(0, np.int64),
        f"{name}-freqs_filtered": np.zeros(0, np.int64),
        f"{name}-partition_offset": np.cumsum(offsets).astype(np.int32),
        f"{name}-partition_filter_offset": np.zeros(SAVED_PARTITIONS + 1, np.int32),
    }


def save_deeprec_delta(model: DeepRecModel, step: int, keys: np.ndarray, values: np.ndarray, weights: dict) -> str:
    """DeepRec's incremental checkpoint of the EV's changed rows and the dense variables, whole
    (incremental_saver.py: <run dir>/.incremental_checkpoint/incremental_model.ckpt-<step>, its state
    file naming it by absolute path; per EV <name>-sparse_incr_keys, -sparse_incr_values,
    -sparse_incr_versions, -sparse_incr_freqs and -incr_partition_offset). `model` then holds the rows
    and weights after it."""
    directory = os.path.join(model.checkpoint_dir, ".incremental_checkpoint")
    os.makedirs(directory, exist_ok=True)
    prefix = os.path.join(directory, f"incremental_model.ckpt-{step}")
    tensors = dict(weights)
    for part, name in enumerate(handles(model.partitions)):
        mine = keys % model.partitions == part
        offsets = np.zeros(SAVED_PARTITIONS + 1, np.int32)
        np.add.at(offsets, (keys[mine] % SAVED_PARTITIONS) + 1, 1)
        tensors.update({f"{name}-sparse_incr_keys": keys[mine].astype(np.int64),
                        f"{name}-sparse_incr_values": values[mine].astype(np.float32),
                        f"{name}-sparse_incr_versions": np.full(int(mine.sum()), step, np.int64),
                        f"{name}-sparse_incr_freqs": np.ones(int(mine.sum()), np.int64),
                        f"{name}-incr_partition_offset": np.cumsum(offsets).astype(np.int32)})
    save_tensors(prefix, tensors)  # TensorFlow's own SaveV2
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


def build_deeprec_model(root: str, seed: int = 0, default_value_tensor: bool = False,
                        partitions: int = 1) -> DeepRecModel:
    """A DeepRec-format SavedModel (root/saved_model) and checkpoint (root/checkpoints/model.ckpt-1);
    with `default_value_tensor`, its gather reads defaults from a per-id tensor; with `partitions`, the
    EV is that many parts (user_emb/part_<i>), each holding the ids id % partitions routes to it."""
    import tensorflow as tf
    from tensorflow.core.protobuf import saved_model_pb2
    tf1 = tf.compat.v1
    rng = np.random.default_rng(seed)
    savedmodel_dir = os.path.join(root, "saved_model")
    graph = tf.Graph()
    with graph.as_default():
        user_id, dense, _, prob, initial = _graph(tf, tf1, partitions)
        with tf1.Session(graph=graph) as session:
            session.run(tf1.global_variables_initializer())
            default_rows = session.run(initial)
            weights = {v.op.name: session.run(v) for v in tf1.global_variables()
                       if v.op.name not in handles(partitions)}
            from model_builders import save_predict_signature
            save_predict_signature(session, savedmodel_dir, {"user_id": user_id, "dense": dense}, {"prob": prob},
                                   saver=tf1.train.Saver(sharded=False))
    path = os.path.join(savedmodel_dir, "saved_model.pb")
    saved_model = saved_model_pb2.SavedModel.FromString(open(path, "rb").read())
    _to_deeprec_graph(saved_model.meta_graphs[0].graph_def, tf, default_value_tensor, handles(partitions))
    open(path, "wb").write(saved_model.SerializeToString())

    step = 2 if partitions == 1 else 1  # even ids (odd ones all missing), or ids of every part
    keys = np.sort(rng.choice(np.arange(0, 2000, step), 40, replace=False)).astype(np.int64)
    values = rng.standard_normal((len(keys), DIM)).astype(np.float32)
    weights = {name: rng.standard_normal(value.shape).astype(np.float32) for name, value in weights.items()}
    checkpoint_dir = os.path.join(root, "checkpoints")
    os.makedirs(checkpoint_dir, exist_ok=True)
    prefix = os.path.join(checkpoint_dir, "model.ckpt-1")
    save_deeprec_checkpoint(prefix, weights, keys, values, partitions)
    save_deeprec_checkpoint(os.path.join(savedmodel_dir, "variables", "variables"), weights, keys, values, partitions)
    with open(os.path.join(checkpoint_dir, "checkpoint"), "w") as f:
        f.write(f'model_checkpoint_path: "{prefix}"\nall_model_checkpoint_paths: "{prefix}"\n')
    return DeepRecModel(savedmodel_dir, checkpoint_dir, prefix, keys, values, default_rows, weights,
                        default_value_tensor, partitions)
