"""Every serve setting has one name: the TOML key, the EDGE_* variable and the flag come from
the ServeSettings declaration and set the same field; the README's table is the rendering of
that declaration; unknown names are refused (TOML) or warned about (environment); any value a
hostile environment or config holds is a ConfigError or a valid setting, never a crash."""

from __future__ import annotations

import logging
import re
from dataclasses import fields
from pathlib import Path
from typing import Any

import click
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_runtime.cli_serve import serve_cmd
from edge_runtime.errors import ConfigError
from edge_runtime.settings import (
    DEPRECATED,
    ServeSettings,
    env_name,
    flag_name,
    unknown_env,
)
from edge_runtime.settings_table import END, START, markdown_table

README = Path(__file__).resolve().parents[2] / "README.md"
FIELDS = {f.name: f for f in fields(ServeSettings)}
# a valid non-default value per setting, as text (what a flag or a variable holds); settings
# not named here get one from their type (``sample``)
SAMPLES = {
    "store": "/srv/edge", "host": "::1", "port": "9091", "uds": "/run/edge.sock",
    "token": "t0k", "max_body_bytes": "1024", "body_memory_bytes": "67108864",
    "header_timeout_s": "2.5", "body_idle_timeout_s": "3.5", "body_min_bytes_per_s": "10",
    "http_server": "uvicorn", "metrics_token": "scrape", "metrics_open_on_loopback": "true",
    "trusted_keys": "/k/a.pub", "allow_unsigned": "true", "profile": "rpi4",
    "intra_op_threads": "2", "max_batch_size": "8", "max_queue_delay_ms": "2.5",
    "cache_entries": "64", "monitoring": "false", "drift": "false",
    "drift_max_rows_per_s": "50", "drift_max_cpu": "0.5", "telemetry_interval_s": "30",
    "telemetry_max_rows": "99", "telemetry_max_bytes": "12345", "telemetry_retention_s": "60",
    "log_level": "debug", "fleet_url": "mqtt://b:1883", "fleet_password_file": "/p",
    "fleet_password": "pw", "fleet": "f2", "device_id": "pi-9", "device_group": "g",
    "device_tags": "a,b", "heartbeat_s": "5", "fleet_keys": "/k/f.pub",
    "allow_unsigned_desired": "true", "mqtt_ca_file": "/ca", "mqtt_cert_file": "/c",
    "mqtt_key_file": "/k", "fault_kill_at": "LOADING",
}


def sample(name: str) -> str:
    if name in SAMPLES:
        return SAMPLES[name]
    f, kind = FIELDS[name], str(FIELDS[name].type)
    if f.metadata.get("choices"):
        return next(c for c in f.metadata["choices"] if c != f.default)
    if kind.startswith("bool"):
        return "false" if f.default else "true"
    if kind.startswith(("int", "float")):
        return "7"
    return "/sample" if "Path" in kind else "sample"


def _flag_args(name: str, text: str) -> list[str]:
    if str(FIELDS[name].type).startswith("bool"):
        return [flag_name(name) if text == "true" else f"--no-{name.replace('_', '-')}"]
    return [flag_name(name), text]


def _parse_flags(args: list[str]) -> dict[str, Any]:
    ctx = serve_cmd.make_context("serve", args)
    return {k: v for k, v in ctx.params.items() if k != "config"}


def _toml_value(name: str, text: str) -> str:
    kind = str(FIELDS[name].type)
    if kind.startswith(("bool", "int", "float")):
        return text
    if kind.startswith("tuple"):
        return "[" + ", ".join(f'"{p}"' for p in text.split(",")) + "]"
    return f'"{text}"'


@pytest.mark.parametrize("name", sorted(FIELDS))
def test_toml_key_variable_and_flag_set_the_same_field(name: str, tmp_path: Path) -> None:
    text = sample(name)
    config = tmp_path / "edge.toml"
    config.write_text(f"[serve]\n{name} = {_toml_value(name, text)}\n")
    by_toml = ServeSettings.load(config=config, env={})
    by_env = ServeSettings.load(env={env_name(name): text})
    assert getattr(by_toml, name) == getattr(by_env, name) != getattr(ServeSettings(), name)
    if FIELDS[name].metadata["flag"]:
        by_flag = ServeSettings.load(overrides=_parse_flags(_flag_args(name, text)), env={})
        assert getattr(by_flag, name) == getattr(by_env, name)
    else:  # secrets and test hooks stay off the command line
        with pytest.raises(click.NoSuchOption):
            _parse_flags(_flag_args(name, text))


def test_edge_port_is_read() -> None:
    assert ServeSettings.load(env={"EDGE_PORT": "9999"}).port == 9999


def test_flags_override_variables_override_toml(tmp_path: Path) -> None:
    config = tmp_path / "edge.toml"
    config.write_text("intra_op_threads = 1\nport = 1\n")
    s = ServeSettings.load(config=config, env={"EDGE_INTRA_OP_THREADS": "2", "EDGE_PORT": "2"},
                           overrides=_parse_flags(["--port", "3"]))
    assert (s.intra_op_threads, s.port) == (2, 3)


