"""Reviews bind to the exact request (approvals.fingerprint v2).

* ``fingerprint`` becomes ``window_key`` (empty when the request names no
  single object, so no window can cover it).
* ``content_type`` becomes ``headers``: every forwarded header that changes
  the effect, in order.
* ``query`` keeps exec ``command=`` words masked like the audit trail; rows
  stored before are masked here.

Rows from before keep their ``exact`` and window hashes, which were computed
with the v1 scheme: no request computes them any more, so their approvals
cover nothing (fail closed).  A retry of a request that was pending opens a
new review; the old one expires as usual.
"""

from django.db import migrations, models

from approvals.reviews import stored_query


def forwards(apps, schema_editor):
    Review = apps.get_model("approvals", "Review")
    for review in Review.objects.only("pk", "query", "content_type").iterator():
        headers = [["content-type", review.content_type]] if review.content_type else []
        Review.objects.filter(pk=review.pk).update(query=stored_query(review.query), headers=headers)


def backwards(apps, schema_editor):
    Review = apps.get_model("approvals", "Review")
    for review in Review.objects.only("pk", "headers").iterator():
        content_type = next((v for n, v in review.headers if n == "content-type"), "")
        Review.objects.filter(pk=review.pk).update(content_type=content_type[:128])


SCOPES = [("once", "Once: this exact request"),
          ("window", "Time window: the same verb, resource, namespace and name, any body or query")]


class Migration(migrations.Migration):

    dependencies = [
        ("approvals", "0004_review_preview"),
    ]

    operations = [
        migrations.RemoveIndex(model_name="review", name="approvals_review_state_fp"),
        migrations.RenameField(model_name="review", old_name="fingerprint", new_name="window_key"),
        migrations.AlterField(
            model_name="review",
            name="window_key",
            field=models.CharField(
                blank=True, max_length=64,
                help_text="What a window approval covers: connection, principal, verb, API group, resource, "
                          "subresource, namespace, name. Empty: the request names no single object, only a once "
                          "approval is possible.",
            ),
        ),
        migrations.AlterField(
            model_name="review",
            name="exact",
            field=models.CharField(
                db_index=True, max_length=64,
                help_text="What a once approval covers: connection, principal, method, transport, path, raw query, "
                          "effect headers, body hash (approvals.fingerprint).",
            ),
        ),
        migrations.AddField(
            model_name="review",
            name="headers",
            field=models.JSONField(
                blank=True, default=list,
                help_text="The forwarded headers that change the effect (Content-Type, ...).",
            ),
        ),
        migrations.AlterField(
            model_name="review",
            name="query",
            field=models.TextField(
                blank=True,
                help_text="The query as forwarded, in order, with exec command words masked like the audit trail.",
            ),
        ),
        migrations.RunPython(forwards, backwards),
        migrations.RemoveField(model_name="review", name="content_type"),
        migrations.AlterField(
            model_name="review",
            name="scope",
            field=models.CharField(choices=SCOPES, default="once", max_length=16),
        ),
        migrations.AlterField(
            model_name="reviewvote",
            name="scope",
            field=models.CharField(choices=SCOPES, default="once", max_length=16),
        ),
        migrations.AlterField(
            model_name="review",
            name="valid_until",
            field=models.DateTimeField(
                blank=True, null=True,
                help_text="Approved: the approval may be used until then (once) or covers the window key until "
                          "then (window).",
            ),
        ),
        migrations.AddIndex(
            model_name="review",
            index=models.Index(fields=["state", "window_key"], name="approvals_review_state_window"),
        ),
    ]
