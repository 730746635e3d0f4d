"""Small special-purpose models for the tests."""
from __future__ import annotations

import numpy as np

# alias -> (tf dtype name, numpy dtype, sample values)
ECHO_DTYPES = {
    "float": ("float32", np.float32, [1.5, -2.25, 3.0e38, 0.0]),
    "double": ("float64", np.float64, [1e-300, -2.5, 3.25, 1e300]),
    "int32": ("int32", np.int32, [-2**31, 2**31 - 1, 0, -1]),
    "uint8": ("uint8", np.uint8, [0, 255, 7, 128]),
    "int16": ("int16", np.int16, [-32768, 32767, -1, 0]),
    "int8": ("int8", np.int8, [-128, 127, -1, 5]),
    "int64": ("int64", np.int64, [-2**63, 2**63 - 1, -1, 1234567890123]),
    "bool": ("bool", np.bool_, [True, False, True, True]),
    "string": ("string", object, [b"", b"hello", "\u00e9t\u00e9".encode(), bytes(range(256))]),
}


def save_predict_signature(session, path: str, inputs: dict, outputs: dict, saver=None) -> None:
    """Saves `session`'s graph (and variables) at `path` as a SavedModel tagged "serve" whose
    "serving_default" predict signature maps `inputs` and `outputs` (alias -> tensor)."""
    import tensorflow as tf
    tf1 = tf.compat.v1
    builder = tf1.saved_model.Builder(path)
    signature = tf1.saved_model.signature_def_utils.predict_signature_def(inputs=inputs, outputs=outputs)
    builder.add_meta_graph_and_variables(session, ["serve"], signature_def_map={"serving_default": signature},
                                         saver=saver)
    builder.save()


def build_echo_model(path: str) -> str:
    """A SavedModel whose signature returns each input unchanged: one input per protocol dtype, any shape."""
    import tensorflow as tf
    tf1 = tf.compat.v1
    tf1.disable_eager_execution()
    graph = tf.Graph()
    with graph.as_default():
        inputs, outputs = {}, {}
        for alias, (tf_dtype, _, _) in ECHO_DTYPES.items():
            placeholder = tf1.placeholder(getattr(tf, tf_dtype), shape=None, name=f"in_{alias}")
            inputs[alias] = placeholder
            outputs[alias] = tf.identity(placeholder, name=f"out_{alias}")
        with tf1.Session(graph=graph) as session:
            save_predict_signature(session, path, inputs, outputs)
    return path


def build_lookup_model(path: str, rows: int, dim: int, partitions: int = 1, seed: int = 1,
                       sample_ids=None):
    """A SavedModel that is nothing but a gather: ids -> rows of a [rows, dim] table, saved as one
    checkpoint tensor (in `partitions` slices when > 1). Returns TensorFlow's rows for `sample_ids`,
    when given."""
    import tensorflow as tf
    tf1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default():
        ids = tf1.placeholder(tf.int64, [None], name="ids")
        table = tf1.get_variable("table", [rows, dim], initializer=tf1.random_normal_initializer(seed=seed),
                                 partitioner=tf1.fixed_size_partitioner(partitions) if partitions > 1 else None)
        gathered = tf.identity(tf.nn.embedding_lookup(table, ids), name="rows")
        with tf1.Session(graph=graph) as session:
            session.run(tf1.global_variables_initializer())
            save_predict_signature(session, path, {"ids": ids}, {"rows": gathered}, saver=tf1.train.Saver())
            return None if sample_ids is None else session.run(gathered, {ids: sample_ids})


