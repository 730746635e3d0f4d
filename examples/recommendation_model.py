"""A small recommendation model, built with TensorFlow, to serve with Processor.

Features: int64 user and item ids through embedding tables, a string category through a vocabulary
table (so the SavedModel has a table initializer), and dense float features; an MLP on top. Written the
way DeepRec/TF1 training jobs write models: a SavedModel (graph + signature `serving_default`) and a
checkpoint directory a tf.compat.v1 Saver keeps adding versions to.

    python examples/recommendation_model.py OUT_DIR [--num-items N]   # OUT_DIR/saved_model, OUT_DIR/checkpoints
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Dict, List

import numpy as np

NUM_USERS = 1000
NUM_ITEMS = 5000
EMBEDDING_DIM = 8
DENSE_DIM = 4
CATEGORIES = ["books", "games", "music", "sports", "travel"]


@dataclass
class ModelDirs:
    savedmodel_dir: str
    checkpoint_dir: str


def _dense_layer(x, units: int, name: str, activation=None):
    import tensorflow as tf
    tf1 = tf.compat.v1
    with tf1.variable_scope(name):
        kernel = tf1.get_variable("kernel", [x.shape[1], units], initializer=tf1.glorot_uniform_initializer())
        bias = tf1.get_variable("bias", [units], initializer=tf1.constant_initializer(0.01))
        y = tf.matmul(x, kernel) + bias
        return activation(y) if activation else y


class RecommendationModel:
    """The graph, a session and a saver: train steps, save versions, and compute reference outputs."""

    def __init__(self, seed: int = 7, hidden_units=(32, 16), num_items: int = NUM_ITEMS, max_to_keep=20):
        """max_to_keep: checkpoints the Saver keeps (None: all). It deletes older ones wherever it wrote them."""
        import tensorflow as tf
        self.tf = tf
        tf1 = tf.compat.v1
        tf1.disable_eager_execution()  # TF1 graph mode, as DeepRec training jobs run
        self.graph = tf.Graph()
        with self.graph.as_default():
            tf1.set_random_seed(seed)
            self.user_id = tf1.placeholder(tf.int64, [None], name="user_id")
            self.item_id = tf1.placeholder(tf.int64, [None], name="item_id")
            self.category = tf1.placeholder(tf.string, [None], name="category")
            self.dense = tf1.placeholder(tf.float32, [None, DENSE_DIM], name="dense")
            self.global_step = tf1.train.get_or_create_global_step()
            user_table = tf1.get_variable("user_embedding", [NUM_USERS, EMBEDDING_DIM],
                                          initializer=tf1.random_normal_initializer(stddev=0.1))
            self.num_items = num_items
            item_table = tf1.get_variable("item_embedding", [num_items, EMBEDDING_DIM],
                                          initializer=tf1.random_normal_initializer(stddev=0.1))
            category_table = tf1.get_variable("category_embedding", [len(CATEGORIES) + 1, EMBEDDING_DIM],
                                              initializer=tf1.random_normal_initializer(stddev=0.1))
            vocabulary = tf.lookup.StaticHashTable(
                tf.lookup.KeyValueTensorInitializer(tf.constant(CATEGORIES), tf.range(len(CATEGORIES), dtype=tf.int64)),
                default_value=len(CATEGORIES))  # unknown categories share the last row
            features = tf.concat([
                tf.nn.embedding_lookup(user_table, tf.math.floormod(self.user_id, NUM_USERS)),
                tf.nn.embedding_lookup(item_table, tf.math.floormod(self.item_id, num_items)),
                tf.nn.embedding_lookup(category_table, vocabulary.lookup(self.category)),
                self.dense], axis=1)
            hidden = features
            for index, units in enumerate(hidden_units):
                hidden = _dense_layer(hidden, units, f"fc{index + 1}", tf.nn.relu)
            self.logits = tf.squeeze(_dense_layer(hidden, 1, "out"), axis=1, name="logits")
            self.prob = tf.sigmoid(self.logits, name="prob")
            self.item_embedding = tf.identity(tf.nn.embedding_lookup(item_table, tf.math.floormod(self.item_id, num_items)),
                                              name="item_vector")
            labels = tf.cast(tf.math.floormod(self.user_id + self.item_id, 2), tf.float32)
            loss = tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=self.logits))
            self.train_op = tf1.train.AdagradOptimizer(0.5).minimize(loss, global_step=self.global_step)
            self.saver = tf1.train.Saver(sharded=True, max_to_keep=max_to_keep)
            self.session = tf1.Session(graph=self.graph)
            self.session.run([tf1.global_variables_initializer(), tf1.tables_initializer()])

    def train(self, steps: int, batch: int = 64, seed: int = 0) -> int:
        rng = np.random.default_rng(seed)
        for _ in range(steps):
            self.session.run(self.train_op, self.feed(random_batch(batch, rng)))
        return int(self.session.run(self.global_step))

    def feed(self, inputs: Dict[str, np.ndarray]) -> dict:
        return {self.user_id: inputs["user_id"], self.item_id: inputs["item_id"],
                self.category: inputs["category"], self.dense: inputs["dense"]}

    def export_savedmodel(self, path: str, with_main_op: bool = True) -> str:
        """Without a main op, table initializers are reachable only through the graph's collection."""
        tf1 = self.tf.compat.v1
        with self.graph.as_default():
            builder = tf1.saved_model.Builder(path)
            signature = tf1.saved_model.signature_def_utils.predict_signature_def(
                inputs={"user_id": self.user_id, "item_id": self.item_id, "category": self.category,
                        "dense": self.dense},
                outputs={"prob": self.prob, "logits": self.logits, "item_vector": self.item_embedding})
            builder.add_meta_graph_and_variables(
                self.session, [tf1.saved_model.tag_constants.SERVING], signature_def_map={"serving_default": signature},
                main_op=tf1.tables_initializer() if with_main_op else None, saver=self.saver,
                strip_default_attrs=True)
            builder.save()
        return path

    def save_checkpoint(self, checkpoint_dir: str) -> str:
        step = int(self.session.run(self.global_step))
        return self.saver.save(self.session, os.path.join(checkpoint_dir, "model.ckpt"), global_step=step)

    def restore(self, prefix: str) -> None:
        self.saver.restore(self.session, prefix)

    def predict(self, inputs: Dict[str, np.ndarray], outputs: List[str] = ("prob", "logits", "item_vector")) -> dict:
        """TensorFlow's own answer for the variables currently in the session."""
        tensors = {"prob": self.prob, "logits": self.logits, "item_vector": self.item_embedding}
        return self.session.run({name: tensors[name] for name in outputs}, self.feed(inputs))

    def close(self) -> None:
        self.session.close()


