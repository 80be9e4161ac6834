"""Configuration: precedence, file discovery, validation errors, secrets (SPEC: Configuration).

Real files in tmp_path, explicit ``environ=`` dicts; the user config/data dirs are
redirected to tmp_path so a developer's own config never leaks into a test.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Any

import platformdirs
import pytest
from pydantic import SecretStr

from kollrefund.errors import ConfigError, ExitCode
from kollrefund.settings import (
    SECTIONS,
    LoadedSettings,
    Settings,
    env_var_name,
    load_settings,
    require,
    secret_values,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = REPO_ROOT / "config.example.toml"
SECRET = "sk_live_DISTINCTIVE_51Hx9Zq"


@pytest.fixture(autouse=True)
def isolated_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    user_config = tmp_path / "user-config"
    user_data = tmp_path / "user-data"
    monkeypatch.setattr(platformdirs, "user_config_dir", lambda *a, **k: str(user_config))
    monkeypatch.setattr(platformdirs, "user_data_dir", lambda *a, **k: str(user_data))
    return user_config


@pytest.fixture
def cwd(tmp_path: Path) -> Path:
    d = tmp_path / "work"
    d.mkdir()
    return d


def write(path: Path, text: str, mode: int = 0o600) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    path.chmod(mode)
    return path


def load(cwd: Path, environ: dict[str, str] | None = None, **kwargs: Any) -> LoadedSettings:
    return load_settings(environ=environ or {}, cwd=cwd, **kwargs)


def config_error(cwd: Path, **kwargs: Any) -> str:
    with pytest.raises(ConfigError) as info:
        load(cwd, **kwargs)
    assert info.value.exit_code == ExitCode.CONFIG
    return str(info.value)


# --- defaults and precedence ----------------------------------------------------------


def test_defaults_without_any_file(cwd: Path, tmp_path: Path) -> None:
    loaded = load(cwd)
    s = loaded.settings
    assert loaded.source_file is None
    assert loaded.warnings == ()
    assert s.cache.path == tmp_path / "user-data" / "cache.db"
    assert s.stripe.api_key is None
    assert s.stripe.api_base is None
    assert s.stripe.timeout_seconds == 20
    assert s.stripe.max_network_retries == 2
    assert s.netsuite.auth == "tba"
    assert s.netsuite.concurrency == 5
    assert s.netsuite.timeout_seconds == 30
    assert s.netsuite.max_retries == 6
    assert s.operator.name is None


FILE_TEXT = """
[cache]
path = "/from/file.db"
[stripe]
api_base = "http://file.example:1"
max_network_retries = 1
[netsuite]
concurrency = 11
refund_account_id = "file-acct"
"""


@pytest.mark.parametrize(
    ("dotted", "flag", "env", "file", "default"),
    [
        ("cache.path", Path("/from/flag.db"), "/from/env.db", Path("/from/file.db"), None),
        ("stripe.api_base", "http://flag.example:3", "http://env.example:2",
         "http://file.example:1", None),
        ("stripe.max_network_retries", 4, "3", 1, 2),
        ("netsuite.concurrency", 33, "22", 11, 5),
        ("netsuite.refund_account_id", "flag-acct", "env-acct", "file-acct", None),
    ],
)  # fmt: skip
def test_precedence_flag_env_file_default(
    cwd: Path, dotted: str, flag: Any, env: str, file: Any, default: Any
) -> None:
    section, key = dotted.split(".")

    def value(loaded: LoadedSettings) -> Any:
        return getattr(getattr(loaded.settings, section), key)

    environ = {env_var_name(dotted): env}
    expected_env = type(file)(env)

    # default (no file, no env, no flag)
    if default is not None:
        assert value(load(cwd)) == default
    # file beats default
    write(cwd / "kollrefund.toml", FILE_TEXT)
    assert value(load(cwd)) == file
    # env beats file
    assert value(load(cwd, environ=environ)) == expected_env
    # flag beats env, as a dotted key and as a nested dict
    assert value(load(cwd, environ=environ, overrides={dotted: flag})) == flag
    assert value(load(cwd, environ=environ, overrides={section: {key: flag}})) == flag
    # a flag that was not given (None) does not override anything
    assert value(load(cwd, environ=environ, overrides={dotted: None})) == expected_env


def test_sources_merge_per_key_not_per_section(cwd: Path) -> None:
    write(cwd / "kollrefund.toml", FILE_TEXT)
    loaded = load(
        cwd,
        environ={"KOLLREFUND_NETSUITE__CONCURRENCY": "22"},
        overrides={"netsuite.max_retries": 9},
    )
    ns = loaded.settings.netsuite
    assert (ns.concurrency, ns.max_retries, ns.refund_account_id) == (22, 9, "file-acct")
    assert loaded.settings.stripe.max_network_retries == 1


def test_nested_env_names_and_case(cwd: Path) -> None:
    s = load(
        cwd,
        environ={
            "KOLLREFUND_STRIPE__API_KEY": "sk_test_abc",
            "KOLLREFUND_NETSUITE__REFUND_PAYMENT_METHOD_ID": "7",
            "kollrefund_netsuite__auth": "m2m",
            "KOLLREFUND_OPERATOR__NAME": "ada",
            "KOLLREFUND_CACHE__PATH": "~/k.db",
            "UNRELATED": "x",
        },
    ).settings
    assert s.stripe.api_key is not None
    assert s.stripe.api_key.get_secret_value() == "sk_test_abc"
    assert s.netsuite.refund_payment_method_id == "7"
    assert s.netsuite.auth == "m2m"
    assert s.operator_name() == "ada"
    assert s.cache.path == Path("~/k.db").expanduser()


def test_explicit_environ_ignores_process_environment(
    cwd: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KOLLREFUND_NETSUITE__CONCURRENCY", "42")
    assert load(cwd, environ={}).settings.netsuite.concurrency == 5
    assert load_settings(cwd=cwd).settings.netsuite.concurrency == 42


def test_dotenv_files_are_not_read(cwd: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(cwd / ".env", "KOLLREFUND_NETSUITE__CONCURRENCY=42\n")
    monkeypatch.chdir(cwd)
    assert load(cwd).settings.netsuite.concurrency == 5


def test_empty_strings_mean_unset(cwd: Path) -> None:
    write(cwd / "kollrefund.toml", '[stripe]\napi_key = ""\napi_base = ""\n')
    s = load(cwd, environ={"KOLLREFUND_NETSUITE__PRIVATE_KEY_PATH": " "}).settings
    assert s.stripe.api_key is None
    assert s.stripe.api_base is None
    assert s.netsuite.private_key_path is None


def test_settings_are_immutable(cwd: Path) -> None:
    s = load(cwd).settings
    with pytest.raises(ValueError):
        s.netsuite.concurrency = 9


# --- where the file comes from --------------------------------------------------------


def test_file_location_explicit_path_wins(cwd: Path, tmp_path: Path, isolated_dirs: Path) -> None:
    explicit = write(tmp_path / "explicit.toml", "[netsuite]\nconcurrency = 1\n")
    via_env = write(tmp_path / "env.toml", "[netsuite]\nconcurrency = 2\n")
    write(cwd / "kollrefund.toml", "[netsuite]\nconcurrency = 3\n")
    write(isolated_dirs / "config.toml", "[netsuite]\nconcurrency = 4\n")
    environ = {"KOLLREFUND_CONFIG": str(via_env)}

    loaded = load(cwd, environ=environ, config_path=explicit)
    assert (loaded.source_file, loaded.settings.netsuite.concurrency) == (explicit, 1)
    loaded = load(cwd, environ=environ)
    assert (loaded.source_file, loaded.settings.netsuite.concurrency) == (via_env, 2)
    loaded = load(cwd)
    assert (loaded.source_file, loaded.settings.netsuite.concurrency) == (
        cwd / "kollrefund.toml",
        3,
    )
    (cwd / "kollrefund.toml").unlink()
    loaded = load(cwd)
    assert (loaded.source_file, loaded.settings.netsuite.concurrency) == (
        isolated_dirs / "config.toml",
        4,
    )
    (isolated_dirs / "config.toml").unlink()
    assert load(cwd).source_file is None


def test_relative_explicit_path_is_relative_to_cwd(cwd: Path) -> None:
    write(cwd / "conf" / "k.toml", "[netsuite]\nconcurrency = 8\n")
    loaded = load(cwd, config_path=Path("conf/k.toml"))
    assert loaded.source_file == cwd / "conf" / "k.toml"
    assert loaded.settings.netsuite.concurrency == 8
    loaded = load(cwd, environ={"KOLLREFUND_CONFIG": "conf/k.toml"})
    assert loaded.settings.netsuite.concurrency == 8


def test_missing_explicit_file_is_an_error(cwd: Path) -> None:
    message = config_error(cwd, config_path=cwd / "nope.toml")
    assert "nope.toml" in message and "does not exist" in message and "--config" in message
    message = config_error(cwd, environ={"KOLLREFUND_CONFIG": str(cwd / "gone.toml")})
    assert "gone.toml" in message and "KOLLREFUND_CONFIG" in message
    message = config_error(cwd, config_path=cwd)
    assert "is not a file" in message


def test_empty_config_env_var_is_ignored(cwd: Path) -> None:
    write(cwd / "kollrefund.toml", "[netsuite]\nconcurrency = 3\n")
    assert load(cwd, environ={"KOLLREFUND_CONFIG": ""}).settings.netsuite.concurrency == 3


# --- errors ---------------------------------------------------------------------------


def test_invalid_toml_names_file_and_line(cwd: Path) -> None:
    path = write(cwd / "kollrefund.toml", '[stripe]\napi_base = "http://x"\nmax = = 3\n')
    message = config_error(cwd)
    assert str(path) in message
    assert "not valid TOML" in message
    assert re.search(r"line 3\b", message), message


def test_unreadable_file(cwd: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(cwd / "kollrefund.toml", "[netsuite]\n", mode=0o000)
    if os.name == "nt" or os.geteuid() == 0:  # root can read a mode-000 file: simulate it
        real_open = Path.open

        def deny(self: Path, *args: Any, **kwargs: Any) -> Any:
            if self == path:
                raise PermissionError(13, "Permission denied", str(self))
            return real_open(self, *args, **kwargs)

        monkeypatch.setattr(Path, "open", deny)
    message = config_error(cwd)
    assert str(path) in message and "Cannot read" in message and "Permission denied" in message


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[stripe]\napi_keyy = 'x'\n", "stripe.api_keyy"),
        ("[netsuite]\nconcurency = 3\n", "netsuite.concurency"),
        ("[stripee]\napi_key = 'x'\n", "stripee"),
        ("top_level = 1\n", "top_level"),
    ],
)
def test_unknown_key_in_file_is_rejected(cwd: Path, text: str, key: str) -> None:
    path = write(cwd / "kollrefund.toml", text)
    message = config_error(cwd)
    assert f"Unknown setting {key} " in message
    assert str(path) in message


def test_unknown_nested_env_key_is_rejected(cwd: Path) -> None:
    message = config_error(cwd, environ={"KOLLREFUND_STRIPE__API_KEYY": SECRET})
    assert "stripe.api_keyy" in message and "KOLLREFUND_STRIPE__API_KEYY" in message
    assert SECRET not in message


@pytest.mark.parametrize(
    ("dotted", "raw", "expect"),
    [
        ("netsuite.concurrency", "0", "greater than or equal to 1"),
        ("netsuite.concurrency", "101", "less than or equal to 100"),
        ("stripe.api_base", "http://127.0.0.1:12111/v1", "origin"),
        ("stripe.api_base", "ftp://127.0.0.1", "origin"),
        ("stripe.api_base", "127.0.0.1:12111", "origin"),
        ("netsuite.base_url", "https://x.example/services", "origin"),
        ("netsuite.auth", "foo", "'tba' or 'm2m'"),
        ("stripe.timeout_seconds", "0", "greater than 0"),
        ("stripe.max_network_retries", "11", "less than or equal to 10"),
        ("netsuite.account_id", "123 4567", "pattern"),
    ],
)
def test_bad_values_name_key_and_env_var(cwd: Path, dotted: str, raw: str, expect: str) -> None:
    section, key = dotted.split(".")
    env = env_var_name(dotted)
    # from the environment
    message = config_error(cwd, environ={env: raw})
    assert dotted in message and env in message and expect in message, message
    assert repr(raw) in message  # non-secret values are echoed
    # from the file
    path = write(cwd / "kollrefund.toml", f"[{section}]\n{key} = {raw!r}\n".replace("'", '"'))
    message = config_error(cwd)
    assert dotted in message and env in message and str(path) in message, message
    # from a flag
    message = config_error(cwd, overrides={dotted: raw})
    assert dotted in message and "command line" in message, message


def test_bad_integer_type_from_file(cwd: Path) -> None:
    write(cwd / "kollrefund.toml", "[netsuite]\nconcurrency = 0\n")
    message = config_error(cwd)
    assert "netsuite.concurrency" in message and "(0," in message


def test_section_that_is_not_a_table(cwd: Path) -> None:
    write(cwd / "kollrefund.toml", 'stripe = "sk_live_x"\n')
    message = config_error(cwd)
    assert "stripe" in message and "sk_live_x" not in message


def test_origins_are_normalised(cwd: Path) -> None:
    s = load(
        cwd,
        environ={
            "KOLLREFUND_STRIPE__API_BASE": "http://127.0.0.1:12111/",
            "KOLLREFUND_NETSUITE__BASE_URL": "https://ns.example",
        },
    ).settings
    assert s.stripe.api_base == "http://127.0.0.1:12111"
    assert s.netsuite.base_url == "https://ns.example"


@pytest.mark.parametrize(
    "environ",
    [
        {"KOLLREFUND_STRIPE__API_KEY": SECRET, "KOLLREFUND_STRIPE__TIMEOUT_SECONDS": "soon"},
        {"KOLLREFUND_NETSUITE__TOKEN_SECRET": SECRET, "KOLLREFUND_NETSUITE__AUTH": "nope"},
        {"KOLLREFUND_STRIPE__API_KEY": SECRET, "KOLLREFUND_STRIPE__API_KEYY": SECRET},
        {"KOLLREFUND_STRIPE": '{"api_key": "' + SECRET + '", "bogus": 1}'},
        {"KOLLREFUND_STRIPE": '{"api_key": "' + SECRET + '"'},  # not JSON
        {"KOLLREFUND_NETSUITE__CLIENT_ID": SECRET, "KOLLREFUND_NETSUITE__CONCURRENCY": SECRET},
    ],
)
def test_secret_never_appears_in_error(cwd: Path, environ: dict[str, str]) -> None:
    message = config_error(cwd, environ=environ)
    assert SECRET not in message, message
    assert "DISTINCTIVE" not in message, message


def test_secret_never_appears_in_error_from_file_or_flag(cwd: Path) -> None:
    write(
        cwd / "kollrefund.toml",
        f'[netsuite]\nconsumer_secret = "{SECRET}"\nconsumer_key = ["{SECRET}"]\n',
    )
    message = config_error(cwd)
    assert "netsuite.consumer_key" in message and "value hidden" in message
    assert SECRET not in message
    message = config_error(cwd, overrides={"stripe.api_key": 12345, "stripe.api_base": SECRET})
    assert SECRET not in message


def test_config_error_has_no_chained_cause(cwd: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load(cwd, environ={"KOLLREFUND_STRIPE__API_KEY": SECRET, "KOLLREFUND_NETSUITE__AUTH": "x"})
    # A traceback must not carry pydantic's ValidationError (which holds the inputs).
    assert info.value.__cause__ is None
    assert info.value.__suppress_context__


# --- permission warning -----------------------------------------------------------------


@pytest.mark.skipif(os.name == "nt", reason="POSIX modes")
def test_permission_warning_when_secrets_are_readable_by_others(cwd: Path) -> None:
    path = write(cwd / "kollrefund.toml", f'[stripe]\napi_key = "{SECRET}"\n', mode=0o644)
    loaded = load(cwd)
    assert len(loaded.warnings) == 1
    warning = loaded.warnings[0]
    assert str(path) in warning and "holds secrets" in warning and "chmod 600" in warning
    assert SECRET not in warning
    path.chmod(0o640)
    assert len(load(cwd).warnings) == 1


@pytest.mark.skipif(os.name == "nt", reason="POSIX modes")
def test_no_permission_warning_on_0600_or_without_secrets(cwd: Path) -> None:
    path = write(cwd / "kollrefund.toml", f'[stripe]\napi_key = "{SECRET}"\n', mode=0o600)
    assert load(cwd).warnings == ()
    write(path, '[stripe]\napi_key = ""\n[netsuite]\nconcurrency = 3\n', mode=0o644)
    assert load(cwd).warnings == ()
    # a secret in the environment is not the file's problem
    assert load(cwd, environ={"KOLLREFUND_STRIPE__API_KEY": SECRET}).warnings == ()


# --- NetSuite origin, operator ----------------------------------------------------------


def test_netsuite_origin_derived_from_account_id(cwd: Path) -> None:
    s = load(cwd, environ={"KOLLREFUND_NETSUITE__ACCOUNT_ID": "1234567_SB1"}).settings
    assert s.netsuite.origin() == "https://1234567-sb1.suitetalk.api.netsuite.com"
    assert s.netsuite.account_id == "1234567_SB1"
    # the realm must be upper case; a lower-case id is normalised
    s = load(cwd, environ={"KOLLREFUND_NETSUITE__ACCOUNT_ID": "1234567_sb1"}).settings
    assert s.netsuite.account_id == "1234567_SB1"


def test_netsuite_base_url_overrides_origin(cwd: Path) -> None:
    s = load(
        cwd,
        environ={
            "KOLLREFUND_NETSUITE__ACCOUNT_ID": "1234567_SB1",
            "KOLLREFUND_NETSUITE__BASE_URL": "http://127.0.0.1:9999/",
        },
    ).settings
    assert s.netsuite.origin() == "http://127.0.0.1:9999"


def test_netsuite_origin_without_account_or_base_url(cwd: Path) -> None:
    with pytest.raises(ConfigError, match=r"netsuite\.account_id is not set.*"
                       r"KOLLREFUND_NETSUITE__ACCOUNT_ID"):  # fmt: skip
        load(cwd).settings.netsuite.origin()


def test_netsuite_credential_keys_follow_auth(cwd: Path) -> None:
    s = load(cwd).settings
    assert "netsuite.token_secret" in s.netsuite.credential_keys()
    s = load(cwd, environ={"KOLLREFUND_NETSUITE__AUTH": "m2m"}).settings
    assert s.netsuite.credential_keys() == (
        "netsuite.client_id",
        "netsuite.certificate_id",
        "netsuite.private_key_path",
    )


def test_operator_name_defaults_to_os_user(cwd: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import getpass

    monkeypatch.setattr(getpass, "getuser", lambda: "osuser")
    assert load(cwd).settings.operator_name() == "osuser"
    assert load(cwd).settings.operator.operator_name() == "osuser"
    s = load(cwd, overrides={"operator.name": "grace"}).settings
    assert s.operator_name() == "grace"


def test_operator_name_when_os_user_is_unknown(cwd: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import getpass

    def boom() -> str:
        raise OSError("no user")

    monkeypatch.setattr(getpass, "getuser", boom)
    with pytest.raises(ConfigError, match=r"operator\.name"):
        load(cwd).settings.operator_name()


# --- require / secret_values -------------------------------------------------------------


def test_require(cwd: Path) -> None:
    s = load(
        cwd,
        environ={"KOLLREFUND_STRIPE__API_KEY": "sk_test_1", "KOLLREFUND_NETSUITE__AUTH": "tba"},
    ).settings
    require(s, "stripe.api_key", "netsuite.auth", "netsuite.concurrency")
    with pytest.raises(ConfigError) as info:
        require(s, "stripe.api_key", "netsuite.refund_account_id", "netsuite.account_id")
    assert str(info.value) == (
        "netsuite.refund_account_id is not set; set it in kollrefund.toml or "
        "KOLLREFUND_NETSUITE__REFUND_ACCOUNT_ID."
    )
    assert info.value.exit_code == ExitCode.CONFIG
    with pytest.raises(ValueError):
        require(s, "netsuite.no_such_key")


def test_secret_values(cwd: Path) -> None:
    write(
        cwd / "kollrefund.toml",
        '[netsuite]\nconsumer_key = "ck-1"\ntoken_secret = "ts-2"\ntoken_id = ""\n',
    )
    s = load(cwd, environ={"KOLLREFUND_STRIPE__API_KEY": SECRET}).settings
    assert sorted(secret_values(s)) == sorted([SECRET, "ck-1", "ts-2"])
    empty = cwd / "empty"
    empty.mkdir()
    assert secret_values(load(empty).settings) == []
    assert SECRET not in repr(s) and SECRET not in str(s.model_dump())


def test_every_secret_field_is_a_secretstr() -> None:
    for section_name, name in [
        ("stripe", "api_key"),
        ("netsuite", "consumer_key"),
        ("netsuite", "consumer_secret"),
        ("netsuite", "token_id"),
        ("netsuite", "token_secret"),
        ("netsuite", "client_id"),
    ]:
        annotation = str(SECTIONS[section_name].model_fields[name].annotation)
        assert "SecretStr" in annotation, (section_name, name)
    s = Settings.model_validate({"stripe": {"api_key": "x"}})
    assert isinstance(s.stripe.api_key, SecretStr)


# --- config.example.toml --------------------------------------------------------------------

ASSIGNMENT = re.compile(r"^(#\s*)?([A-Za-z_][A-Za-z0-9_]*)\s*=")
SECTION = re.compile(r"^\[([A-Za-z_]+)\]\s*$")


def documented_keys() -> dict[str, set[str]]:
    """Keys in the example, active or commented out, each with a comment line above it."""
    found: dict[str, set[str]] = {}
    section: str | None = None
    previous = ""
    for raw in EXAMPLE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if m := SECTION.match(line):
            section = m.group(1)
            found.setdefault(section, set())
        elif section is not None and (m := ASSIGNMENT.match(line)):
            key = m.group(2)
            assert previous.startswith("#") and not ASSIGNMENT.match(previous), (
                f"{section}.{key} in config.example.toml has no comment above it"
            )
            found[section].add(key)
        if line:
            previous = line
    return found


def test_example_documents_every_field_of_every_section() -> None:
    documented = documented_keys()
    model = {name: set(section.model_fields) for name, section in SECTIONS.items()}
    assert set(Settings.model_fields) == set(model)
    assert documented == model


def test_example_loads_cleanly(cwd: Path) -> None:
    loaded = load(cwd, config_path=EXAMPLE)
    assert loaded.source_file == EXAMPLE
    assert loaded.warnings == ()
    assert secret_values(loaded.settings) == []
    # its active values are the defaults
    assert loaded.settings == load(cwd).settings


def test_example_with_commented_keys_enabled_loads(cwd: Path) -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    enabled = "\n".join(re.sub(r"^#\s*(?=[a-z_]+\s*=)", "", line) for line in text.splitlines())
    data = tomllib.loads(enabled)
    assert {k for section in data.values() for k in section} >= {"path", "name"}
    path = write(cwd / "enabled.toml", enabled)
    s = load(cwd, config_path=path).settings
    assert s.operator_name() == "jane.doe"
    assert s.cache.path == Path("~/.local/share/kollrefund/cache.db").expanduser()
