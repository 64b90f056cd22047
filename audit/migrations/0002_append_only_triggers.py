"""PostgreSQL: triggers that make the audit tables append-only.  Nothing to do on SQLite.

* UPDATE is refused on every audit table (sessions are derived, so nothing needs it).
* DELETE is refused, except retention's own path (audit.chain.prune_through): with
  ``SET LOCAL airlock.audit_prune = 'on'`` an event (and its recording) may be deleted only if
  the newest checkpoint covers its seq, and a session only once nothing references it (the
  foreign keys enforce that).  Checkpoints are signed, so a forged one shows in verify_audit.
* TRUNCATE is refused, unless the database itself carries
  ``ALTER DATABASE <db> SET airlock.audit_truncate = 'allowed'`` (database-wide, ``setrole = 0``:
  only the database owner or a superuser can set it, and they could disable the triggers
  anyway).  Only test databases set it, so that Django's flush between transactional tests
  works (audit/testing.py).

The table owner can still ``ALTER TABLE ... DISABLE TRIGGER``; run the gateway as a role that
does not own these tables (INSERT and SELECT only) and rely on the hash chain for the rest.
"""

from django.db import migrations

TABLES = ("audit_auditevent", "audit_session", "audit_recording", "audit_checkpoint")

INSTALL = """
CREATE OR REPLACE FUNCTION audit_truncate_allowed() RETURNS boolean
LANGUAGE sql STABLE AS $$
  SELECT EXISTS (
    SELECT 1 FROM pg_catalog.pg_db_role_setting s
    JOIN pg_catalog.pg_database d ON d.oid = s.setdatabase
    WHERE d.datname = pg_catalog.current_database() AND s.setrole = 0
      AND 'airlock.audit_truncate=allowed' = ANY (s.setconfig))
$$;

CREATE OR REPLACE FUNCTION audit_refuse() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'TRUNCATE' AND audit_truncate_allowed() THEN
    RETURN NULL;
  END IF;
  RAISE EXCEPTION 'airlock audit table % is append-only: % refused', TG_TABLE_NAME, TG_OP
    USING ERRCODE = 'insufficient_privilege';
END $$;

CREATE OR REPLACE FUNCTION audit_pruned_through() RETURNS bigint
LANGUAGE sql STABLE AS $$
  SELECT COALESCE(MAX(through_seq), 0) FROM audit_checkpoint
$$;

CREATE OR REPLACE FUNCTION audit_event_delete() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  IF current_setting('airlock.audit_prune', true) = 'on' AND OLD.seq <= audit_pruned_through() THEN
    RETURN OLD;
  END IF;
  RAISE EXCEPTION 'airlock audit table % is append-only: DELETE refused', TG_TABLE_NAME
    USING ERRCODE = 'insufficient_privilege';
END $$;

CREATE OR REPLACE FUNCTION audit_recording_delete() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  IF current_setting('airlock.audit_prune', true) = 'on'
     AND (SELECT seq FROM audit_auditevent WHERE id = OLD.event_id) <= audit_pruned_through() THEN
    RETURN OLD;
  END IF;
  RAISE EXCEPTION 'airlock audit table % is append-only: DELETE refused', TG_TABLE_NAME
    USING ERRCODE = 'insufficient_privilege';
END $$;

CREATE OR REPLACE FUNCTION audit_session_delete() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  IF current_setting('airlock.audit_prune', true) = 'on' THEN
    RETURN OLD;
  END IF;
  RAISE EXCEPTION 'airlock audit table % is append-only: DELETE refused', TG_TABLE_NAME
    USING ERRCODE = 'insufficient_privilege';
END $$;
"""

DELETE_FUNCTION = {
    "audit_auditevent": "audit_event_delete",
    "audit_recording": "audit_recording_delete",
    "audit_session": "audit_session_delete",
    "audit_checkpoint": "audit_refuse",
}

UNINSTALL_FUNCTIONS = """
DROP FUNCTION IF EXISTS audit_event_delete();
DROP FUNCTION IF EXISTS audit_recording_delete();
DROP FUNCTION IF EXISTS audit_session_delete();
DROP FUNCTION IF EXISTS audit_refuse();
DROP FUNCTION IF EXISTS audit_pruned_through();
DROP FUNCTION IF EXISTS audit_truncate_allowed();
"""


def trigger_sql(table: str) -> str:
    return f"""
CREATE TRIGGER {table}_no_update BEFORE UPDATE ON {table}
  FOR EACH ROW EXECUTE FUNCTION audit_refuse();
CREATE TRIGGER {table}_no_delete BEFORE DELETE ON {table}
  FOR EACH ROW EXECUTE FUNCTION {DELETE_FUNCTION[table]}();
CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table}
  FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse();
"""


def install(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute(INSTALL, params=None)
    for table in TABLES:
        schema_editor.execute(trigger_sql(table), params=None)


def uninstall(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for table in TABLES:
        for suffix in ("no_update", "no_delete", "no_truncate"):
            schema_editor.execute(f"DROP TRIGGER IF EXISTS {table}_{suffix} ON {table}")
    schema_editor.execute(UNINSTALL_FUNCTIONS, params=None)


class Migration(migrations.Migration):
    dependencies = [("audit", "0001_initial")]

    operations = [migrations.RunPython(install, uninstall)]
