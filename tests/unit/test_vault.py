import stat

import pytest

from relink.errors import VaultError
from relink.settings import Settings
from relink.vault import Vault, generate_key, load_or_create_key_file

SECRET = {"password": "s3cr3t-marker"}


def test_round_trip():
    vault = Vault([generate_key()])
    token = vault.encrypt(SECRET)
    assert "s3cr3t-marker" not in token
    assert vault.decrypt(token, connection="1") == SECRET


def test_wrong_key_names_the_connection_not_the_key_or_ciphertext():
    right, wrong = generate_key(), generate_key()
    token = Vault([right]).encrypt(SECRET)
    with pytest.raises(VaultError) as info:
        Vault([wrong]).decrypt(token, connection="7 ('Sales')")
    message = str(info.value)
    assert "7 ('Sales')" in message
    assert wrong not in message and token not in message and "s3cr3t" not in message


def test_corrupted_ciphertext_is_a_clear_error():
    vault = Vault([generate_key()])
    token = vault.encrypt(SECRET)
    with pytest.raises(VaultError, match="connection 3"):
        vault.decrypt(token[:-4] + "AAAA", connection="3")


def test_rotation_encrypts_under_the_newest_key_and_old_key_can_be_dropped():
    old, new = generate_key(), generate_key()
    token = Vault([old]).encrypt(SECRET)
    rotated = Vault([new, old]).rotate(token, connection="1")
    assert Vault([new]).decrypt(rotated, connection="1") == SECRET
    with pytest.raises(VaultError):
        Vault([old]).decrypt(rotated, connection="1")


def test_a_malformed_key_is_refused_with_a_hint():
    with pytest.raises(VaultError, match="not a Fernet key"):
        Vault(["not-a-key"])


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
