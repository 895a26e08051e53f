"""Config: defaults -> YAML -> dotted overrides, strict keys, round trip; every key's origin and docs/CONFIG.md;
removed keys."""

from __future__ import annotations

import dataclasses
import logging
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from prvql.config import (
    CONFIG_DOC,
    ORIGINS,
    REGENERATE,
    REMOVED_KEYS,
    Config,
    config_from_dict,
    config_keys,
    config_to_dict,
    dump_config,
    load_config,
    render_config_markdown,
    write_config,
)
from prvql.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


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


def test_every_key_has_an_origin_and_a_meaning():
    """Each key of the schema names where it comes from (one of the four origins) and what it means."""
    keys = config_keys()
    assert len(keys) == len({k.name for k in keys}) > 100
    missing = [k.name for k in keys if k.origin not in ORIGINS or not k.doc]
    assert not missing, f"keys without an origin in {sorted(ORIGINS)} or a meaning (prvql/config.py _key): {missing}"
    assert set(ORIGINS) == {"paper", "released", "ours", "experiment"}
    assert {k.origin for k in keys} == set(ORIGINS)


def test_key_table_lists_every_leaf_of_the_defaults():
    """config_keys() walks the same tree as config_to_dict: same dotted names, same defaults."""

    def flat(data, prefix=""):
        for key, value in data.items():
            if isinstance(value, dict):
                yield from flat(value, f"{prefix}{key}.")
            else:
                yield f"{prefix}{key}", value

    defaults = dict(flat(config_to_dict(Config())))
    keys = config_keys()
    assert [k.name for k in keys] == list(defaults)
    assert {k.name: config_to_dict(k.default) if isinstance(k.default, tuple) else k.default for k in keys} == {
        name: value for name, value in defaults.items()
    }


def test_a_key_without_an_origin_is_refused(monkeypatch):
    """The renderer refuses a schema with a key that has no origin (or an origin outside the four)."""
    import prvql.config as config_module

    @dataclasses.dataclass
    class Loose:
        plain: int = 3
        odd: int = config_module._key(1, "folklore", "an origin that is not one of the four")

    found = {k.name: k.origin for k in config_keys(Loose)}
    assert found == {"plain": None, "odd": "folklore"}
    monkeypatch.setattr(config_module, "config_keys", lambda: config_keys(Loose))
    with pytest.raises(ConfigError, match="without an origin .*: plain, odd"):
        render_config_markdown()


def test_config_doc_is_up_to_date():
    """docs/CONFIG.md is what ``python -m prvql.config --markdown`` renders: every key with its default, origin and
    meaning, the keys each preset (and the shipped demo model) sets, the removed keys."""
    text = (ROOT / CONFIG_DOC).read_text(encoding="utf-8")
    assert text == render_config_markdown(), f"docs/CONFIG.md is out of date: run `{REGENERATE}`"
    for key in config_keys():
        assert f"| `{key.name}` | " in text
    for removed in REMOVED_KEYS:
        assert f"| `{removed}` | " in text


def test_the_markdown_command_prints_the_table():
    run = subprocess.run(
        [sys.executable, "-m", "prvql.config", "--markdown"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout == render_config_markdown()


def test_removed_keys_are_gone_and_stored_configs_holding_them_still_load(tmp_path, caplog):
    """A config written before a key's removal loads (the key dropped; a warning only where it held another value
    than the neutral one); a config file or override that sets it to another value names the removal."""
    current = {k.name for k in config_keys()}
    assert REMOVED_KEYS and not set(REMOVED_KEYS) & current
    old = config_to_dict(load_config("tiny", ["inference.window_overlap=2"]))
    for dotted, (neutral, _) in REMOVED_KEYS.items():
        section, leaf = dotted.rsplit(".", 1)
        assert section == "inference"
        old["inference"][leaf] = neutral
    with caplog.at_level(logging.WARNING, logger="prvql.config"):
        assert config_from_dict(old) == load_config("tiny", ["inference.window_overlap=2"])
    assert not caplog.records
    path = tmp_path / "old_run_config.yaml"  # what write_config wrote into run folders before the removal
    path.write_text(yaml.safe_dump(old))
    assert load_config(path) == load_config("tiny", ["inference.window_overlap=2"])
    assert load_config(None, ["inference.flip_tta=false"]) == Config()

    old["inference"]["flip_tta"], old["inference"]["num_stages"] = True, 2
    with caplog.at_level(logging.WARNING, logger="prvql.config"):
        assert config_from_dict(old) == load_config("tiny", ["inference.window_overlap=2"])
    assert {r.getMessage().split(":")[0] for r in caplog.records} == {
        "ignoring the removed config key inference.flip_tta=True",
        "ignoring the removed config key inference.num_stages=2",
    }
    assert old["inference"]["flip_tta"] is True  # the caller's dict is left as it was
    with pytest.raises(ConfigError, match=r"config key 'inference.flip_tta' was removed: test-time mirrored view"):
        load_config(None, ["inference.flip_tta=true"])
    old["inference"]["flip_tta"] = False
    path.write_text(yaml.safe_dump(old))
    with pytest.raises(ConfigError, match=r"old_run_config.yaml: config key 'inference.num_stages' was removed"):
        load_config(path)


def test_shipped_demo_config_loads_without_warnings(caplog):
    """The demo model's stored config predates the removals (it holds inference.flip_tta and num_stages at their
    neutral values): it loads silently, with the stages' mean it was shipped with."""
    from prvql.weights_file import load_weights_config

    with caplog.at_level(logging.WARNING, logger="prvql.config"):
        cfg = load_weights_config(ROOT / "prvql" / "weights" / "demo.safetensors")
    assert not caplog.records
    assert cfg.inference.stage_mean is True