@pytest.mark.parametrize(("old", "new"), sorted(DEPRECATED.items()))
def test_old_spellings_work_with_a_warning(old: str, new: str, tmp_path: Path,
                                           caplog: pytest.LogCaptureFixture) -> None:
    text = sample(new)
    config = tmp_path / f"{old}.toml"
    config.write_text(f"{old} = {_toml_value(new, text)}\n")
    with caplog.at_level(logging.WARNING, logger="edge_runtime.settings"):
        by_toml = ServeSettings.load(config=config, env={})
        by_flag = ServeSettings.load(overrides=_parse_flags([f"--{old.replace('_', '-')}",
                                                             text]), env={})
    expected = getattr(ServeSettings.load(env={env_name(new): text}), new)
    assert getattr(by_toml, new) == getattr(by_flag, new) == expected
    assert any(f"'{old}' is deprecated, the setting is '{new}'" in r.getMessage()
               for r in caplog.records)


def test_unknown_toml_key_names_the_close_one(tmp_path: Path) -> None:
    config = tmp_path / "edge.toml"
    config.write_text("[serve]\nmax_batch_sise = 4\n")
    with pytest.raises(ConfigError, match=r"unknown settings \['max_batch_sise'\] "
                                          r"\(did you mean max_batch_sise -> max_batch_size\?\)"):
        ServeSettings.load(config=config, env={})


def test_unknown_edge_variables_are_listed_with_a_hint() -> None:
    env = {"EDGE_PROT": "1", "EDGE_PORT": "1", "EDGE_DEBUG": "1", "EDGE_ZZZZZZZZ": "x",
           "PATH": "/bin", "EDGE_MAX_BATCH_SIZE": "2"}
    assert unknown_env(env) == ["EDGE_PROT (did you mean EDGE_PORT?)", "EDGE_ZZZZZZZZ"]
    assert ServeSettings.load(env=env).port == 1  # the unknown ones change nothing


@pytest.mark.parametrize(("name", "bad"), [
    ("port", "eighty"), ("port", "-1"), ("monitoring", "maybe"), ("header_timeout_s", "nan"),
    ("header_timeout_s", "inf"), ("header_timeout_s", "0"), ("drift_max_cpu", "2"),
    ("drift_max_rows_per_s", "-1"), ("http_server", "nginx"), ("max_body_bytes", "1e9"),
])
def test_bad_values_are_one_config_error(name: str, bad: str) -> None:
    with pytest.raises(ConfigError, match=name):
        ServeSettings.load(env={env_name(name): bad})


@pytest.mark.parametrize(("name", "value"), [
    ("host", "5"), ("port", "true"), ("port", "1.5"), ("monitoring", '"sometimes"'),
    ("trusted_keys", "[1, 2]"), ("profile", "[]"), ("serve", "5"),
])
def test_wrong_toml_types_are_one_config_error(name: str, value: str, tmp_path: Path) -> None:
    config = tmp_path / "edge.toml"
    config.write_text(f"{name} = {value}\n")
    with pytest.raises(ConfigError):
        ServeSettings.load(config=config, env={})


_VALUES = st.one_of(st.sampled_from(["", "0", "1", "-1", "true", "nan", "1e999", "a,b", ",",
                                     "\x00", "9" * 40, "mqtt://x", "builtin"]),
                    st.text(max_size=20))


@settings(max_examples=300, deadline=None)
@given(env=st.dictionaries(st.sampled_from(sorted(env_name(n) for n in FIELDS)), _VALUES,
                           max_size=4))
def test_any_environment_is_a_setting_or_one_config_error(env: dict[str, str]) -> None:
    try:
        s = ServeSettings.load(env=env)
    except ConfigError as exc:
        assert str(exc)
    else:
        assert s.port >= 0 and s.max_body_bytes > 0


# -- the README's table -------------------------------------------------------------------
def test_readme_table_is_the_rendering_of_the_declaration() -> None:
    readme = README.read_text()
    assert readme.count(START) == 1 and readme.count(END) == 1, (
        "README needs one generated settings table: python -m edge_runtime.settings_table")
    block = readme[readme.index(START):readme.index(END) + len(END)]
    assert block == markdown_table(), (
        "README settings table is stale: regenerate it with `edge-runtime settings --markdown`")


def test_table_has_one_row_per_setting_with_its_three_names() -> None:
    rows = [line for line in markdown_table().splitlines() if line.startswith("| `")]
    assert len(rows) == len(FIELDS)
    for row, name in zip(rows, FIELDS, strict=True):
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", row)[1:-1]]
        flag = f"`{flag_name(name)}`" if FIELDS[name].metadata["flag"] else "-"
        assert cells[:3] == [f"`{name}`", flag, f"`{env_name(name)}`"]
        assert cells[4]


def test_settings_command_prints_the_table() -> None:
    from click.testing import CliRunner

    from edge_runtime.cli import cli

    out = CliRunner().invoke(cli, ["settings", "--markdown"])
    assert out.exit_code == 0 and out.output == markdown_table() + "\n"
    plain = CliRunner().invoke(cli, ["settings"])
    assert plain.exit_code == 0 and "EDGE_INTRA_OP_THREADS" in plain.output
