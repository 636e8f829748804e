"""Target resolution, URL redaction and reply parsing: no server needed."""

from __future__ import annotations

import pytest

from wsctl.config import Settings, load_settings
from wsctl.errors import ConfigError
from wsctl.redis.factory import target_from_settings
from wsctl.redis.internals import pack_commands
from wsctl.redis.pubsub import _numsub_value
from wsctl.redis.target import redact_url


def test_redact_url_never_shows_the_user_part() -> None:
    """Users put passwords in the user name too (`redis://Hunter2Secret@host`)."""
    assert redact_url("redis://ops:p%40ss@host:6379/1") == "redis://***@host:6379/1"
    assert redact_url("redis://Hunter2Secret@host:6379/1") == "redis://***@host:6379/1"
    assert redact_url("rediss://u:p@[::1]:7/0") == "rediss://***@[::1]:7/0"
    assert redact_url("redis://host:6379/0") == "redis://host:6379/0"


def test_password_with_url_specials_from_env_is_passed_verbatim() -> None:
    settings = load_settings(env={"REDIS_HOST": "h", "REDIS_PASSWORD": "a@b:c/d&e#f"})
    target = target_from_settings(settings)
    assert target.password == "a@b:c/d&e#f" and target.host == "h"
    assert "a@b" not in target.describe()
    assert target.scrub("failed for a@b:c/d&e#f") == "failed for ***"


def test_percent_encoded_url_password_is_decoded() -> None:
    target = target_from_settings(load_settings(env={"REDIS_URL": "redis://u:p%40%3Ass@h:7/3"}))
    assert (target.username, target.password, target.port, target.db) == ("u", "p@:ss", 7, 3)


def test_seed_cluster_settings_give_a_cluster_target() -> None:
    env = {"REDIS_USE_CLUSTER": "true", "REDIS_NODES": "a:1,b:2", "REDIS_USERNAME": "u"}
    target = target_from_settings(load_settings(env=env))
    assert target.kind == "cluster" and target.nodes == (("a", 1), ("b", 2))
    assert target.describe() == "cluster ***@a:1,b:2"  # a user name is never shown


def test_unix_url_and_rediss() -> None:
    assert (
        target_from_settings(load_settings(env={"REDIS_URL": "unix:///tmp/r.sock?db=2"})).path
        == "/tmp/r.sock"
    )
    assert target_from_settings(load_settings(env={"REDIS_URL": "rediss://h:1/0"})).ssl


def test_embedded_without_a_running_server_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        target_from_settings(load_settings(env={}))


@pytest.mark.parametrize(
    ("reply", "count"),
    [([("ch", 2)], 2), (["ch", 3], 3), ({"n1": [("ch", 1)], "n2": [("ch", 2)]}, 3), ([], 0)],
)
def test_numsub_reply_shapes(reply: object, count: int) -> None:
    assert _numsub_value(reply) == count


@pytest.mark.parametrize("url", ["redis://h:1/abc", "unix:///tmp/r.sock?db=x"])
def test_a_database_that_is_not_a_number_is_a_config_error(url: str) -> None:
    with pytest.raises(ConfigError, match="not a number"):
        target_from_settings(load_settings(env={"REDIS_URL": url}))


@pytest.mark.parametrize(
    ("commands", "fixed"),
    [
        ([("HGETALL", "ws_conn:r1"), ("HGETALL", "ws_conn:é*[x]"), ("HGETALL", "")], 1),
        (
            [("EVALSHA", "0123abcd", "1", "k1", "a"), ("EVALSHA", "0123abcd", "1", "k2", "a", "b")],
            3,
        ),
        ([("PUBLISH", "ws_ctl:gw-1", '{"op": "ping"}')], 1),
        ([("EVAL", "return '%s%%d'", "1", "k%d", "a%")], 3),
    ],
)
def test_packed_commands_are_byte_identical_to_redis_py(
    commands: list[tuple[str, ...]], fixed: int
) -> None:
    """wsctl's own bulk packer writes exactly the bytes redis-py would send."""
    from redis.connection import Connection

    reference = Connection()
    expected = [b"".join(reference.pack_command(*command)) for command in commands]
    assert pack_commands(commands, fixed) == expected


# Malformed URLs whose password would be misread as host, port or database. Each holds the
# marker S3cr (or the issue's Hunter2Secret) inside its credentials.
MALFORMED_URLS = [
    "redis://:x@y:Hunter2Secret/zz@127.0.0.1:6379/0",  # the reported case
    "redis://:S3cr/et@127.0.0.1:6379/0",  # unencoded '/'
    "redis://:S3cr#et@127.0.0.1:6379",  # unencoded '#'
    "redis://:S3cr?et@127.0.0.1:6379",  # unencoded '?'
    "redis://ops:S3cr/et?x@127.0.0.1:6379/0",
    "redis://:S3cret",  # no host: the password is read as a port
    "redis://:S3cret@h:99999/0",  # port out of range
    "redis://:S3cret@h:0/0",
    "redis://u:S3cret@[::1:6379/0",  # unbalanced IPv6 bracket
    "rediss://:S3cr:et@h:12ab/0",
    "unix://:S3cr#et@/tmp/r.sock?db=0",
]


