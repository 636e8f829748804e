"""Settings precedence, the seed's environment, contexts and secret handling."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import invoke
from wsctl.config import load_settings, parse_nodes, redacted
from wsctl.errors import ConfigError


def test_defaults_mean_embedded_redis_and_seed_timings(tmp_path: Path) -> None:
    s = load_settings(env={}, cwd=tmp_path)
    assert s.embedded
    assert (s.prefix, s.heartbeat_interval, s.timeout) == ("ws_conn:", 30.0, 90.0)
    assert s.source("timeout") == "default"


def test_seed_environment_variables_are_understood(tmp_path: Path) -> None:
    env = {
        "REDIS_HOST": "redis.internal",
        "REDIS_PORT": "4031",
        "REDIS_DB": "2",
        "REDIS_USERNAME": "ops",
        "REDIS_PASSWORD": "p@ss:w/rd&#1",
        "REDIS_USE_CLUSTER": "True",
        "REDIS_NODES": "a:1,b:2,[::1]:3",
    }
    s = load_settings(env=env, cwd=tmp_path)
    assert s.redis_host == "redis.internal" and s.redis_port == 4031 and s.redis_db == 2
    assert s.redis_cluster is True
    assert s.redis_nodes == (("a", 1), ("b", 2), ("::1", 3))
    assert s.source("redis_password") == "env REDIS_PASSWORD"


def test_flags_beat_env_beat_file_beat_defaults(tmp_path: Path) -> None:
    (tmp_path / "wsctl.toml").write_text('timeout = 10\nprefix = "file:"\nscan_count = 7\n')
    env = {"WSCTL_TIMEOUT": "20", "WSCTL_PREFIX": "env:"}
    s = load_settings({"timeout": "30"}, env=env, cwd=tmp_path)
    assert s.timeout == 30.0 and s.source("timeout") == "flag"
    assert s.prefix == "env:" and s.source("prefix") == "env WSCTL_PREFIX"
    assert s.scan_count == 7 and s.source("scan_count").endswith("wsctl.toml")
    assert s.heartbeat_interval == 30.0


def test_wsctl_variables_win_over_seed_variables(tmp_path: Path) -> None:
    s = load_settings(
        env={"REDIS_URL": "redis://a/0", "WSCTL_REDIS_URL": "redis://b/0"}, cwd=tmp_path
    )
    assert s.redis_url == "redis://b/0"


def test_named_context_overrides_top_level(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        'redis_url = "redis://dev:6379/0"\n[contexts.prod]\nredis_cluster = true\n'
        'redis_nodes = ["n1:7000", "n2:7001"]\ntimeout = 120\n'
    )
    s = load_settings({"config": str(cfg), "context": "prod"}, env={}, cwd=tmp_path)
    assert s.redis_cluster and s.redis_nodes == (("n1", 7000), ("n2", 7001))
    assert s.timeout == 120.0 and "[contexts.prod]" in s.source("timeout")


def test_context_from_env_and_xdg_config_file(tmp_path: Path) -> None:
    xdg = tmp_path / "xdg"
    (xdg / "wsctl").mkdir(parents=True)
    (xdg / "wsctl" / "config.toml").write_text('[contexts.stage]\nprefix = "stage:"\n')
    s = load_settings(env={"XDG_CONFIG_HOME": str(xdg), "WSCTL_CONTEXT": "stage"}, cwd=tmp_path)
    assert s.prefix == "stage:" and s.context == "stage"


def test_unknown_context_names_the_known_ones(tmp_path: Path) -> None:
    (tmp_path / "wsctl.toml").write_text("[contexts.a]\n[contexts.b]\n")
    with pytest.raises(ConfigError, match="known: a, b"):
        load_settings({"context": "prod"}, env={}, cwd=tmp_path)


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"REDIS_PORT": "http"}, "redis_port"),
        ({"WSCTL_TIMEOUT": "-1"}, "timeout"),
        ({"REDIS_USE_CLUSTER": "maybe"}, "redis_cluster"),
        ({"REDIS_NODES": "nohostport"}, "redis_nodes"),
        ({"WSCTL_NAIVE_TZ": "Mars/Olympus"}, "naive_tz"),
        ({"WSCTL_REDIS_URL": "http://x"}, "redis_url"),
    ],
)
def test_bad_values_are_config_errors_naming_the_setting(
    env: dict[str, str], needle: str, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match=needle):
        load_settings(env=env, cwd=tmp_path)


def test_bad_password_value_is_never_echoed(tmp_path: Path) -> None:
    (tmp_path / "wsctl.toml").write_text("redis_password = 12\nbogus = 1\n")
    with pytest.raises(ConfigError) as info:
        load_settings(env={}, cwd=tmp_path)
    assert "bogus" in str(info.value)


def test_invalid_toml_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "wsctl.toml").write_text("timeout = = 3")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(env={}, cwd=tmp_path)


def test_redacted_hides_passwords_everywhere(tmp_path: Path) -> None:
    s = load_settings(
        env={"REDIS_PASSWORD": "hunter2", "REDIS_URL": "redis://u:s3cr%40t@h:1/0"}, cwd=tmp_path
    )
    text = repr(redacted(s))
    assert "hunter2" not in text and "s3cr" not in text
    assert ("redis_password", "***", "env REDIS_PASSWORD") in redacted(s)


def test_parse_nodes_skips_blanks_and_rejects_bad_ports() -> None:
    assert parse_nodes(" a:1 , ,b:2") == (("a", 1), ("b", 2))
    with pytest.raises(ConfigError):
        parse_nodes("a:99999")


@pytest.mark.parametrize("command", [["list", "connections"], ["config", "show"], ["doctor"]])
@pytest.mark.parametrize("where", ["flag", "env", "file"])
def test_a_malformed_redis_url_exits_3_with_one_line_and_no_credentials(
    command: list[str], where: str, tmp_path: Path
) -> None:
    url = "redis://:x@y:Hunter2Secret/zz@127.0.0.1:6379/0"
    env: dict[str, str] = {}
    args = list(command)
    if where == "flag":
        args = ["--redis-url", url, *command]
    elif where == "env":
        env["WSCTL_REDIS_URL"] = url
    else:
        (tmp_path / "wsctl.toml").write_text(f'redis_url = "{url}"\n')
    result = invoke(args, env=env)
    assert result.code == 3, result
    assert result.err.count("\n") == 1 and result.err.startswith("wsctl: error: ")
    for part in ("Hunter2", "Secret", "x@y", "zz@"):
        assert part not in result.err + result.out


def test_tls_settings_follow_flags_env_file_precedence(tmp_path: Path) -> None:
    (tmp_path / "wsctl.toml").write_text(
        'redis_tls = true\ntls_ca_cert = "/file/ca.pem"\ntls_cert = "/file/c.pem"\n'
        'tls_key = "/file/k.pem"\n'
    )
    env = {"WSCTL_TLS_CA_CERT": "/env/ca.pem", "WSCTL_TLS_INSECURE": "yes"}
    s = load_settings({"tls_cert": "/flag/c.pem"}, env=env, cwd=tmp_path)
    assert s.redis_tls and s.source("redis_tls").endswith("wsctl.toml")
    assert s.tls_ca_cert == "/env/ca.pem" and s.source("tls_ca_cert") == "env WSCTL_TLS_CA_CERT"
    assert s.tls_cert == "/flag/c.pem" and s.source("tls_cert") == "flag"
    assert s.tls_key == "/file/k.pem"
    assert s.tls_insecure is True


def test_tls_defaults_are_off() -> None:
    s = load_settings(env={})
    assert (s.redis_tls, s.tls_ca_cert, s.tls_cert, s.tls_key, s.tls_insecure) == (
        False,
        None,
        None,
        None,
        False,
    )


def test_tls_env_turns_redis_tls_on_for_host_port_settings(tmp_path: Path) -> None:
    s = load_settings(env={"REDIS_HOST": "redis.internal", "WSCTL_REDIS_TLS": "1"}, cwd=tmp_path)
    assert s.redis_tls and s.source("redis_tls") == "env WSCTL_REDIS_TLS"


def test_tls_paths_in_a_context_are_relative_to_the_config_file(tmp_path: Path) -> None:
    conf = tmp_path / "etc" / "wsctl.toml"
    conf.parent.mkdir()
    conf.write_text(
        '[contexts.managed]\nredis_url = "rediss://r.example:6380/0"\n'
        'tls_ca_cert = "certs/ca.pem"\ntls_cert = "/abs/client.pem"\ntls_key = "~/k.pem"\n'
    )
    s = load_settings({"config": str(conf), "context": "managed"}, env={}, cwd=tmp_path)
    assert s.tls_ca_cert == str(conf.parent / "certs" / "ca.pem")
    assert s.tls_cert == "/abs/client.pem"
    assert s.tls_key == str(Path("~/k.pem").expanduser())
    assert "[contexts.managed]" in s.source("tls_ca_cert")


def test_tls_path_from_env_expands_home_and_stays_relative_to_cwd(tmp_path: Path) -> None:
    s = load_settings(env={"WSCTL_TLS_CERT": "~/c.pem", "WSCTL_TLS_KEY": "k.pem"}, cwd=tmp_path)
    assert s.tls_cert == str(Path("~/c.pem").expanduser())
    assert s.tls_key == "k.pem"


@pytest.mark.parametrize(("name", "value"), [("WSCTL_REDIS_TLS", "maybe"), ("WSCTL_TLS_CERT", " ")])
def test_bad_tls_values_are_config_errors(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        load_settings(env={name: value})


def test_tls_env_hands_the_tls_settings_to_a_child_process(tmp_path: Path) -> None:
    from wsctl.config import tls_env

    env = {"WSCTL_REDIS_TLS": "true", "WSCTL_TLS_CA_CERT": "/ca.pem", "WSCTL_TLS_INSECURE": "0"}
    s = load_settings({"tls_cert": "/c.pem", "tls_key": "/k.pem"}, env=env, cwd=tmp_path)
    assert tls_env(s) == {
        "WSCTL_REDIS_TLS": "true",
        "WSCTL_TLS_CA_CERT": "/ca.pem",
        "WSCTL_TLS_CERT": "/c.pem",
        "WSCTL_TLS_KEY": "/k.pem",
    }
    assert load_settings(env=tls_env(s), cwd=tmp_path).tls_key == "/k.pem"
    assert tls_env(load_settings(env={}, cwd=tmp_path)) == {}


def test_redacted_shows_tls_paths_with_their_sources(tmp_path: Path) -> None:
    s = load_settings(
        {"tls_ca_cert": "/etc/ca.pem", "redis_tls": True},
        env={"WSCTL_TLS_KEY": "/secret/dir/k.pem"},
        cwd=tmp_path,
    )
    rows = {name: (shown, source) for name, shown, source in redacted(s)}
    assert rows["tls_ca_cert"] == ("/etc/ca.pem", "flag")
    assert rows["redis_tls"] == ("True", "flag")
    assert rows["tls_key"] == ("/secret/dir/k.pem", "env WSCTL_TLS_KEY")
    assert rows["tls_insecure"] == ("False", "default")


def test_request_timeout_defaults_to_5s_and_comes_from_env_or_flag(tmp_path: Path) -> None:
    assert load_settings(env={}, cwd=tmp_path).socket_timeout == 5.0
    from_env = load_settings(env={"WSCTL_SOCKET_TIMEOUT": "2.5"}, cwd=tmp_path)
    assert (from_env.socket_timeout, from_env.source("socket_timeout")) == (
        2.5,
        "env WSCTL_SOCKET_TIMEOUT",
    )
    flagged = load_settings({"socket_timeout": "0.5"}, env={"WSCTL_SOCKET_TIMEOUT": "2"})
    assert flagged.socket_timeout == 0.5
    with pytest.raises(ConfigError, match="socket_timeout"):
        load_settings(env={"WSCTL_SOCKET_TIMEOUT": "0"}, cwd=tmp_path)


def test_config_show_lists_the_request_timeout_and_its_source() -> None:
    result = invoke(
        ["--request-timeout", "1.5", "--redis-url", "redis://h:1/0", "config", "show", "-o", "json"]
    )
    assert result.code == 0, result
    rows = {row["setting"]: row for row in json.loads(result.out)}
    assert rows["socket_timeout"]["value"] == "1.5" and rows["socket_timeout"]["source"] == "flag"


def test_without_tls_resets_every_tls_setting_and_its_source(tmp_path: Path) -> None:
    from wsctl.config import TLS_SETTINGS, without_tls

    env = {"WSCTL_REDIS_TLS": "1", "WSCTL_TLS_CA_CERT": "/ca.pem", "WSCTL_TLS_INSECURE": "1"}
    s = without_tls(load_settings({"tls_cert": "/c.pem", "prefix": "p:"}, env=env, cwd=tmp_path))
    assert not s.redis_tls and not s.tls_insecure and s.tls_ca_cert is None and s.tls_cert is None
    assert all(s.source(name) == "default" for name in TLS_SETTINGS)
    assert s.prefix == "p:" and s.source("prefix") == "flag"


NODE_SPECS_WITH_CREDENTIALS = [
    "redis://:Hunter2Secret@127.0.0.1:1",
    "u:Hunter2Secret@127.0.0.1:1",
    "Hunter2Secret@127.0.0.1:1",
    "127.0.0.1:1,rediss://u:Hunter2Secret@h:2",
    "h:1/Hunter2Secret",
    "h:Hunter2Secret",
]


@pytest.mark.parametrize("nodes", NODE_SPECS_WITH_CREDENTIALS)
@pytest.mark.parametrize("where", ["flag", "env", "seed-env", "file", "file-list"])
def test_a_node_spec_with_credentials_is_refused_without_echoing_them(
    nodes: str, where: str, tmp_path: Path
) -> None:
    """Cluster nodes are host:port only: a URL or userinfo in one used to be taken as a host
    name and echoed by every connection error, and by `config show`."""
    env: dict[str, str] = {}
    for command in (["list", "robots"], ["config", "show"]):
        args = ["--cluster", *command]
        if where == "flag":
            args = ["--cluster", "--nodes", nodes, *command]
        elif where == "env":
            env["WSCTL_REDIS_NODES"] = nodes
        elif where == "seed-env":
            env = {"REDIS_USE_CLUSTER": "true", "REDIS_NODES": nodes}
        elif where == "file":
            (tmp_path / "wsctl.toml").write_text(f'redis_nodes = "{nodes}"\n')
        else:
            items = ", ".join(f'"{n}"' for n in nodes.split(","))
            (tmp_path / "wsctl.toml").write_text(f"redis_nodes = [{items}]\n")
        result = invoke(args, env=env)
        assert result.code == 3, result
        assert result.err.count("\n") == 1 and result.err.startswith("wsctl: error: ")
        assert "Hunter2" not in result.err + result.out and "Secret" not in result.err
        assert "host:port" in result.err


def test_parse_nodes_takes_host_names_and_ip_addresses() -> None:
    assert parse_nodes("a.b-c_d:1, 10.0.0.1:2,[::1]:3,[fe80::1%eth0]:4") == (
        ("a.b-c_d", 1),
        ("10.0.0.1", 2),
        ("::1", 3),
        ("fe80::1%eth0", 4),
    )


@pytest.mark.parametrize(
    "url", ["redis://Hunter2Secret@", "redis://Hunter2Secret@:6379/0", "rediss://:Hunter2Secret@/0"]
)
@pytest.mark.parametrize("command", [["list", "robots"], ["config", "show"]])
def test_a_redis_url_without_a_host_is_refused_without_its_userinfo(
    url: str, command: list[str]
) -> None:
    result = invoke(["--redis-url", url, *command])
    assert result.code == 3, result
    assert result.err.count("\n") == 1 and "no host" in result.err
    assert "Hunter2" not in result.err + result.out


def test_config_show_never_prints_url_userinfo(tmp_path: Path) -> None:
    """Users put passwords in the user part too (`redis://Hunter2Secret@host`)."""
    (tmp_path / "wsctl.toml").write_text('redis_url = "redis://Hunter2Secret@h:1/0"\n')
    result = invoke(["config", "show"])
    assert result.code == 0 and "Hunter2" not in result.out + result.err
    assert "redis://***@h:1/0" in result.out


def test_a_config_file_that_is_not_a_file_gets_a_message_that_says_what_it_is(
    tmp_path: Path,
) -> None:
    """`--config /dev/zero` and `--config /tmp` said "does not exist"; `/dev/zero` is read up
    to 1 MiB and no further; a pipe (`--config <(cmd)`) was refused the same way and is read."""
    import os
    import threading

    with pytest.raises(ConfigError, match=r"config file /dev/zero is larger than 1 MiB"):
        load_settings(flags={"config": "/dev/zero"}, env={}, cwd=tmp_path)
    with pytest.raises(ConfigError, match=rf"config file {tmp_path} is a directory"):
        load_settings(flags={"config": str(tmp_path)}, env={}, cwd=tmp_path)
    with pytest.raises(ConfigError, match=r"config file \S+ does not exist"):
        load_settings(flags={"config": str(tmp_path / "nope.toml")}, env={}, cwd=tmp_path)
    fifo = tmp_path / "cfg.fifo"
    os.mkfifo(fifo)

    def write() -> None:
        with fifo.open("w") as fh:
            fh.write('prefix = "piped:"\n')

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    settings = load_settings(flags={"config": str(fifo)}, env={}, cwd=tmp_path)
    writer.join(10)
    assert settings.prefix == "piped:"


def test_a_context_with_control_characters_is_named_as_a_shell_word(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(flags={"context": "x\x1b[2J"}, env={}, cwd=tmp_path)
    assert caught.value.message == "context $'x\\x1b[2J' given but no config file was found"
