"""Events name the MCP tool call that caused them (``parent_id``) and a tool call's event its tool (``mcp_tool``).

Added with constant defaults (no UPDATE, so the append-only triggers of 0002 do not object); the
canonical document carries ``airlock.parentId`` and ``airlock.mcpTool`` only when they are set, so
existing events hash as before.
"""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('audit', '0006_proxyid_auditevent_proxy'),
    ]

    operations = [
        migrations.AddField(
            model_name='auditevent',
            name='parent_id',
            field=models.CharField(blank=True, help_text='The audit id of the MCP tool call that caused this request (mcpfront); empty for kubectl traffic.', max_length=64, null=True),
        ),
        migrations.AddField(
            model_name='auditevent',
            name='mcp_tool',
            field=models.CharField(blank=True, help_text="An MCP tool call's event: the tool's name.", max_length=128),
        ),
    ]
