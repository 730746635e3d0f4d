"""TF Serving's REST predict format, to and from the numpy arrays Processor.predict() takes.

Request bodies (https://www.tensorflow.org/tfx/serving/api_rest, Predict API):
- row format: {"instances": [...]}: one entry per example; with several inputs each entry is an object
  of input values, with one input it may be the bare value. The examples are stacked along a new first
  dimension.
- columnar format: {"inputs": {...}}: each input's whole tensor; with one input it may be bare.
- `signature_name` picks one of the model's signatures (the main one when empty). Bytes travel as
  {"b64": "..."}.
Responses: row format answers {"predictions": [...]} (an object per example with several outputs,
bare values with one); columnar answers {"outputs": ...} likewise. String outputs are UTF-8 text, or
{"b64": ...} when the output's alias ends in "_bytes" (TF Serving's rule) or the bytes are not UTF-8.
"""
from __future__ import annotations

import base64
import binascii
from typing import Any, Dict, List, Mapping, Tuple

import numpy as np

from .. import predict_pb2, tensors


class RestRequestError(ValueError):
    """The body is not a valid predict request for the signature (HTTP 400)."""


def _signature_name_of(body: Any, fields: Tuple[str, ...], expected: str) -> str:
    """A body's signature_name, once the body is checked to be an object of `fields` and signature_name
    alone (`expected` says which in the message)."""
    if not isinstance(body, dict):
        raise RestRequestError("the request body must be a JSON object")
    signature_name = body.get("signature_name", "")
    if not isinstance(signature_name, str):
        raise RestRequestError("'signature_name' must be a string")
    unknown = sorted(set(body) - {"signature_name", *fields})
    if unknown:
        raise RestRequestError(f"unknown field(s) {', '.join(repr(k) for k in unknown)}: expected {expected}")
    return signature_name


def parse_predict_body(body: Any, signatures: Mapping[str, Mapping[str, Any]]) \
        -> Tuple[Dict[str, np.ndarray], bool, str]:
    """(inputs as numpy arrays, whether the row format was used, signature_name) of a decoded JSON body,
    read by the signature it names of `signatures` (Processor.signatures(): the main one first)."""
    signature_name = _signature_name_of(body, ("instances", "inputs"), "'instances' or 'inputs'")
    if signature_name and signature_name not in signatures:  # before the inputs are read by it
        raise RestRequestError(f'Serving signature key "{signature_name}" not found.')
    signature = signatures[signature_name] if signature_name else next(iter(signatures.values()))
    if ("instances" in body) == ("inputs" in body):
        raise RestRequestError("the request must have exactly one of 'instances' (row format) or 'inputs' (columnar format)")
    specs = {spec["alias"]: spec for spec in signature["inputs"]}
    if "instances" in body:
        return _rows_to_inputs(body["instances"], specs), True, signature_name
    return _columns_to_inputs(body["inputs"], specs), False, signature_name


def format_predict_response(outputs: Mapping[str, np.ndarray], row_format: bool) -> Dict[str, Any]:
    if row_format:
        return {"predictions": _outputs_to_rows(outputs)}
    values = {name: _to_json(name, array) for name, array in outputs.items()}
    return {"outputs": next(iter(values.values())) if len(values) == 1 else values}


def signature_metadata(signatures: Mapping[str, Mapping[str, Any]]) -> Dict[str, Any]:
    """The signatures as TF Serving's GetModelMetadata JSON shows its SignatureDefMap's signature_def."""
    def tensor_info(spec):
        return {"dtype": spec["dtype"], "name": spec["tensor_name"],
                "tensor_shape": {"dim": [{"size": str(d), "name": ""} for d in spec["shape"]],
                                 "unknown_rank": spec.get("unknown_rank", False)}}
    return {name: {
        "inputs": {spec["alias"]: tensor_info(spec) for spec in signature["inputs"]},
        "outputs": {spec["alias"]: tensor_info(spec) for spec in signature["outputs"]},
        "method_name": signature["method_name"]} for name, signature in signatures.items()}


# ---- requests


