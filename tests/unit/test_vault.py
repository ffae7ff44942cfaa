"""The credential vault: round trips, clear errors for keys and ciphertext that do not
fit, rotation. End to end (`relink keys rotate` on a real database, the pages with a
wrong key): tests/reliability/test_vault_keys.py, under the same two promises."""

import base64
import os
import random
import stat

import pytest

from relink.errors import VaultError
from relink.settings import Settings
from relink.vault import Vault, generate_key, load_or_create_key_file
from tests.support.promises import scale

SECRET = {"password": "s3cr3t-marker"}

# the same texts as in tests/reliability/test_vault_keys.py: one row each in the report
CLEAR_ERRORS = (
    "Credentials that do not decrypt (wrong key, rotated-away key, corrupted ciphertext) "
    "give one clear line naming the connection, never a key or ciphertext"
)
ROTATION = (
    "`relink keys rotate` re-encrypts every credential and pending OAuth sign-in under "
    "the newest key, after which the old key can be dropped"
)
clear_errors = pytest.mark.promise(CLEAR_ERRORS)
rotation = pytest.mark.promise(ROTATION)


def assert_clear(error: VaultError, connection: str, *hidden: str) -> None:
    """One line, naming the connection, showing none of `hidden` (keys, ciphertext)."""
    message = str(error)
    assert f"connection {connection} " in message and "\n" not in message
    for value in (*hidden, "s3cr3t"):
        assert not value or value not in message


def test_round_trip():
    vault = Vault([generate_key()])
    token = vault.encrypt(SECRET)
    assert "s3cr3t-marker" not in token
    assert vault.decrypt(token, connection="1") == SECRET


@clear_errors
def test_wrong_key_names_the_connection_not_the_key_or_ciphertext():
    right, wrong = generate_key(), generate_key()
    token = Vault([right]).encrypt(SECRET)
    with pytest.raises(VaultError) as info:
        Vault([wrong]).decrypt(token, connection="7 ('Sales')")
    assert_clear(info.value, "7 ('Sales')", right, wrong, token)


@clear_errors
@pytest.mark.parametrize(
    "corrupt",
    [
        lambda token: token[:-4] + "AAAA",  # the HMAC no longer matches
        lambda token: token[: len(token) // 2],  # truncated
        lambda token: token.replace("A", "*"),  # not base64 at all
        lambda token: "",  # emptied
        lambda token: token[:60] + Vault([generate_key()]).encrypt(SECRET)[60:],  # spliced
    ],
    ids=["tail-changed", "truncated", "not-base64", "empty", "spliced"],
)
def test_corrupted_ciphertext_is_a_clear_error(corrupt):
    key = generate_key()
    vault = Vault([key])
    token = corrupt(vault.encrypt(SECRET))
    with pytest.raises(VaultError) as info:
        vault.decrypt(token, connection="3")
    assert_clear(info.value, "3", key, token)
    with pytest.raises(VaultError, match="nothing was re-encrypted") as rotating:
        Vault([generate_key(), key]).rotate(token, connection="3")
    assert_clear(rotating.value, "3", key, token)


def corrupted(token: str, rng: random.Random) -> str:
    """The token with one random bit of its bytes flipped, or cut short at a random byte."""
    raw = bytearray(base64.urlsafe_b64decode(token))
    at = rng.randrange(len(raw))
    if rng.random() < 0.2:
        return base64.urlsafe_b64encode(raw[:at]).decode()
    raw[at] ^= 1 << rng.randrange(8)
    return base64.urlsafe_b64encode(raw).decode()


@clear_errors
def test_no_corruption_of_a_ciphertext_decrypts_or_escapes_as_another_error(record_property):
    seed = int(os.environ.get("RELINK_VAULT_SEED") or random.randrange(2**32))
    rng = random.Random(seed)
    print(f"replay: RELINK_VAULT_SEED={seed}")  # shown on failure
    key = generate_key()
    vault = Vault([key])
    token = vault.encrypt(SECRET)
    trials = scale(300, 20_000)
    for _ in range(trials):
        bad = corrupted(token, rng)
        with pytest.raises(VaultError) as info:
            vault.decrypt(bad, connection="9")
        assert_clear(info.value, "9", key, bad)
    record_property("trials", trials)
    record_property("outcome", f"{trials} of {trials} corrupted tokens refused (seed {seed})")


@rotation
def test_rotation_encrypts_under_the_newest_key_and_old_key_can_be_dropped():
    old, new = generate_key(), generate_key()
    token = Vault([old]).encrypt(SECRET)
    rotated = Vault([new, old]).rotate(token, connection="1")
    assert Vault([new]).decrypt(rotated, connection="1") == SECRET
    with pytest.raises(VaultError) as rotated_away:
        Vault([old]).decrypt(rotated, connection="1")
    assert_clear(rotated_away.value, "1", old, new, rotated)


@rotation
def test_during_a_rotation_both_keys_decrypt_and_the_newest_encrypts():
    old, new = generate_key(), generate_key()
    before = Vault([old]).encrypt(SECRET)
    both = Vault([new, old])
    assert both.decrypt(before, connection="1") == SECRET
    assert Vault([new]).decrypt(both.encrypt(SECRET), connection="1") == SECRET
    twice = both.rotate(both.rotate(before, connection="1"), connection="1")  # a rerun
    assert Vault([new]).decrypt(twice, connection="1") == SECRET


@clear_errors
def test_a_malformed_key_is_refused_with_a_hint_that_does_not_show_it():
    with pytest.raises(VaultError, match="not a Fernet key") as info:
        Vault([generate_key(), "not-a-key"])
    assert "not-a-key" not in str(info.value) and "\n" not in str(info.value)


def test_key_file_is_created_once_with_owner_only_permissions(tmp_path, capsys):
    path = tmp_path / "keys" / "secret.keys"
    first = load_or_create_key_file(path)
    assert "created encryption key file" in capsys.readouterr().err
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_key_file(path) == first
    assert capsys.readouterr().err == ""


def test_settings_keys_take_precedence_over_the_key_file(tmp_path):
    key = generate_key()
    settings = Settings(_env_file=None, data_dir=tmp_path, secret_keys=f" {key} , ")
    token = Vault.from_settings(settings).encrypt(SECRET)
    assert Vault([key]).decrypt(token, connection="1") == SECRET
    assert not settings.key_file.exists()
