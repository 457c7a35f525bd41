import pytest

from aotp.registry import Registry, UnknownChoiceError


def test_unknown_name_lists_close_match_and_all_choices():
    registry = Registry("method", option="method")
    for name in ("lora", "bitfit", "full_ft"):
        registry.register(name)(object())
    with pytest.raises(UnknownChoiceError) as error:
        registry.get("lorra")
    message = str(error.value)
    assert "Unknown method 'lorra' (config option `method`)" in message
    assert "Did you mean 'lora'?" in message
    assert "Valid choices: bitfit, full_ft, lora." in message


def test_double_registration_of_a_different_object_is_refused():
    registry = Registry("metric")
    registry.register("accuracy")(1)
    with pytest.raises(ValueError, match="registered twice"):
        registry.register("accuracy")(2)