def _rows_to_inputs(instances: Any, specs: Mapping[str, Mapping]) -> Dict[str, np.ndarray]:
    if not isinstance(instances, list) or not instances:
        raise RestRequestError("'instances' must be a non-empty list")
    named = all(isinstance(row, dict) and set(row) != {"b64"} for row in instances)  # {"b64"}: one bytes value
    if not named:
        if len(specs) != 1:
            raise RestRequestError(f"the signature has {len(specs)} inputs ({', '.join(sorted(specs))}): each "
                                   f"instance must be an object naming them")
        (alias,) = specs
        return {alias: _to_array(alias, instances, specs[alias])}
    names = set(instances[0])
    for i, row in enumerate(instances):
        if set(row) != names:
            raise RestRequestError(f"instance {i} has inputs {sorted(row)} but instance 0 has {sorted(names)}: "
                                   f"every instance must name the same inputs")
    return {name: _to_array(name, [row[name] for row in instances], specs.get(name)) for name in sorted(names)}


def _columns_to_inputs(inputs: Any, specs: Mapping[str, Mapping]) -> Dict[str, np.ndarray]:
    if isinstance(inputs, dict) and not (len(inputs) == 1 and "b64" in inputs):
        return {name: _to_array(name, value, specs.get(name)) for name, value in inputs.items()}
    if len(specs) != 1:
        raise RestRequestError(f"the signature has {len(specs)} inputs ({', '.join(sorted(specs))}): 'inputs' "
                               f"must be an object naming them")
    (alias,) = specs
    return {alias: _to_array(alias, inputs, specs[alias])}


def _to_array(name: str, value: Any, spec: Mapping[str, Any] = None) -> np.ndarray:
    """A JSON value as the numpy array of the input's dtype (an unknown input keeps JSON's own types,
    for process() to name it)."""
    dtype = predict_pb2.ArrayDataType.Value(spec["dtype"]) if spec else None
    if dtype == predict_pb2.DT_STRING:
        return _strings(name, value)
    if _has_b64(value):
        raise RestRequestError(f"input '{name}': {{\"b64\": ...}} is only for string inputs, and '{name}' is "
                               f"{spec['dtype'] if spec else 'not an input'}")
    try:
        array = np.array(value)
    except ValueError as e:  # ragged lists
        raise RestRequestError(f"input '{name}': {e}") from None
    if array.dtype == object:
        raise RestRequestError(f"input '{name}': the values are not a rectangular array of numbers")
    if dtype is None:
        return array
    if dtype == predict_pb2.DT_BOOL and array.dtype.kind != "b":
        raise RestRequestError(f"input '{name}': expects true/false, got {array.dtype}")
    if array.size == 0:
        array = array.astype(tensors.numpy_dtype(dtype))
    try:
        return tensors.to_numpy_input(name, array, dtype)
    except TypeError as e:
        raise RestRequestError(str(e)) from None


def _has_b64(value: Any) -> bool:
    if isinstance(value, dict):
        return "b64" in value
    return isinstance(value, list) and any(_has_b64(v) for v in value)


def _strings(name: str, value: Any) -> np.ndarray:
    def convert(v):
        if isinstance(v, list):
            return [convert(x) for x in v]
        if isinstance(v, dict) and set(v) == {"b64"} and isinstance(v["b64"], str):
            try:
                return base64.b64decode(v["b64"], validate=True)
            except binascii.Error as e:
                raise RestRequestError(f"input '{name}': invalid base64: {e}") from None
        if isinstance(v, str):
            return v.encode("utf-8")
        raise RestRequestError(f"input '{name}': expects strings (or {{\"b64\": ...}}), got {type(v).__name__}")

    converted = convert(value)
    shape = _shape(converted)
    array = np.empty(shape, dtype=object)
    flat: List[bytes] = []
    _flatten(converted, flat, shape, name)
    array.reshape(-1)[:] = flat
    return array


def _shape(value: Any) -> Tuple[int, ...]:
    shape = []
    while isinstance(value, list):
        shape.append(len(value))
        value = value[0] if value else None
    return tuple(shape)


def _flatten(value: Any, out: List[bytes], shape: Tuple[int, ...], name: str, depth: int = 0) -> None:
    if depth == len(shape):
        if isinstance(value, list):
            raise RestRequestError(f"input '{name}': the values are not a rectangular array")
        out.append(value)
        return
    if not isinstance(value, list) or len(value) != shape[depth]:
        raise RestRequestError(f"input '{name}': the values are not a rectangular array")
    for item in value:
        _flatten(item, out, shape, name, depth + 1)


# ---- responses


