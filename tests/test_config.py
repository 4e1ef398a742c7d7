import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

import pytest

from rlvr import config
from rlvr.config import ConfigError, option
from rlvr.train_config import TrainConfig


@dataclass
class Inner:
    lr: float = option(1e-3, "Learning rate.")
    steps: int = option(10, "Steps.")
    mode: Literal["fast", "slow"] = option("fast", "Mode.")
    tags: list[str] = option([], "Tags.")
    cap: float | None = option(None, "Optional cap.")


@dataclass
class Outer:
    inner: Inner = option(Inner(), "The inner section.")
    name: str = option("run", "Run name.")
    flag: bool = option(False, "A flag.")


@dataclass
class WithOwnDefaults:
    inner: Inner = option(Inner(steps=99, mode="slow"), "A section whose default differs from its class's.")


def test_a_section_keeps_its_own_defaults_where_an_override_sets_another_key():
    assert config.load(WithOwnDefaults, None, []).inner == Inner(steps=99, mode="slow")
    changed = config.load(WithOwnDefaults, None, ["inner.lr=0.5"])
    assert (changed.inner.lr, changed.inner.steps, changed.inner.mode) == (0.5, 99, "slow")
    assert config.load(WithOwnDefaults, None, ["inner=null"]).inner == Inner(steps=99, mode="slow")
    with pytest.raises(ConfigError, match="inner.mode"):
        config.load(WithOwnDefaults, None, ["inner.mode=medium"])


def test_defaults_yaml_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("inner:\n  lr: 1e-5\n  steps: 3\nname: first\n")
    loaded = config.load(Outer, path, ["inner.steps=7", "flag=true", "inner.tags=[a, b]", "inner.cap=0.5"])
    assert loaded.inner.lr == 1e-5  # YAML 1.1 reads 1e-5 as a string; the loader makes it a float
    assert loaded.inner.steps == 7  # the override wins over the file
    assert loaded.name == "first"
    assert loaded.flag is True
    assert loaded.inner.tags == ["a", "b"]
    assert loaded.inner.cap == 0.5
    assert loaded.inner.mode == "fast"


def test_mutable_defaults_are_not_shared():
    first, second = Outer(), Outer()
    first.inner.tags.append("x")
    assert second.inner.tags == []


def test_unknown_key_names_the_key_and_valid_choices():
    with pytest.raises(ConfigError) as error:
        config.load(Outer, None, ["inner.setps=3"])
    message = str(error.value)
    assert "'inner.setps'" in message
    assert "Did you mean 'inner.steps'?" in message
    assert "lr, steps, mode, tags, cap" in message


def test_wrong_types_are_errors_naming_the_key():
    with pytest.raises(ConfigError, match=r"inner\.steps: expected a whole number, got 'many'"):
        config.load(Outer, None, ["inner.steps=many"])
    with pytest.raises(ConfigError, match=r"flag: expected true or false"):
        config.load(Outer, None, ["flag=3"])
    with pytest.raises(ConfigError, match=r"inner\.mode: 'medium' is not one of the valid choices 'fast', 'slow'"):
        config.load(Outer, None, ["inner.mode=medium"])
    with pytest.raises(ConfigError, match="not of the form"):
        config.load(Outer, None, ["justakey"])