def build_wide_model(path: str, features: int) -> str:
    """A SavedModel of `features` float inputs, alias "feature_<i>" for placeholder "f<i>": its outputs
    are the inputs stacked in order ("stacked", [batch, features]) and each weighted by its number
    ("weighted", the sum of (i + 1) * feature_i), so that an input bound to the wrong name shows."""
    import tensorflow as tf
    tf1 = tf.compat.v1
    tf1.disable_eager_execution()
    graph = tf.Graph()
    with graph.as_default():
        inputs = {f"feature_{i}": tf1.placeholder(tf.float32, [None], name=f"f{i}") for i in range(features)}
        columns = [inputs[f"feature_{i}"] for i in range(features)]
        stacked = tf.stack(columns, axis=1, name="stacked")
        weighted = tf.add_n([(i + 1.0) * column for i, column in enumerate(columns)], name="weighted")
        with tf1.Session(graph=graph) as session:
            save_predict_signature(session, path, inputs, {"stacked": stacked, "weighted": weighted})
    return path


def build_counting_model(path: str, tag: int) -> str:
    """A SavedModel that counts to its input "n" in a while loop (so a request takes as long as the
    caller asks) and answers "count" (= n) and "tag" (= `tag`, telling versions apart)."""
    import tensorflow as tf
    tf1 = tf.compat.v1
    tf1.disable_eager_execution()
    graph = tf.Graph()
    with graph.as_default():
        n = tf1.placeholder(tf.int64, [], name="n")
        count = tf.identity(tf.while_loop(lambda i: i < n, lambda i: i + 1, [tf.constant(0, tf.int64)])[0], name="count")
        answer_tag = tf.identity(tf.constant(tag, tf.int64), name="tag")
        with tf1.Session(graph=graph) as session:
            save_predict_signature(session, path, {"n": n}, {"count": count, "tag": answer_tag})
    return path


def build_fed_and_fetched_model(path: str) -> str:
    """A signature that returns its input as one output ("echo" = "x", "doubled" = 2x): TensorFlow
    makes no callable for it (a tensor both fed and fetched)."""
    import tensorflow as tf
    tf1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default():
        x = tf1.placeholder(tf.float32, [None], name="x")
        doubled = tf.identity(x * 2.0, name="doubled")
        with tf1.Session(graph=graph) as session:
            save_predict_signature(session, path, {"x": x}, {"echo": x, "doubled": doubled})
    return path


VOCABULARY = ["cars", "books", "games"]


def build_vocabulary_model(path: str, vocabulary_path: str, main_op: bool = True) -> None:
    """A TF1 SavedModel as Estimator exports write it: a tf.compat.v1.feature_column vocabulary file
    (categorical_column_with_vocabulary_file, one OOV bucket) read from `vocabulary_path` at training
    time, the SavedModelBuilder copying it into assets/ and recording it in the legacy
    "saved_model_assets" collection (asset_file_def stays empty; tensorflow/python/saved_model/
    builder_impl.py, _SavedModelBuilder._add_collections / _maybe_save_assets). Outputs: "index" (each
    category's vocabulary index) and "embedding" (its row of a [4, 3] embedding_column table, which the
    feature store can serve). With `main_op`, tables are initialized by the SavedModel's main op, as
    tf.compat.v1.saved_model.main_op.main_op() does; without, by nothing but the table_initializer
    collection."""
    import tensorflow as tf
    tf1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default():
        category = tf1.placeholder(tf.string, [None], name="category")
        column = tf1.feature_column.categorical_column_with_vocabulary_file(
            "category", vocabulary_file=vocabulary_path, vocabulary_size=len(VOCABULARY), num_oov_buckets=1)
        one_hot = tf1.feature_column.input_layer({"category": category}, [tf1.feature_column.indicator_column(column)])
        index = tf.argmax(one_hot, axis=1, name="index")
        embedding = tf1.feature_column.input_layer(
            {"category": category},
            [tf1.feature_column.embedding_column(column, 3, initializer=tf1.random_normal_initializer(seed=4))])
        embedding = tf.identity(embedding, name="embedding")
        with tf1.Session(graph=graph) as session:
            session.run([tf1.global_variables_initializer(), tf1.tables_initializer()])
            builder = tf1.saved_model.Builder(path)
            signature = tf1.saved_model.signature_def_utils.predict_signature_def(
                inputs={"category": category}, outputs={"index": index, "embedding": embedding})
            builder.add_meta_graph_and_variables(
                session, ["serve"], signature_def_map={"serving_default": signature},
                assets_collection=tf1.get_collection(tf1.GraphKeys.ASSET_FILEPATHS),
                main_op=tf1.saved_model.main_op.main_op() if main_op else None, saver=tf1.train.Saver())
            builder.save()


