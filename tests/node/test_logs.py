"""The JSON log line of a failure says what failed and where, bounded, without the values."""

import json
import logging
import sys

from edge_sdk.node.logs import JsonFormatter

SECRET = "peer-bytes-" + "x" * 5000


def failing_record() -> logging.LogRecord:
    logger = logging.getLogger("blockfl.test")
    try:
        {}[SECRET]
    except KeyError:
        record = logger.makeRecord(logger.name, logging.ERROR, __file__, 1, "handler for %s failed", ("reply",), None)
        record.exc_info = sys.exc_info()
        return record
    raise AssertionError("unreachable")


def test_a_failure_names_the_exception_and_where_it_was_raised():
    line = JsonFormatter().format(failing_record())
    entry = json.loads(line)
    assert entry["msg"] == "handler for reply failed"
    assert entry["error"] == "KeyError"
    assert entry["at"][-1].startswith("tests/node/test_logs.py:") and entry["at"][-1].endswith(" failing_record")
    assert "\n" not in line


def test_the_exception_text_is_bounded():
    entry = json.loads(JsonFormatter().format(failing_record()))
    assert SECRET[:40] in entry["detail"] and len(entry["detail"]) <= 200
    assert len(json.dumps(entry)) < 1500


def test_a_line_without_a_failure_has_no_error_fields():
    record = logging.getLogger("x").makeRecord("x", logging.WARNING, __file__, 1, "quiet", (), None)
    assert set(json.loads(JsonFormatter().format(record))) == {"ts", "level", "logger", "msg"}
