"""File formats read (and written) without TensorFlow: TensorFlow's checkpoint index (tensor bundle),
TFRecord files, and TF Serving's config files (tf_serving.py)."""
