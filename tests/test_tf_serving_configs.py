"""TF Serving's configuration files read as TF Serving reads them (processor/formats/tf_serving.py):
the examples are TF Serving's own, from tensorflow_serving/g3doc/serving_config.md ("Model Server
Config Details", "Serving Multiple Versions of a Model", "Assigning String Labels to Model Versions",
"Batching Configuration"), parsed with the messages of its tensorflow-serving-api package."""
from __future__ import annotations

import pytest

from processor import ConfigError
from processor.config import BatchingParameters
from processor.formats.tf_serving import (ModelConfig, VersionPolicy, parse_batching_parameters,
                                          parse_model_server_config, read_batching_parameters,
                                          read_model_server_config)

TWO_MODELS = """model_config_list {
  config {
    name: 'my_first_model'
    base_path: '/tmp/my_first_model/'
    model_platform: 'tensorflow'
  }
  config {
    name: 'my_second_model'
    base_path: '/tmp/my_second_model/'
    model_platform: 'tensorflow'
  }
}
"""


def one_model(body: str, name: str = "rec") -> str:
    return f"model_config_list {{ config {{ name: '{name}' base_path: '/models/{name}' model_platform: 'tensorflow'\n" \
           f"{body} }} }}"


CANARY = """model_version_policy {
  specific {
    versions: 42
    versions: 43
  }
}
version_labels {
  key: 'stable'
  value: 42
}
version_labels {
  key: 'canary'
  value: 43
}
"""

BATCHING_FILE = """max_batch_size { value: 128 }
batch_timeout_micros { value: 0 }
max_enqueued_batches { value: 1000000 }
num_batch_threads { value: 8 }
"""


def test_the_documented_multi_model_config_from_a_file(tmp_path):
    path = tmp_path / "models.config"
    path.write_text(TWO_MODELS)
    assert read_model_server_config(path) == read_model_server_config(str(path)) == parse_model_server_config(TWO_MODELS)
    assert read_model_server_config(path) == [
        ModelConfig("my_first_model", "/tmp/my_first_model/", VersionPolicy("latest", 1)),
        ModelConfig("my_second_model", "/tmp/my_second_model/", VersionPolicy("latest", 1)),
    ]


@pytest.mark.parametrize("body, policy, labels", [
    ("model_version_policy {\n  specific {\n    versions: 42\n  }\n}", VersionPolicy("specific", 1, (42,)), {}),
    (CANARY, VersionPolicy("specific", 2, (42, 43)), {"stable": 42, "canary": 43}),
    (CANARY.replace("value: 42", "value: 43"), VersionPolicy("specific", 2, (42, 43)), {"stable": 43, "canary": 43}),
    ("model_version_policy { latest { num_versions: 2 } }", VersionPolicy("latest", 2), {}),
    ("model_version_policy { all {} }", VersionPolicy("all", 0), {}),
    ("", VersionPolicy("latest", 1), {}),
], ids=["pin 42", "stable and canary", "canary promoted", "latest 2", "all", "default"])
def test_version_policies_and_labels(body, policy, labels):
    (model,) = parse_model_server_config(one_model(body))
    assert model.version_policy == policy and model.version_labels == labels


@pytest.mark.parametrize("text, message", [
    ("model_config_list { config { name: 'a' base_path: '/a' } config { name: 'a' base_path: '/b' } }",
     "model_config_list.config[1] ('a'): the name 'a' is given twice"),
    ("model_config_list { config { name: 'a' } }", "model_config_list.config[0] ('a'): base_path is required"),
    ("model_config_list { config { base_path: '/a' } }", "model_config_list.config[0]: name is required"),
    (one_model("").replace("'tensorflow'", "'pytorch'"),
     "model_platform 'pytorch' is not served here (only 'tensorflow' SavedModels)"),
    (one_model(CANARY.replace("value: 43", "value: 44")),
     "version label 'canary' names version 44, which model_version_policy does not serve (42, 43)"),
    (one_model("model_version_policy { specific { } }"), "model_version_policy.specific needs versions > 0, got []"),
    ("model_config_list { }", "model_config_list names no model"),
    ("custom_model_config { }", "custom_model_config is not served here"),
    (one_model("logging_config { sampling_config { sampling_rate: 0.1 } }"),
     "logging_config is not served here (TF Serving's log collectors are plugins): the config's request_log"),
    ("model_config_list { config { name: 'a' base_path: '/a' model_platfrom: 'tensorflow' } }",
     'the text given is not a ModelServerConfig in text format: 1:56 : Message type "tensorflow.serving.ModelConfig" '
     'has no field named "model_platfrom".'),
])
def test_what_tf_serving_refuses_is_refused_with_the_model_and_field(text, message):
    with pytest.raises(ConfigError) as error:
        parse_model_server_config(text)
    assert error.value.field == "model_config_file"
    assert message in str(error.value)


