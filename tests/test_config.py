"""Settings: every field documented and defaulted, env prefix works, secrets guarded."""

from __future__ import annotations

from pathlib import Path

import pytest

from chatbot.config import DEV_ADMIN_TOKEN, Settings, describe_settings
from chatbot.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent


def test_every_setting_has_a_description_and_a_working_default() -> None:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    for name, field in Settings.model_fields.items():
        assert field.description and len(field.description) > 10, name
    assert settings.resolved_database_url == "sqlite:///var/chatbot.db"
    assert settings.resolved_index_dir == Path("var/index")


def test_every_setting_is_documented_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    missing = [n for n in Settings.model_fields if f"CHATBOT_{n.upper()}" not in readme]
    assert not missing, f"README does not document: {missing}"


def test_environment_prefix_and_comma_separated_origins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHATBOT_TOP_K", "7")
    monkeypatch.setenv("CHATBOT_CORS_ORIGINS", "https://shop.example, https://help.example")
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.top_k == 7
    assert settings.cors_origins == ["https://shop.example", "https://help.example"]
    # Every list setting reads the same way from the environment.
    monkeypatch.setenv("CHATBOT_TRUSTED_PROXIES", "10.0.0.0/8, ::1,")
    monkeypatch.setenv("CHATBOT_WEBHOOK_URLS", "https://hooks.example/a,https://hooks.example/b")
    monkeypatch.setenv("CHATBOT_STORE_VERBATIM", "Email, phone")
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.trusted_proxies == ["10.0.0.0/8", "::1"]
    assert settings.webhook_urls == ["https://hooks.example/a", "https://hooks.example/b"]
    assert settings.store_verbatim == ["email", "phone"]


def test_admin_token_has_no_usable_default_outside_dev() -> None:
    assert Settings(_env_file=None).resolved_admin_token == DEV_ADMIN_TOKEN  # type: ignore[call-arg]
    with pytest.raises(ConfigError, match="CHATBOT_ADMIN_TOKEN must be set"):
        _ = Settings(env="prod", _env_file=None).resolved_admin_token  # type: ignore[call-arg]
    assert (
        Settings(env="prod", admin_token="s3cret", _env_file=None).resolved_admin_token == "s3cret"
    )  # type: ignore[call-arg]


def test_secrets_are_masked_in_config_show() -> None:
    rows = dict(
        (n, v) for n, v, _ in describe_settings(Settings(admin_token="s3cret", _env_file=None))
    )  # type: ignore[call-arg]
    assert rows["CHATBOT_ADMIN_TOKEN"] == "***"
    secret = "hunter2-Secret"
    rows = dict((n, v) for n, v, _ in describe_settings(Settings(  # type: ignore[call-arg]
        generator_api_key=secret, webhook_secret=secret,
        webhook_urls=[f"https://hooks.slack.example/services/{secret}"],
        redis_url=f"redis://:{secret}@cache:6379/0",
        generator_url=f"http://gen:{secret}@vllm.local:8000/v1",
        database_url=f"postgresql+psycopg://bob:{secret}@db:5432/chat", _env_file=None)))
    assert not [name for name, value in rows.items() if secret in value]
    assert rows["CHATBOT_GENERATOR_API_KEY"] == rows["CHATBOT_WEBHOOK_SECRET"] == "***"
    assert rows["CHATBOT_WEBHOOK_URLS"] == "['https://hooks.slack.example/…']"
    assert rows["CHATBOT_REDIS_URL"] == "redis://:***@cache:6379/0"
    assert rows["CHATBOT_GENERATOR_URL"] == "http://gen:***@vllm.local:8000/v1"
    assert rows["CHATBOT_DATABASE_URL"] == "postgresql+psycopg://bob:***@db:5432/chat"
