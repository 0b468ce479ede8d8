"""Properties of the pure parts of server.auth: the sign-in limiter against a reference model, token
parsing, and the role table."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from server.auth import KEY_ID_HEX, ROLE_PERMISSIONS, Permission, Role, SignInLimiter, parse_token

steps = st.lists(
    st.tuples(
        st.sampled_from(["fail", "check"]),
        st.sampled_from(["10.0.0.1", "10.0.0.2", "10.0.0.3"]),
        st.floats(min_value=0, max_value=40, allow_nan=False),
    ),
    max_size=60,
)


@given(steps=steps, limit=st.integers(1, 5), window=st.floats(min_value=1, max_value=100))
def test_limiter_refuses_exactly_when_the_window_holds_limit_failures(
    steps: list[tuple[str, str, float]], limit: int, window: float
) -> None:
    now = 0.0
    limiter = SignInLimiter(max_failures=limit, window_s=window, monotonic=lambda: now)
    failures: dict[str, list[float]] = {}
    for action, address, advance in steps:
        now += advance
        recent = [t for t in failures.get(address, []) if t > now - window]
        if action == "fail":
            limiter.record_failure(address)
            failures.setdefault(address, []).append(now)
        else:
            wait = limiter.retry_after(address)
            if len(recent) >= limit:
                assert wait is not None
                # It may try again when the oldest of the last `limit` failures leaves the window.
                assert abs(wait - (recent[-limit] + window - now)) < 1e-6 or wait == 0.001
            else:
                assert wait is None


@given(
    key=st.text("0123456789abcdef", min_size=KEY_ID_HEX, max_size=KEY_ID_HEX),
    secret=st.text(
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", min_size=1, max_size=128
    ),
)
def test_well_formed_tokens_parse_back(key: str, secret: str) -> None:
    parsed = parse_token(f"ww_{key}_{secret}")
    assert parsed is not None
    assert (parsed.key_id, parsed.secret) == (key, secret)


@given(st.text(max_size=200))
def test_parse_token_never_raises(text: str) -> None:
    parsed = parse_token(text)
    if parsed is not None:
        assert text == f"ww_{parsed.key_id}_{parsed.secret}"


def test_role_table() -> None:
    readers = {role for role in Role if Permission.READ in ROLE_PERMISSIONS[role]}
    assert readers == set(Role)
    assert {role for role in Role if Permission.READ_IDENTITY in ROLE_PERMISSIONS[role]} == set(Role) - {
        Role.INTEGRATION
    }
    assert {role for role in Role if Permission.ESCALATE in ROLE_PERMISSIONS[role]} == {Role.PHYSICIAN}
    assert {role for role in Role if Permission.RESOLVE_HIGH in ROLE_PERMISSIONS[role]} == {Role.PHYSICIAN}
    assert {role for role in Role if Permission.COMMAND in ROLE_PERMISSIONS[role]} == {
        Role.NURSE,
        Role.PHYSICIAN,
    }
    assert {role for role in Role if Permission.MANAGE_TOKENS in ROLE_PERMISSIONS[role]} == {Role.ADMIN}
    # Physicians have every right a nurse has.
    assert ROLE_PERMISSIONS[Role.NURSE] <= ROLE_PERMISSIONS[Role.PHYSICIAN]
