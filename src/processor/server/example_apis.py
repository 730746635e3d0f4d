"""TF Serving's Classify and Regress APIs over a Processor, shared by gRPC (grpc_api.py) and REST
(hosts/rest.py): serialized tf.Examples into the named signature's "inputs", its outputs read back
and checked as TF Serving's classifier.cc and regressor.cc read and check them, with their messages.
"""
from __future__ import annotations

from typing import List, Mapping, Optional, Tuple

import numpy as np

from ..errors import RequestError
from ..facade import Processor

CLASSIFY, REGRESS = "classify", "regress"
_KINDS = {CLASSIFY: "classification", REGRESS: "regression"}


class FailedPrecondition(RequestError):
    """TF Serving's FAILED_PRECONDITION (REST 400): the signature cannot serve this API."""

    def __init__(self, message: str):
        super().__init__(400, message)


def check_signature(processor: Processor, requested: str, api: str) -> Mapping:
    """The signature `requested` names (the main one when empty), if it serves `api`
    (GetClassificationSignatureDef, PreProcessClassification and their regression twins)."""
    signatures = processor.signatures()
    if requested and requested not in signatures:
        raise RequestError(400, f"No signature was found with the name: {requested}")
    signature = signatures[requested] if requested else next(iter(signatures.values()))
    kind, wanted = _KINDS[api], f"tensorflow/serving/{api}"
    if signature.get("method_name") != wanted:
        raise RequestError(400, f"Expected {kind} signature method_name to be {wanted}. Was: "
                                f"{signature.get('method_name')}")
    if len(signature["inputs"]) != 1:
        raise RequestError(400, "Expected one input Tensor.")
    if signature["inputs"][0]["alias"] != "inputs":
        raise FailedPrecondition(f"No {kind} inputs found in SignatureDef: its input is "
                                 f"{signature['inputs'][0]['alias']!r}, not 'inputs'")
    return signature


def examples_tensor(serialized: List[bytes]) -> np.ndarray:
    if not serialized:
        raise RequestError(400, "Input is empty.")
    return np.array(serialized, dtype=object)


def classify(processor: Processor, signature: Mapping, serialized: List[bytes], version: Optional[int] = None) \
        -> Tuple[Optional[np.ndarray], Optional[np.ndarray]]:
    """(classes as str [N, K] or None, scores [N, K] or None) for N serialized examples; `version`: answered
    by that version alone (Processor.predict)."""
    aliases = {entry["alias"] for entry in signature["outputs"]}
    outputs = [name for name in ("classes", "scores") if name in aliases]
    if not outputs:
        raise FailedPrecondition('Expected classification signature outputs to contain at least one of "classes" '
                                 'or "scores".')
    values = processor.predict({"inputs": examples_tensor(serialized)}, output_filter=outputs,
                               signature_name=signature["signature_name"], version=version,
                               strict_signature_name=True)
    count = len(serialized)
    for name in outputs:
        array = values[name]
        if array.ndim != 2:
            raise RequestError(400, f"Expected Tensor shape: [batch_size num_classes] but got {list(array.shape)}")
        if array.shape[0] != count:
            raise RequestError(400, f"Expected {name} output batch size of {count}. Got: {array.shape[0]}")
    classes, scores = values.get("classes"), values.get("scores")
    if classes is not None and scores is not None and classes.shape[1] != scores.shape[1]:
        raise RequestError(400, f"Tensors class and score should match in dim_size(1). Got {classes.shape[1]} vs. "
                                f"{scores.shape[1]}")
    if classes is not None:
        classes = np.vectorize(lambda v: v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v),
                               otypes=[object])(classes)
    return classes, scores


def regress(processor: Processor, signature: Mapping, serialized: List[bytes], version: Optional[int] = None) \
        -> np.ndarray:
    """One value per serialized example; `version` as classify's."""
    if "outputs" not in {entry["alias"] for entry in signature["outputs"]}:
        raise FailedPrecondition("No regression outputs found in SignatureDef.")
    values = processor.predict({"inputs": examples_tensor(serialized)}, output_filter=["outputs"],
                               signature_name=signature["signature_name"], version=version,
                               strict_signature_name=True)["outputs"]
    if not (values.ndim == 1 or (values.ndim == 2 and values.shape[1] == 1)):
        raise RequestError(400, f"Expected output Tensor shape to be either [batch_size] or [batch_size, 1] but got "
                                f"{list(values.shape)}")
    if values.shape[0] != len(serialized):
        raise RequestError(400, f"Input batch size did not match output batch size: {len(serialized)} vs. "
                                f"{values.shape[0]}")
    return values.reshape(-1)
