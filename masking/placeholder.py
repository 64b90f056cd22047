"""The fixed text that replaces every masked value."""

import base64

# No whitespace, quotes or YAML-special first character that a client could mangle;
# 18 bytes, so its base64 form has no padding.
PLACEHOLDER = "**AIRLOCK-MASKED**"
# Secret ``data`` values are base64: clients that decode them (client-go, ``base64 -d``) get
# the plain placeholder back instead of an error.
PLACEHOLDER_B64 = base64.b64encode(PLACEHOLDER.encode()).decode()
