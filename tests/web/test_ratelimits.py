"""Rate limits (``chatbot.web.ratelimit``): the admin routes, failed sign-ins (admin and agent
tokens), the client behind trusted proxies, and one bucket shared by two apps through the real
Redis at 127.0.0.1:6379 (skipped when it does not answer). The chat limit itself is in
test_app.py; the web UI's share of the limits is in test_ui_limits.py."""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Iterator
from typing import Any

import pytest
from dbfixtures import database_url, migrated_engine  # noqa: F401
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from standin import StandInPipeline

from chatbot.config import Settings
from chatbot.web.app import create_app
from chatbot.web.ratelimit import RateLimiter

ADMIN = {"Authorization": "Bearer dev-admin-token"}
WRONG = {"Authorization": "Bearer not-the-token"}
REDIS_URL = os.environ.get("CHATBOT_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def make_client(settings: Settings, engine: Engine, client: tuple[str, int] = ("10.1.2.3", 4000),
                **overrides: Any) -> TestClient:
    app = create_app(settings.model_copy(update=overrides), pipeline=StandInPipeline(),
                     engine=engine, mount_ui=False)
    return TestClient(app, client=client)


def random_address() -> str:
    """A client address no other test (or earlier run, in Redis) has used."""
    return f"10.{random.randrange(256)}.{random.randrange(256)}.{random.randrange(1, 255)}"


# --- admin routes and sign-ins -----------------------------------------------------------------
def test_admin_routes_have_their_own_limit(settings: Settings,
                                           migrated_engine: Engine) -> None:  # noqa: F811
    with make_client(settings, migrated_engine, admin_rate_limit_per_minute=3) as client:
        codes = [client.get("/api/v1/admin/stats", headers=ADMIN).status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429]
        limited = client.get("/api/v1/admin/reindex/status", headers=ADMIN)
        assert limited.status_code == 429 and 1 <= int(limited.headers["retry-after"]) <= 60
        assert "too many requests" in limited.json()["error"]
        assert client.post("/api/v1/chat", json={"message": "hi"}).status_code == 200


def test_wrong_admin_tokens_lock_the_client_out_even_with_the_right_one(
        settings: Settings, migrated_engine: Engine) -> None:  # noqa: F811
    with make_client(settings, migrated_engine, sign_in_failures_per_minute=2) as client:
        for _ in range(3):  # no token at all is not a guess: a plain 401 each time
            assert client.get("/api/v1/admin/stats").status_code == 401
        assert [client.get("/api/v1/admin/stats", headers=WRONG).status_code
                for _ in range(2)] == [401, 401]
        locked = client.get("/api/v1/admin/stats", headers=ADMIN)
        assert locked.status_code == 429 and int(locked.headers["retry-after"]) >= 1
        assert client.get("/api/v1/admin/stats", headers=WRONG).status_code == 429
        # Only this client, and only sign-ins: chat and other clients go on.
        assert client.post("/api/v1/chat", json={"message": "hi"}).status_code == 200
    with make_client(settings, migrated_engine, client=("10.9.9.9", 1),
                     sign_in_failures_per_minute=2) as other:
        assert other.get("/api/v1/admin/stats", headers=ADMIN).status_code == 200


def test_wrong_agent_tokens_count_as_failed_sign_ins(settings: Settings,
                                                     migrated_engine: Engine) -> None:  # noqa: F811
    with make_client(settings, migrated_engine, sign_in_failures_per_minute=2) as client:
        _, token = client.app.state.service.agents.add("Dana")  # type: ignore[attr-defined]
        right = {"Authorization": f"Bearer {token}"}
        assert client.get("/api/v1/agent/me", headers=right).status_code == 200
        for _ in range(2):
            assert client.get("/api/v1/agent/me", headers=WRONG).status_code == 401
        assert client.get("/api/v1/agent/me", headers=right).status_code == 429
        # The admin sign-in shares the count: it is the same client guessing.
        assert client.get("/api/v1/admin/stats", headers=ADMIN).status_code == 429


def test_a_limit_of_zero_is_off(settings: Settings, migrated_engine: Engine) -> None:  # noqa: F811
    with make_client(settings, migrated_engine, admin_rate_limit_per_minute=0,
                     sign_in_failures_per_minute=0) as client:
        for _ in range(15):
            assert client.get("/api/v1/admin/stats", headers=WRONG).status_code == 401
        assert client.get("/api/v1/admin/stats", headers=ADMIN).status_code == 200


# --- who the client is -------------------------------------------------------------------------
def limiter(proxies: list[str]) -> RateLimiter:
    return RateLimiter(Settings(trusted_proxies=proxies, _env_file=None))  # type: ignore[call-arg]