def _outputs_to_rows(outputs: Mapping[str, np.ndarray]) -> List[Any]:
    sizes = {name: (array.shape[0] if array.ndim else None) for name, array in outputs.items()}
    batch = set(sizes.values())
    if len(batch) != 1 or None in batch:
        raise RestRequestError(f"the outputs cannot be returned as rows (their first dimensions differ: "
                               f"{sizes}); send the columnar format ('inputs')")
    (rows,) = batch
    columns = {name: _to_json(name, array) for name, array in outputs.items()}
    if len(columns) == 1:
        return next(iter(columns.values()))
    return [{name: column[i] for name, column in columns.items()} for i in range(rows)]


def _to_json(name: str, array: np.ndarray) -> Any:
    if array.dtype != object:
        return array.tolist()
    as_b64 = name.endswith("_bytes")

    def convert(v):
        if isinstance(v, list):
            return [convert(x) for x in v]
        if not as_b64:
            try:
                return v.decode("utf-8")
            except UnicodeDecodeError:
                pass
        return {"b64": base64.b64encode(v).decode("ascii")}
    return convert(array.tolist())


def parse_examples_body(body: Any) -> Tuple[List[bytes], str]:
    """(serialized tf.Examples, signature_name) of a :classify or :regress body (TF Serving's REST
    Classify and Regress API): {"signature_name", "context": {feature: value}, "examples": [{feature:
    value}, ...]}. A value is a number, a string, {"b64": ...}, or a list of one kind: integers become
    int64_list, numbers with a fraction float_list, strings and b64 bytes_list. The context's features
    go into every example, as its bytes before each example's (TF Serving's InputToSerializedExampleTensor)."""
    from tensorflow.core.example import example_pb2
    signature_name = _signature_name_of(body, ("context", "examples"), "'examples' and optionally 'context'")
    examples, context = body.get("examples"), body.get("context", {})
    if not isinstance(examples, list) or not all(isinstance(e, dict) for e in examples):
        raise RestRequestError("'examples' must be a list of objects (feature name: value)")
    if not isinstance(context, dict):
        raise RestRequestError("'context' must be an object (feature name: value)")

    def to_example(features: Mapping[str, Any], where: str):
        message = example_pb2.Example()
        for name, value in features.items():
            _fill_feature(message.features.feature[name], value, f"{where} feature '{name}'")
        return message

    prefix = to_example(context, "context").SerializeToString() if context else b""
    serialized = []
    for index, features in enumerate(examples):
        both = sorted(set(features) & set(context))
        if both:
            raise RestRequestError(f"examples[{index}]: feature(s) {', '.join(both)} also in 'context': a feature may "
                                   f"be in one of them only")
        serialized.append(prefix + to_example(features, f"examples[{index}]").SerializeToString())
    return serialized, signature_name


def _fill_feature(feature, value: Any, where: str) -> None:
    values = value if isinstance(value, list) else [value]
    if not values:
        raise RestRequestError(f"{where}: an empty list (its kind is unknown)")
    if all(isinstance(v, str) or (isinstance(v, dict) and set(v) == {"b64"}) for v in values):
        feature.bytes_list.value.extend(_b64_or_utf8(v, where) for v in values)
    elif all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        if any(not -2**63 <= v < 2**63 for v in values):
            raise RestRequestError(f"{where}: an integer out of int64's range (only int64 is supported)")
        feature.int64_list.value.extend(values)
    elif all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        feature.float_list.value.extend(float(v) for v in values)
    else:
        raise RestRequestError(f"{where}: values must be all numbers, or all strings / {{\"b64\": ...}}")


def _b64_or_utf8(value: Any, where: str) -> bytes:
    if isinstance(value, str):
        return value.encode("utf-8")
    try:
        return base64.b64decode(value["b64"], validate=True)
    except (binascii.Error, ValueError, TypeError):
        raise RestRequestError(f"{where}: invalid base64") from None


def format_classify_response(classes, scores) -> Dict[str, Any]:
    """TF Serving's MakeJsonFromClassificationResult: {"results": [[[label, score], ...], ...]}, a missing
    label as "" and a missing score as 0."""
    shape = (classes if classes is not None else scores).shape
    return {"results": [[[classes[i, c] if classes is not None else "",
                           float(scores[i, c]) if scores is not None else 0.0] for c in range(shape[1])]
                         for i in range(shape[0])]}
