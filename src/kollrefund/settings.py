"""Configuration (SPEC: Configuration): TOML file + ``KOLLREFUND_*`` environment + flags.

Precedence is flag > environment > config file > default. The file is found as: the
explicit path (``--config``), else ``$KOLLREFUND_CONFIG``, else ``./kollrefund.toml``,
else ``<user config dir>/config.toml``; no file at all is fine. Environment names are
``KOLLREFUND_<SECTION>__<KEY>``. ``.env`` files are never read.

Every secret is a ``SecretStr``. Every failure is a :class:`ConfigError` with one
sentence that names the dotted key and its environment variable and never contains a
secret's value. Empty strings mean "not set", so the empty placeholders in
``config.example.toml`` load as ``None``.
"""

from __future__ import annotations

import getpass
import os
import shlex
import stat
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import platformdirs
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    TomlConfigSettingsSource,
)

from kollrefund.errors import ConfigError

__all__ = [
    "CONFIG_ENV_VAR",
    "ENV_PREFIX",
    "CacheSettings",
    "LoadedSettings",
    "NetSuiteSettings",
    "OperatorSettings",
    "Settings",
    "StripeSettings",
    "env_var_name",
    "load_settings",
    "require",
    "secret_values",
]

APP_NAME = "kollrefund"
ENV_PREFIX = "KOLLREFUND_"
ENV_NESTED_DELIMITER = "__"
CONFIG_ENV_VAR = "KOLLREFUND_CONFIG"
LOCAL_CONFIG_NAME = "kollrefund.toml"
USER_CONFIG_NAME = "config.toml"


def env_var_name(dotted_key: str) -> str:
    """``netsuite.refund_account_id`` → ``KOLLREFUND_NETSUITE__REFUND_ACCOUNT_ID``."""
    return ENV_PREFIX + ENV_NESTED_DELIMITER.join(dotted_key.split(".")).upper()


def _default_cache_path() -> Path:
    return Path(platformdirs.user_data_dir(APP_NAME)) / "cache.db"


def _validate_origin(value: str | None, key: str) -> str | None:
    """An http(s) origin: scheme and host[:port], nothing else; one trailing slash is dropped."""
    if value is None:
        return None
    origin = value[:-1] if value.endswith("/") else value
    example = "http://127.0.0.1:12111"
    try:
        parts = urlsplit(origin)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise ValueError(f"{key} must be an http(s) origin such as {example}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{key} must be an http(s) origin such as {example}")
    if parts.username is not None or parts.password is not None:
        raise ValueError(f"{key} must not contain a user name or password")
    if parts.path or parts.query or parts.fragment or origin.endswith(("?", "#")):
        raise ValueError(f"{key} must be an origin without a path, query or fragment")
    return origin