def tensorflow_outputs(savedmodel_dir: str, feeds: dict, outputs=("index", "embedding")) -> dict:
    """What TensorFlow's own SavedModel loader serves for `feeds` (alias -> value)."""
    import tensorflow as tf
    tf1 = tf.compat.v1
    with tf.Graph().as_default() as graph, tf1.Session(graph=graph) as session:
        meta_graph = tf1.saved_model.loader.load(session, ["serve"], savedmodel_dir)
        signature = meta_graph.signature_def["serving_default"]
        return session.run({name: signature.outputs[name].name for name in outputs},
                           {signature.inputs[alias].name: value for alias, value in feeds.items()})


# A Keras 3 model exported with three serving signatures (keras.export.ExportArchive, as Keras users
# export for TF Serving), built in a child process: saving a TF2 SavedModel needs eager execution, which
# other builders here turn off for the whole process. TensorFlow's own answers (the SavedModel reloaded
# with tf.saved_model.load, each signature called) come back beside it in expected.npz.
_KERAS_EXPORT = r"""
import sys
import numpy as np
import tensorflow as tf
import keras

path, expected_path = sys.argv[1], sys.argv[2]
keras.utils.set_random_seed(7)
ids = keras.Input(shape=(), dtype="int64", name="ids")
dense = keras.Input(shape=(3,), dtype="float32", name="dense")
embedding = keras.layers.Embedding(50, 4, embeddings_initializer="uniform", name="embedding")
joined = keras.layers.Concatenate()([embedding(ids), dense])
score = keras.layers.Dense(1, activation="sigmoid", name="score")(joined)
model = keras.Model({"ids": ids, "dense": dense}, {"score": score})
archive = keras.export.ExportArchive()
archive.track(model)
archive.add_endpoint("serve", lambda inputs: model(inputs), input_signature=[{
    "ids": tf.TensorSpec([None], tf.int64, name="ids"), "dense": tf.TensorSpec([None, 3], tf.float32, name="dense")}])
archive.add_endpoint("embed", lambda ids: {"rows": embedding(ids)},
                     input_signature=[tf.TensorSpec([None], tf.int64, name="ids")])
archive.write_out(path, verbose=False)

loaded = tf.saved_model.load(path)
feeds = {"ids": np.array([0, 3, 49, 7, 3, 12, 1, 30], np.int64),
         "dense": np.random.default_rng(1).normal(size=(8, 3)).astype(np.float32)}
expected = dict(feeds)
for name in ("serving_default", "serve"):
    expected[name + "/score"] = loaded.signatures[name](**feeds)["score"].numpy()
expected["embed/rows"] = loaded.signatures["embed"](ids=tf.constant(feeds["ids"]))["rows"].numpy()
np.savez(expected_path, **expected)
"""


def build_keras_export(path: str) -> dict:
    """The Keras export above at `path`; returns its feeds ("ids" [8], "dense" [8, 3]) and TensorFlow's
    answers to them, as "<signature>/<output>" (serving_default/score, serve/score, embed/rows)."""
    import os
    import subprocess
    import sys
    expected_path = path + ".expected.npz"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    subprocess.run([sys.executable, "-c", _KERAS_EXPORT, path, expected_path], check=True, env=env,
                   stdout=subprocess.DEVNULL)
    with np.load(expected_path) as saved:
        return {name: saved[name] for name in saved.files}
