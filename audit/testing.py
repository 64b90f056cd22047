"""pytest plugin: lets Django's flush between transactional tests empty the audit tables, and
gives each test its own audit journal directory.

On PostgreSQL the audit tables refuse TRUNCATE (migration 0002) unless the database itself
carries ``airlock.audit_truncate = 'allowed'``, which only its owner can set.  This marks the
test database (and nothing else) that way right after pytest-django creates it.
"""

import pytest
from django.test import override_settings


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


@pytest.fixture(autouse=True)
def audit_journal_dir(tmp_path_factory):
    """Every test's recorders journal into a directory of their own: a journal one test leaves
    behind must never be replayed into another test's database.  (override_settings, not the
    ``settings`` fixture, whose name some tests use for a parameter.)"""
    directory = tmp_path_factory.mktemp("audit-journal")
    with override_settings(AIRLOCK_AUDIT_JOURNAL_DIR=directory):
        yield directory
