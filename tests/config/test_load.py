"""The one config loader: YAML + overrides -> frozen dataclasses, strictly."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest
import yaml

from histo_daen.config import diff_configs, dump_config, load_config, parse_overrides, to_plain_dict
from histo_daen.errors import ConfigError


@dataclass(frozen=True)
class _Optim:
    lr: float = 0.01
    momentum: float = 0.9


@dataclass(frozen=True)
class _Run:
    variant: Literal["daen", "seam"] = "daen"
    epochs: int = 8
    scales: tuple[float, ...] = (1.0,)
    pretrained: Path | None = None
    optim: _Optim = field(default_factory=_Optim)


def test_defaults_come_from_the_dataclass() -> None:
    assert load_config(_Run) == _Run()


def test_yaml_file_sets_only_what_differs(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("variant: seam\noptim:\n  lr: 0.1\n")
    cfg = load_config(_Run, path)
    assert cfg.variant == "seam"
    assert cfg.optim == _Optim(lr=0.1, momentum=0.9)
    assert cfg.epochs == 8


def test_overrides_win_over_the_file(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("epochs: 2\n")
    cfg = load_config(_Run, path, overrides=["epochs=3", "optim.lr=5e-3", "scales=[0.5, 1, 2]"])
    assert (cfg.epochs, cfg.optim.lr, cfg.scales) == (3, 0.005, (0.5, 1.0, 2.0))


def test_cli_options_left_at_none_are_not_overrides() -> None:
    cfg = load_config(_Run, overrides={"epochs": None, "optim": {"lr": 0.5, "momentum": None}})
    assert cfg == _Run(optim=_Optim(lr=0.5))


def test_unknown_key_names_the_file_and_the_nearest_key(tmp_path: Path) -> None:
    path = tmp_path / "typo.yaml"
    path.write_text("epoch: 3\n")
    with pytest.raises(ConfigError, match=r"typo\.yaml: unknown key 'epoch' for _Run\. Did you mean 'epochs'\?"):
        load_config(_Run, path)


def test_unknown_nested_key_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"unknown key 'lrr' for _Optim\. Did you mean 'lr'\?"):
        load_config(_Run, overrides=["optim.lrr=1"])


def test_wrong_type_is_refused_with_the_key() -> None:
    with pytest.raises(ConfigError, match=r"epochs: expected an integer, got 'many'"):
        load_config(_Run, overrides=["epochs=many"])


def test_closed_choice_lists_the_valid_values() -> None:
    with pytest.raises(ConfigError, match=r"'daem' is not one of daen, seam\. Did you mean 'daen'\?"):
        load_config(_Run, overrides=["variant=daem"])


def test_override_without_equals_sign_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"expected KEY=VALUE, e\.g\. optim\.lr=0\.01 or batch_size=8"):
        parse_overrides(["epochs"])


def test_file_that_is_not_a_mapping_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "list.yaml"
    path.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match=r"list\.yaml: expected a mapping"):
        load_config(_Run, path)


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.yaml: config file not found"):
        load_config(_Run, tmp_path / "nope.yaml")


def test_dumped_config_loads_back_equal(tmp_path: Path) -> None:
    cfg = _Run(variant="seam", scales=(0.5, 1.0), pretrained=Path("w.pth"), optim=_Optim(lr=0.2))
    path = dump_config(cfg, tmp_path / "config.yaml")
    assert yaml.safe_load(path.read_text())["pretrained"] == "w.pth"
    assert load_config(_Run, path) == cfg


def test_plain_dict_holds_json_types_only() -> None:
    plain = to_plain_dict(_Run(pretrained=Path("a/b.pth")))
    assert plain == {
        "variant": "daen",
        "epochs": 8,
        "scales": [1.0],
        "pretrained": "a/b.pth",
        "optim": {"lr": 0.01, "momentum": 0.9},
    }


def test_diff_configs_names_each_differing_field() -> None:
    stored = {"variant": "seam", "optim": {"lr": 0.01, "momentum": 0.9}}
    requested = {"variant": "daen", "optim": {"lr": 0.01, "momentum": 0.0}, "width": 1.0}
    assert diff_configs(stored, requested) == {
        "optim.momentum": (0.9, 0.0),
        "variant": ("seam", "daen"),
        "width": (None, 1.0),
    }


# --- shipped configs, by name --------------------------------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[2]


def test_every_shipped_config_is_addressable_by_name() -> None:
    from histo_daen.config.load import shipped_configs

    shipped = shipped_configs()
    assert list(shipped) == sorted(path.stem for path in (ROOT / "configs").glob("*.yaml"))
    assert all(path.read_text() == (ROOT / "configs" / path.name).read_text() for path in shipped.values())


def test_a_name_loads_the_shipped_file_from_any_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from histo_daen.config.schema import TrainConfig

    monkeypatch.chdir(tmp_path)  # no configs/ here
    by_name = load_config(TrainConfig, "luad_seam")
    assert (
        by_name
        == load_config(TrainConfig, "luad_seam.yaml")
        == load_config(TrainConfig, ROOT / "configs" / "luad_seam.yaml")
    )
    assert by_name.model.variant == "seam"


def test_a_file_wins_over_a_shipped_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    Path("demo").write_text("epochs: 3\n")
    assert load_config(_Run, "demo").epochs == 3


def test_an_unknown_name_lists_the_shipped_configs() -> None:
    with pytest.raises(
        ConfigError, match=r"luad_deen: config file not found, and not the name of a shipped config \(.*luad_daen"
    ):
        load_config(_Run, "luad_deen")
