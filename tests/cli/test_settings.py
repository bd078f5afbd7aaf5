"""The ``run`` config file: keys from the flags, precedence, checks (no node needed)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from chinwag.cli.__main__ import build_parser
from chinwag.cli.exitcodes import Exit
from chinwag.cli.settings import ConfigError, resolve, run_options, subparser


def _write(directory: Path, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "chinwag.toml"
    path.write_text(text)
    return path


def _resolve(*argv: str):
    return resolve(build_parser(), ["run", *argv])


def test_every_run_flag_has_a_key() -> None:
    run = subparser(build_parser(), "run")
    keys = {option.key for option in run_options(run)}
    flags = {
        s[2:]
        for action in run._actions  # noqa: SLF001
        for s in action.option_strings
        if s.startswith("--") and s not in ("--help", "--config")
    }
    assert keys == flags
    assert {"max-unauthenticated", "no-mdns", "peer", "signup", "min-password-length"} <= keys


def test_a_flag_added_later_gets_a_key_with_no_extra_work(tmp_path: Path) -> None:
    # (log-format and log-file are real flags, added after the config file was.)
    parser = build_parser()
    run = subparser(parser, "run")
    run.add_argument("--shiny-new-limit", type=int, default=3)
    run.add_argument("--color", action=argparse.BooleanOptionalAction, default=True)
    run.add_argument("--quiet", action="store_false", dest="loud")
    assert {o.key for o in run_options(run)} >= {"shiny-new-limit", "log-format", "color"}
    data = tmp_path / "data"
    _write(
        data,
        'shiny-new-limit = 5\nlog-format = "json"\nlog-file = "/var/log/x.log"\n'
        "color = false\nquiet = true\n",
    )
    got = resolve(parser, ["run", "--data", str(data)]).args
    assert (got.shiny_new_limit, got.log_format) == (5, "json")
    assert got.log_file == Path("/var/log/x.log")
    assert got.color is False and got.loud is False
    _write(data, 'log-format = "xml"\n')
    with pytest.raises(ConfigError, match="log-format is one of 'text', 'json', not 'xml'"):
        resolve(parser, ["run", "--data", str(data)])


def test_precedence_flag_then_file_then_default(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _write(
        data,
        'send-rate = 5\nsend-burst = 9\nsignup = "closed"\nno-mdns = true\n'
        'peer = ["http://a.example:7600#x"]\nlisten = "127.0.0.1:7700"\n',
    )
    got = _resolve("--data", str(data), "--send-rate=7", "--peer", "http://b.example:7600#y")
    args, sources = got.args, got.sources
    assert got.path == data / "chinwag.toml"
    assert (args.send_rate, sources["send_rate"]) == (7.0, "flag")
    assert (args.send_burst, sources["send_burst"]) == (9, "file")
    assert (args.signup, sources["signup"]) == ("closed", "file")
    assert (args.no_mdns, sources["no_mdns"]) == (True, "file")
    assert (args.listen, sources["listen"]) == ("127.0.0.1:7700", "file")
    # A repeatable flag on the command line replaces the file's list.
    assert (args.peer, sources["peer"]) == (["http://b.example:7600#y"], "flag")
    assert (args.kdf_threads, sources["kdf_threads"]) == (None, "default")
    assert (args.trust_lan, sources["trust_lan"]) == (False, "default")
    # A flag typed with its default value still wins over the file.
    again = _resolve("--data", str(data), "--signup", "open")
    assert (again.args.signup, again.sources["signup"]) == ("open", "flag")


def test_no_file_means_defaults(tmp_path: Path) -> None:
    got = _resolve("--data", str(tmp_path / "empty"))
    assert got.path is None
    assert set(got.sources.values()) == {"flag", "default"}


def test_config_flag_names_the_file_and_may_set_data(tmp_path: Path) -> None:
    path = tmp_path / "etc" / "node.toml"
    path.parent.mkdir()
    path.write_text(f'data = "{tmp_path / "var"}"\nheartbeat = 4\n')
    got = _resolve("--config", str(path))
    assert got.path == path and got.args.data == tmp_path / "var"
    assert (got.args.heartbeat, got.sources["heartbeat"]) == (4.0, "file")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "max_unauthenticated = 3",
            "unknown key 'max_unauthenticated'; did you mean 'max-unauthenticated'?",
        ),
        ("send-rat = 3", "unknown key 'send-rat'; did you mean 'send-rate'?"),
        ("zzzz = 1", "unknown key 'zzzz' (see 'chinwag run --help')"),
        ('send-burst = "10"', "send-burst is an integer, not a string"),
        ("send-burst = 1.5", "send-burst is an integer, not a number"),
        ("send-burst = true", "send-burst is an integer, not true/false"),
        ('send-rate = "fast"', "send-rate is a number, not a string"),
        ("trust-lan = 1", "trust-lan is true or false, not an integer"),
        ('signup = "maybe"', "signup is one of 'open', 'closed', not 'maybe'"),
        ('peer = "http://a:1#x"', "peer is a list (the flag --peer repeats)"),
        ("peer = [1]", "peer[0] is a string, not an integer"),
        ('listen = ["x"]', "listen is a string, not a list"),
        ('data = "/elsewhere"', "key 'data' is only for a file given with --config"),
        ("config = 'x.toml'", "unknown key 'config'"),
        ("send-rate = ", "not valid TOML"),
    ],
)
def test_bad_files_are_refused_naming_the_key(tmp_path: Path, text: str, message: str) -> None:
    data = tmp_path / "data"
    _write(data, text + "\n")
    with pytest.raises(ConfigError) as info:
        _resolve("--data", str(data))
    assert message in str(info.value), str(info.value)
    assert str(data / "chinwag.toml") in str(info.value)
    assert info.value.exit_code == Exit.USAGE


def test_a_named_file_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        _resolve("--config", str(tmp_path / "nope.toml"))
    assert "no such config file" in str(info.value)


def test_parsing_twice_leaves_the_parser_as_it_was(tmp_path: Path) -> None:
    parser = build_parser()
    resolve(parser, ["run", "--data", str(tmp_path), "--send-rate", "3"])
    plain = parser.parse_args(["run"])
    assert isinstance(plain, argparse.Namespace)
    assert plain.listen == "127.0.0.1:7600" and plain.peer == [] and plain.send_rate is None


#: Keys that set something ``run`` uses itself, not a NodeConfig field.
RUN_ONLY_KEYS = {"name", "log-level", "log-file", "log-format"}


def _sample(option, tmp_path: Path) -> object:
    """A valid value for ``option`` that is not its default, as TOML would give it."""
    from chinwag.protocol.envelope import NodeKey

    action = option.action
    special = {
        "data": str(tmp_path / "elsewhere"),
        "listen": "127.0.0.1:7777",
        "metrics-listen": "127.0.0.1:9777",
        "name": "attic",
        "peer": [f"http://a.example:7600#{NodeKey.generate().id}"],
        "public-url": ["http://a.example:7600"],
        "mdns-interface": ["eth9"],
        "tls-cert": str(tmp_path / "cert.pem"),
        "tls-key": str(tmp_path / "key.pem"),
        "log-file": str(tmp_path / "node.log"),
    }
    if option.key in special:
        return special[option.key]
    if action.nargs == 0:
        return True
    if action.choices is not None:
        return next(c for c in action.choices if c != action.default)
    if action.type is int:
        return 7
    if action.type is float:
        return 7.5
    raise AssertionError(f"no sample value for {option.key}")


def test_every_key_in_the_file_reaches_the_node(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each key changes what ``run`` starts with: a flag added to the parser
    but never passed on to NodeConfig (or to ``run``) fails here."""
    from chinwag.cli import run_hints
    from chinwag.cli.node_cmds import node_config

    # The TLS pair is checked by loading it (tests/integration/test_tls.py).
    monkeypatch.setattr(run_hints, "check_tls_files", lambda config: None)
    data = tmp_path / "data"
    path = tmp_path / "node.toml"
    path.write_text(f'data = "{data}"\n')
    base = _resolve("--config", str(path)).args
    base_config = node_config(base)
    options = run_options(subparser(build_parser(), "run"))
    assert len(options) > 50
    pairs = {"tls-cert": "tls-key", "tls-key": "tls-cert"}
    for option in options:
        if option.key == "data":
            continue
        table = {option.key: _sample(option, tmp_path)}
        if option.key in pairs:
            partner = next(o for o in options if o.key == pairs[option.key])
            table[partner.key] = _sample(partner, tmp_path)
        lines = [f'data = "{data}"']
        for key, value in table.items():
            lines.append(f"{key} = {json_toml(value)}")
        path.write_text("\n".join(lines) + "\n")
        got = _resolve("--config", str(path))
        assert got.sources[option.dest] == "file", option.key
        if option.key in RUN_ONLY_KEYS:
            assert getattr(got.args, option.dest) != getattr(base, option.dest), option.key
            continue
        assert node_config(got.args) != base_config, f"{option.key} changes nothing"


def json_toml(value: object) -> str:
    """A TOML literal for a sample value (JSON's forms are TOML's here)."""
    import json

    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value)
