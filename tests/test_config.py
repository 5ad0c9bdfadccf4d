from __future__ import annotations

import pytest

from audience_profiles.config import PROJECT_ROOT, ConfigError, load_config, parse_config


def test_default_config_is_valid():
    config = load_config(PROJECT_ROOT / "include" / "config" / "pipeline.yml")
    assert config.warehouse.engine == "duckdb"
    assert [d.kind for d in config.destinations] == ["local"]
    assert config.landing_root.startswith(str(PROJECT_ROOT))


def test_env_expansion_and_relative_paths(monkeypatch):
    monkeypatch.setenv("LANDING", "/data/in")
    config = parse_config(
        {"start_date": "2022-01-01", "landing_root": "${LANDING}", "work_dir": "${MISSING:-w}"},
        "p.yml",
    )
    assert config.landing_root == "/data/in"
    assert config.work_dir == str(PROJECT_ROOT / "w")


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"landing_root": "x"}, "p.yml: missing required key start_date"),
        (
            {"start_date": "2022-13-01", "landing_root": "x"},
            "start_date '2022-13-01' is not YYYY-MM-DD",
        ),
        (
            {"start_date": "2022-01-01", "landing_root": "x", "warehouse": {"engine": "oracle"}},
            "warehouse.engine",
        ),
        (
            {"start_date": "2022-01-01", "landing_root": "x", "destinations": [{"name": "a"}]},
            "missing required key destinations[0].kind",
        ),
        (
            {
                "start_date": "2022-01-01",
                "landing_root": "x",
                "destinations": [{"name": "a", "kind": "local", "tables": ["nope"]}],
            },
            "destinations[0].tables: unknown table 'nope'",
        ),
        (
            {
                "start_date": "2022-01-01",
                "landing_root": "x",
                "destinations": [{"name": "a", "kind": "local", "pii": "maybe"}],
            },
            "destinations[0].pii",
        ),
        (
            {
                "start_date": "2022-01-01",
                "landing_root": "x",
                "destinations": [{"name": "a", "kind": "local"}, {"name": "a", "kind": "s3"}],
            },
            "destination names must be unique: a",
        ),
    ],
)
def test_errors_name_file_and_key(raw, message):
    with pytest.raises(ConfigError, match=".*"):
        parse_config(raw, "p.yml")
    with pytest.raises(ConfigError) as err:
        parse_config(raw, "p.yml")
    assert message in str(err.value)
    assert str(err.value).startswith("p.yml")


def test_retention_is_validated_when_the_file_loads():
    with pytest.raises(
        ConfigError, match=r"p.yml: retention.interactions_days must be a whole number"
    ):
        parse_config(
            {
                "start_date": "2022-01-01",
                "landing_root": "x",
                "retention": {"interactions_days": 0},
            },
            "p.yml",
        )


def test_unreadable_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="nope.yml: cannot read"):
        load_config(tmp_path / "nope.yml")
