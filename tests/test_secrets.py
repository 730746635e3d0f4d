"""Secrets (the Redis password, the OSS key pair) never appear in anything Processor shows: logs, errors,
model info, metrics, the signature, reprs, tracebacks. A run is configured with sentinel secrets and
every output is searched for them."""
from __future__ import annotations

import json
import logging
import traceback

import pytest

import processor
from abi import CAbi
from lifecycle_helpers import serialize
from processor.config import SECRET_FIELDS, parse_config

SENTINELS = {"redis_password": "SENTINEL-redis-password-7f3a", "oss_access_id": "SENTINEL-oss-id-51c2",
             "oss_access_key": "SENTINEL-oss-key-e09d"}


def assert_no_secret(*outputs):
    for output in outputs:
        text = output if isinstance(output, str) else output.decode("utf-8", "replace") if isinstance(
            output, bytes) else repr(output)
        for sentinel in SENTINELS.values():
            assert sentinel not in text and sentinel[9:] not in text, (sentinel, text[:500])


def test_sentinels_cover_every_secret_field():
    assert set(SENTINELS) == set(SECRET_FIELDS)


def test_a_serving_run_shows_no_secret(rec_model, batch, caplog, capfd):
    caplog.set_level(logging.DEBUG)
    config = rec_model.config(**SENTINELS, redis_url="127.0.0.1:6379", oss_endpoint="oss.invalid")
    with processor.Processor(config) as p:
        shown = [repr(p.config), json.dumps(p.config.redacted()), p.signature(), p.model_info(),
                 p.serving_model_info()[1], p.metrics(), p.versions(), p.process(serialize(batch))[1],
                 p.process(b"\x12\x03bad")[1], p.process(b"")[1]]
        p.update()
    assert_no_secret(*shown, caplog.text, *capfd.readouterr())


@pytest.mark.parametrize("overrides", [
    {"feature_store_type": "redis", "redis_url": "127.0.0.1:1", "embedding_min_rows": 1000},  # unreachable
    {"model_store_type": "oss", "oss_endpoint": "oss.invalid"},
    {"savedmodel_dir": "/no/such/model", "init_timeout_minutes": 0},
])
def test_refused_configs_show_no_secret(rec_model, overrides, caplog):
    caplog.set_level(logging.DEBUG)
    with pytest.raises(processor.ProcessorError) as error:
        processor.Processor(rec_model.config(**SENTINELS, **overrides))
    assert_no_secret(str(error.value), "".join(traceback.format_exception(error.value)), caplog.text)


@pytest.mark.parametrize("field", sorted(SENTINELS))
@pytest.mark.parametrize("wrong", [987654321987, 12.5, True])
def test_a_secret_of_the_wrong_type_is_named_but_not_shown(field, wrong):
    with pytest.raises(processor.ConfigError) as error:
        parse_config({"savedmodel_dir": "/m", field: wrong})
    message = "".join(traceback.format_exception(error.value))
    assert error.value.field == field and "a secret's value is not shown" in message
    assert str(wrong) not in message.replace(f"{field}", "") and json.dumps(wrong) not in message


def test_the_c_abi_shows_no_secret(rec_model, batch, capfd):
    abi = CAbi()
    handle, state = abi.initialize(rec_model.config(**SENTINELS))
    assert state == 0
    try:
        outputs = [abi.process(handle, serialize(batch))[1], abi.process(handle, b"\x12\x03bad")[1],
                   abi.model_info(handle)[1]]
    finally:
        abi.finalize(handle)
    refused, _ = abi.initialize(rec_model.config(**SENTINELS, feature_store_type="redis", redis_url="127.0.0.1:1",
                                                 embedding_min_rows=1000))
    assert refused is None
    assert_no_secret(*outputs, *capfd.readouterr())


@pytest.mark.parametrize("spoil", [lambda text: "x" + text, lambda text: "config = " + text,
                                   lambda text: text[1:], lambda text: "\n" + text.replace("{", "", 1)])
def test_config_text_that_is_not_json_is_not_echoed(spoil, capfd):
    text = spoil(json.dumps({"savedmodel_dir": "/m", **SENTINELS}))
    with pytest.raises(processor.ConfigError) as error:
        parse_config(text)
    assert "its text is not shown" in str(error.value) or "not valid JSON" in str(error.value)
    assert_no_secret(str(error.value), repr(error.value), "".join(traceback.format_exception(error.value)))
    # a C host gets state -1 and a reason on stderr, without the text either
    handle, state = CAbi().initialize(text)
    assert handle is None and state == -1
    assert_no_secret(*capfd.readouterr())


def test_a_byte_order_mark_is_accepted(tmp_path):
    document = json.dumps({"savedmodel_dir": "/m", "redis_password": SENTINELS["redis_password"]})
    assert parse_config("\ufeff" + document).savedmodel_dir == "/m"
    (tmp_path / "config.json").write_bytes(b"\xef\xbb\xbf" + document.encode())
    assert parse_config(str(tmp_path / "config.json")).redis_password == SENTINELS["redis_password"]


def test_a_password_in_redis_url_is_taken_out_of_it():
    password = SENTINELS["redis_password"]
    config = parse_config({"savedmodel_dir": "/m", "redis_url": f"redis://:{password}@127.0.0.1:6379, "
                                                                f"redis://default:{password}@127.0.0.2:6380"})
    assert config.redis_password == password
    assert config.redis_url == "redis://127.0.0.1:6379,redis://127.0.0.2:6380"
    assert_no_secret(repr(config), json.dumps(config.redacted()))
    for url, password_field in ((f"redis://:{password}@h:1,redis://:OTHER-pass-91@h:2", {}),
                                (f"redis://:{password}@h:1", {"redis_password": "DIFF-pass-27"})):
        with pytest.raises(processor.ConfigError) as error:
            parse_config({"savedmodel_dir": "/m", "redis_url": url, **password_field})
        assert error.value.field == "redis_url"
        assert_no_secret("".join(traceback.format_exception(error.value)))
        assert "OTHER-pass" not in str(error.value) and "DIFF-pass" not in str(error.value)
