"""Exec/attach recordings keep their frames (audit/frames.py); asciicast is rendered when read.

``Recording.asciicast`` becomes a property: the stored text of older recordings is the field
``cast_text`` on the same column (a change of the model's state only, nothing in the database),
and ``frames`` is added with a constant default (no UPDATE, so the append-only triggers of 0002
do not object).  The canonical document names ``framesSha256`` only for recordings with frames,
so existing events hash as before.
"""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('audit', '0007_mcp_tool_calls'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.RenameField(model_name='recording', old_name='asciicast', new_name='cast_text'),
                migrations.AlterField(
                    model_name='recording',
                    name='cast_text',
                    field=models.TextField(blank=True, db_column='asciicast',
                                           help_text='asciicast v2, masked, size-capped (recordings made before frames).'),
                ),
            ],
            database_operations=[],
        ),
        migrations.AddField(
            model_name='recording',
            name='frames',
            field=models.BinaryField(blank=True, default=b'',
                                     help_text="The stream's masked frames with their times (audit/frames.py), size-capped."),
        ),
    ]