def _leaks(text: str) -> bool:
    return any(marker in text for marker in ("S3cr", "Hunter2", "Secret", "x@y"))


@pytest.mark.parametrize("url", MALFORMED_URLS)
def test_a_malformed_url_is_a_config_error_without_its_credentials(url: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(env={"REDIS_URL": url})
    assert "malformed" in caught.value.message and not _leaks(caught.value.message)
    assert "\n" not in caught.value.message


@pytest.mark.parametrize("url", MALFORMED_URLS)
def test_redact_url_hides_a_malformed_url_entirely(url: str) -> None:
    assert not _leaks(redact_url(url))


@pytest.mark.parametrize("url", MALFORMED_URLS)
def test_target_from_settings_refuses_a_malformed_url(url: str) -> None:
    """Settings built without load_settings (library callers) are checked as well."""
    with pytest.raises(ConfigError) as caught:
        target_from_settings(Settings(redis_url=url))
    assert not _leaks(caught.value.message)


@pytest.mark.parametrize("url", ["redis://:p%2Fw%23d%40x@127.0.0.1:6379/0", "unix:///tmp/a@b.sock"])
def test_well_formed_urls_with_encoded_or_path_at_signs_still_work(url: str) -> None:
    target = target_from_settings(load_settings(env={"REDIS_URL": url}))
    assert target.password in (None, "p/w#d@x")


# ------------------------------------------------------------------ TLS


def _tls_target(env: dict[str, str], flags: dict[str, object] | None = None):  # type: ignore[no-untyped-def]
    return target_from_settings(load_settings(flags, env=env))


def test_rediss_url_and_tls_setting_both_give_tls_options() -> None:
    from wsctl.redis.target import TlsOptions

    assert _tls_target({"REDIS_URL": "rediss://h:1/0"}).tls == TlsOptions()
    target = _tls_target({"REDIS_HOST": "h", "WSCTL_REDIS_TLS": "true"})
    assert target.tls == TlsOptions() and target.describe() == "rediss://h:6379/0"
    assert _tls_target({"REDIS_URL": "redis://h:1/0"}, {"redis_tls": True}).ssl
    assert _tls_target({"REDIS_URL": "redis://h:1/0"}).tls is None


def test_cluster_target_carries_tls_and_says_so() -> None:
    env = {"REDIS_USE_CLUSTER": "1", "REDIS_NODES": "a:1,b:2", "WSCTL_REDIS_TLS": "1"}
    target = _tls_target({**env, "WSCTL_TLS_CA_CERT": "/ca.pem"})
    assert target.kind == "cluster" and target.tls is not None and target.tls.ca_cert == "/ca.pem"
    assert target.describe() == "cluster (TLS) a:1,b:2"
    url_cluster = _tls_target({"REDIS_URL": "rediss://a:1/0", "REDIS_USE_CLUSTER": "1"})
    assert url_cluster.kind == "cluster" and url_cluster.ssl


def test_url_query_form_maps_to_tls_options_and_settings_win() -> None:
    url = (
        "rediss://h:1/0?ssl_ca_certs=/q/ca.pem&ssl_certfile=/q/c.pem&ssl_keyfile=/q/k.pem"
        "&ssl_check_hostname=false"
    )
    tls = _tls_target({"REDIS_URL": url}).tls
    assert tls is not None
    assert (tls.ca_cert, tls.cert, tls.key, tls.check_hostname) == (
        "/q/ca.pem",
        "/q/c.pem",
        "/q/k.pem",
        False,
    )
    tls = _tls_target({"REDIS_URL": url, "WSCTL_TLS_CA_CERT": "/s/ca.pem"}).tls
    assert tls is not None and tls.ca_cert == "/s/ca.pem" and tls.cert == "/q/c.pem"
    none = _tls_target({"REDIS_URL": "rediss://h:1/0?ssl_cert_reqs=none"}).tls
    assert none is not None and none.insecure


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"REDIS_URL": "redis://h:1/0", "WSCTL_TLS_CA_CERT": "/ca.pem"}, "but TLS is off"),
        ({"REDIS_HOST": "h", "WSCTL_TLS_INSECURE": "1"}, "tls_insecure is set"),
        ({"REDIS_URL": "redis://h:1/0?ssl_ca_certs=/ca.pem"}, "?ssl_ca_certs="),
        ({"REDIS_URL": "rediss://h:1/0", "WSCTL_REDIS_TLS": "0"}, "redis_tls is false"),
        ({"REDIS_URL": "unix:///r.sock", "WSCTL_REDIS_TLS": "1"}, "unix socket"),
        ({"REDIS_URL": "rediss://h:1/0", "WSCTL_TLS_KEY": "/k.pem"}, "without tls_cert"),
        ({"REDIS_URL": "rediss://h:1/0?ssl_cert_reqs=maybe"}, "ssl_cert_reqs must be"),
    ],
)
def test_inconsistent_tls_settings_are_config_errors(env: dict[str, str], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle.replace("?", r"\?")):
        _tls_target(env)


