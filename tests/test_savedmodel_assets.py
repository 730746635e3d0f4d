"""SavedModel assets as TF1 exports write them and as users move them: vocabulary files recorded in the
legacy "saved_model_assets" collection, the training-time path rewritten or gone, the SavedModel copied
elsewhere. Tables must read the SavedModel's own assets/ copy, as TensorFlow's loader does, with the
feature store or without, with or without a main op. Outputs are compared with TensorFlow's loader."""
from __future__ import annotations

import contextlib
import shutil

import numpy as np
import pytest

import processor
from model_builders import VOCABULARY, build_vocabulary_model, tensorflow_outputs

CATEGORIES = np.array([b"books", b"cars", b"unknown", b"games"], dtype=object)
STORES = {"none": {}, "local": {"feature_store_type": "local", "embedding_min_rows": 1}}


@pytest.fixture(scope="module")
def tensorflows(tmp_path_factory) -> dict:
    """What TensorFlow's own loader serves from the model with a main op (it cannot serve the one
    without: its tables stay uninitialized). Both are built from the same seeds."""
    root = tmp_path_factory.mktemp("reference")
    (root / "cats.txt").write_text("\n".join(VOCABULARY) + "\n")
    build_vocabulary_model(str(root / "saved_model"), str(root / "cats.txt"), main_op=True)
    expected = tensorflow_outputs(str(root / "saved_model"), {"category": CATEGORIES})
    np.testing.assert_array_equal(expected["index"], [1, 0, 3, 2])
    return expected


@pytest.fixture(scope="module", params=[True, False], ids=["main_op", "no_init_op"])
def trained(request, tmp_path_factory, tensorflows):
    """A SavedModel trained with a vocabulary at a training path, and what TensorFlow serves from it."""
    root = tmp_path_factory.mktemp("vocabulary")
    vocabulary = root / "training" / "cats.txt"
    vocabulary.parent.mkdir()
    vocabulary.write_text("\n".join(VOCABULARY) + "\n")
    build_vocabulary_model(str(root / "saved_model"), str(vocabulary), main_op=request.param)
    return root, vocabulary, tensorflows


def serve(savedmodel_dir, store: str) -> dict:
    with processor.Processor({"savedmodel_dir": str(savedmodel_dir), "poll_interval_seconds": 0,
                              **STORES[store]}) as p:
        return p.predict({"category": CATEGORIES})


@contextlib.contextmanager
def rewritten(vocabulary):
    """A later training run rewrites the vocabulary at the training path."""
    original = vocabulary.read_text()
    vocabulary.write_text("\n".join(reversed(VOCABULARY)) + "\n")
    try:
        yield
    finally:
        vocabulary.write_text(original)


@contextlib.contextmanager
def gone(vocabulary):
    """The serving host has no training path: the SavedModel was moved there."""
    hidden = vocabulary.with_suffix(".away")
    vocabulary.rename(hidden)
    try:
        yield
    finally:
        hidden.rename(vocabulary)


@pytest.mark.parametrize("store", STORES)
@pytest.mark.parametrize("training_path", [rewritten, gone], ids=["rewritten", "gone"])
def test_tables_read_the_savedmodels_own_assets_wherever_it_is(trained, store, training_path, tmp_path):
    root, vocabulary, expected = trained
    model = tmp_path / "moved" / "saved_model"
    shutil.copytree(root / "saved_model", model)
    with training_path(vocabulary):
        served = serve(model, store)
    np.testing.assert_array_equal(served["index"], expected["index"])
    np.testing.assert_allclose(served["embedding"], expected["embedding"], rtol=0, atol=1e-6)
