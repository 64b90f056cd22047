"""Request URIs as the audit trail and reviewers may keep them: query values and exec commands masked."""

from urllib.parse import quote, unquote_plus


def masked_command(params, detectors, counts: dict) -> list[str]:
    """The exec ``command=`` words with secrets masked (``mysql -pS3cret`` is in the URL)."""
    command = [v for k, v in params if k == "command"]
    if detectors.enabled:
        detectors.mask_argv(command, counts)
    return command


def masked_query(query: str, detectors, counts: dict | None = None) -> str:
    """A raw query as the audit trail and reviewers may keep it: every value masked.

    Exec and attach ``command=`` words are masked as one argv (``mysql --password S3cret``),
    every other value by its name and its text (``password=...``, ``access_token=...``, a
    selector holding a token or a Secret's value).  Parameters stay in order and repeated; one
    that masking leaves alone keeps its exact spelling, a masked one is re-encoded.
    """
    if not query or not detectors.enabled:
        return query
    counts = {} if counts is None else counts
    pieces = [piece.partition("=") for piece in query.split("&")]
    decoded = [(unquote_plus(name), unquote_plus(value)) for name, _, value in pieces]
    words = iter(masked_command(decoded, detectors, counts))
    out = []
    for (raw_name, sep, raw_value), (name, value) in zip(pieces, decoded):
        shown = next(words) if name == "command" else detectors.mask_pair(name, value, counts)
        out.append(raw_name + sep + raw_value if shown == value else f"{raw_name}={quote(shown, safe='')}")
    return "&".join(out)


def masked_target(request, detectors) -> str:
    """The request URI as the audit trail may keep it: path and query values masked.

    ``detectors`` None (the connection's configuration is not known or not valid) keeps the
    path only: what cannot be masked is not recorded.
    """
    if detectors is None:
        return request.upstream_path
    path = detectors.mask_path(request.upstream_path)
    query = masked_query(request.query, detectors)
    return path + ("?" + query if query else "")