class _Section(BaseModel):
    """A ``[section]`` of the file: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @field_validator("*", mode="before")
    @classmethod
    def _empty_means_unset(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = value.strip()
            if not value:
                return None
        return value


class CacheSettings(_Section):
    path: Path = Field(default_factory=_default_cache_path)

    @field_validator("path")
    @classmethod
    def _expand(cls, value: Path) -> Path:
        return value.expanduser()


class StripeSettings(_Section):
    api_key: SecretStr | None = None
    api_base: str | None = None
    timeout_seconds: float = Field(default=20.0, gt=0, allow_inf_nan=False)
    max_network_retries: int = Field(default=2, ge=0, le=10)

    @field_validator("api_base")
    @classmethod
    def _origin(cls, value: str | None) -> str | None:
        return _validate_origin(value, "stripe.api_base")


NETSUITE_TBA_KEYS = (
    "netsuite.consumer_key",
    "netsuite.consumer_secret",
    "netsuite.token_id",
    "netsuite.token_secret",
)
NETSUITE_M2M_KEYS = ("netsuite.client_id", "netsuite.certificate_id", "netsuite.private_key_path")


class NetSuiteSettings(_Section):
    account_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9]+(?:[_-][A-Za-z0-9]+)*$")
    base_url: str | None = None
    auth: Literal["tba", "m2m"] = "tba"
    consumer_key: SecretStr | None = None
    consumer_secret: SecretStr | None = None
    token_id: SecretStr | None = None
    token_secret: SecretStr | None = None
    client_id: SecretStr | None = None
    certificate_id: str | None = None
    private_key_path: Path | None = None
    concurrency: int = Field(default=5, ge=1, le=100)
    timeout_seconds: float = Field(default=30.0, gt=0, allow_inf_nan=False)
    max_retries: int = Field(default=6, ge=0, le=20)
    payment_account_id: str | None = None
    refund_account_id: str | None = None
    refund_payment_method_id: str | None = None

    @field_validator("account_id")
    @classmethod
    def _upper(cls, value: str | None) -> str | None:
        # The OAuth realm must be the account id as NetSuite shows it: `1234567_SB1`.
        return value.upper() if value is not None else None

    @field_validator("base_url")
    @classmethod
    def _origin(cls, value: str | None) -> str | None:
        return _validate_origin(value, "netsuite.base_url")

    @field_validator("private_key_path")
    @classmethod
    def _expand(cls, value: Path | None) -> Path | None:
        return value.expanduser() if value is not None else None

    def origin(self) -> str:
        """``base_url`` if set, else the SuiteTalk origin derived from ``account_id``."""
        if self.base_url is not None:
            return self.base_url
        if self.account_id is None:
            raise ConfigError(
                f"netsuite.account_id is not set; set it in {LOCAL_CONFIG_NAME} or "
                f"{env_var_name('netsuite.account_id')} (or set netsuite.base_url)."
            )
        host = self.account_id.lower().replace("_", "-")
        return f"https://{host}.suitetalk.api.netsuite.com"

    def credential_keys(self) -> tuple[str, ...]:
        """The dotted keys the configured ``auth`` needs, for :func:`require`."""
        return NETSUITE_TBA_KEYS if self.auth == "tba" else NETSUITE_M2M_KEYS


class OperatorSettings(_Section):
    name: str | None = None

    def operator_name(self) -> str:
        """Who the audit trail records: ``operator.name``, else the OS user."""
        if self.name is not None:
            return self.name
        try:
            return getpass.getuser()
        except (KeyError, OSError):
            raise ConfigError(
                "Cannot tell who the operator is; set operator.name in "
                f"{LOCAL_CONFIG_NAME} or {env_var_name('operator.name')}."
            ) from None


@dataclass(frozen=True)
class _LoadContext:
    toml_file: Path | None = None
    toml_data: dict[str, Any] | None = None
    environ: Mapping[str, str] | None = None


_CONTEXT: ContextVar[_LoadContext | None] = ContextVar("kollrefund_settings", default=None)


class _EnvSource(EnvSettingsSource):
    """The environment, from an explicit mapping when one is given (tests, the CLI)."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str] | None) -> None:
        self._environ = environ
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        if self._environ is None:
            return super()._load_env_vars()
        # Same parsing as pydantic-settings: names are case-insensitive.
        from pydantic_settings.sources.utils import parse_env_vars

        return parse_env_vars(
            self._environ, self.case_sensitive, self.env_ignore_empty, self.env_parse_none_str
        )


class _TomlSource(TomlConfigSettingsSource):
    """The chosen TOML file, parsed once by :func:`_read_toml` (which makes the errors)."""

    def __init__(
        self, settings_cls: type[BaseSettings], toml_file: Path, data: dict[str, Any] | None
    ) -> None:
        self._preloaded = data
        super().__init__(settings_cls, toml_file=toml_file)

    def _read_file(self, file_path: Any) -> dict[str, Any]:
        if self._preloaded is not None:
            return self._preloaded
        return _read_toml(Path(file_path))


