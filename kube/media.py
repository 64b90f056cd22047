"""Content types: which one a request declares, and the media type it names."""


def declared_content_type(headers, default: str | None = "") -> str | None:
    """The Content-Type kube-apiserver reads from (lower-case name, value) pairs: Go's Header.Get, the first
    one; ``default`` when there is none."""
    return next((value for name, value in headers if name == "content-type"), default)


def media_type(content_type: str | None) -> str:
    """``application/json; charset=utf-8`` -> ``application/json``; a non-UTF-8 charset -> ``""``."""
    if not content_type:
        return ""
    media, *params = content_type.split(";")
    for param in params:
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset" and value.strip().strip('"').lower() not in ("utf-8", "utf8"):
            return ""
    return media.strip().lower()