def test_tls_kwargs_are_the_same_for_single_node_and_cluster(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import trustme

    from wsctl.redis.factory import make_client, tls_kwargs

    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    env = {"WSCTL_REDIS_TLS": "1", "WSCTL_TLS_CA_CERT": str(tmp_path / "ca.pem")}
    single = _tls_target({**env, "REDIS_HOST": "h"})
    cluster = _tls_target({**env, "REDIS_NODES": "a:1"})
    assert (
        tls_kwargs(single.tls)
        == tls_kwargs(cluster.tls)
        == {
            "ssl": True,
            "ssl_ca_certs": str(tmp_path / "ca.pem"),
            "ssl_certfile": None,
            "ssl_keyfile": None,
            "ssl_cert_reqs": "required",
            "ssl_check_hostname": True,
        }
    )
    assert tls_kwargs(None) == {}
    client = make_client(single)
    kwargs = client.connection_pool.connection_kwargs  # type: ignore[union-attr]
    assert kwargs["ssl_ca_certs"] == str(tmp_path / "ca.pem")
    assert kwargs["ssl_cert_reqs"] == "required"


def test_insecure_turns_every_check_off_and_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    from wsctl.redis.factory import insecure_warning, make_client, tls_kwargs

    target = _tls_target({"REDIS_URL": "rediss://h:1/0", "WSCTL_TLS_INSECURE": "1"})
    kwargs = tls_kwargs(target.tls)
    assert kwargs["ssl_cert_reqs"] == "none" and kwargs["ssl_check_hostname"] is False
    assert "verification is off for rediss://h:1/0" in (insecure_warning(target) or "")
    with caplog.at_level("WARNING", logger="wsctl.redis"):
        make_client(target)
    assert any("verification is off" in r.getMessage() for r in caplog.records)
    assert insecure_warning(_tls_target({"REDIS_URL": "rediss://h:1/0"})) is None


def test_encrypted_client_key_is_refused_without_a_prompt(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import trustme
    from cryptography.hazmat.primitives import serialization

    from wsctl.redis.factory import tls_kwargs
    from wsctl.redis.target import TlsOptions

    issued = trustme.CA().issue_cert("client")
    key = serialization.load_pem_private_key(issued.private_key_pem.bytes(), None)
    encrypted = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret-passphrase"),
    )
    (tmp_path / "k.pem").write_bytes(encrypted)
    issued.cert_chain_pems[0].write_to_path(str(tmp_path / "c.pem"))
    tls = TlsOptions(cert=str(tmp_path / "c.pem"), key=str(tmp_path / "k.pem"))
    with pytest.raises(ConfigError, match="encrypted with a passphrase"):
        tls_kwargs(tls)


def test_tls_failures_are_told_apart_from_the_error_alone() -> None:
    import ssl

    from redis.exceptions import ConnectionError

    from wsctl.redis.errors import tls_problem
    from wsctl.redis.target import Target, TlsOptions

    tls = Target("tcp", host="r.example", port=6380, tls=TlsOptions())
    mtls = Target("tcp", host="r.example", port=6380, tls=TlsOptions(cert="/c.pem"))

    def failure(text: str, cause: BaseException | None = None) -> ConnectionError:
        exc = ConnectionError(text)
        exc.__cause__ = cause
        return exc

    untrusted = ssl.SSLCertVerificationError(1, "certificate verify failed")
    untrusted.verify_code, untrusted.verify_message = 19, "self-signed certificate in chain"
    assert "is not trusted (self-signed certificate in chain)" in (
        tls_problem(tls, failure("Error 1 connecting", untrusted), probe=False) or ""
    )
    mismatch = ssl.SSLCertVerificationError(1, "certificate verify failed")
    mismatch.verify_code, mismatch.verify_message = 62, "Hostname mismatch"
    assert "not valid for the host name" in (
        tls_problem(tls, failure("x", mismatch), probe=False) or ""
    )
    required = failure("Error while reading: [SSL: TLSV13_ALERT_CERTIFICATE_REQUIRED] alert")
    assert "requires a client certificate" in (tls_problem(tls, required, probe=False) or "")
    bad = failure("Error while reading: [SSL: SSLV3_ALERT_BAD_CERTIFICATE] sslv3 alert")
    assert "rejected the client certificate /c.pem (bad certificate)" in (
        tls_problem(mtls, bad, probe=False) or ""
    )
    plain = failure("Error 1 connecting: [SSL: WRONG_VERSION_NUMBER] wrong version number")
    assert "does not speak TLS" in (tls_problem(tls, plain, probe=False) or "")
    assert tls_problem(tls, failure("Connection refused"), probe=False) is None
    from wsctl.errors import TlsError
    from wsctl.redis.errors import describe_error

    assert isinstance(describe_error(tls, plain, probe=False), TlsError)
    assert not isinstance(describe_error(tls, failure("refused"), probe=False), TlsError)
    no_tls = Target("tcp", host="r.example", port=6380)
    assert tls_problem(no_tls, failure("Connection closed by server."), probe=False) is None
