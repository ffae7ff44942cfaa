"""Who receives a disconnection's email (relink/domain/recipients.py), pure."""

from relink.domain.recipients import Person, choose_recipients, valid_address

ann = Person("ann@acme.test", active=True, role="admin")
zed = Person("zed@acme.test", active=True, role="admin")
old_admin = Person("old@acme.test", active=False, role="admin")
cid = Person("cid@acme.test", active=True, role="member")


def test_recipient_is_the_active_owner():
    owner = Person("bob@acme.test")
    assert choose_recipients(owner, [ann, zed]).to == ("bob@acme.test",)
    assert choose_recipients(owner, [ann]).why == "owner"


def test_owner_inactive_falls_back_to_the_active_admins():
    owner = Person("bob@acme.test", active=False)
    chosen = choose_recipients(owner, [zed, ann, old_admin, cid])
    assert chosen.to == ("ann@acme.test", "zed@acme.test")
    assert "inactive" in chosen.why


def test_owner_without_a_valid_address_falls_back_to_the_admins():
    chosen = choose_recipients(Person("bob at acme"), [ann])
    assert chosen.to == ("ann@acme.test",)
    assert "not valid" in chosen.why


def test_nobody_to_email_says_why():
    chosen = choose_recipients(Person("bob@acme.test", active=False), [old_admin, cid])
    assert chosen.nobody
    assert chosen.why == (
        "the owner bob@acme.test is inactive and the account has no active admin "
        "with a valid address"
    )


def test_valid_addresses():
    assert valid_address("bob@acme.test")
    for bad in (
        "",
        None,
        "bob",
        "bob@",
        "@acme.test",
        "bob@acme",
        "b ob@acme.test",
        "bob@acme.test\r\nBcc: x@y.z",
        "a@b@c.de",
    ):
        assert not valid_address(bad), bad
