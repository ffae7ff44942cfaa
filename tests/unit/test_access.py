from relink.domain.access import ConnectionRef, Viewer, can_reconnect, can_share, can_view

ACCOUNT, OTHER_ACCOUNT = 1, 2
OWNER, SHARED, MEMBER, ADMIN = 10, 11, 12, 13
conn = ConnectionRef(account_id=ACCOUNT, owner_id=OWNER, shared_with={SHARED})


def member(uid: int, account: int = ACCOUNT, active: bool = True) -> Viewer:
    return Viewer(id=uid, account_id=account, role="member", active=active)


admin = Viewer(id=ADMIN, account_id=ACCOUNT, role="admin")


def test_admin_sees_every_connection_of_their_account():
    assert can_view(admin, conn)
    assert can_reconnect(admin, conn)


def test_admin_of_another_account_sees_nothing():
    assert not can_view(Viewer(id=ADMIN, account_id=OTHER_ACCOUNT, role="admin"), conn)


def test_member_sees_own_and_shared_connections_only():
    assert can_view(member(OWNER), conn)
    assert can_view(member(SHARED), conn)
    assert not can_view(member(MEMBER), conn)


def test_member_with_same_id_in_another_account_sees_nothing():
    assert not can_view(member(OWNER, account=OTHER_ACCOUNT), conn)


def test_inactive_user_sees_nothing():
    assert not can_view(member(OWNER, active=False), conn)
    assert not can_view(Viewer(id=ADMIN, account_id=ACCOUNT, role="admin", active=False), conn)


def test_reconnect_allowed_to_admin_owner_and_shared_user_only():
    assert [can_reconnect(member(u), conn) for u in (OWNER, SHARED, MEMBER)] == [True, True, False]


def test_only_admin_and_owner_may_share():
    assert can_share(admin, conn)
    assert can_share(member(OWNER), conn)
    assert not can_share(member(SHARED), conn)
