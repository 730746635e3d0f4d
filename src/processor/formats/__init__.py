"""File formats read (and written) without TensorFlow: TensorFlow's checkpoint index (tensor bundle)
and TFRecord files."""