def random_batch(size: int, rng: np.random.Generator) -> Dict[str, np.ndarray]:
    return {
        "user_id": rng.integers(0, NUM_USERS * 2, size=size, dtype=np.int64),
        "item_id": rng.integers(0, NUM_ITEMS, size=size, dtype=np.int64),
        "category": np.array([CATEGORIES[i % len(CATEGORIES)].encode() if i % 7 else b"unknown"
                              for i in rng.integers(0, 100, size=size)], dtype=object),
        "dense": rng.standard_normal((size, DENSE_DIM)).astype(np.float32),
    }


def build(out_dir: str, steps_per_version: int = 20, versions: int = 2, **model_options) -> (ModelDirs, RecommendationModel):
    """Writes a SavedModel and `versions` checkpoints; returns the dirs and the live model (for more)."""
    model = RecommendationModel(**model_options)
    dirs = ModelDirs(os.path.join(out_dir, "saved_model"), os.path.join(out_dir, "checkpoints"))
    model.export_savedmodel(dirs.savedmodel_dir)
    os.makedirs(dirs.checkpoint_dir, exist_ok=True)
    for _ in range(versions):
        model.train(steps_per_version)
        model.save_checkpoint(dirs.checkpoint_dir)
    return dirs, model


if __name__ == "__main__":
    import argparse
    parser = argparse.ArgumentParser(description="Writes OUT_DIR/saved_model and OUT_DIR/checkpoints.")
    parser.add_argument("out_dir")
    parser.add_argument("--num-items", type=int, default=NUM_ITEMS, help="rows of the item embedding table")
    parser.add_argument("--steps", type=int, default=20, help="training steps per checkpoint")
    args = parser.parse_args()
    built, live = build(args.out_dir, steps_per_version=args.steps, num_items=args.num_items)
    live.close()
    print(f"savedmodel_dir={built.savedmodel_dir}\ncheckpoint_dir={built.checkpoint_dir}")