@pytest.mark.parametrize("proxies, host, forwarded, expected", [
    ([], "203.0.113.7", "198.51.100.1", "203.0.113.7"),  # no trusted proxy: header ignored
    (["10.0.0.0/8"], "203.0.113.7", "198.51.100.1", "203.0.113.7"),  # not from our proxy
    (["10.0.0.0/8"], "10.0.0.2", "198.51.100.1", "198.51.100.1"),
    # The client wrote the left part itself; our proxy appended the address it saw.
    (["10.0.0.0/8"], "10.0.0.2", "1.1.1.1, 198.51.100.1", "198.51.100.1"),
    (["10.0.0.0/8"], "10.0.0.2", "1.1.1.1, 198.51.100.1, 10.0.0.9", "198.51.100.1"),  # 2 hops
    (["10.0.0.0/8"], "10.0.0.2", "10.0.0.8, 10.0.0.9", "10.0.0.8"),  # all ours: the first
    (["10.0.0.0/8"], "10.0.0.2", "", "10.0.0.2"),
    (["10.0.0.0/8"], "10.0.0.2", "1.1.1.1, garbage", "10.0.0.2"),  # unreadable: stay with ours
    (["10.0.0.2"], "10.0.0.2", "2001:db8::5", "2001:db8::5"),
    (["::1", "127.0.0.1"], "::1", "192.0.2.44", "192.0.2.44"),
])
def test_the_client_behind_trusted_proxies(proxies: list[str], host: str, forwarded: str,
                                           expected: str) -> None:
    headers = {"x-forwarded-for": forwarded} if forwarded else {}
    assert limiter(proxies).client_key(host, headers) == expected


def test_a_bad_trusted_proxy_setting_stops_the_start() -> None:
    with pytest.raises(ValueError, match="not an IP address or a CIDR network"):
        Settings(trusted_proxies="10.0.0.0/8, proxy.internal", _env_file=None)  # type: ignore[call-arg]
    assert Settings(trusted_proxies="10.0.0.0/8, ::1",  # type: ignore[call-arg]
                    _env_file=None).trusted_proxies == ["10.0.0.0/8", "::1"]


def test_behind_a_trusted_proxy_each_customer_has_a_bucket(
        settings: Settings, migrated_engine: Engine) -> None:  # noqa: F811
    with make_client(settings, migrated_engine, client=("10.0.0.2", 443),
                     rate_limit_per_minute=1, trusted_proxies=["10.0.0.0/8"]) as proxy:
        def chat(customer: str) -> int:
            return proxy.post("/api/v1/chat", json={"message": "hi"},
                              headers={"X-Forwarded-For": customer}).status_code

        assert [chat("198.51.100.1"), chat("198.51.100.2"), chat("198.51.100.1")] == [
            200, 200, 429]
        # A customer cannot pick a fresh bucket by writing the header themselves.
        assert chat("7.7.7.7, 198.51.100.1") == 429


# --- shared through Redis ------------------------------------------------------------------------
@pytest.fixture
def redis_url() -> Iterator[str]:
    redis = pytest.importorskip("redis")
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping()
    except redis.RedisError as error:
        pytest.skip(f"Redis at {REDIS_URL} is not reachable ({error}): shared limits skipped")
    yield REDIS_URL


def test_two_apps_on_one_redis_share_a_bucket(settings: Settings, migrated_engine: Engine,  # noqa: F811
                                              redis_url: str) -> None:
    address = (random_address(), 1234)  # a bucket nobody has used
    options = dict(redis_url=redis_url, rate_limit_per_minute=3)
    with make_client(settings, migrated_engine, client=address, **options) as a, \
            make_client(settings, migrated_engine, client=address, **options) as b:
        assert a.app.state.limiter.remote  # type: ignore[attr-defined]
        codes = [c.post("/api/v1/chat", json={"message": "hi"}).status_code
                 for c in (a, b, a, b)]
        assert codes == [200, 200, 200, 429]  # one limit of 3 over both "replicas"
        limited = a.post("/api/v1/chat", json={"message": "hi"})
        assert limited.status_code == 429 and 1 <= int(limited.headers["retry-after"]) <= 60
    with make_client(settings, migrated_engine, client=(random_address(), 1), **options) as c:
        assert c.post("/api/v1/chat", json={"message": "hi"}).status_code == 200


def test_failed_sign_ins_are_shared_through_redis(settings: Settings,  # noqa: F811
                                                  migrated_engine: Engine,  # noqa: F811
                                                  redis_url: str) -> None:
    address = (random_address(), 1234)
    options = dict(redis_url=redis_url, sign_in_failures_per_minute=1)
    with make_client(settings, migrated_engine, client=address, **options) as a, \
            make_client(settings, migrated_engine, client=address, **options) as b:
        assert a.get("/api/v1/admin/stats", headers=WRONG).status_code == 401
        assert b.get("/api/v1/admin/stats", headers=ADMIN).status_code == 429


def test_an_unreachable_redis_lets_requests_through_and_says_so(
        settings: Settings, migrated_engine: Engine,  # noqa: F811
        caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="chatbot.web.ratelimit"), \
            make_client(settings, migrated_engine, redis_url="redis://127.0.0.1:1/0",
                        rate_limit_per_minute=1) as client:
        codes = [client.post("/api/v1/chat", json={"message": "hi"}).status_code
                 for _ in range(3)]
    assert codes == [200, 200, 200]
    warnings = [r for r in caplog.records if "rate-limit storage unavailable" in r.message]
    assert len(warnings) == 1  # once, not once a request