def test_bad_files_are_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        config.load(Outer, tmp_path / "missing.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        config.load(Outer, tmp_path / "list.yaml")


def test_render_shows_every_option_with_its_doc():
    text = config.render(TrainConfig())
    assert "lr: 1.0e-06  # Peak learning rate of AdamW." in text
    assert "  group_size: 8  # Samples drawn per prompt" in text


def test_every_train_option_has_a_one_line_doc():
    def undocumented(section, prefix=""):
        for field in dataclasses.fields(section):
            doc = field.metadata.get("doc", "")
            if not doc or "\n" in doc:
                yield prefix + field.name
            value = getattr(section, field.name)
            if dataclasses.is_dataclass(value):
                yield from undocumented(value, prefix + field.name + ".")

    assert list(undocumented(TrainConfig())) == []


def test_render_round_trips_through_load(tmp_path):
    changed = config.load(TrainConfig, None, ["optim.lr=3e-6", "eval.tasks=[aime24, math500]", "algorithm.dual_clip=3"])
    path = tmp_path / "saved.yaml"
    path.write_text(config.render(changed))
    assert config.load(TrainConfig, path) == changed


def test_options_with_a_fixed_set_of_values_are_refused_when_loaded():
    with pytest.raises(ConfigError) as error:
        config.load(TrainConfig, None, ["optim.lr_schedule=step"])
    assert str(error.value) == "optim.lr_schedule: 'step' is not one of the valid choices 'constant', 'linear', 'cosine'."
    for override, valid, hint in [
        ("algorithm.estimator=gpro", "'dr_grpo', 'grpo', 'reinforce_pp_baseline', 'rloo'", "'grpo'"),
        ("algorithm.loss_agg=token_mean", "'seq-mean-token-mean', 'seq-mean-token-sum-norm', 'token-mean'", "'token-mean'"),
        ("algorithm.kl_estimator=k4", "'k1', 'k2', 'k3'", None),
        ("rollout.engine=vlm", "'hf', 'vllm'", "'vllm'"),
        ("verifier.sandbox=bwarp", "'auto', 'bwrap', 'docker', 'subprocess'", "'bwrap'"),
        ("model.dtype=fp32", "'auto', 'float32', 'bfloat16', 'float16'", None),
    ]:
        with pytest.raises(ConfigError) as error:
            config.load(TrainConfig, None, [override])
        key, value = override.split("=")
        # Registry-backed choices also list plug-ins other tests register (e.g. a failing engine): the built-in
        # names must all be there, in order.
        message = str(error.value)
        assert message.startswith(f"{key}: {value!r} is not one of the valid choices "), message
        listed = message.split("valid choices ", 1)[1].split(".", 1)[0].split(", ")
        assert [name for name in listed if name in valid.split(", ")] == valid.split(", "), message
        assert (f"Did you mean {hint}?" in str(error.value)) == (hint is not None)


def test_registry_backed_choices_see_plug_ins_and_hub_names():
    with pytest.raises(ConfigError, match=r"data\.task: 'gsm9k' is not one of .*'gsm8k'.*'hf:\.\.\.'\. Did you mean 'gsm8k'\?"):
        config.load(TrainConfig, None, ["data.task=gsm9k"])
    assert config.load(TrainConfig, None, ["data.task=hf:org/name"]).data.task == "hf:org/name"
    with pytest.raises(ConfigError, match="data.template: 'plain'"):
        config.load(TrainConfig, None, ["data.template=plain"])

    import tasks

    @tasks.register("registered-in-a-test")
    def _task():  # a plug-in registered after the schema was defined still counts; it stays registered for
        return tasks.get("arithmetic")  # the rest of the session, so it must be a task that loads

    assert config.load(TrainConfig, None, ["data.task=registered-in-a-test"]).data.task == "registered-in-a-test"


def test_a_config_built_in_python_is_checked_by_train_and_sft(tmp_path):
    from rlvr import sft
    from rlvr.trainer import train

    cfg = TrainConfig()
    cfg.checkpoint.output_dir = str(tmp_path / "run")
    cfg.optim.lr_schedule = "step"
    with pytest.raises(ConfigError, match="optim.lr_schedule: 'step' is not one of the valid choices"):
        train(cfg)
    assert not (tmp_path / "run").exists()  # refused before anything was written or loaded
    sft_cfg = sft.SFTConfig()
    sft_cfg.data.template = "plain"
    with pytest.raises(ConfigError, match="data.template: 'plain' is not one of the valid choices 'auto', 'base'"):
        sft.train(sft_cfg)


def test_every_default_is_one_of_its_choices():
    config.validate(TrainConfig())  # every default is one of its choices
    config.validate(Outer())


@dataclass
class WithMapping:
    knobs: dict[str, Any] = option({"steps": 1, "digits": 1, "ops": "+-*"}, "A mapping-valued option with a default.")
    nested: dict[str, dict[str, Any]] = option({"gspo": {"clip_low": 1.0, "clip_high": 2.0}}, "Mappings in a mapping.")


def test_a_dotted_override_sets_one_key_of_a_mapping_option_a_file_sets_it_whole(tmp_path):
    loaded = config.load(WithMapping, None, ["knobs.digits=3", "nested.gspo.clip_high=5.0", "nested.cispo.clip_high=4.0"])
    assert loaded.knobs == {"steps": 1, "digits": 3, "ops": "+-*"}
    assert loaded.nested == {"gspo": {"clip_low": 1.0, "clip_high": 5.0}, "cispo": {"clip_high": 4.0}}
    assert WithMapping().knobs == {"steps": 1, "digits": 1, "ops": "+-*"}  # the default itself is untouched
    path = tmp_path / "c.yaml"
    path.write_text("knobs: {digits: 2}\n")
    assert config.load(WithMapping, path).knobs == {"digits": 2}  # a mapping written whole is the value
    assert config.load(WithMapping, path, ["knobs.ops=*"]).knobs == {"digits": 2, "ops": "*"}
    assert config.load(WithMapping, None, ["knobs={digits: 4}"]).knobs == {"digits": 4}
