"""TensorFlow's own serving paths, timed on a model Processor serves (run by benchmarks/performance.py).

    python benchmarks/tf_baselines.py SAVEDMODEL CHECKPOINT_PREFIX REQUEST.bin ITERATIONS

Prints JSON: {"tf1_session_run": {...}, "tf2_signature": {...}} with median/p99 in ms.
  tf1_session_run   tf.compat.v1 Session on the SavedModel's graph, checkpoint restored, Session.run
                    with a feed_dict of numpy arrays (the classic TF1 serving loop)
  tf2_signature     tf.saved_model.load(...).signatures["serving_default"] called with tensors (eager)
"""
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import tensorflow as tf  # noqa: E402
from timing import measure  # noqa: E402  (benchmarks/, the script's own directory)


def main():
    savedmodel, prefix, request_path, iterations = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    from processor import predict_pb2, tensors
    request = predict_pb2.PredictRequest.FromString(open(request_path, "rb").read())
    inputs = {name: tensors.from_array_proto(array) for name, array in request.inputs.items()}
    results = {}

    graph = tf.Graph()
    with graph.as_default():
        session = tf.compat.v1.Session(graph=graph)
        meta = tf.compat.v1.saved_model.loader.load(session, ["serve"], savedmodel)
        tf.compat.v1.train.Saver(saver_def=meta.saver_def).restore(session, prefix)
        signature = meta.signature_def["serving_default"]
        feed_names = {name: info.name for name, info in signature.inputs.items()}
        fetches = [info.name for info in signature.outputs.values()]
        feed = {feed_names[name]: value if value.dtype != object else value.astype(bytes) for name, value in inputs.items()}
        results["tf1_session_run"] = measure(lambda: session.run(fetches, feed), iterations)

    loaded = tf.saved_model.load(savedmodel)
    call = loaded.signatures["serving_default"]
    arguments = {name: tf.constant(value.astype(bytes) if value.dtype == object else value) for name, value in inputs.items()}
    results["tf2_signature"] = measure(lambda: call(**arguments), iterations)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
