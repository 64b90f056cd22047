"""Unit tests run on the in-memory channel layer; Redis is exercised by tests/e2e_approvals."""

import pytest


@pytest.fixture(autouse=True)
def in_memory_channel_layer(settings):
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
