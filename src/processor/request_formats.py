"""The request formats of process_as() (include/processor.h's PROCESSOR_FORMAT_*;
tests/test_tf_serving_predict.py ties the two)."""

FORMAT_DEEPREC = 0             # protos/predict.proto's PredictRequest, as process() takes
FORMAT_TF_SERVING_PREDICT = 1  # TF Serving's tensorflow.serving.PredictRequest
