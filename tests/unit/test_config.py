"""Presets, overrides and method names."""
import pytest

import bluebook
from bluebook.core.config import EditConfig, available_presets, load_preset, with_overrides
from bluebook.core.methods import METHODS, parse_method


def test_every_preset_loads_for_every_method():
    for name in available_presets():
        for m in METHODS:
            cfg = load_preset(name, m)
            assert isinstance(cfg, EditConfig) and cfg.layers


def test_paper_presets_keep_paper_values():
    assert load_preset("llama3-8b").lam == 15000.0 and load_preset("llama3-8b").layers == (4, 5, 6, 7, 8)
    assert load_preset("gpt2-xl").alpha_blue == 80.0 and load_preset("gpt-j-6b").alpha_blue == 95.0
    assert load_preset("gpt2-xl").target.steps == 20


def test_unknown_keys_are_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown key"):
        with_overrides(load_preset("generic"), lamda=3.0)
    with pytest.raises(ValueError, match="unknown key"):
        with_overrides(load_preset("generic"), target={"step": 3})
    p = tmp_path / "x.yaml"
    p.write_text("base: {layers: [1, 2]}\nextra: 1\n")
    with pytest.raises(ValueError, match="unknown top-level"):
        load_preset(str(p))


def test_yaml_floats_are_cast(tmp_path):
    p = tmp_path / "x.yaml"
    p.write_text("base: {layers: [1, 2], lam: 1e-2, target: {lr: 5e-1}}\n")
    cfg = load_preset(str(p))
    assert cfg.lam == 0.01 and isinstance(cfg.lam, float) and cfg.target.lr == 0.5


def test_boundary_layers():
    assert EditConfig(layers=(3, 4, 5)).boundary_layers() == (3, 5)
    with pytest.raises(ValueError, match="two"):
        EditConfig(layers=(3,)).boundary_layers()


@pytest.mark.parametrize("name,base,blue", [("memit", "memit", False), ("MEMIT-BLUE", "memit", True),
                                            ("alphaedit_blue", "alphaedit", True), ("prune", "prune", False)])
def test_method_names(name, base, blue):
    m = parse_method(name)
    assert (m.base, m.blue) == (base, blue)


def test_unknown_method():
    with pytest.raises(ValueError, match="unknown method 'rome'"):
        parse_method("rome")


def test_preset_chosen_from_architecture_not_name(tmp_path):
    model, _ = bluebook.tiny_model("tiny-llama")
    cfg = bluebook.preset_for(model)
    assert max(cfg.layers) < model.config.num_hidden_layers
    from transformers import LlamaConfig

    from bluebook.core.presets import preset_name

    class Fake:
        config = LlamaConfig(num_hidden_layers=30, hidden_size=576, intermediate_size=1536,
                             num_attention_heads=9, num_key_value_heads=3)
    assert preset_name(Fake()) == "smollm2-135m"


def test_for_method_reads_one_value_or_a_per_method_mapping():
    """One value is everyone's; a mapping keyed by method names gives each its own entry and None
    (the preset) to a method it omits; a mapping of hyperparameters is one value for all."""
    from bluebook.core.names import for_method
    assert for_method(None, "memit") is None
    assert for_method("gpt2-xl", "memit_blue") == "gpt2-xl"
    per = {"memit": {"lam": 1.0}, "alphaedit_blue_dynamic": {"lam": 2.0}}
    assert for_method(per, "memit") == {"lam": 1.0}
    assert for_method(per, "alphaedit_blue_dynamic") == {"lam": 2.0}
    assert for_method(per, "memit_blue") is None
    shared = {"lam": 3.0, "target": {"steps": 5}}
    assert for_method(shared, "rect") is shared
    assert for_method({}, "memit") == {}
