import pytest

from rlvr.registry import Registry, RegistryError


def test_register_get_available():
    registry: Registry[type] = Registry("widget")

    @registry.register("b")
    class B: ...

    @registry.register("a")
    class A: ...

    assert registry.get("a") is A
    assert registry.get("b") is B
    assert registry.available() == ["a", "b"]
    assert "a" in registry and "c" not in registry


def test_unknown_name_lists_choices_and_suggests():
    registry: Registry[object] = Registry("widget")
    registry.register("grpo")(object())
    registry.register("rloo")(object())
    with pytest.raises(RegistryError) as error:
        registry.get("grp")
    message = str(error.value)
    assert "unknown widget 'grp'" in message
    assert "Did you mean 'grpo'?" in message
    assert "grpo, rloo" in message


def test_same_name_twice_by_different_objects_is_an_error():
    registry: Registry[object] = Registry("widget")
    registry.register("x")(lambda: 1)
    with pytest.raises(RegistryError, match="registered twice"):

        @registry.register("x")
        def other():  # a different function under a taken name
            return 2


def test_package_modules_are_discovered_without_a_central_list():
    # The CLI's commands are plug-ins in the rlvr.cli package: none is listed anywhere by hand.
    from rlvr.cli import commands

    assert {"train", "eval", "verify", "sandbox", "tasks", "demo"} <= set(commands.available())
