"""Broker passwords: read from a file or the environment, kept out of every URL that is shown,
of settings' repr and of error messages, whatever the URL looks like."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_runtime.errors import ConfigError
from edge_runtime.protocol.link import (
    MqttSettings,
    password_in_url,
    read_password_file,
    redact_url,
)
from edge_runtime.settings import ServeSettings
from fleet.settings import BROKER_PASSWORD_ENV, ManagerSettings, broker_password

MARK = "Zq9xSecretMark"  # inside every password below, so it is easy to look for


@pytest.mark.parametrize(("url", "shown"), [
    ("mqtt://dev-a:pw@host:1883", "mqtt://dev-a:***@host:1883"),
    ("mqtts://dev-a:p%40ss@[::1]:8883", "mqtts://dev-a:***@[::1]:8883"),
    ("mqtt://dev-a:p@ss:w/rd#x@host", "mqtt://dev-a:***@host"),  # unescaped @ / # in it
    ("mqtt://:pw@host", "mqtt://:***@host"),
    ("dev-a:pa://ss@host", "dev-a:***@host"),  # a "://" inside the password is no scheme
    ("mqtt://dev-a@host:1883", "mqtt://dev-a@host:1883"),
    ("mqtt://host:1883", "mqtt://host:1883"),
    ("", ""),
])
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown
    assert password_in_url(url) == (shown != url)


@pytest.mark.parametrize(("settings_", "shown"), [
    (MqttSettings(host="h", port=1, username="dev-a", password=MARK), "mqtt://dev-a:***@h:1"),
    (MqttSettings(host="h", username="dev a/b"), "mqtt://dev%20a%2Fb@h:1883"),
    (MqttSettings(host="::1", port=8883, tls=True), "mqtts://[::1]:8883"),
    (MqttSettings(password=MARK), "mqtt://:***@127.0.0.1:1883"),
])
def test_settings_show_a_url_without_the_password(settings_: MqttSettings, shown: str) -> None:
    assert settings_.url == shown
    assert MARK not in repr(settings_) and MARK not in repr(ManagerSettings(mqtt=settings_))


def test_a_password_given_apart_takes_precedence_over_the_urls() -> None:
    s = MqttSettings.from_url(f"mqtts://dev-a:{MARK}@broker:8883", password="from-file")
    assert (s.username, s.password, s.host, s.port, s.tls) == (
        "dev-a", "from-file", "broker", 8883, True)
    assert MqttSettings.from_url(f"mqtt://dev-a:{MARK}@b").password == MARK  # still works
    assert MqttSettings.from_url("mqtt://dev-a@b", password=MARK).password == MARK


@pytest.mark.parametrize("rest", [
    "host:notaport", "host:99999", "[::1", "host/path", "host?q=1", "host:1883#frag", "",
])
@pytest.mark.parametrize("scheme", ["mqtt", "http"])
def test_bad_urls_are_refused_without_showing_the_password(scheme: str, rest: str) -> None:
    with pytest.raises(ConfigError) as err:
        MqttSettings.from_url(f"{scheme}://dev-a:{MARK}@{rest}")
    assert MARK not in str(err.value) and "dev-a:***@" in str(err.value)


text = st.text(st.characters(codec="utf-8"), max_size=30)


@settings(max_examples=400, deadline=None)
@given(before=text, after=text, rest=text, scheme=st.sampled_from(["mqtt", "mqtts", "x", ""]))
def test_no_url_leaks_its_password(before: str, after: str, rest: str, scheme: str) -> None:
    """Any text after the password (a host, garbage, more @ / # :) and any text around the
    marker in the password: the shown URL, the error and the settings never hold the marker."""
    url = f"{scheme}://dev-a:{before}{MARK}{after}@{rest}" if scheme else \
        f"dev-a:{before}{MARK}{after}@{rest}"
    assert MARK not in redact_url(url) and password_in_url(url)
    try:
        s = MqttSettings.from_url(url)
    except ConfigError as exc:
        assert MARK not in str(exc)
    else:
        assert s.password is not None and MARK in s.password
        assert MARK not in s.url and MARK not in repr(s)


@settings(max_examples=200, deadline=None)
@given(url=st.text(max_size=60))
def test_redaction_never_raises_and_keeps_urls_without_a_password(url: str) -> None:
    shown = redact_url(url)
    assert shown == url or "***" in shown
    with contextlib.suppress(ConfigError):  # refused is fine; any other exception is a bug
        MqttSettings.from_url(url)


# -- password files -------------------------------------------------------------------------------
@pytest.mark.parametrize(("content", "password"), [
    (b"s3cret\n", "s3cret"), (b"s3cret", "s3cret"), (b"s3cret\r\n", "s3cret"),
    (b" spaced pw \n", " spaced pw "), ("pässwörd\n".encode(), "pässwörd"),
])
def test_password_file(tmp_path: Path, content: bytes, password: str) -> None:
    f = tmp_path / "pw"
    f.write_bytes(content)
    assert read_password_file(f) == password


@pytest.mark.parametrize(("content", "message"), [
    (b"", "one line"), (b"\n", "one line"), (f"{MARK}\nsecond\n".encode(), "one line"),
    (f"{MARK}\n\n".encode(), "one line"), (b"\xff\xfe" + MARK.encode(), "not UTF-8"),
    (MARK.encode() * 400, "longer than 4096 bytes"),
])
def test_bad_password_files_are_refused_without_their_content(tmp_path: Path, content: bytes,
                                                               message: str) -> None:
    f = tmp_path / "pw"
    f.write_bytes(content)
    with pytest.raises(ConfigError, match=message) as err:
        read_password_file(f)
    assert MARK not in str(err.value) and str(f) in str(err.value)


def test_missing_password_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read it"):
        read_password_file(tmp_path / "nope")
    with pytest.raises(ConfigError, match="cannot read it"):
        read_password_file(tmp_path)  # a directory


# -- where the daemon and the manager take it from -----------------------------------------------
def test_daemon_password_from_file_env_or_url(tmp_path: Path) -> None:
    f = tmp_path / "pw"
    f.write_text(f"{MARK}-file\n")
    url = "mqtts://pi-07@broker:8883"
    by_file = ServeSettings.load(overrides={"fleet_url": url, "fleet_password_file": f}, env={})
    by_env = ServeSettings.load(overrides={"fleet_url": url}, env={"EDGE_FLEET_PASSWORD": MARK})
    by_env_file = ServeSettings.load(overrides={"fleet_url": url},
                                     env={"EDGE_FLEET_PASSWORD_FILE": str(f)})
    in_url = ServeSettings.load(overrides={"fleet_url": f"mqtts://pi-07:{MARK}@broker:8883"},
                                env={})
    assert by_file.fleet_mqtt().password == f"{MARK}-file" == by_env_file.fleet_mqtt().password
    assert by_env.fleet_mqtt().password == MARK == in_url.fleet_mqtt().password
    for s in (by_file, by_env, by_env_file, in_url):
        assert s.fleet_mqtt().url == "mqtts://pi-07:***@broker:8883"
        assert MARK not in repr(s)
    with pytest.raises(ConfigError, match="one way"):
        ServeSettings.load(overrides={"fleet_url": url, "fleet_password_file": f},
                           env={"EDGE_FLEET_PASSWORD": MARK})
    with pytest.raises(ConfigError, match="cannot read it"):
        ServeSettings.load(overrides={"fleet_url": url, "fleet_password_file": tmp_path / "x"},
                           env={}).fleet_mqtt()


def test_manager_password_from_file_or_env(tmp_path: Path) -> None:
    f = tmp_path / "pw"
    f.write_text(f"{MARK}\n")
    assert broker_password(f, {}) == MARK
    assert broker_password(None, {BROKER_PASSWORD_ENV: MARK}) == MARK
    assert broker_password(None, {}) is None and broker_password(None, {BROKER_PASSWORD_ENV: ""}) \
        is None
    with pytest.raises(ConfigError, match="one way"):
        broker_password(f, {BROKER_PASSWORD_ENV: "x"})
