"""Who a dashboard or API user is, in the agents' terms: their IdP identity and groups."""

from django.core.exceptions import ObjectDoesNotExist


def _profile(user):
    try:
        return user.reviewer_profile
    except (ObjectDoesNotExist, AttributeError):
        return None


def reviewer_groups_of(user) -> set[str]:
    """Django group names plus the IdP groups of the user's last OIDC login."""
    groups = set(user.groups.values_list("name", flat=True))
    profile = _profile(user)
    if profile is not None:
        groups.update(g for g in profile.idp_groups if isinstance(g, str))
    return groups


def is_same_person(user, subject: str, username: str) -> bool:
    """True when the user could be the principal: their username, e-mail or IdP subject equals the agent's.

    Deliberately broad (fail closed): the issuer is not compared, so a
    same-named identity from another IdP also counts as the same person, and
    neither is case (IdPs and directories disagree on the case of e-mail
    addresses and usernames: ``Alice@Example.com`` is ``alice@example.com``).
    """
    names = {user.get_username()}
    email = getattr(user, "email", "")
    if email:
        names.add(email)
    profile = _profile(user)
    if profile is not None:
        names.add(profile.subject)
    return bool({n.casefold() for n in names} & ({subject.casefold(), username.casefold()} - {""}))
