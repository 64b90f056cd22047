"""pytest plugin: lets Django's flush between transactional tests empty the audit tables.

On PostgreSQL the audit tables refuse TRUNCATE (migration 0002) unless the database itself
carries ``airlock.audit_truncate = 'allowed'``, which only its owner can set.  This marks the
test database (and nothing else) that way right after pytest-django creates it.
"""

import pytest


def allow_truncate(connection) -> None:
    if connection.vendor != "postgresql":
        return
    name = connection.ops.quote_name(connection.settings_dict["NAME"])
    with connection.cursor() as cursor:
        cursor.execute(f"ALTER DATABASE {name} SET airlock.audit_truncate = 'allowed'")


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup, django_db_blocker):
    from django.db import connections

    with django_db_blocker.unblock():
        for connection in connections.all():
            allow_truncate(connection)