def test_a_missing_file_is_named_and_a_file_error_names_the_file(tmp_path):
    with pytest.raises(ConfigError, match=r"config field 'model_config_file': cannot read .*/nope.config: "
                                          r"No such file or directory"):
        read_model_server_config(tmp_path / "nope.config")
    (tmp_path / "batching.config").write_text("max_batch_size { value: 16 }\nnum_batch_threads: 2\n")
    with pytest.raises(ConfigError, match=r".*/batching.config is not a BatchingParameters in text format: 2:"):
        read_batching_parameters(tmp_path / "batching.config")


def test_the_documented_batching_parameters_file(tmp_path):
    path = tmp_path / "batching.config"
    path.write_text(BATCHING_FILE)
    assert read_batching_parameters(path) == BatchingParameters(
        max_batch_size=128, batch_timeout_micros=0, max_enqueued_batches=1000000, num_batch_threads=8)
    assert parse_batching_parameters("allowed_batch_sizes: 32\nallowed_batch_sizes: 64\nmax_batch_size { value: 64 }\n"
                                    "pad_variable_length_inputs: true\nthread_pool_name { value: 'x' }") == \
        BatchingParameters(max_batch_size=64, allowed_batch_sizes=(32, 64))
    assert parse_batching_parameters("# TF Serving's defaults\n") == BatchingParameters()


@pytest.mark.parametrize("text, field, message", [
    ("max_batch_size { value: 0 }", "batching_parameters_file.max_batch_size", "must be >= 1, got 0"),
    ("allowed_batch_sizes: 8 max_batch_size { value: 16 }", "batching_parameters_file.allowed_batch_sizes",
     "must end with max_batch_size (16)"),
    ("max_batch_size: 16", "batching_parameters_file", "is not a BatchingParameters in text format"),
    ("max_batch_sise { value: 16 }", "batching_parameters_file", 'has no field named "max_batch_sise"'),
])
def test_a_wrong_batching_parameters_file_names_the_field(text, field, message):
    with pytest.raises(ConfigError) as error:
        parse_batching_parameters(text)
    assert error.value.field == field and message in str(error.value)


# serving_config.md, "Monitoring Configuration"
MONITORING = """prometheus_config {
  enable: true,
  path: "/monitoring/prometheus/metrics"
}
"""


@pytest.mark.parametrize("text, path", [
    (MONITORING, "/monitoring/prometheus/metrics"),
    ("prometheus_config { enable: true path: '/metrics' }", "/metrics"),
    ("prometheus_config { enable: true }", "/monitoring/prometheus/metrics"),
    ("prometheus_config { enable: false path: '/metrics' }", None),
    ("", None),
])
def test_the_documented_monitoring_config(text, path, tmp_path):
    from processor.formats.tf_serving import read_monitoring_config
    file = tmp_path / "monitoring.config"
    file.write_text(text)
    assert read_monitoring_config(file) == path


@pytest.mark.parametrize("text, message", [
    ("prometheus_config { enable: true path: 'metrics' }", "prometheus_config.path must be an absolute path"),
    ("prometheus_config { enable: true path: '/v1/models' }", "outside /v1/"),
    ("prometheus_config { enabled: true }", "is not a MonitoringConfig in text format: 1:21 : Message type"),
])
def test_monitoring_config_errors(text, message):
    from processor.formats.tf_serving import parse_monitoring_config
    with pytest.raises(ConfigError, match="monitoring_config_file") as raised:
        parse_monitoring_config(text)
    assert message in str(raised.value)
