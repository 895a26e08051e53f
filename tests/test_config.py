"""Config: defaults -> YAML -> dotted overrides, strict keys, round trip."""

from __future__ import annotations

import pytest

from prvql.config import Config, config_from_dict, config_to_dict, dump_config, load_config, write_config
from prvql.errors import ConfigError


def test_yaml_and_overrides_apply_in_order(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  num_stages: 2\n  akg:\n    tau: 0.5\ntrain:\n  lr: 3.0e-4\n")
    cfg = load_config(path, ["model.akg.tau=0.9", "model.head.anchor_sizes=[8, 16]", "data.frames_dir=null"])
    assert cfg.model.num_stages == 2
    assert cfg.model.akg.tau == 0.9
    assert cfg.train.lr == pytest.approx(3e-4)
    assert cfg.model.head.anchor_sizes == (8.0, 16.0)
    assert cfg.data.frames_dir is None
    assert cfg.model.akg.top_n == Config().model.akg.top_n  # untouched keys keep their defaults


@pytest.mark.parametrize(
    "override, message",
    [
        ("model.akg.tua=0.5", "unknown config key 'model.akg.tua'"),
        ("model.num_stages=two", "model.num_stages: expected an integer"),
        ("model.akg.enabled=3", "model.akg.enabled: expected true or false"),
        ("model.akg", "not of the form"),
    ],
)
def test_bad_overrides_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_unknown_key_in_file_names_file_and_key(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model:\n  skg:\n    alhpa: 0.3\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: unknown config key 'model\.skg\.alhpa'"):
        load_config(path)


def test_round_trip_through_yaml_and_dict(tmp_path):
    cfg = load_config("tiny", ["model.qfr.mode=concat", "loss.stage_weights=sum"])
    write_config(cfg, tmp_path / "config.yaml")
    again = load_config(tmp_path / "config.yaml")
    assert again == cfg
    assert config_from_dict(config_to_dict(cfg)) == cfg
    assert "mode: concat" in dump_config(cfg)


def test_every_preset_loads():
    for name in ("prvql_vitb14", "vqloc_vitb14", "tiny"):
        assert isinstance(load_config(name), Config)
    assert load_config("vqloc_vitb14").model.num_stages == 1
    with pytest.raises(ConfigError, match="neither a file nor a preset"):
        load_config("no_such_preset")