class Settings(BaseSettings):
    """All configuration. Build it with :func:`load_settings`."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=ENV_NESTED_DELIMITER,
        env_file=None,
        extra="forbid",
        frozen=True,
    )

    cache: CacheSettings = Field(default_factory=CacheSettings)
    stripe: StripeSettings = Field(default_factory=StripeSettings)
    netsuite: NetSuiteSettings = Field(default_factory=NetSuiteSettings)
    operator: OperatorSettings = Field(default_factory=OperatorSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # flags (init kwargs) > environment > TOML file > defaults; no .env, no secrets dir.
        ctx = _CONTEXT.get() or _LoadContext()  # Settings() outside load_settings: os.environ
        sources: list[PydanticBaseSettingsSource] = [
            init_settings,
            _EnvSource(settings_cls, ctx.environ),
        ]
        if ctx.toml_file is not None:
            sources.append(_TomlSource(settings_cls, ctx.toml_file, ctx.toml_data))
        return tuple(sources)

    def operator_name(self) -> str:
        return self.operator.operator_name()


SECTIONS: dict[str, type[_Section]] = {
    "cache": CacheSettings,
    "stripe": StripeSettings,
    "netsuite": NetSuiteSettings,
    "operator": OperatorSettings,
}


def _is_secret_field(section: type[_Section], name: str) -> bool:
    field = section.model_fields.get(name)
    return field is not None and "SecretStr" in str(field.annotation)


SECRET_KEYS: tuple[str, ...] = tuple(
    f"{section_name}.{name}"
    for section_name, section in SECTIONS.items()
    for name in section.model_fields
    if _is_secret_field(section, name)
)


@dataclass(frozen=True)
class LoadedSettings:
    settings: Settings
    source_file: Path | None
    warnings: tuple[str, ...]


# --- loading ---------------------------------------------------------------------------


def _read_toml(path: Path) -> dict[str, Any]:
    import tomllib  # only when there is a config file: a command without one starts faster

    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        # Python 3.11's message ends "(at line L, column C)"; it never quotes the value.
        raise ConfigError(f"Config file {path} is not valid TOML: {exc}.") from None
    except UnicodeDecodeError:
        raise ConfigError(f"Config file {path} is not valid TOML: it is not UTF-8.") from None
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConfigError(f"Cannot read config file {path}: {reason}.") from None


def _find_config_file(
    config_path: Path | None, environ: Mapping[str, str], cwd: Path
) -> Path | None:
    explicit: tuple[Path, str] | None = None
    if config_path is not None:
        explicit = (Path(config_path), "--config")
    elif environ.get(CONFIG_ENV_VAR, "").strip():
        explicit = (Path(environ[CONFIG_ENV_VAR].strip()), CONFIG_ENV_VAR)
    if explicit is not None:
        path, given_by = explicit
        path = path.expanduser()
        if not path.is_absolute():
            path = cwd / path
        if not path.exists():
            raise ConfigError(f"Config file {path} (given by {given_by}) does not exist.")
        if not path.is_file():
            raise ConfigError(f"Config file {path} (given by {given_by}) is not a file.")
        return path
    local = cwd / LOCAL_CONFIG_NAME
    if local.is_file():
        return local
    user = Path(platformdirs.user_config_dir(APP_NAME)) / USER_CONFIG_NAME
    if user.is_file():
        return user
    return None


def _nest_overrides(overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    """``{"cache.path": p, "stripe": {"api_key": k}}`` → nested dicts; ``None`` means "no flag"."""
    nested: dict[str, Any] = {}
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        *parents, leaf = key.split(".")
        node = nested
        for part in parents:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"Override {key} conflicts with override {part}.")
            node = child
        if isinstance(value, Mapping):
            value = _nest_overrides(value)
            existing = node.setdefault(leaf, {})
            if not isinstance(existing, dict):
                raise ConfigError(f"Override {key} conflicts with another override.")
            existing.update(value)
        else:
            node[leaf] = value
    return nested


def _lookup(data: Mapping[str, Any] | None, parts: tuple[str, ...]) -> tuple[bool, Any]:
    node: Any = data
    for part in parts:
        if not isinstance(node, Mapping) or part not in node:
            return False, None
        node = node[part]
    return True, node


def _walk_leaves(
    data: Mapping[str, Any], prefix: tuple[str, ...] = ()
) -> Iterator[tuple[str, Any]]:
    for key, value in data.items():
        if isinstance(value, Mapping):
            yield from _walk_leaves(value, (*prefix, str(key)))
        else:
            yield ".".join((*prefix, str(key))), value


def _raw_secret_candidates(
    overrides: Mapping[str, Any], environ: Mapping[str, str], toml_data: Mapping[str, Any] | None
) -> list[str]:
    """Every raw value given for a secret key, so an error message can be scrubbed of it."""
    values: list[str] = []
    lowered_env = {k.lower(): v for k, v in environ.items()}
    for key in SECRET_KEYS:
        parts = tuple(key.split("."))
        for found, value in (_lookup(overrides, parts), _lookup(toml_data, parts)):
            if found and value is not None:
                values.append(
                    value.get_secret_value() if isinstance(value, SecretStr) else str(value)
                )
        env_value = lowered_env.get(env_var_name(key).lower())
        if env_value:
            values.append(env_value)
    return [v.strip() for v in values if v.strip()]


def _scrub(message: str, secrets: list[str]) -> str:
    for secret in sorted(set(secrets), key=len, reverse=True):
        message = message.replace(secret, "***")
    return message


def _describe_error(
    exc: ValidationError,
    *,
    overrides: Mapping[str, Any],
    environ: Mapping[str, str],
    toml_file: Path | None,
    toml_data: Mapping[str, Any] | None,
) -> str:
    errors = exc.errors(include_url=False)
    first = errors[0]
    loc = tuple(str(part) for part in first["loc"])
    key = ".".join(loc) if loc else "settings"
    env_name = env_var_name(key)
    lowered_env = {k.lower() for k in environ}

    source: str | None = None
    if _lookup(overrides, loc)[0]:
        source = "the command line"
    elif env_name.lower() in lowered_env:
        source = env_name
    elif toml_file is not None and _lookup(toml_data, loc)[0]:
        source = str(toml_file)

    more = len(errors) - 1
    tail = f" ({more} more problem{'s' if more != 1 else ''} after this one)" if more else ""

    if first["type"] == "extra_forbidden":
        if source == str(toml_file):
            where = f" in {source}"
        elif source:
            where = f" (from {source})"
        else:
            where = ""
        return (
            f"Unknown setting {key}{where}; check the spelling against config.example.toml{tail}."
        )

    section = SECTIONS.get(loc[0]) if loc else None
    secret = section is None or len(loc) < 2 or _is_secret_field(section, loc[1])
    value = first.get("input")
    if secret:
        shown = "value hidden"
    elif isinstance(value, str | int | float | bool | Path):
        text = str(value)
        text = text if len(text) <= 80 else text[:77] + "..."
        shown = repr(text) if isinstance(value, str) else text
    else:
        shown = f"a {type(value).__name__}"
    origin = f", from {source}" if source else ""
    problem = first["msg"]
    if problem.startswith("Value error, "):
        problem = problem[len("Value error, ") :]
    if len(loc) >= 2 and loc[0] in SECTIONS:
        fix = f"set it in {toml_file or LOCAL_CONFIG_NAME} or {env_name}"
    else:
        fix = f"[{key}] must be a table of settings"
    return f"Invalid {key} ({shown}{origin}): {problem}; {fix}{tail}."


def _permission_warning(path: Path, data: Mapping[str, Any]) -> str | None:
    if os.name == "nt":
        return None
    has_secret = any(
        isinstance(value, str) and value.strip()
        for key, value in _walk_leaves(data)
        if key in SECRET_KEYS
    )
    if not has_secret:
        return None
    try:
        mode = path.stat().st_mode
    except OSError:
        return None
    if stat.S_IMODE(mode) & 0o077:
        quoted = shlex.quote(str(path))
        return f"{path} holds secrets and can be read by other users; run chmod 600 {quoted}"
    return None


def load_settings(
    config_path: Path | None = None,
    *,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> LoadedSettings:
    """Find the config file, merge flags > environment > file > defaults, and validate.

    ``overrides`` are flag values, nested (``{"cache": {"path": p}}``) or dotted
    (``{"cache.path": p}``); a ``None`` value means the flag was not given.
    ``environ`` defaults to ``os.environ``; ``cwd`` (for ``./kollrefund.toml`` and
    relative ``--config`` paths) defaults to the process's working directory.
    """
    env: Mapping[str, str] = os.environ if environ is None else environ
    here = Path.cwd() if cwd is None else cwd.absolute()
    toml_file = _find_config_file(config_path, env, here)
    toml_data = _read_toml(toml_file) if toml_file is not None else None
    nested = _nest_overrides(overrides)

    token = _CONTEXT.set(_LoadContext(toml_file=toml_file, toml_data=toml_data, environ=env))
    try:
        settings = Settings(**nested)
    except ValidationError as exc:
        message = _describe_error(
            exc, overrides=nested, environ=env, toml_file=toml_file, toml_data=toml_data
        )
        raise ConfigError(_scrub(message, _raw_secret_candidates(nested, env, toml_data))) from None
    except SettingsError as exc:
        # e.g. KOLLREFUND_STRIPE='{not json'; pydantic-settings never quotes the value.
        message = _scrub(str(exc), _raw_secret_candidates(nested, env, toml_data))
        raise ConfigError(f"Invalid configuration in the environment: {message}.") from None
    finally:
        _CONTEXT.reset(token)

    warnings: list[str] = []
    if toml_file is not None and toml_data is not None:
        warning = _permission_warning(toml_file, toml_data)
        if warning:
            warnings.append(warning)
    return LoadedSettings(settings=settings, source_file=toml_file, warnings=tuple(warnings))


# --- using ----------------------------------------------------------------------------


def secret_values(settings: Settings) -> list[str]:
    """Every non-empty secret's plain value, for scrubbing messages at the error boundary."""
    values: list[str] = []
    for key in SECRET_KEYS:
        section_name, name = key.split(".")
        value = getattr(getattr(settings, section_name), name)
        if isinstance(value, SecretStr):
            plain = value.get_secret_value()
            if plain:
                values.append(plain)
    return values


def require(settings: Settings, *dotted_keys: str) -> None:
    """Raise ConfigError naming the first key that is not set, and its environment variable."""
    for key in dotted_keys:
        parts = key.split(".")
        if (
            len(parts) != 2
            or parts[0] not in SECTIONS
            or parts[1] not in SECTIONS[parts[0]].model_fields
        ):
            raise ValueError(f"unknown setting {key!r}")
        value = getattr(getattr(settings, parts[0]), parts[1])
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        if value is None or (isinstance(value, str) and not value.strip()):
            raise ConfigError(
                f"{key} is not set; set it in {LOCAL_CONFIG_NAME} or {env_var_name(key)}."
            )
